// Package correlator matches bus.llm.* response and chunk events to the
// requests waiting for them. It is the one place that decides whether an
// event belongs to a waiting request, whether it is well formed, and when a
// request's answer is complete; the REST front door and every in-process
// caller (the benchmarks and tests, through [Requester]) use it.
//
// Rules, the same for every caller:
//
//   - an event belongs to the call registered under its correlation id (or,
//     without one, its payload's requestId); a payload requestId or
//     operation that contradicts the event makes it malformed;
//   - only the first response counts; later ones are duplicates;
//   - chunks are numbered from 0 without gaps; a duplicate or already
//     delivered seq is dropped; a negative seq, a payload that is not a
//     chunk or data that is not a JSON object is malformed; chunks of a
//     request that did not ask to stream are dropped;
//   - only events published by a service count (the envelope's
//     identity_type, stamped by the Events API): any other publisher could
//     forge an answer, so its events are dropped and counted as untrusted;
//   - a malformed event fails the call with a 502 in OpenAI's error shape;
//   - buffers are bounded: at most MaxOutOfOrder chunks may wait for a
//     missing seq, and at most MaxBufferedBytes of chunk data may wait to
//     be taken by a slow reader, else the call fails with a clear error.
//
// It imports only pkg/llmapi and pkg/events.
package correlator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Defaults of Options.
const (
	// DefaultMaxOutOfOrder bounds the chunks held while an earlier seq is
	// missing.
	DefaultMaxOutOfOrder = 4096
	// DefaultMaxBufferedBytes bounds the chunk data a call holds before
	// its reader takes it (32 MiB: a long answer to a slow reader).
	DefaultMaxBufferedBytes = 32 << 20
)

// Options bound a Correlator's buffers and say whom it trusts.
type Options struct {
	// MaxOutOfOrder is DefaultMaxOutOfOrder when 0.
	MaxOutOfOrder int
	// MaxBufferedBytes is DefaultMaxBufferedBytes when 0.
	MaxBufferedBytes int64
	// TrustUnstamped accepts events without an identity_type, for an
	// Events API that does not stamp publishers (the bus is then not a
	// trust boundary). By default they are dropped as untrusted.
	TrustUnstamped bool
}

// ErrDuplicateID is returned by Register for an id that is already waiting.
var ErrDuplicateID = errors.New("correlator: a request with this id is already waiting")

// Correlator holds the calls in flight. Its methods are safe for
// concurrent use; Deliver never blocks on a reader.
type Correlator struct {
	opts Options

	mu    sync.Mutex
	calls map[string]*Call

	dropped   atomic.Int64
	malformed atomic.Int64
	untrusted atomic.Int64
}

// New returns an empty Correlator.
func New(opts Options) *Correlator {
	if opts.MaxOutOfOrder <= 0 {
		opts.MaxOutOfOrder = DefaultMaxOutOfOrder
	}
	if opts.MaxBufferedBytes <= 0 {
		opts.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	return &Correlator{opts: opts, calls: map[string]*Call{}}
}

// Register starts waiting for the answer to request id of op. stream says
// whether chunks are expected; includeUsage whether the stream ends with a
// usage frame (stream_options.include_usage). Release the call with Forget.
func (c *Correlator) Register(id string, op llmapi.Operation, stream, includeUsage bool) (*Call, error) {
	k := &Call{
		ID: id, Op: op, Stream: stream, includeUsage: includeUsage, opts: c.opts,
		notify: make(chan struct{}, 1), pending: map[int64]json.RawMessage{}, terminal: -1,
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, dup := c.calls[id]; dup {
		return nil, ErrDuplicateID
	}
	c.calls[id] = k
	return k, nil
}

// Forget stops waiting for k; later events for it are dropped.
func (c *Correlator) Forget(k *Call) {
	c.mu.Lock()
	if c.calls[k.ID] == k {
		delete(c.calls, k.ID)
	}
	c.mu.Unlock()
}

// Len is the number of calls waiting.
func (c *Correlator) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.calls)
}

// Dropped counts events nobody waited for: late, duplicate or foreign.
func (c *Correlator) Dropped() int64 { return c.dropped.Load() }

// Malformed counts events that failed a call because they were malformed.
func (c *Correlator) Malformed() int64 { return c.malformed.Load() }

// Untrusted counts events dropped because no service published them (they
// are counted in Dropped too).
func (c *Correlator) Untrusted() int64 { return c.untrusted.Load() }

