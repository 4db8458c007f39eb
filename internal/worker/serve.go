package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// errChunkLost is the cause of a request whose stream lost a chunk.
var errChunkLost = errors.New("a stream chunk could not be published")

// serve answers one delivered request and acknowledges it. A delivery it
// cannot answer (the Events API keeps failing, or the worker stops while
// the token is refused) stays unacknowledged and is redelivered.
func (w *Worker) serve(env events.Envelope, taken time.Time) {
	// Work started is finished even when the worker is asked to stop: the
	// request's own deadline bounds it. The answer must be published and
	// acknowledged before the delivery's visibility ends, or another
	// worker would answer it too.
	answerCtx, cancelAnswer := context.WithDeadline(context.Background(), taken.Add(w.cfg.Timeout+redeliveryMargin/2))
	defer cancelAnswer()
	req, op, err := decodeRequest(env)
	if err != nil {
		w.log.Warn("malformed request event", "event", env.ID, "name", env.Name, "err", err)
	}
	traced, o := w.observe(env, &req, op, taken)
	defer o.end()
	if w.cfg.MaxDeliveries > 0 && env.Deliveries > w.cfg.MaxDeliveries {
		w.deadLetter(answerCtx, env, req, op)
		return
	}
	if req.RequestID == "" {
		// Without any id the response cannot be correlated: acknowledge
		// and drop (nobody can be waiting for it).
		w.log.Error("request event without correlation id dropped", "event", env.ID)
		w.ack(answerCtx, env)
		return
	}
	var resp llmapi.ExecutionEventResponse
	switch {
	case !w.fromService(env):
		// Only a front door (a service) may say who the caller is.
		w.logUntrusted(env)
		resp = llmapi.ErrorResponse(&req, llmapi.NewError(http.StatusForbidden, llmapi.TypePermission, "untrusted_publisher", "",
			"Only a service may publish bus.llm requests; this request was not run."))
	case err != nil:
		resp = llmapi.ErrorResponse(&req, llmapi.InvalidRequest("", "invalid_event", err.Error()))
	default:
		var ok bool
		if resp, ok = w.run(traced, &req, op); !ok {
			return // no executor before the worker stopped: redelivered
		}
		// A usage limit the request just ran into pauses the worker at
		// once, not at the next tick.
		w.checkExhausted(time.Now())
	}
	o.answer(&resp)
	resp.Worker = w.Name()
	err = w.publish(answerCtx, op.ResponseEvent(), req.RequestID, resp)
	if apiErr, ok := errors.AsType[*events.APIError](err); ok && apiErr.Status == http.StatusRequestEntityTooLarge {
		// Redelivery cannot help: answer with an error that fits.
		w.log.Error("response too large for the Events API; answering with an error", "request", req.RequestID, "err", err)
		resp = llmapi.ErrorResponse(&req, llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "response_too_large", "",
			"The answer is larger than the Events API accepts."))
		o.answer(&resp)
		resp.Worker = w.Name()
		err = w.publish(answerCtx, op.ResponseEvent(), req.RequestID, resp)
	}
	if err != nil {
		w.log.Error("response not published; the request will be redelivered", "request", req.RequestID, "err", err)
		return
	}
	w.ack(answerCtx, env)
}

