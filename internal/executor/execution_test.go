package executor_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// recorder wraps a provider (static by default) and records every request.
type recorder struct {
	mu   sync.Mutex
	reqs []turn.Request
	caps turn.Capabilities
	run  func(ctx context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error)
}

func (r *recorder) Run(ctx context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, *req)
	r.mu.Unlock()
	if r.run != nil {
		return r.run(ctx, req, sink)
	}
	return static.New().Run(ctx, req, sink)
}

func (r *recorder) Capabilities() turn.Capabilities { return r.caps }
func (r *recorder) Close() error                    { return nil }

func (r *recorder) last(t *testing.T) turn.Request {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) == 0 {
		t.Fatal("provider was not called")
	}
	return r.reqs[len(r.reqs)-1]
}

func (r *recorder) calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

var quiet = slog.New(slog.DiscardHandler)

type call struct {
	op       llmapi.Operation
	identity string
	body     string
	stream   bool
}

var seq int

func run(t *testing.T, x *executor.Executor, c call) (llmapi.ExecutionEventResponse, []json.RawMessage) {
	t.Helper()
	return runCtx(t, context.Background(), x, c)
}

func runCtx(t *testing.T, ctx context.Context, x *executor.Executor, c call) (llmapi.ExecutionEventResponse, []json.RawMessage) {
	t.Helper()
	seq++
	req := &llmapi.ExecutionEventRequest{
		RequestID: fmt.Sprintf("req_%d", seq), Operation: c.op, Model: "m", Stream: c.stream,
		IdentityID: c.identity, Body: json.RawMessage(c.body),
	}
	var frames []json.RawMessage
	resp := x.Execute(ctx, req, func(f json.RawMessage) { frames = append(frames, f) })
	if resp.RequestID != req.RequestID || resp.Operation != req.Operation {
		t.Errorf("response names %s/%s, want %s/%s", resp.RequestID, resp.Operation, req.RequestID, req.Operation)
	}
	return resp, frames
}

func wantOK(t *testing.T, resp llmapi.ExecutionEventResponse) map[string]any {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, resp.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(resp.Body, &m); err != nil {
		t.Fatalf("body %s: %v", resp.Body, err)
	}
	return m
}

func wantError(t *testing.T, resp llmapi.ExecutionEventResponse, status int, code, param string) llmapi.ErrorObject {
	t.Helper()
	obj, ok := llmapi.ParseErrorBody(resp.Body)
	if resp.StatusCode != status || !ok {
		t.Fatalf("status %d body %s, want %d", resp.StatusCode, resp.Body, status)
	}
	gotCode, gotParam := "", ""
	if obj.Code != nil {
		gotCode = *obj.Code
	}
	if obj.Param != nil {
		gotParam = *obj.Param
	}
	if gotCode != code || gotParam != param {
		t.Errorf("code %q param %q, want %q %q (%s)", gotCode, gotParam, code, param, obj.Message)
	}
	return obj
}

func userText(s string) turn.Item {
	return turn.Item{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: s}}}
}

func assistantText(s string) turn.Item {
	return turn.Item{Type: turn.ItemMessage, Role: turn.RoleAssistant, Content: []turn.Part{{Type: turn.PartText, Text: s}}}
}

// sameItems compares items without their ids (stored items get random
// ids; the item id tests check those).
func sameItems(t *testing.T, got, want []turn.Item) {
	t.Helper()
	got = slices.Clone(got)
	for i := range got {
		got[i].ID = ""
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("input\n got %s\nwant %s", g, w)
	}
}

