// Package worker is the bus side of bus-integration-codex: it takes
// bus.llm.*.request events with unicast delivery (at most Concurrency at a
// time), runs each through an executor.Executor, publishes the streaming
// chunks and exactly one correlated response event, acknowledges the
// delivery, and interrupts requests whose cancel event arrives.
//
// It imports internal/executor, pkg/events and pkg/llmapi; it knows no provider and no OpenAI wire shape.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Config configures a Worker.
type Config struct {
	// Client talks to the Events API.
	Client *events.Client
	// Executor runs requests.
	Executor *executor.Executor
	// RequestNames and CancelNames are the events to take (unicast) and to
	// watch for cancellation (broadcast), from the declared contract.
	RequestNames, CancelNames []string
	// Group is the unicast group; Consumer names this worker in it.
	Group, Consumer string
	// Concurrency caps requests running at once (and taken from the bus).
	Concurrency int
	// Timeout caps each request (the request's own deadline may be sooner).
	Timeout time.Duration
	// ConnectTimeout bounds the first connection to the Events API.
	ConnectTimeout time.Duration
	// Logger receives logs (slog.Default when nil).
	Logger *slog.Logger
	// OnReady is called once both listeners are connected.
	OnReady func()
}

// Worker runs requests from the bus.
type Worker struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	running map[string]context.CancelCauseFunc
}