// run runs a valid request on the executor, streaming its frames, in a
// context derived from traced. ok is false when the worker stopped before
// it had an executor.
func (w *Worker) run(traced context.Context, req *llmapi.ExecutionEventRequest, op llmapi.Operation) (resp llmapi.ExecutionEventResponse, ok bool) {
	ctx, cancel, deadline := w.requestContext(traced, req)
	defer func() {
		cancel(nil)
		w.forget(req.RequestID)
	}()
	switch {
	case errors.Is(context.Cause(ctx), ErrCancelled):
		// Cancelled while it waited in the group: no model call.
		w.log.Info("request cancelled before it started", "request", req.RequestID)
		return llmapi.ErrorResponse(req, llmapi.NewError(executor.StatusClientClosed, llmapi.TypeInvalidRequest, "request_cancelled", "",
			"the request was cancelled before it started")), true
	case ctx.Err() != nil:
		// Its deadline passed while it waited: nobody waits for it any more.
		w.log.Info("request expired before it started", "request", req.RequestID)
		return llmapi.ErrorResponse(req, llmapi.NewError(http.StatusGatewayTimeout, llmapi.TypeTimeout, "timeout", "",
			"the request deadline passed before a worker could start it")), true
	}
	x, err := w.executor(ctx)
	switch {
	case errors.Is(err, errStopping):
		return resp, false
	case err != nil:
		return llmapi.ErrorResponse(req, llmapi.NewError(http.StatusGatewayTimeout, llmapi.TypeTimeout, "timeout", "",
			"the worker was still starting when the request deadline passed")), true
	}
	chunks := newChunkPublisher(w, op, req.RequestID, deadline, func() { cancel(errChunkLost) })
	start := time.Now()
	resp = w.execute(ctx, x, req, chunks.emit)
	chunks.close()
	if chunks.lost() && (!resp.IsError() || errors.Is(context.Cause(ctx), errChunkLost)) {
		resp = llmapi.ErrorResponse(req, llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "stream_interrupted", "",
			"A part of the stream could not be delivered; the answer is incomplete."))
	}
	w.log.InfoContext(ctx, "request done", "request", req.RequestID, "operation", req.Operation, "status", resp.StatusCode, "stream", req.Stream, "ms", time.Since(start).Milliseconds())
	return resp, true
}