// FromService reports whether env was published by a service principal
// (or carries no stamp and opts trusts unstamped events).
func (o Options) FromService(env events.Envelope) bool {
	return env.FromService(o.TrustUnstamped)
}

// NoWorkerAvailable is the answer to a request that reached no consumer
// group: no worker is subscribed, so nobody will ever answer it.
func NoWorkerAvailable() *llmapi.APIError {
	return llmapi.NewError(http.StatusServiceUnavailable, llmapi.TypeUnavailable, "no_worker_available", "",
		"No execution worker is available to take the request; retry shortly.")
}

func (c *Correlator) lookup(id string) *Call {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[id]
}

// Outcome says what Deliver did with an event.
type Outcome struct {
	// Delivered is true when the event became part of a call's answer.
	Delivered bool
	// RequestID is the call the event was addressed to ("" if unknown).
	RequestID string
	// Problem, when set, says why the event was malformed (the call then
	// failed with a 502).
	Problem string
	// Untrusted is true when the event was dropped because no service
	// published it.
	Untrusted bool
}

// Deliver hands one bus.llm.*.response or .chunk event to the call waiting
// for it.
func (c *Correlator) Deliver(env events.Envelope) Outcome {
	op, kind, err := llmapi.ParseEventName(env.Name)
	out := Outcome{RequestID: env.CorrelationID}
	if err != nil || (kind != llmapi.KindResponse && kind != llmapi.KindChunk) {
		c.dropped.Add(1)
		return out
	}
	if !c.opts.FromService(env) {
		c.dropped.Add(1)
		c.untrusted.Add(1)
		out.Untrusted = true
		return out
	}
	var head struct {
		RequestID string           `json:"requestId"`
		Operation llmapi.Operation `json:"operation"`
	}
	jerr := json.Unmarshal(env.Payload, &head)
	if out.RequestID == "" {
		out.RequestID = head.RequestID
	}
	k := c.lookup(out.RequestID)
	if k == nil || k.Op != op {
		c.dropped.Add(1)
		return out
	}
	switch {
	case jerr != nil:
		out.Problem = "payload is not a " + string(kind) + " object"
	case head.RequestID != "" && head.RequestID != out.RequestID:
		out.Problem = fmt.Sprintf("payload requestId %q does not match correlationId %q", head.RequestID, out.RequestID)
	case head.Operation != "" && head.Operation != op:
		out.Problem = fmt.Sprintf("payload operation %q does not match event %s", head.Operation, env.Name)
	}
	if kind == llmapi.KindResponse {
		out.Delivered = c.response(k, env, &out)
	} else {
		out.Delivered = c.chunk(k, env, &out)
	}
	if !out.Delivered && out.Problem == "" {
		c.dropped.Add(1)
	}
	return out
}

func (c *Correlator) response(k *Call, env events.Envelope, out *Outcome) bool {
	var resp llmapi.ExecutionEventResponse
	if out.Problem == "" {
		switch err := json.Unmarshal(env.Payload, &resp); {
		case err != nil:
			out.Problem = "payload is not a response object"
		case resp.StatusCode < 200 || resp.StatusCode > 599:
			out.Problem = "statusCode is not an HTTP status"
		case !json.Valid(resp.Body):
			out.Problem = "body is not JSON"
		}
	}
	if out.Problem != "" {
		return c.fail(k, badGateway("malformed_response", "The execution worker sent a malformed response."), false)
	}
	return k.offerResponse(&resp)
}

func (c *Correlator) chunk(k *Call, env events.Envelope, out *Outcome) bool {
	var ch llmapi.ExecutionEventChunk
	var data []byte
	if out.Problem == "" {
		err := json.Unmarshal(env.Payload, &ch)
		data = bytes.TrimSpace(ch.Data)
		switch {
		case err != nil:
			out.Problem = "payload is not a chunk object"
		case ch.Seq < 0:
			out.Problem = "seq is negative"
		case len(data) == 0 || data[0] != '{' || !json.Valid(data):
			out.Problem = "data is not a JSON object"
		}
	}
	if out.Problem != "" {
		return c.fail(k, badGateway("malformed_chunk", "The execution worker sent a malformed stream chunk."), true)
	}
	return k.offerChunk(ch.Seq, data)
}