func TestStoredResponses(t *testing.T) {
	p := &recorder{}
	x := &executor.Executor{Provider: p, Store: respstore.NewMemory(), Logger: quiet}
	responses := func(identity, body string) llmapi.ExecutionEventResponse {
		resp, _ := run(t, x, call{op: llmapi.OpResponses, identity: identity, body: body})
		return resp
	}
	state := func(op llmapi.Operation, identity, id string) llmapi.ExecutionEventResponse {
		resp, _ := run(t, x, call{op: op, identity: identity, body: `{"response_id":"` + id + `"}`})
		return resp
	}

	first := responses("alice", `{"model":"m","input":"first","instructions":"old rules"}`)
	firstObj := wantOK(t, first)
	id1, _ := firstObj["id"].(string)
	if !strings.HasPrefix(id1, "resp_") || firstObj["store"] != true || firstObj["previous_response_id"] != nil {
		t.Fatalf("first response %s", first.Body)
	}

	second := responses("alice", `{"model":"m","input":"second","instructions":"new rules","previous_response_id":"`+id1+`"}`)
	secondObj := wantOK(t, second)
	got := p.last(t)
	sameItems(t, got.Input, []turn.Item{userText("first"), assistantText("Echo: first"), userText("second")})
	if len(got.Instructions) != 1 || got.Instructions[0] != "new rules" {
		t.Errorf("instructions %q: the earlier instructions must not be carried over", got.Instructions)
	}
	if secondObj["previous_response_id"] != id1 || secondObj["instructions"] != "new rules" {
		t.Errorf("second response %s", second.Body)
	}
	id2, _ := secondObj["id"].(string)

	// A continuation of a continuation carries the whole history.
	wantOK(t, responses("alice", `{"model":"m","input":[{"role":"user","content":"third"}],"previous_response_id":"`+id2+`"}`))
	sameItems(t, p.last(t).Input, []turn.Item{
		userText("first"), assistantText("Echo: first"), userText("second"), assistantText("Echo: second"), userText("third"),
	})
	if len(p.last(t).Instructions) != 0 {
		t.Errorf("instructions %q carried over", p.last(t).Instructions)
	}

	// Unknown ids and other identities' ids are not found, before the provider runs.
	calls := p.calls()
	for _, tc := range []struct{ identity, id string }{{"alice", "resp_unknown"}, {"bob", id1}, {"", id1}} {
		resp := responses(tc.identity, `{"model":"m","input":"x","previous_response_id":"`+tc.id+`"}`)
		obj := wantError(t, resp, http.StatusNotFound, "previous_response_not_found", "previous_response_id")
		if !strings.Contains(obj.Message, tc.id) {
			t.Errorf("message %q does not name %s", obj.Message, tc.id)
		}
	}
	if p.calls() != calls {
		t.Error("provider ran for a request whose previous response was not found")
	}

	// store: false keeps nothing.
	unstored := wantOK(t, responses("alice", `{"model":"m","input":"secret","store":false}`))
	idU, _ := unstored["id"].(string)
	if unstored["store"] != false {
		t.Errorf("store echo %v", unstored["store"])
	}
	wantError(t, state(llmapi.OpResponsesRetrieve, "alice", idU), http.StatusNotFound, "response_not_found", "")
	wantError(t, responses("alice", `{"model":"m","input":"x","previous_response_id":"`+idU+`"}`), http.StatusNotFound, "previous_response_not_found", "previous_response_id")

	// Retrieve returns the stored object, to its owner only.
	got1 := state(llmapi.OpResponsesRetrieve, "alice", id1)
	wantOK(t, got1)
	if string(got1.Body) != string(first.Body) {
		t.Errorf("retrieved %s\nwant      %s", got1.Body, first.Body)
	}
	if got1.Usage != nil {
		t.Errorf("retrieve carries usage %+v", got1.Usage)
	}
	wantError(t, state(llmapi.OpResponsesRetrieve, "bob", id1), http.StatusNotFound, "response_not_found", "")
	wantError(t, state(llmapi.OpResponsesDelete, "bob", id1), http.StatusNotFound, "response_not_found", "")

	// Delete, then it is gone for retrieve, delete and continuation.
	del := state(llmapi.OpResponsesDelete, "alice", id1)
	delObj := wantOK(t, del)
	if delObj["id"] != id1 || delObj["object"] != "response.deleted" || delObj["deleted"] != true || len(delObj) != 3 {
		t.Errorf("delete body %s", del.Body)
	}
	wantError(t, state(llmapi.OpResponsesRetrieve, "alice", id1), http.StatusNotFound, "response_not_found", "")
	wantError(t, state(llmapi.OpResponsesDelete, "alice", id1), http.StatusNotFound, "response_not_found", "")
	wantError(t, responses("alice", `{"model":"m","input":"x","previous_response_id":"`+id1+`"}`), http.StatusNotFound, "previous_response_not_found", "previous_response_id")
	// The later response is unaffected.
	wantOK(t, state(llmapi.OpResponsesRetrieve, "alice", id2))
}

