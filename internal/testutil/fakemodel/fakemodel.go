// Package fakemodel is a scriptable fake of the OpenAI Responses API for
// tests that drive the real Codex binary without network access.
//
// A [Server] listens on 127.0.0.1 (httptest) and answers
// POST /v1/responses with a Server-Sent Events stream the way Codex expects
// (response.created, response.output_item.added, response.output_text.delta,
// response.output_item.done, response.completed with usage). Every request
// body is recorded so a test can assert what reached the model. What the
// server answers is scripted per test with [Reply] values: a fixed reply, a
// queue of replies, or a function of the request.
//
// [WriteCodexHome] writes a CODEX_HOME whose config.toml points Codex at the
// fake, and [CodexCommand] locates the codex binary for tests (or skips).
//
// It is test support: tests and tools/bus-bench import it, shipped commands never do.
package fakemodel

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// DefaultText is the reply text used when a test scripts nothing.
const DefaultText = "Hello from the fake model."

// Usage is the token usage the fake reports in response.completed.
type Usage struct {
	InputTokens     int64
	CachedTokens    int64
	OutputTokens    int64
	ReasoningTokens int64
	// TotalTokens defaults to InputTokens+OutputTokens when zero.
	TotalTokens int64
}

func (u Usage) total() int64 {
	if u.TotalTokens != 0 {
		return u.TotalTokens
	}
	return u.InputTokens + u.OutputTokens
}

// DefaultUsage returns the usage reported when a Reply leaves Usage zero.
func DefaultUsage() Usage {
	return Usage{InputTokens: 100, CachedTokens: 10, OutputTokens: 20, ReasoningTokens: 5, TotalTokens: 120}
}

// FunctionCall is a function_call output item the fake emits.
type FunctionCall struct {
	// Name is the tool name the model "calls".
	Name string
	// CallID is the call id; generated when empty.
	CallID string
	// Arguments is the JSON arguments string.
	Arguments string
	// Namespace, when set, is the namespace of a namespaced tool.
	Namespace string
}

// Reply scripts one model response.
type Reply struct {
	// Text is the assistant message text. When Text, Deltas, FunctionCalls
	// and ShellCommand are all empty, DefaultText is used.
	Text string
	// Deltas, if set, are streamed as the text deltas (their concatenation
	// is the message text, Text is then ignored). Otherwise Text is split
	// into several deltas so streaming is observable.
	Deltas []string
	// Usage is reported in response.completed; zero means DefaultUsage.
	Usage Usage

	// Status, when not 0 or 200, answers with this HTTP status and an
	// OpenAI error body instead of a stream.
	Status int
	// ErrorMessage, ErrorType and ErrorCode fill the OpenAI error body;
	// ErrorFields adds to it (e.g. "resets_at" of a usage limit).
	ErrorMessage string
	ErrorType    string
	ErrorCode    string
	ErrorFields  map[string]any
	// Headers are sent with the answer, stream or error (e.g. the
	// x-codex-primary-used-percent rate-limit headers of the ChatGPT
	// backend).
	Headers map[string]string

	// DelayBefore waits before answering.
	DelayBefore time.Duration
	// DelayBetween waits between deltas.
	DelayBetween time.Duration
	// Hold, when non-nil, pauses the stream right after the first text
	// delta (or after response.created when there is no text) until Hold
	// is closed, the request is cancelled or the server closes. The
	// response is then completed normally (unless the client is gone).
	Hold <-chan struct{}

	// FunctionCalls are emitted as function_call output items (several =
	// parallel calls), after the text message if there is one.
	FunctionCalls []FunctionCall
	// ShellCommand, if set, emits a call to whichever command-running tool
	// Codex offered in the request's tools (exec_command, shell_command or
	// shell), with arguments that run this shell command line.
	ShellCommand string

	// WebSearches are hosted web searches (web_search_call output items)
	// emitted before the message, with the events the Responses API
	// streams for them.
	WebSearches []WebSearch
	// Annotations are url_citation annotations of the message text.
	Annotations []Citation
}

// WebSearch is a web_search_call the fake emits: a search for Query, or,
// with URL, an open_page action.
type WebSearch struct {
	Query string
	URL   string
}

// Citation is a url_citation annotation over Text[Start:End] (character
// indices).
type Citation struct {
	Start, End int
	URL        string
	Title      string
}

// Request is one request the fake received.
type Request struct {
	// Method and Path of the HTTP request.
	Method string
	Path   string
	// Header holds the request headers.
	Header http.Header
	// Body is the raw request body.
	Body []byte
	// JSON is Body decoded into a generic map (nil when not JSON).
	JSON map[string]any
}

// Message is a role message in the request's input.
type Message struct {
	Role string
	// Text is the concatenation of the message's text content parts.
	Text string
}

