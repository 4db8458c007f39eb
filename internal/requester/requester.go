// Package requester is the calling side of the bus.llm.* contract for
// in-process callers (the self-test, benchmarks and tests): publish a request
// event and collect its chunks and its one correlated response, over one
// shared set of broadcast listeners.
package requester

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Requester publishes requests and waits for their answers.
type Requester struct {
	client *events.Client

	mu      sync.Mutex
	waiters map[string]*call

	ready  chan struct{}
	cancel context.CancelFunc
	done   chan error
}

// Result is what came back for one request.
type Result struct {
	Response llmapi.ExecutionEventResponse
	// Chunks in seq order.
	Chunks []llmapi.ExecutionEventChunk
	// Duplicates counts response events beyond the first.
	Duplicates int
}

type call struct {
	op           llmapi.Operation
	stream       bool
	includeUsage bool
	chunks       map[int64]llmapi.ExecutionEventChunk
	terminal     int64 // seq of the terminal frame, -1 until seen
	resp         *llmapi.ExecutionEventResponse
	dups         int
	onChunk      func(llmapi.ExecutionEventChunk)
	finished     chan struct{}
}

// complete: the response is in and, for a stream that began, every chunk
// up to the terminal frame.
func (c *call) complete() bool {
	if c.resp == nil {
		return false
	}
	if !c.stream || (len(c.chunks) == 0 && c.resp.IsError()) {
		return true
	}
	return c.terminal >= 0 && int64(len(c.chunks)) == c.terminal+1
}

// Start listens to the response and chunk events of every operation.
// Stop it with Close.
func Start(client *events.Client) *Requester {
	ctx, cancel := context.WithCancel(context.Background())
	r := &Requester{client: client, waiters: map[string]*call{}, ready: make(chan struct{}), cancel: cancel, done: make(chan error, 1)}
	var names []string
	for _, op := range llmapi.Operations() {
		names = append(names, op.ResponseEvent(), op.ChunkEvent())
	}
	var once sync.Once
	go func() {
		r.done <- client.Listen(ctx, events.ListenOptions{
			Names: names, Delivery: events.Broadcast,
			OnConnect: func() { once.Do(func() { close(r.ready) }) },
		}, r.handle)
	}()
	return r
}

// Ready is closed once the listener is connected.
func (r *Requester) Ready() <-chan struct{} { return r.ready }

// WaitReady waits for the listener.
func (r *Requester) WaitReady(ctx context.Context) error {
	select {
	case <-r.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("requester: listener not connected: %w", ctx.Err())
	}
}

func (r *Requester) handle(_ context.Context, env events.Envelope) error {
	_, kind, err := llmapi.ParseEventName(env.Name)
	if err != nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.waiters[env.CorrelationID]
	if c == nil {
		return nil // not ours, or late
	}
	switch kind {
	case llmapi.KindChunk:
		var ch llmapi.ExecutionEventChunk
		if json.Unmarshal(env.Payload, &ch) != nil {
			return nil
		}
		if _, dup := c.chunks[ch.Seq]; dup {
			return nil
		}
		c.chunks[ch.Seq] = ch
		if llmapi.IsTerminalFrame(c.op, ch.Data, c.includeUsage) {
			c.terminal = ch.Seq
		}
		if c.onChunk != nil {
			c.onChunk(ch)
		}
	case llmapi.KindResponse:
		if c.resp != nil {
			c.dups++
			return nil
		}
		var resp llmapi.ExecutionEventResponse
		if json.Unmarshal(env.Payload, &resp) != nil {
			return nil
		}
		c.resp = &resp
	}
	if c.complete() {
		select {
		case <-c.finished:
		default:
			close(c.finished)
		}
	}
	return nil
}

// NewRequestID returns a fresh request id.
func NewRequestID() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b) // never fails on supported platforms
	return "req_" + hex.EncodeToString(b)
}

// Options tune one Do call.
type Options struct {
	// OnChunk sees each chunk as it arrives (called with the requester's
	// lock held: keep it short).
	OnChunk func(llmapi.ExecutionEventChunk)
	// Settle keeps collecting after completion, so duplicates show up.
	Settle time.Duration
}

// Do publishes req (RequestID filled when empty) and waits for its response.
func (r *Requester) Do(ctx context.Context, req llmapi.ExecutionEventRequest, opts Options) (*Result, error) {
	if req.RequestID == "" {
		req.RequestID = NewRequestID()
	}
	c := &call{
		op: req.Operation, stream: req.Stream, includeUsage: llmapi.IncludeUsage(req.Body),
		chunks: map[int64]llmapi.ExecutionEventChunk{}, terminal: -1,
		finished: make(chan struct{}), onChunk: opts.OnChunk,
	}
	r.mu.Lock()
	r.waiters[req.RequestID] = c
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.waiters, req.RequestID)
		r.mu.Unlock()
	}()
	if _, err := r.client.PublishJSON(ctx, req.Operation.RequestEvent(), req.RequestID, req); err != nil {
		return nil, fmt.Errorf("requester: publish: %w", err)
	}
	select {
	case <-c.finished:
	case <-ctx.Done():
		return nil, fmt.Errorf("requester: waiting for %s: %w", req.RequestID, ctx.Err())
	}
	if opts.Settle > 0 {
		t := time.NewTimer(opts.Settle)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &Result{Response: *c.resp, Duplicates: c.dups}
	for _, ch := range c.chunks {
		res.Chunks = append(res.Chunks, ch)
	}
	sort.Slice(res.Chunks, func(i, j int) bool { return res.Chunks[i].Seq < res.Chunks[j].Seq })
	return res, nil
}

// Close stops the listener.
func (r *Requester) Close() error {
	r.cancel()
	return <-r.done
}