// TestContinuationsAreLinks: a stored continuation holds a link and its
// own items only; the history is read through the links, survives the
// deletion of an earlier response, and is bounded.
func TestContinuationsAreLinks(t *testing.T) {
	p := &recorder{}
	store := respstore.NewMemory(respstore.WithChainLimits(3, 0))
	x := &executor.Executor{Provider: p, Store: store, Logger: quiet}
	next := func(prev, input string) (string, llmapi.ExecutionEventResponse) {
		t.Helper()
		body := `{"model":"m","input":"` + input + `"`
		if prev != "" {
			body += `,"previous_response_id":"` + prev + `"`
		}
		resp, _ := run(t, x, call{op: llmapi.OpResponses, identity: "alice", body: body + "}"})
		if resp.StatusCode != http.StatusOK {
			return "", resp
		}
		return wantOK(t, resp)["id"].(string), resp
	}
	id1, _ := next("", "one")
	id2, _ := next(id1, "two")
	id3, _ := next(id2, "three")
	rec, err := store.Get(context.Background(), "alice", id3)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Previous != id2 {
		t.Errorf("previous %q, want %q", rec.Previous, id2)
	}
	sameItems(t, rec.Items, []turn.Item{userText("three"), assistantText("Echo: three")})

	// Deleting the first response hides it, not the later conversation.
	if resp, _ := run(t, x, call{op: llmapi.OpResponsesDelete, identity: "alice", body: `{"response_id":"` + id1 + `"}`}); resp.StatusCode != http.StatusOK {
		t.Fatalf("delete: %d %s", resp.StatusCode, resp.Body)
	}
	id4, _ := next(id3, "four")
	sameItems(t, p.last(t).Input, []turn.Item{userText("one"), assistantText("Echo: one"), userText("two"), assistantText("Echo: two"),
		userText("three"), assistantText("Echo: three"), userText("four")})

	// Past the depth bound a conversation cannot be continued.
	calls := p.calls()
	_, resp := next(id4, "five")
	wantError(t, resp, http.StatusBadRequest, "conversation_too_long", "previous_response_id")
	if p.calls() != calls {
		t.Error("the provider ran for a conversation over the bound")
	}
}

func TestStoredToolCallsContinue(t *testing.T) {
	p := &recorder{caps: turn.Capabilities{Tools: true}}
	p.run = func(_ context.Context, req *turn.Request, _ turn.Sink) (*turn.Result, error) {
		if len(p.reqs) == 1 {
			return &turn.Result{ToolCalls: []turn.ToolCall{{ID: "call_1", Name: "get", Arguments: `{"q":1}`}}, Finish: turn.FinishToolCalls}, nil
		}
		return &turn.Result{Text: "done", Finish: turn.FinishStop}, nil
	}
	x := &executor.Executor{Provider: p, Store: respstore.NewMemory(), Logger: quiet}
	tools := `"tools":[{"type":"function","name":"get"}]`
	resp, _ := run(t, x, call{op: llmapi.OpResponses, identity: "a", body: `{"model":"m","input":"go",` + tools + `}`})
	obj := wantOK(t, resp)
	out, _ := obj["output"].([]any)
	if len(out) != 1 || out[0].(map[string]any)["call_id"] != "call_1" {
		t.Fatalf("output %s", resp.Body)
	}
	resp, _ = run(t, x, call{op: llmapi.OpResponses, identity: "a", body: `{"model":"m",` + tools + `,"previous_response_id":"` + obj["id"].(string) + `",
		"input":[{"type":"function_call_output","call_id":"call_1","output":"42"}]}`})
	wantOK(t, resp)
	sameItems(t, p.last(t).Input, []turn.Item{
		userText("go"),
		{Type: turn.ItemFunctionCall, CallID: "call_1", Name: "get", Arguments: `{"q":1}`},
		{Type: turn.ItemFunctionCallOutput, CallID: "call_1", Output: "42"},
	})
}