// Input returns the request's "input" items.
func (r Request) Input() []map[string]any {
	raw, _ := r.JSON["input"].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, it := range raw {
		if m, ok := it.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

// Messages returns the role messages of the request's input, in order.
func (r Request) Messages() []Message {
	var out []Message
	for _, it := range r.Input() {
		if t, _ := it["type"].(string); t != "message" && t != "" {
			continue
		}
		role, _ := it["role"].(string)
		if role == "" {
			continue
		}
		out = append(out, Message{Role: role, Text: contentText(it["content"])})
	}
	return out
}

// LastUserText returns the text of the last user message ("" if none).
func (r Request) LastUserText() string {
	msgs := r.Messages()
	for i := len(msgs) - 1; i >= 0; i-- {
		if msgs[i].Role == "user" {
			return msgs[i].Text
		}
	}
	return ""
}

// ItemsOfType returns the input items whose "type" equals typ
// (e.g. "function_call", "function_call_output").
func (r Request) ItemsOfType(typ string) []map[string]any {
	var out []map[string]any
	for _, it := range r.Input() {
		if t, _ := it["type"].(string); t == typ {
			out = append(out, it)
		}
	}
	return out
}

// ToolNames returns the names of the tools offered in the request.
func (r Request) ToolNames() []string {
	var out []string
	for _, t := range r.tools() {
		if n := toolName(t); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// Tool returns the offered tool named name, or nil.
func (r Request) Tool(name string) map[string]any {
	for _, t := range r.tools() {
		if toolName(t) == name {
			return t
		}
	}
	return nil
}

// ToolOfType returns the first offered tool whose "type" is typ (e.g.
// "web_search", which has no name), or nil.
func (r Request) ToolOfType(typ string) map[string]any {
	for _, t := range r.tools() {
		if t["type"] == typ {
			return t
		}
	}
	return nil
}

// TextFormat returns the request's text.format object (the structured
// output / JSON schema constraint), or nil.
func (r Request) TextFormat() map[string]any {
	text, _ := r.JSON["text"].(map[string]any)
	f, _ := text["format"].(map[string]any)
	return f
}

func (r Request) tools() []map[string]any {
	raw, _ := r.JSON["tools"].([]any)
	out := make([]map[string]any, 0, len(raw))
	for _, t := range raw {
		if m, ok := t.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func toolName(t map[string]any) string {
	if n, ok := t["name"].(string); ok {
		return n
	}
	if f, ok := t["function"].(map[string]any); ok {
		n, _ := f["name"].(string)
		return n
	}
	return ""
}

func contentText(c any) string {
	switch v := c.(type) {
	case string:
		return v
	case []any:
		var b strings.Builder
		for _, p := range v {
			m, _ := p.(map[string]any)
			if s, ok := m["text"].(string); ok {
				b.WriteString(s)
			}
		}
		return b.String()
	}
	return ""
}

// Server is the fake Responses API server. Create it with [New].
type Server struct {
	srv  *httptest.Server
	done chan struct{}

	mu        sync.Mutex
	requests  []Request
	queue     []Reply
	handler   func(Request) Reply
	seq       int
	arrived   chan struct{} // closed and replaced on every request
	closeOnce sync.Once
}

// New starts a fake server on 127.0.0.1 and stops it when the test ends.
func New(t testing.TB) *Server {
	t.Helper()
	s := &Server{done: make(chan struct{}), arrived: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	t.Cleanup(s.Close)
	return s
}

// URL returns the API base URL, ending in /v1.
func (s *Server) URL() string { return s.srv.URL + "/v1" }

// Close releases held streams and stops the server. Safe to call twice.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.srv.CloseClientConnections()
		s.srv.Close()
	})
}

// SetReply makes every later request (not served by the queue) get r.
func (s *Server) SetReply(r Reply) {
	s.SetHandler(func(Request) Reply { return r })
}

// SetHandler makes every later request (not served by the queue) get the
// reply computed by fn. fn may be called concurrently.
func (s *Server) SetHandler(fn func(Request) Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.handler = fn
}

// Enqueue adds replies served in order to the next requests, before the
// handler set with SetReply/SetHandler applies.
func (s *Server) Enqueue(rs ...Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, rs...)
}

// Requests returns a copy of the requests to /v1/responses received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, len(s.requests))
	for _, r := range s.requests {
		if r.Path == "/v1/responses" {
			out = append(out, r)
		}
	}
	return out
}

// AllRequests returns a copy of every request received, any path.
func (s *Server) AllRequests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// WaitRequests blocks until at least n requests to /v1/responses have
// arrived or ctx ends, and returns them.
func (s *Server) WaitRequests(ctx context.Context, n int) ([]Request, error) {
	for {
		s.mu.Lock()
		ch := s.arrived
		s.mu.Unlock()
		if rs := s.Requests(); len(rs) >= n {
			return rs, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return s.Requests(), fmt.Errorf("fakemodel: waiting for %d requests: %w", n, ctx.Err())
		}
	}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	req := Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	if len(body) > 0 {
		var m map[string]any
		if json.Unmarshal(body, &m) == nil {
			req.JSON = m
		}
	}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	close(s.arrived)
	s.arrived = make(chan struct{})
	s.seq++
	seq := s.seq
	var reply Reply
	isResponses := r.Method == http.MethodPost && r.URL.Path == "/v1/responses"
	if isResponses {
		switch {
		case len(s.queue) > 0:
			reply = s.queue[0]
			s.queue = s.queue[1:]
		case s.handler != nil:
			h := s.handler
			s.mu.Unlock()
			reply = h(req)
			s.mu.Lock()
		}
	}
	s.mu.Unlock()

	if !isResponses {
		writeError(w, http.StatusNotFound, "not found: "+r.URL.Path, "invalid_request_error", "not_found", nil)
		return
	}
	if !s.sleep(r.Context(), reply.DelayBefore) {
		return
	}
	if reply.Status != 0 && reply.Status != http.StatusOK {
		msg := reply.ErrorMessage
		if msg == "" {
			msg = fmt.Sprintf("fake model error %d", reply.Status)
		}
		typ := reply.ErrorType
		if typ == "" {
			typ = defaultErrorType(reply.Status)
		}
		for k, v := range reply.Headers {
			w.Header().Set(k, v)
		}
		writeError(w, reply.Status, msg, typ, reply.ErrorCode, reply.ErrorFields)
		return
	}
	for k, v := range reply.Headers {
		w.Header().Set(k, v)
	}
	s.stream(w, r, req, reply, seq)
}

func defaultErrorType(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return "invalid_request_error"
	case status == http.StatusTooManyRequests:
		return "rate_limit_error"
	case status >= 500:
		return "server_error"
	}
	return "invalid_request_error"
}

func writeError(w http.ResponseWriter, status int, msg, typ, code string, extra map[string]any) {
	var c any
	if code != "" {
		c = code
	}
	obj := map[string]any{"message": msg, "type": typ, "code": c, "param": nil}
	for k, v := range extra {
		obj[k] = v
	}
	b, _ := json.Marshal(map[string]any{"error": obj})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// sleep waits d; false if the request or server ended first.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

func (s *Server) hold(ctx context.Context, ch <-chan struct{}) bool {
	if ch == nil {
		return true
	}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

type sse struct {
	w   http.ResponseWriter
	f   http.Flusher
	err error
}

func (e *sse) send(typ string, data map[string]any) {
	if e.err != nil {
		return
	}
	data["type"] = typ
	b, err := json.Marshal(data)
	if err != nil {
		e.err = err
		return
	}
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "event: %s\ndata: %s\n\n", typ, b)
	if _, err := e.w.Write(buf.Bytes()); err != nil {
		e.err = err
		return
	}
	if e.f != nil {
		e.f.Flush()
	}
}

func (s *Server) stream(w http.ResponseWriter, r *http.Request, req Request, reply Reply, seq int) {
	ctx := r.Context()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	f, _ := w.(http.Flusher)
	ev := &sse{w: w, f: f}

	respID := fmt.Sprintf("resp_%d", seq)
	model, _ := req.JSON["model"].(string)
	created := time.Now().Unix()
	base := func(status string, output []any) map[string]any {
		return map[string]any{
			"id": respID, "object": "response", "created_at": created,
			"status": status, "model": model, "output": output,
		}
	}
	ev.send("response.created", map[string]any{"response": base("in_progress", []any{})})

	deltas := reply.Deltas
	if len(deltas) == 0 {
		text := reply.Text
		if text == "" && len(reply.FunctionCalls) == 0 && reply.ShellCommand == "" {
			text = DefaultText
		}
		deltas = splitDeltas(text)
	}
	held := false
	var output []any
	idx := 0
	for i, w := range reply.WebSearches {
		id := fmt.Sprintf("ws_%d_%d", seq, i)
		action := map[string]any{"type": "search", "query": w.Query, "queries": []string{w.Query}}
		if w.URL != "" {
			action = map[string]any{"type": "open_page", "url": w.URL}
		}
		ev.send("response.output_item.added", map[string]any{"output_index": idx, "item": map[string]any{"type": "web_search_call", "id": id, "status": "in_progress"}})
		for _, phase := range []string{"in_progress", "searching", "completed"} {
			ev.send("response.web_search_call."+phase, map[string]any{"item_id": id, "output_index": idx})
		}
		item := map[string]any{"type": "web_search_call", "id": id, "status": "completed", "action": action}
		ev.send("response.output_item.done", map[string]any{"output_index": idx, "item": item})
		output = append(output, item)
		idx++
	}
	annotations := []any{}
	for _, a := range reply.Annotations {
		annotations = append(annotations, map[string]any{"type": "url_citation", "start_index": a.Start, "end_index": a.End, "url": a.URL, "title": a.Title})
	}
	if len(deltas) > 0 {
		msgID := fmt.Sprintf("msg_%d", seq)
		ev.send("response.output_item.added", map[string]any{"output_index": idx, "item": map[string]any{
			"type": "message", "id": msgID, "role": "assistant", "status": "in_progress", "content": []any{},
		}})
		ev.send("response.content_part.added", map[string]any{"item_id": msgID, "output_index": idx, "content_index": 0,
			"part": map[string]any{"type": "output_text", "text": "", "annotations": []any{}}})
		var full strings.Builder
		for i, d := range deltas {
			if i > 0 && !s.sleep(ctx, reply.DelayBetween) {
				return
			}
			full.WriteString(d)
			ev.send("response.output_text.delta", map[string]any{"item_id": msgID, "output_index": idx, "content_index": 0, "delta": d})
			if i == 0 && reply.Hold != nil {
				held = true
				if ev.err != nil || !s.hold(ctx, reply.Hold) {
					return
				}
			}
		}
		for i, a := range annotations {
			ev.send("response.output_text.annotation.added", map[string]any{"item_id": msgID, "output_index": idx, "content_index": 0, "annotation_index": i, "annotation": a})
		}
		item := map[string]any{
			"type": "message", "id": msgID, "role": "assistant", "status": "completed",
			"content": []any{map[string]any{"type": "output_text", "text": full.String(), "annotations": annotations}},
		}
		ev.send("response.output_text.done", map[string]any{"item_id": msgID, "output_index": idx, "content_index": 0, "text": full.String()})
		ev.send("response.output_item.done", map[string]any{"output_index": idx, "item": item})
		output = append(output, item)
		idx++
	}
	if reply.Hold != nil && !held && !s.hold(ctx, reply.Hold) {
		return
	}
	calls := append([]FunctionCall(nil), reply.FunctionCalls...)
	if reply.ShellCommand != "" {
		calls = append(calls, shellCall(req, reply.ShellCommand))
	}
	for i, c := range calls {
		callID := c.CallID
		if callID == "" {
			callID = fmt.Sprintf("call_%d_%d", seq, i)
		}
		itemID := fmt.Sprintf("fc_%d_%d", seq, i)
		added := map[string]any{"type": "function_call", "id": itemID, "call_id": callID, "name": c.Name, "arguments": "", "status": "in_progress"}
		item := map[string]any{
			"type": "function_call", "id": itemID, "call_id": callID, "name": c.Name, "arguments": c.Arguments, "status": "completed",
		}
		if c.Namespace != "" {
			added["namespace"], item["namespace"] = c.Namespace, c.Namespace
		}
		ev.send("response.output_item.added", map[string]any{"output_index": idx, "item": added})
		ev.send("response.function_call_arguments.done", map[string]any{"item_id": itemID, "output_index": idx, "arguments": c.Arguments})
		ev.send("response.output_item.done", map[string]any{"output_index": idx, "item": item})
		output = append(output, item)
		idx++
	}
	u := reply.Usage
	if u == (Usage{}) {
		u = DefaultUsage()
	}
	done := base("completed", output)
	done["usage"] = map[string]any{
		"input_tokens":          u.InputTokens,
		"input_tokens_details":  map[string]any{"cached_tokens": u.CachedTokens},
		"output_tokens":         u.OutputTokens,
		"output_tokens_details": map[string]any{"reasoning_tokens": u.ReasoningTokens},
		"total_tokens":          u.total(),
	}
	ev.send("response.completed", map[string]any{"response": done})
}

// splitDeltas cuts text into up to 4 pieces (at least one per rune group).
func splitDeltas(text string) []string {
	if text == "" {
		return nil
	}
	runes := []rune(text)
	n := 4
	if len(runes) < n {
		n = len(runes)
	}
	size := (len(runes) + n - 1) / n
	var out []string
	for i := 0; i < len(runes); i += size {
		j := min(i+size, len(runes))
		out = append(out, string(runes[i:j]))
	}
	return out
}

// shellCall builds a call to the command tool offered in req.
func shellCall(req Request, cmd string) FunctionCall {
	names := req.ToolNames()
	has := func(n string) bool {
		for _, x := range names {
			if x == n {
				return true
			}
		}
		return false
	}
	var name string
	var args any
	switch {
	case has("exec_command"):
		name, args = "exec_command", map[string]any{"cmd": cmd}
	case has("shell_command"):
		name, args = "shell_command", map[string]any{"command": cmd}
	default:
		name, args = "shell", map[string]any{"command": []string{"bash", "-lc", cmd}}
	}
	b, _ := json.Marshal(args)
	return FunctionCall{Name: name, Arguments: string(b)}
}