// execute runs req on x; a panic answers it 500 and the worker keeps
// serving.
func (w *Worker) execute(ctx context.Context, x *executor.Executor, req *llmapi.ExecutionEventRequest, emit executor.Emit) (resp llmapi.ExecutionEventResponse) {
	defer func() {
		if p := recover(); p != nil {
			w.log.Error("panic while serving a request", "request", req.RequestID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp = llmapi.ErrorResponse(req, llmapi.NewError(http.StatusInternalServerError, llmapi.TypeServer, "internal_error", "",
				"The worker failed while serving this request."))
		}
	}()
	return x.Execute(ctx, req, emit)
}

// executor returns the executor, waiting for SetExecutor until ctx ends
// or the worker stops.
func (w *Worker) executor(ctx context.Context) (*executor.Executor, error) {
	if x := w.exec.Load(); x != nil {
		return x, nil
	}
	select {
	case <-w.execReady:
		return w.exec.Load(), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-w.stopping:
		return nil, errStopping
	}
}

// deadLetter moves a request delivered too often to its dead-letter name,
// answers it with an error and acknowledges it.
func (w *Worker) deadLetter(ctx context.Context, env events.Envelope, req llmapi.ExecutionEventRequest, op llmapi.Operation) {
	name := events.DeadLetterName(env.Name)
	payload, _ := json.Marshal(env) // an Envelope always encodes
	if _, err := w.publishRaw(ctx, events.Event{Name: name, CorrelationID: env.CorrelationID, Payload: payload}); err != nil {
		w.log.Error("poison request not dead-lettered; it will be redelivered", "event", env.ID, "deliveries", env.Deliveries, "err", err)
		return
	}
	w.countDeadLetter()
	w.log.Error("request delivered too many times: answered with an error and dead-lettered", "event", env.ID,
		"request", req.RequestID, "deliveries", env.Deliveries, "dead_letter", name)
	if req.RequestID != "" && op.Valid() {
		resp := llmapi.ErrorResponse(&req, llmapi.NewError(http.StatusInternalServerError, llmapi.TypeServer, "max_deliveries_exceeded", "",
			fmt.Sprintf("The request was delivered %d times without being answered; it was not run again.", env.Deliveries)))
		resp.Worker = w.Name()
		if err := w.publish(ctx, op.ResponseEvent(), req.RequestID, resp); err != nil {
			w.log.Warn("error response of a dead-lettered request not published", "request", req.RequestID, "err", err)
		}
	}
	w.ack(ctx, env)
}

// logUntrusted logs a refused request (the first one at warning level).
func (w *Worker) logUntrusted(env events.Envelope) {
	level := w.log.Debug
	if w.untrustedLogged.CompareAndSwap(false, true) {
		level = w.log.Warn
	}
	level("request not published by a service refused with 403 (further ones are logged at debug level)",
		"event", env.ID, "publisher", env.IdentityID, "identity_type", env.IdentityType)
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

// requestContext returns the context a request runs in (derived from
// base), bounded by its deadline and cancelled by its cancel event, and
// registers it as running. A request whose cancel event already arrived
// gets a cancelled context.
func (w *Worker) requestContext(base context.Context, req *llmapi.ExecutionEventRequest) (context.Context, context.CancelCauseFunc, time.Time) {
	now := time.Now()
	deadline := now.Add(w.cfg.Timeout)
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
	if w.cancelled.take(req.RequestID, now) {
		cancelCause(fmt.Errorf("%w before it started", ErrCancelled))
	}
	w.running[req.RequestID] = cancel
	w.mu.Unlock()
	return ctx, cancel, deadline
}

func (w *Worker) forget(id string) {
	w.mu.Lock()
	delete(w.running, id)
	w.mu.Unlock()
}

// publish publishes payload, retrying until ctx ends: transient failures
// with back-off, a refused token once the Events API accepts it again.
func (w *Worker) publish(ctx context.Context, name, correlationID string, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("encode %s: %w", name, err)
	}
	_, err = w.publishRaw(ctx, events.Event{Name: name, CorrelationID: correlationID, Payload: b})
	return err
}

func (w *Worker) publishRaw(ctx context.Context, ev events.Event) (events.Accepted, error) {
	var acc events.Accepted
	err := w.retry(ctx, func(cctx context.Context) (err error) {
		acc, err = w.cfg.Client.Publish(cctx, ev)
		return err
	})
	return acc, err
}

// ack acknowledges env, retrying like publish; a failure leaves it to be
// redelivered.
func (w *Worker) ack(ctx context.Context, env events.Envelope) {
	err := w.retry(ctx, func(cctx context.Context) error {
		_, err := w.cfg.Client.Ack(cctx, env.Name, w.cfg.Group, w.cfg.Consumer, env.ID)
		return err
	})
	if err != nil {
		w.log.Warn("ack failed; the request may be redelivered", "event", env.ID, "err", err)
	}
}

// retry calls call until it succeeds or ctx ends. Transient failures are
// retried with back-off; a refused token closes the auth gate, and the
// call is retried once the token is accepted again; other permanent
// failures end it. It gives up early when the worker stops while the token
// is refused.
func (w *Worker) retry(ctx context.Context, call func(context.Context) error) error {
	delay := 100 * time.Millisecond
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := call(cctx)
		cancel()
		if err == nil {
			w.accepted(true)
			return nil
		}
		if isRefusal(err) {
			w.refused(err)
			if werr := w.auth.wait(ctx, w.stopping); werr != nil {
				return fmt.Errorf("%w (gave up waiting for the token to be accepted: %w)", err, werr)
			}
			continue
		}
		if apiErr, ok := errors.AsType[*events.APIError](err); ok && apiErr.Permanent() {
			return err
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// chunkPublisher publishes a request's stream frames in order on its own
// goroutine, so a slow publish never stalls the model's event loop. Its
// publishes end at the request's deadline. A frame that cannot be
// published ends the stream: later frames are dropped (never a gap in the
// sequence), onLost stops the request, and the request is answered with
// an error.
type chunkPublisher struct {
	w      *Worker
	op     llmapi.Operation
	reqID  string
	ctx    context.Context
	cancel context.CancelFunc
	onLost func()

	mu      sync.Mutex
	queue   []json.RawMessage
	wake    chan struct{}
	closed  bool
	failed  bool
	done    chan struct{}
	started bool
	seq     int64
}

func newChunkPublisher(w *Worker, op llmapi.Operation, reqID string, deadline time.Time, onLost func()) *chunkPublisher {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	return &chunkPublisher{w: w, op: op, reqID: reqID, ctx: ctx, cancel: cancel, onLost: onLost,
		wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (c *chunkPublisher) emit(frame json.RawMessage) {
	c.mu.Lock()
	if c.failed || c.closed {
		c.mu.Unlock()
		return
	}
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
			if err := c.w.publish(c.ctx, c.op.ChunkEvent(), c.reqID, chunk); err != nil {
				c.w.log.Warn("chunk not published; ending the stream with an error", "request", c.reqID, "seq", chunk.Seq, "err", err)
				c.mu.Lock()
				c.failed, c.queue = true, nil
				c.mu.Unlock()
				c.onLost()
				return
			}
			c.seq++
		}
		if closed && len(batch) == 0 {
			return
		}
		if len(batch) == 0 {
			<-c.wake
		}
	}
}

// close waits until every emitted frame is published or the stream failed.
func (c *chunkPublisher) close() {
	defer c.cancel()
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

// lost reports whether a frame could not be published.
func (c *chunkPublisher) lost() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}