func TestWithoutStore(t *testing.T) {
	x := &executor.Executor{Provider: static.New(), Logger: quiet}
	resp, _ := run(t, x, call{op: llmapi.OpResponses, identity: "a", body: `{"model":"m","input":"x"}`})
	id := wantOK(t, resp)["id"].(string)
	wantError(t, func() llmapi.ExecutionEventResponse {
		r, _ := run(t, x, call{op: llmapi.OpResponses, identity: "a", body: `{"model":"m","input":"x","previous_response_id":"` + id + `"}`})
		return r
	}(), http.StatusNotFound, "previous_response_not_found", "previous_response_id")
	for _, op := range llmapi.StateOperations() {
		r, _ := run(t, x, call{op: op, identity: "a", body: `{"response_id":"` + id + `"}`})
		wantError(t, r, http.StatusNotFound, "response_not_found", "")
	}
}

func TestRequestErrors(t *testing.T) {
	x := &executor.Executor{Provider: static.New(), Store: respstore.NewMemory(), Logger: quiet}
	tests := []struct {
		name   string
		c      call
		status int
		code   string
		param  string
	}{
		{"responses without input", call{op: llmapi.OpResponses, body: `{"model":"m"}`}, 400, "missing_required_parameter", "input"},
		{"retrieve without id", call{op: llmapi.OpResponsesRetrieve, body: `{}`}, 400, "missing_required_parameter", "response_id"},
		{"delete with a bad body", call{op: llmapi.OpResponsesDelete, body: `[]`}, 400, "missing_required_parameter", "response_id"},
		{"unknown operation", call{op: "embeddings", body: `{}`}, 400, "invalid_event", ""},
		{"null body", call{op: llmapi.OpChatCompletions, body: `null`}, 400, "invalid_event", ""},
		{"parse error", call{op: llmapi.OpChatCompletions, body: `{"model":"m","messages":[{"role":"user","content":"x"}],"n":3}`}, 400, "unsupported_parameter", "n"},
		{"unsupported tools", call{op: llmapi.OpChatCompletions, body: `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}]}`}, 400, "unsupported_parameter", "tools"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, frames := run(t, x, tc.c)
			wantError(t, resp, tc.status, tc.code, tc.param)
			if len(frames) != 0 {
				t.Errorf("frames emitted for a rejected request: %s", frames)
			}
		})
	}
	// A request without an id cannot even be answered by id, but still gets a response.
	resp := x.Execute(context.Background(), &llmapi.ExecutionEventRequest{Operation: llmapi.OpResponses, Body: json.RawMessage(`{}`)}, nil)
	wantError(t, resp, 400, "invalid_event", "")
}

func TestCatalogAliases(t *testing.T) {
	cat, err := catalog.Parse("test", []byte(`[
		{"id":"fast","codex_model":"gpt-fast","reasoning_effort":"low"},
		{"id":"smart","codex_model":"gpt-smart"},
		{"id":"plain"}]`))
	if err != nil {
		t.Fatal(err)
	}
	p := &recorder{}
	x := &executor.Executor{Provider: p, Catalog: cat, Logger: quiet}
	tests := []struct {
		op          llmapi.Operation
		body        string
		engine      string
		effort      string
		notFound    bool
		publicModel string
	}{
		{op: llmapi.OpChatCompletions, body: `{"model":"fast","messages":[{"role":"user","content":"x"}]}`, engine: "gpt-fast", effort: "low", publicModel: "fast"},
		{op: llmapi.OpChatCompletions, body: `{"model":"fast","messages":[{"role":"user","content":"x"}],"reasoning_effort":"high"}`, engine: "gpt-fast", effort: "high", publicModel: "fast"},
		{op: llmapi.OpResponses, body: `{"model":"fast","input":"x","reasoning":{"effort":"minimal"}}`, engine: "gpt-fast", effort: "minimal", publicModel: "fast"},
		{op: llmapi.OpResponses, body: `{"model":"smart","input":"x"}`, engine: "gpt-smart", publicModel: "smart"},
		{op: llmapi.OpCompletions, body: `{"model":"fast","prompt":"x"}`, engine: "gpt-fast", effort: "low", publicModel: "fast"},
		{op: llmapi.OpCompletions, body: `{"model":"plain","prompt":"x"}`, publicModel: "plain"},
		{op: llmapi.OpChatCompletions, body: `{"model":"gpt-4o","messages":[{"role":"user","content":"x"}]}`, notFound: true},
		{op: llmapi.OpResponses, body: `{"model":"FAST","input":"x"}`, notFound: true},
	}
	for _, tc := range tests {
		t.Run(tc.op.Slug()+" "+tc.body, func(t *testing.T) {
			calls := p.calls()
			resp, _ := run(t, x, call{op: tc.op, body: tc.body})
			if tc.notFound {
				obj := wantError(t, resp, http.StatusNotFound, "model_not_found", "model")
				if obj.Type != llmapi.TypeInvalidRequest || p.calls() != calls {
					t.Errorf("type %q, provider calls %d -> %d", obj.Type, calls, p.calls())
				}
				return
			}
			obj := wantOK(t, resp)
			got := p.last(t)
			if got.EngineModel != tc.engine || got.Effort != tc.effort || got.Model != tc.publicModel {
				t.Errorf("engine %q effort %q model %q, want %q %q %q", got.EngineModel, got.Effort, got.Model, tc.engine, tc.effort, tc.publicModel)
			}
			if obj["model"] != tc.publicModel {
				t.Errorf("response model %v, want the public id %s", obj["model"], tc.publicModel)
			}
		})
	}
	// Without a catalog every model id is served as is.
	x = &executor.Executor{Provider: p, Logger: quiet}
	resp, _ := run(t, x, call{op: llmapi.OpChatCompletions, body: `{"model":"anything","messages":[{"role":"user","content":"x"}]}`})
	wantOK(t, resp)
	if got := p.last(t); got.EngineModel != "" || got.Model != "anything" {
		t.Errorf("no catalog: %+v", got)
	}
}