// New returns a Worker.
func New(cfg Config) (*Worker, error) {
	switch {
	case cfg.Client == nil || cfg.Executor == nil:
		return nil, errors.New("worker: client and executor are required")
	case len(cfg.RequestNames) == 0:
		return nil, errors.New("worker: no request events to listen to")
	case cfg.Concurrency < 1:
		return nil, errors.New("worker: concurrency must be at least 1")
	case cfg.Timeout <= 0:
		return nil, errors.New("worker: timeout must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Worker{cfg: cfg, log: cfg.Logger, running: map[string]context.CancelCauseFunc{}}, nil
}

// ErrCancelled is the cause of a request cancelled by a cancel event.
var ErrCancelled = errors.New("request cancelled by its client")

// Name is how the worker signs its responses.
func (w *Worker) Name() string { return "bus-integration-codex/" + w.cfg.Consumer }

// Run listens until ctx ends, then stops taking requests and waits for the
// running ones to finish and publish their responses. It returns an error
// when the Events API refuses the worker's token or cannot be reached
// within ConnectTimeout.
func (w *Worker) Run(ctx context.Context) error {
	listenCtx, stopListening := context.WithCancel(ctx)
	defer stopListening()

	var (
		connected sync.WaitGroup
		readyOnce sync.Once
		wg        sync.WaitGroup
		errs      = make(chan error, 2)
	)
	connected.Add(2)
	onConnect := func(once *sync.Once) func() {
		return func() { once.Do(connected.Done) }
	}
	var reqOnce, cancelOnce sync.Once
	go func() {
		connected.Wait()
		if listenCtx.Err() == nil && w.cfg.OnReady != nil {
			readyOnce.Do(w.cfg.OnReady)
		}
	}()
	// Give up waiting for readiness when listening stops.
	context.AfterFunc(listenCtx, func() { reqOnce.Do(connected.Done); cancelOnce.Do(connected.Done) })

	slots := make(chan struct{}, w.cfg.Concurrency)
	var inflight sync.WaitGroup
	wg.Go(func() {
		errs <- w.cfg.Client.Listen(listenCtx, events.ListenOptions{
			Names: w.cfg.CancelNames, Delivery: events.Broadcast,
			ConnectTimeout: w.cfg.ConnectTimeout, OnConnect: onConnect(&cancelOnce),
		}, w.handleCancel)
	})
	wg.Go(func() {
		errs <- w.cfg.Client.Listen(listenCtx, events.ListenOptions{
			Names: w.cfg.RequestNames, Delivery: events.Unicast,
			Group: w.cfg.Group, Consumer: w.cfg.Consumer,
			Ack: true, Prefetch: w.cfg.Concurrency,
			// A request is redelivered only when this worker dies holding it.
			Visibility:     w.cfg.Timeout + redeliveryMargin,
			ConnectTimeout: w.cfg.ConnectTimeout, OnConnect: onConnect(&reqOnce),
		}, func(ctx context.Context, env events.Envelope) error {
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return nil // not acknowledged: redelivered to another worker
			}
			inflight.Go(func() {
				defer func() { <-slots }()
				w.serve(env)
			})
			return nil
		})
	})
	var first error
	for range 2 {
		if err := <-errs; err != nil && first == nil {
			first = err
			stopListening()
		}
	}
	wg.Wait()
	inflight.Wait()
	return first
}

func (w *Worker) handleCancel(_ context.Context, env events.Envelope) error {
	var c llmapi.ExecutionEventCancel
	if err := json.Unmarshal(env.Payload, &c); err != nil || c.RequestID == "" {
		w.log.Warn("ignoring malformed cancel event", "event", env.ID)
		return nil
	}
	w.mu.Lock()
	cancel := w.running[c.RequestID]
	w.mu.Unlock()
	if cancel != nil {
		w.log.Info("cancelling request", "request", c.RequestID, "reason", c.Reason)
		cancel(fmt.Errorf("%w (%s)", ErrCancelled, c.Reason))
	}
	return nil
}

// serve runs one delivered request to its response and acknowledges it.
func (w *Worker) serve(env events.Envelope) {
	// Work started is finished even when the worker is asked to stop:
	// the request's own deadline bounds it.
	base := context.Background()
	req, op, err := decodeRequest(env)
	if err != nil {
		w.log.Warn("malformed request event", "event", env.ID, "name", env.Name, "err", err)
	}
	if req.RequestID == "" {
		// Without any id the response cannot be correlated: acknowledge
		// and drop (nobody can be waiting for it).
		w.log.Error("request event without correlation id dropped", "event", env.ID)
		w.ack(base, env)
		return
	}
	var resp llmapi.ExecutionEventResponse
	chunks := newChunkPublisher(w, op, req.RequestID)
	if err != nil {
		resp = llmapi.ErrorResponse(&req, llmapi.InvalidRequest("", "invalid_event", err.Error()))
	} else {
		ctx, cancel := w.requestContext(base, &req)
		start := time.Now()
		resp = w.cfg.Executor.Execute(ctx, &req, chunks.emit)
		cancel(nil)
		w.forget(req.RequestID)
		w.log.Info("request done", "request", req.RequestID, "operation", req.Operation, "status", resp.StatusCode, "stream", req.Stream, "ms", time.Since(start).Milliseconds())
	}
	chunks.close()
	resp.Worker = w.Name()
	if err := w.publish(base, op.ResponseEvent(), req.RequestID, resp); err != nil {
		w.log.Error("response not published; the request will be redelivered", "request", req.RequestID, "err", err)
		return
	}
	w.ack(base, env)
}

// decodeRequest parses the payload; op comes from the event name so an
// error response can be addressed even when the payload is broken.
func decodeRequest(env events.Envelope) (llmapi.ExecutionEventRequest, llmapi.Operation, error) {
	var req llmapi.ExecutionEventRequest
	op, kind, nerr := llmapi.ParseEventName(env.Name)
	if nerr != nil || kind != llmapi.KindRequest {
		return req, op, fmt.Errorf("not a request event: %s", env.Name)
	}
	err := json.Unmarshal(env.Payload, &req)
	if req.RequestID == "" {
		req.RequestID = env.CorrelationID
	}
	if req.Operation == "" {
		req.Operation = op
	}
	switch {
	case err != nil:
		return req, op, fmt.Errorf("request payload is not an ExecutionEventRequest: %w", err)
	case req.Operation != op:
		return req, op, fmt.Errorf("payload operation %q does not match event %s", req.Operation, env.Name)
	case env.CorrelationID != "" && req.RequestID != env.CorrelationID:
		return req, op, fmt.Errorf("requestId %q does not match correlationId %q", req.RequestID, env.CorrelationID)
	}
	if err := req.Validate(); err != nil {
		return req, op, err
	}
	return req, op, nil
}

func (w *Worker) requestContext(base context.Context, req *llmapi.ExecutionEventRequest) (context.Context, context.CancelCauseFunc) {
	deadline := time.Now().Add(w.cfg.Timeout)
	if req.Deadline != nil && req.Deadline.Before(deadline) {
		deadline = *req.Deadline
	}
	ctx, cancelCause := context.WithCancelCause(base)
	ctx, cancelTimeout := context.WithDeadline(ctx, deadline)
	cancel := func(cause error) {
		cancelCause(cause)
		cancelTimeout()
	}
	w.mu.Lock()
	w.running[req.RequestID] = cancel
	w.mu.Unlock()
	return ctx, cancel
}

func (w *Worker) forget(id string) {
	w.mu.Lock()
	delete(w.running, id)
	w.mu.Unlock()
}

// publish publishes with a few retries: a response must not be lost to a
// passing Events API hiccup.
func (w *Worker) publish(ctx context.Context, name, correlationID string, payload any) error {
	var err error
	delay := 100 * time.Millisecond
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(delay)
			delay *= 2
		}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = w.cfg.Client.PublishJSON(pctx, name, correlationID, payload)
		cancel()
		var apiErr *events.APIError
		if err == nil || (errors.As(err, &apiErr) && apiErr.Permanent()) {
			return err
		}
	}
	return err
}

