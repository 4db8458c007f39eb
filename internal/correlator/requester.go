package correlator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Requester is the calling side of the bus.llm.* contract for callers on
// the bus itself (benchmarks and tests): it publishes request events and
// collects each one's chunks and its correlated response through one
// broadcast listener and a Correlator.
type Requester struct {
	client *events.Client
	corr   *Correlator

	ready  chan struct{}
	cancel context.CancelFunc
	done   chan error
}

// Result is what came back for one request.
type Result struct {
	// Response is the first response event.
	Response llmapi.ExecutionEventResponse
	// Chunks are the stream chunks in seq order.
	Chunks []llmapi.ExecutionEventChunk
	// Duplicates counts response events beyond the first seen until Do
	// returned (see Options.Settle).
	Duplicates int
}

// StartRequester listens to the response and chunk events of every
// operation on client. Stop it with Close.
func StartRequester(client *events.Client, opts Options) *Requester {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Requester{client: client, corr: New(opts), ready: make(chan struct{}), cancel: cancel, done: make(chan error, 1)}
	var names []string
	for _, op := range llmapi.AllOperations() {
		names = append(names, op.ResponseEvent())
		if !op.IsState() {
			names = append(names, op.ChunkEvent())
		}
	}
	var once sync.Once
	go func() {
		r.done <- client.Listen(ctx, events.ListenOptions{
			Names: names, Delivery: events.Broadcast,
			OnConnect: func() { once.Do(func() { close(r.ready) }) },
		}, func(_ context.Context, env events.Envelope) error {
			r.corr.Deliver(env) // untrusted events are counted by the correlator
			return nil
		})
	}()
	return r
}

// Correlator returns the requester's correlator (for its counters).
func (r *Requester) Correlator() *Correlator { return r.corr }

// WaitReady waits until the listener is connected.
func (r *Requester) WaitReady(ctx context.Context) error {
	select {
	case <-r.ready:
		return nil
	case err := <-r.done:
		r.done <- err
		return fmt.Errorf("correlator: listener stopped: %w", err)
	case <-ctx.Done():
		return fmt.Errorf("correlator: listener not connected: %w", ctx.Err())
	}
}

// NewRequestID returns a fresh request id: "req_" and 128 random bits in hex.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return "req_" + hex.EncodeToString(b[:])
}

// DoOptions tune one Do call.
type DoOptions struct {
	// OnChunk sees each chunk in seq order as it arrives.
	OnChunk func(llmapi.ExecutionEventChunk)
	// Settle keeps listening this long after the answer is complete, so
	// duplicate responses show up in Result.Duplicates.
	Settle time.Duration
}

// ErrorGrace is how long Do waits for chunks still in flight after an
// error response arrived for a stream that began.
const ErrorGrace = 100 * time.Millisecond

// Do publishes req (RequestID filled in when empty) and waits until its
// answer is complete or ctx ends. A call that failed because an event was
// malformed, or that reached no worker (NoWorkerAvailable), returns the
// failure as an *llmapi.APIError.
func (r *Requester) Do(ctx context.Context, req llmapi.ExecutionEventRequest, opts DoOptions) (*Result, error) {
	if req.RequestID == "" {
		req.RequestID = NewRequestID()
	}
	k, err := r.corr.Register(req.RequestID, req.Operation, req.Stream, llmapi.IncludeUsage(req.Body))
	if err != nil {
		return nil, err
	}
	defer r.corr.Forget(k)
	acc, err := r.client.PublishJSON(ctx, req.Operation.RequestEvent(), req.RequestID, req)
	if err != nil {
		return nil, fmt.Errorf("correlator: publish: %w", err)
	}
	if acc.Groups != nil && *acc.Groups == 0 {
		return nil, NoWorkerAvailable()
	}
	res := &Result{}
	var errResp bool
	collect := func() *llmapi.APIError {
		frames, resp, failure := k.Take()
		errResp = resp != nil && resp.IsError()
		for _, f := range frames {
			ch := llmapi.ExecutionEventChunk{RequestID: req.RequestID, Operation: req.Operation, Seq: int64(len(res.Chunks)), Data: f}
			res.Chunks = append(res.Chunks, ch)
			if opts.OnChunk != nil {
				opts.OnChunk(ch)
			}
		}
		return failure
	}
	var grace <-chan time.Time
wait:
	for !k.Complete() {
		select {
		case <-k.Notify():
			if failure := collect(); failure != nil {
				return nil, failure
			}
			if errResp && grace == nil {
				// A stream that ends with an error response may lack its
				// terminal frame: give chunks in flight a moment.
				t := time.NewTimer(ErrorGrace)
				defer t.Stop()
				grace = t.C
			}
		case <-grace:
			break wait
		case <-ctx.Done():
			return nil, fmt.Errorf("correlator: waiting for %s: %w", req.RequestID, ctx.Err())
		}
	}
	if failure := collect(); failure != nil {
		return nil, failure
	}
	if opts.Settle > 0 {
		t := time.NewTimer(opts.Settle)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	_, resp, _ := k.Take()
	if resp == nil {
		return nil, errors.New("correlator: complete without a response") // unreachable: Complete needs one
	}
	res.Response, res.Duplicates = *resp, k.Duplicates()
	return res, nil
}

// Close stops the listener.
func (r *Requester) Close() error {
	r.cancel()
	return <-r.done
}