func TestStreaming(t *testing.T) {
	x := &executor.Executor{Provider: static.New(), Store: respstore.NewMemory(), Logger: quiet}
	tests := []struct {
		op           llmapi.Operation
		body         string
		includeUsage bool
	}{
		{llmapi.OpChatCompletions, `{"model":"m","messages":[{"role":"user","content":"hello big world"}],"stream":true}`, false},
		{llmapi.OpChatCompletions, `{"model":"m","messages":[{"role":"user","content":"hello big world"}],"stream":true,"stream_options":{"include_usage":true}}`, true},
		{llmapi.OpResponses, `{"model":"m","input":"hello big world","stream":true}`, false},
		{llmapi.OpCompletions, `{"model":"m","prompt":"hello big world","stream":true}`, false},
		{llmapi.OpCompletions, `{"model":"m","prompt":"hello big world","stream":true,"stream_options":{"include_usage":true}}`, true},
	}
	for _, tc := range tests {
		t.Run(string(tc.op), func(t *testing.T) {
			resp, frames := run(t, x, call{op: tc.op, body: tc.body, stream: true})
			wantOK(t, resp)
			if len(frames) < 4 {
				t.Fatalf("%d frames", len(frames))
			}
			for i, f := range frames {
				if got := llmapi.IsTerminalFrame(tc.op, f, tc.includeUsage); got != (i == len(frames)-1) {
					t.Errorf("frame %d/%d terminal %v: %s", i, len(frames), got, f)
				}
			}
			if resp.Usage == nil || resp.Usage.PromptTokens != 3 || resp.Usage.CompletionTokens != 4 || resp.Usage.TotalTokens != 7 {
				t.Errorf("usage %+v", resp.Usage)
			}
			// The frames name the response object the body is.
			var id struct {
				ID       string `json:"id"`
				Response struct {
					ID string `json:"id"`
				} `json:"response"`
			}
			_ = json.Unmarshal(frames[0], &id)
			var body struct {
				ID string `json:"id"`
			}
			_ = json.Unmarshal(resp.Body, &body)
			if id.ID+id.Response.ID != body.ID {
				t.Errorf("stream id %q/%q, body id %q", id.ID, id.Response.ID, body.ID)
			}
		})
	}
	t.Run("body without stream", func(t *testing.T) {
		resp, frames := run(t, x, call{op: llmapi.OpChatCompletions, body: `{"model":"m","messages":[{"role":"user","content":"x"}]}`, stream: true})
		wantOK(t, resp)
		if len(frames) != 0 {
			t.Errorf("%d frames for a body without stream: true", len(frames))
		}
	})
	t.Run("event without stream", func(t *testing.T) {
		resp, frames := run(t, x, call{op: llmapi.OpChatCompletions, body: `{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}`})
		wantOK(t, resp)
		if len(frames) != 0 {
			t.Errorf("%d frames for an event without stream", len(frames))
		}
	})
	t.Run("nil emit", func(t *testing.T) {
		req := &llmapi.ExecutionEventRequest{RequestID: "r", Operation: llmapi.OpResponses, Stream: true, Body: json.RawMessage(`{"model":"m","input":"x","stream":true}`)}
		wantOK(t, x.Execute(context.Background(), req, nil))
	})
}

