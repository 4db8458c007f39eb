package frontdoor

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// waiter is one in-flight request waiting for its chunk and response
// events. The listeners fill it (never blocking); the request's handler
// drains it.
type waiter struct {
	id     string
	op     llmapi.Operation
	stream bool
	// notify has room for one wake-up; a full channel already means "look".
	notify chan struct{}

	mu      sync.Mutex
	resp    *llmapi.ExecutionEventResponse // the first response, then fixed
	failure *llmapi.APIError               // a malformed event made the answer impossible
	pending map[int64]json.RawMessage      // chunks not written yet, by seq
	next    int64                          // the next seq the handler writes
}

func newWaiter(id string, op llmapi.Operation, stream bool) *waiter {
	return &waiter{id: id, op: op, stream: stream, notify: make(chan struct{}, 1), pending: map[int64]json.RawMessage{}}
}

func (w *waiter) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// offerResponse records the first response; it reports false for a
// duplicate.
func (w *waiter) offerResponse(r *llmapi.ExecutionEventResponse) bool {
	w.mu.Lock()
	if w.resp != nil || w.failure != nil {
		w.mu.Unlock()
		return false
	}
	w.resp = r
	w.mu.Unlock()
	w.wake()
	return true
}

// offerChunk buffers a chunk; it reports false for a duplicate or a chunk
// of a non-streaming request.
func (w *waiter) offerChunk(seq int64, data json.RawMessage) bool {
	w.mu.Lock()
	if !w.stream || seq < w.next || w.pending[seq] != nil || w.failure != nil {
		w.mu.Unlock()
		return false
	}
	if len(w.pending) >= maxPendingChunks {
		w.failure = badGateway("malformed_chunk", "The execution worker sent too many out-of-order stream chunks.")
	} else {
		w.pending[seq] = data
	}
	w.mu.Unlock()
	w.wake()
	return true
}

// fail records a failure unless the answer is already settled; chunk
// failures (a gap that can never close) override a response that is
// waiting for chunks.
func (w *waiter) fail(e *llmapi.APIError, chunk bool) bool {
	w.mu.Lock()
	if w.failure != nil || (w.resp != nil && !(chunk && w.stream)) || (chunk && !w.stream) {
		w.mu.Unlock()
		return false
	}
	w.failure = e
	w.mu.Unlock()
	w.wake()
	return true
}

// take removes the chunks that are next in seq order and returns them with
// the response and failure seen so far.
func (w *waiter) take() (frames []json.RawMessage, resp *llmapi.ExecutionEventResponse, failure *llmapi.APIError) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		f, ok := w.pending[w.next]
		if !ok {
			break
		}
		delete(w.pending, w.next)
		frames = append(frames, f)
		w.next++
	}
	return frames, w.resp, w.failure
}

// registry maps request ids to waiters.
type registry struct {
	mu sync.Mutex
	m  map[string]*waiter
}

func (r *registry) add(w *waiter) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.m[w.id]; dup {
		return false
	}
	r.m[w.id] = w
	return true
}

func (r *registry) remove(id string) {
	r.mu.Lock()
	delete(r.m, id)
	r.mu.Unlock()
}

func (r *registry) get(id string) *waiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[id]
}

func (r *registry) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

// dispatch hands one response or chunk event to its waiter. It never
// blocks on a request handler; events no one waits for are dropped.
func (s *Server) dispatch(ln *listener, env events.Envelope) {
	var (
		id        string
		delivered bool
		malformed string
	)
	switch ln.kind {
	case llmapi.KindResponse:
		var resp llmapi.ExecutionEventResponse
		err := json.Unmarshal(env.Payload, &resp)
		id = pick(resp.RequestID, env.CorrelationID)
		w := s.waiters.get(id)
		if w == nil || w.op != ln.op {
			break
		}
		switch {
		case err != nil:
			malformed = "payload is not a response object"
		case resp.StatusCode < 200 || resp.StatusCode > 599:
			malformed = "statusCode is not an HTTP status"
		case !json.Valid(resp.Body):
			malformed = "body is not JSON"
		}
		if malformed != "" {
			delivered = w.fail(badGateway("malformed_response", "The execution worker sent a malformed response."), false)
			break
		}
		delivered = w.offerResponse(&resp)
	case llmapi.KindChunk:
		var chunk llmapi.ExecutionEventChunk
		err := json.Unmarshal(env.Payload, &chunk)
		id = pick(chunk.RequestID, env.CorrelationID)
		w := s.waiters.get(id)
		if w == nil || w.op != ln.op {
			break
		}
		data := bytes.TrimSpace(chunk.Data)
		switch {
		case err != nil:
			malformed = "payload is not a chunk object"
		case chunk.Seq < 0:
			malformed = "seq is negative"
		case len(data) == 0 || data[0] != '{' || !json.Valid(data):
			malformed = "data is not a JSON object"
		}
		if malformed != "" {
			delivered = w.fail(badGateway("malformed_chunk", "The execution worker sent a malformed stream chunk."), true)
			break
		}
		delivered = w.offerChunk(chunk.Seq, data)
	}
	if malformed != "" {
		s.log.Warn("malformed event", "name", env.Name, "id", env.ID, "request_id", id, "problem", malformed)
	}
	if !delivered {
		s.dropped.Add(1)
		s.log.Debug("event dropped: no request waits for it", "name", env.Name, "id", env.ID, "request_id", id)
	}
}

func pick(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func badGateway(code, msg string) *llmapi.APIError {
	return llmapi.NewError(http.StatusBadGateway, llmapi.TypeServer, code, "", msg)
}