func (w *Worker) ack(ctx context.Context, env events.Envelope) {
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := w.cfg.Client.Ack(actx, env.Name, w.cfg.Group, w.cfg.Consumer, env.ID); err != nil {
		w.log.Warn("ack failed; the request may be redelivered", "event", env.ID, "err", err)
	}
}

// chunkPublisher publishes a request's stream frames in order on its own
// goroutine, so a slow publish never stalls the model's event loop.
type chunkPublisher struct {
	w     *Worker
	op    llmapi.Operation
	reqID string

	mu      sync.Mutex
	queue   []json.RawMessage
	wake    chan struct{}
	closed  bool
	done    chan struct{}
	started bool
	seq     int64
}

func newChunkPublisher(w *Worker, op llmapi.Operation, reqID string) *chunkPublisher {
	return &chunkPublisher{w: w, op: op, reqID: reqID, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (c *chunkPublisher) emit(frame json.RawMessage) {
	c.mu.Lock()
	c.queue = append(c.queue, frame)
	if !c.started {
		c.started = true
		go c.loop()
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *chunkPublisher) loop() {
	defer close(c.done)
	for {
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		closed := c.closed
		c.mu.Unlock()
		for _, frame := range batch {
			chunk := llmapi.ExecutionEventChunk{RequestID: c.reqID, Operation: c.op, Seq: c.seq, Data: frame}
			c.seq++
			if err := c.w.publish(context.Background(), c.op.ChunkEvent(), c.reqID, chunk); err != nil {
				c.w.log.Warn("chunk not published", "request", c.reqID, "seq", chunk.Seq, "err", err)
			}
		}
		if closed && len(batch) == 0 {
			return
		}
		if len(batch) == 0 {
			<-c.wake
		}
	}
}

// close waits until every emitted frame is published.
func (c *chunkPublisher) close() {
	c.mu.Lock()
	c.closed = true
	started := c.started
	c.mu.Unlock()
	if !started {
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
	<-c.done
}

// redeliveryMargin is added to the request timeout to get the
// acknowledgement deadline: a live worker answers (at worst with a timeout
// error) well before it, so only a dead worker's requests are redelivered.
const redeliveryMargin = 10 * time.Second