func TestProviderErrors(t *testing.T) {
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelExpired()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	apiErr := llmapi.NewError(http.StatusTooManyRequests, "", "rate_limit_exceeded", "", "slow down")
	fromCtx := func(ctx context.Context, _ *turn.Request, _ turn.Sink) (*turn.Result, error) { return nil, ctx.Err() }
	tests := []struct {
		name   string
		ctx    context.Context
		run    func(context.Context, *turn.Request, turn.Sink) (*turn.Result, error)
		status int
		code   string
		typ    string
	}{
		{"deadline", expired, fromCtx, http.StatusGatewayTimeout, "timeout", llmapi.TypeTimeout},
		{"wrapped deadline", context.Background(), func(context.Context, *turn.Request, turn.Sink) (*turn.Result, error) {
			return nil, fmt.Errorf("turn: %w", context.DeadlineExceeded)
		}, http.StatusGatewayTimeout, "timeout", llmapi.TypeTimeout},
		{"deadline hidden behind another error", expired, func(context.Context, *turn.Request, turn.Sink) (*turn.Result, error) {
			return nil, errors.New("pipe closed")
		}, http.StatusGatewayTimeout, "timeout", llmapi.TypeTimeout},
		{"cancelled", cancelled, fromCtx, executor.StatusClientClosed, "request_cancelled", llmapi.TypeInvalidRequest},
		{"api error", context.Background(), func(context.Context, *turn.Request, turn.Sink) (*turn.Result, error) {
			return nil, fmt.Errorf("wrapped: %w", apiErr)
		}, http.StatusTooManyRequests, "rate_limit_exceeded", llmapi.TypeRateLimit},
		{"api error wins over deadline", expired, func(context.Context, *turn.Request, turn.Sink) (*turn.Result, error) {
			return nil, apiErr
		}, http.StatusTooManyRequests, "rate_limit_exceeded", llmapi.TypeRateLimit},
		{"other error", context.Background(), func(context.Context, *turn.Request, turn.Sink) (*turn.Result, error) {
			return nil, errors.New("engine exploded")
		}, http.StatusInternalServerError, "provider_error", llmapi.TypeServer},
	}
	for _, tc := range tests {
		for _, op := range llmapi.Operations() {
			t.Run(tc.name+"/"+string(op), func(t *testing.T) {
				x := &executor.Executor{Provider: &recorder{run: tc.run}, Store: respstore.NewMemory(), Logger: quiet}
				body := map[llmapi.Operation]string{
					llmapi.OpChatCompletions: `{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}`,
					llmapi.OpResponses:       `{"model":"m","input":"x","stream":true}`,
					llmapi.OpCompletions:     `{"model":"m","prompt":"x","stream":true}`,
				}[op]
				resp, frames := runCtx(t, tc.ctx, x, call{op: op, body: body, stream: true})
				obj := wantError(t, resp, tc.status, tc.code, "")
				if obj.Type != tc.typ || obj.Message == "" {
					t.Errorf("error %+v", obj)
				}
				if len(frames) != 0 {
					t.Errorf("frames for a stream that never began: %s", frames)
				}
			})
		}
	}
}