func (c *Correlator) fail(k *Call, e *llmapi.APIError, chunk bool) bool {
	c.malformed.Add(1)
	return k.fail(e, chunk)
}

func badGateway(code, msg string) *llmapi.APIError {
	return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, code, "", msg)
}

// Call is one request waiting for its answer. The correlator fills it
// (never blocking); its reader drains it with Take after each Notify.
type Call struct {
	// ID, Op and Stream are what the call was registered with.
	ID     string
	Op     llmapi.Operation
	Stream bool

	includeUsage bool
	opts         Options
	// notify has room for one wake-up; a full channel already means "look".
	notify chan struct{}

	mu       sync.Mutex
	resp     *llmapi.ExecutionEventResponse // the first response, then fixed
	failure  *llmapi.APIError               // the answer became impossible
	pending  map[int64]json.RawMessage      // chunks not taken yet, by seq
	buffered int64                          // bytes in pending
	next     int64                          // the next seq Take hands out
	terminal int64                          // seq of the terminal frame, -1 until seen
	dups     int                            // responses beyond the first
}

// Notify receives a value whenever the call may have something new.
func (k *Call) Notify() <-chan struct{} { return k.notify }

func (k *Call) wake() {
	select {
	case k.notify <- struct{}{}:
	default:
	}
}

func (k *Call) offerResponse(r *llmapi.ExecutionEventResponse) bool {
	k.mu.Lock()
	if k.resp != nil || k.failure != nil {
		k.dups++
		k.mu.Unlock()
		return false
	}
	k.resp = r
	k.mu.Unlock()
	k.wake()
	return true
}

func (k *Call) offerChunk(seq int64, data json.RawMessage) bool {
	k.mu.Lock()
	if !k.Stream || seq < k.next || k.pending[seq] != nil || k.failure != nil {
		k.mu.Unlock()
		return false
	}
	switch {
	case seq > k.next && k.outOfOrder() >= k.opts.MaxOutOfOrder:
		k.failure = badGateway("malformed_chunk", "The execution worker sent too many out-of-order stream chunks.")
	case k.buffered+int64(len(data)) > k.opts.MaxBufferedBytes:
		k.failure = llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, "stream_buffer_exceeded", "",
			fmt.Sprintf("The stream was read too slowly: more than %d bytes of it were waiting to be sent.", k.opts.MaxBufferedBytes))
	default:
		k.pending[seq] = data
		k.buffered += int64(len(data))
		if llmapi.IsTerminalFrame(k.Op, data, k.includeUsage) && (k.terminal < 0 || seq < k.terminal) {
			k.terminal = seq
		}
	}
	k.mu.Unlock()
	k.wake()
	return true
}

// outOfOrder counts pending chunks past a gap. Caller holds k.mu.
func (k *Call) outOfOrder() int {
	n := 0
	for s := range k.pending {
		if s > k.next {
			n++
		}
	}
	return n
}

// fail records a failure unless the answer is already settled; chunk
// failures (a gap that can never close) override a response that is
// waiting for chunks.
func (k *Call) fail(e *llmapi.APIError, chunk bool) bool {
	k.mu.Lock()
	if k.failure != nil || (k.resp != nil && !(chunk && k.Stream)) || (chunk && !k.Stream) {
		k.mu.Unlock()
		return false
	}
	k.failure = e
	k.mu.Unlock()
	k.wake()
	return true
}

// Take removes the chunks that are next in seq order and returns them with
// the response and failure seen so far.
func (k *Call) Take() (frames []json.RawMessage, resp *llmapi.ExecutionEventResponse, failure *llmapi.APIError) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for {
		f, ok := k.pending[k.next]
		if !ok {
			break
		}
		delete(k.pending, k.next)
		k.buffered -= int64(len(f))
		frames = append(frames, f)
		k.next++
	}
	return frames, k.resp, k.failure
}

// Complete reports whether the answer is whole: the call failed, or the
// response is in and — for a stream that began — every chunk up to the
// terminal frame has been taken.
func (k *Call) Complete() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	switch {
	case k.failure != nil:
		return true
	case k.resp == nil:
		return false
	case !k.Stream:
		return true
	case k.next == 0 && len(k.pending) == 0 && k.resp.IsError():
		return true // failed before streaming anything
	}
	return k.terminal >= 0 && k.next > k.terminal
}

// Duplicates counts response events beyond the first.
func (k *Call) Duplicates() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.dups
}