// A stream that has begun ends with a terminal error frame when the
// provider fails.
func TestStreamFailsAfterDeltas(t *testing.T) {
	for _, op := range llmapi.Operations() {
		t.Run(string(op), func(t *testing.T) {
			p := &recorder{run: func(_ context.Context, _ *turn.Request, sink turn.Sink) (*turn.Result, error) {
				sink(turn.Delta{Kind: turn.DeltaText, Text: "partial"})
				return nil, errors.New("engine died")
			}}
			x := &executor.Executor{Provider: p, Logger: quiet}
			body := map[llmapi.Operation]string{
				llmapi.OpChatCompletions: `{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}`,
				llmapi.OpResponses:       `{"model":"m","input":"x","stream":true}`,
				llmapi.OpCompletions:     `{"model":"m","prompt":"x","stream":true}`,
			}[op]
			resp, frames := run(t, x, call{op: op, body: body, stream: true})
			wantError(t, resp, http.StatusInternalServerError, "provider_error", "")
			if len(frames) < 2 {
				t.Fatalf("frames %s", frames)
			}
			includeUsage := llmapi.IncludeUsage(json.RawMessage(body))
			for i, f := range frames {
				if got := llmapi.IsTerminalFrame(op, f, includeUsage); got != (i == len(frames)-1) {
					t.Errorf("frame %d/%d terminal %v: %s", i, len(frames), got, f)
				}
			}
			if last := string(frames[len(frames)-1]); !strings.Contains(last, "engine died") {
				t.Errorf("last frame %s", last)
			}
		})
	}
}

// failingStore fails every call.
type failingStore struct{}

func (failingStore) Put(context.Context, respstore.Record, time.Duration) error {
	return errors.New("down")
}
func (failingStore) Get(context.Context, string, string) (respstore.Record, error) {
	return respstore.Record{}, errors.New("down")
}
func (failingStore) Chain(context.Context, string, string) ([]respstore.Record, error) {
	return nil, errors.New("down")
}
func (failingStore) Delete(context.Context, string, string) error { return errors.New("down") }
func (failingStore) Close() error                                 { return nil }

func TestStoreUnavailable(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	x := &executor.Executor{Provider: static.New(), Store: failingStore{}, Logger: slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))}
	// Saving fails: the answer still goes out, and the failure is logged.
	resp, _ := run(t, x, call{op: llmapi.OpResponses, body: `{"model":"m","input":"x"}`})
	wantOK(t, resp)
	mu.Lock()
	if !strings.Contains(logs.String(), "response not stored") {
		t.Errorf("log %q", logs.String())
	}
	mu.Unlock()
	for _, c := range []call{
		{op: llmapi.OpResponses, body: `{"model":"m","input":"x","previous_response_id":"resp_1"}`},
		{op: llmapi.OpResponsesRetrieve, body: `{"response_id":"resp_1"}`},
		{op: llmapi.OpResponsesDelete, body: `{"response_id":"resp_1"}`},
	} {
		resp, _ := run(t, x, c)
		wantError(t, resp, http.StatusServiceUnavailable, "response_store_unavailable", "")
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func TestStoredRecordTTL(t *testing.T) {
	store := &ttlStore{Memory: respstore.NewMemory()}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	x := &executor.Executor{Provider: static.New(), Store: store, StoreTTL: time.Minute, Now: func() time.Time { return now }, Logger: quiet}
	resp, _ := run(t, x, call{op: llmapi.OpResponses, identity: "a", body: `{"model":"m","input":"x"}`})
	obj := wantOK(t, resp)
	if store.ttl != time.Minute || store.rec.Identity != "a" || store.rec.ID != obj["id"] || !store.rec.CreatedAt.Equal(now) || obj["created_at"] != float64(now.Unix()) {
		t.Errorf("stored %+v for %s", store, resp.Body)
	}
	x.StoreTTL = 0
	run(t, x, call{op: llmapi.OpResponses, identity: "a", body: `{"model":"m","input":"x"}`})
	if store.ttl != respstore.DefaultTTL {
		t.Errorf("default ttl %s", store.ttl)
	}
	// Only the Responses API stores.
	store.ttl = 0
	run(t, x, call{op: llmapi.OpChatCompletions, identity: "a", body: `{"model":"m","messages":[{"role":"user","content":"x"}]}`})
	run(t, x, call{op: llmapi.OpCompletions, identity: "a", body: `{"model":"m","prompt":"x"}`})
	if store.ttl != 0 {
		t.Error("a chat or text completion was stored")
	}
}

type ttlStore struct {
	*respstore.Memory
	rec respstore.Record
	ttl time.Duration
}

func (s *ttlStore) Put(ctx context.Context, r respstore.Record, ttl time.Duration) error {
	s.rec, s.ttl = r, ttl
	return s.Memory.Put(ctx, r, ttl)
}
