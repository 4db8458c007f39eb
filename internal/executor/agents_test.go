package executor_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/openaiwire"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// outputIDs returns the ids and types of a response object's output items.
func outputIDs(t *testing.T, obj map[string]any) (ids, types []string) {
	t.Helper()
	out, _ := obj["output"].([]any)
	for _, o := range out {
		m := o.(map[string]any)
		ids = append(ids, m["id"].(string))
		types = append(types, m["type"].(string))
	}
	return ids, types
}

// listInputItems runs responses.input_items and decodes the page.
func listInputItems(t *testing.T, x *executor.Executor, identity, body string) (llmapi.ExecutionEventResponse, []map[string]any, map[string]any) {
	t.Helper()
	resp, _ := run(t, x, call{op: llmapi.OpResponsesInputItems, identity: identity, body: body})
	if resp.StatusCode != http.StatusOK {
		return resp, nil, nil
	}
	obj := wantOK(t, resp)
	var data []map[string]any
	for _, d := range obj["data"].([]any) {
		data = append(data, d.(map[string]any))
	}
	return resp, data, obj
}

func TestItemReferences(t *testing.T) {
	p := &recorder{}
	x := &executor.Executor{Provider: p, Store: respstore.NewMemory(), Logger: quiet}
	responses := func(identity, body string) llmapi.ExecutionEventResponse {
		resp, _ := run(t, x, call{op: llmapi.OpResponses, identity: identity, body: body})
		return resp
	}
	first := wantOK(t, responses("alice", `{"model":"m","input":"first"}`))
	ids, _ := outputIDs(t, first)
	answer := ids[0] // the assistant message, as the AI SDK refers to it
	// The stored input message has an id too, listed by input_items.
	_, inputs, _ := listInputItems(t, x, "alice", `{"response_id":"`+first["id"].(string)+`"}`)
	if len(inputs) != 1 {
		t.Fatalf("input items %v", inputs)
	}
	question := inputs[0]["id"].(string)

	// The AI SDK's second turn: the earlier answer by reference.
	wantOK(t, responses("alice", `{"model":"m","input":[{"role":"user","content":"first"},{"type":"item_reference","id":"`+answer+`"},{"role":"user","content":"second"}]}`))
	got := p.last(t)
	sameItems(t, got.Input, []turn.Item{userText("first"), assistantText("Echo: first"), userText("second")})
	if got.Input[1].ID != answer {
		t.Errorf("resolved item id %q, want %q", got.Input[1].ID, answer)
	}
	// An input item can be referred to as well, and several references to one response read it once.
	wantOK(t, responses("alice", `{"model":"m","input":[{"type":"item_reference","id":"`+question+`"},{"id":"`+answer+`"},{"role":"user","content":"third"}]}`))
	sameItems(t, p.last(t).Input, []turn.Item{userText("first"), assistantText("Echo: first"), userText("third")})

	// Unknown, foreign, unstored and deleted items are OpenAI's 404, before the provider runs.
	unstored := wantOK(t, responses("alice", `{"model":"m","input":"secret","store":false}`))
	unstoredIDs, _ := outputIDs(t, unstored)
	calls := p.calls()
	for _, tc := range []struct{ identity, id string }{
		{"bob", answer}, {"", answer}, {"alice", "msg_unknown"}, {"alice", "msg_0123456789abcdef0123456789abcdef01234567"},
		{"alice", unstoredIDs[0]}, {"alice", strings.Replace(answer, "msg_", "fc_", 1)},
	} {
		resp := responses(tc.identity, `{"model":"m","input":[{"type":"item_reference","id":"`+tc.id+`"}]}`)
		obj := wantError(t, resp, http.StatusNotFound, "", "input")
		if obj.Type != llmapi.TypeInvalidRequest || !strings.HasPrefix(obj.Message, "Item with id '"+tc.id+"' not found.") {
			t.Errorf("%+v: %+v", tc, obj)
		}
	}
	if p.calls() != calls {
		t.Error("the provider ran for a request with an unresolved reference")
	}
	run(t, x, call{op: llmapi.OpResponsesDelete, identity: "alice", body: `{"response_id":"` + first["id"].(string) + `"}`})
	wantError(t, responses("alice", `{"model":"m","input":[{"type":"item_reference","id":"`+answer+`"}]}`), http.StatusNotFound, "", "input")

	// Without a store nothing can be referred to; a failing store is a 503.
	noStore := &executor.Executor{Provider: p, Logger: quiet}
	resp, _ := run(t, noStore, call{op: llmapi.OpResponses, identity: "alice", body: `{"model":"m","input":[{"id":"` + answer + `"}]}`})
	wantError(t, resp, http.StatusNotFound, "", "input")
	down := &executor.Executor{Provider: p, Store: failingStore{}, Logger: quiet}
	resp, _ = run(t, down, call{op: llmapi.OpResponses, identity: "alice", body: `{"model":"m","input":[{"id":"` + answer + `"}]}`})
	wantError(t, resp, http.StatusServiceUnavailable, "response_store_unavailable", "")
}

func TestInputItems(t *testing.T) {
	p := &recorder{}
	x := &executor.Executor{Provider: p, Store: respstore.NewMemory(), Logger: quiet}
	first := wantOK(t, func() llmapi.ExecutionEventResponse {
		resp, _ := run(t, x, call{op: llmapi.OpResponses, identity: "alice", body: `{"model":"m","instructions":"not an item",
			"input":[{"role":"developer","content":"rules"},{"type":"message","id":"msg_client","role":"user","content":"one"}]}`})
		return resp
	}())
	firstOut, _ := outputIDs(t, first)
	second := wantOK(t, func() llmapi.ExecutionEventResponse {
		resp, _ := run(t, x, call{op: llmapi.OpResponses, identity: "alice", body: `{"model":"m","input":"two","previous_response_id":"` + first["id"].(string) + `"}`})
		return resp
	}())
	secondOut, _ := outputIDs(t, second)
	id2 := second["id"].(string)

	// The items the second response was generated from, newest first: its
	// input after the conversation it continued; never its own output.
	_, data, list := listInputItems(t, x, "alice", `{"response_id":"`+id2+`"}`)
	var texts, ids []string
	for _, d := range data {
		content := d["content"].([]any)[0].(map[string]any)
		texts = append(texts, d["role"].(string)+":"+content["text"].(string))
		ids = append(ids, d["id"].(string))
	}
	if want := []string{"user:two", "assistant:Echo: one", "user:one", "developer:rules"}; !slices.Equal(texts, want) {
		t.Fatalf("input items %v, want %v", texts, want)
	}
	if ids[1] != firstOut[0] || ids[2] != "msg_client" || slices.Contains(ids, secondOut[0]) || list["has_more"] != false ||
		list["first_id"] != ids[0] || list["last_id"] != ids[3] || list["object"] != "list" {
		t.Errorf("list %v (first output %v, second output %v)", list, firstOut, secondOut)
	}
	for _, id := range []string{ids[0], ids[3]} {
		if owner, ok := openaiwire.ResponseOfItem(id); !ok || owner == "" {
			t.Errorf("assigned id %s names no response", id)
		}
	}
	// Paging: ascending, two at a time.
	var pages [][]string
	after := ""
	for {
		body := `{"response_id":"` + id2 + `","order":"asc","limit":2`
		if after != "" {
			body += `,"after":"` + after + `"`
		}
		_, page, obj := listInputItems(t, x, "alice", body+`}`)
		var got []string
		for _, d := range page {
			got = append(got, d["id"].(string))
		}
		pages = append(pages, got)
		if obj["has_more"] != true {
			break
		}
		after = obj["last_id"].(string)
	}
	if len(pages) != 2 || !slices.Equal(slices.Concat(pages...), []string{ids[3], ids[2], ids[1], ids[0]}) {
		t.Errorf("pages %v, ids %v", pages, ids)
	}

	// Another identity, an unknown id: 404 as for retrieve; a bad query: 400.
	for _, identity := range []string{"bob", ""} {
		resp, _, _ := listInputItems(t, x, identity, `{"response_id":"`+id2+`"}`)
		wantError(t, resp, http.StatusNotFound, "response_not_found", "")
	}
	resp, _, _ := listInputItems(t, x, "alice", `{"response_id":"resp_unknown"}`)
	wantError(t, resp, http.StatusNotFound, "response_not_found", "")
	resp, _, _ = listInputItems(t, x, "alice", `{"response_id":"`+id2+`","limit":101}`)
	wantError(t, resp, http.StatusBadRequest, "integer_above_max_value", "limit")
	resp, _, _ = listInputItems(t, x, "alice", `{"response_id":"`+id2+`","order":"up"}`)
	wantError(t, resp, http.StatusBadRequest, "invalid_value", "order")
	resp, _, _ = listInputItems(t, x, "alice", `{"response_id":"`+id2+`","after":"msg_elsewhere"}`)
	wantError(t, resp, http.StatusBadRequest, "invalid_value", "after")
	resp, _, _ = listInputItems(t, x, "alice", `{}`)
	wantError(t, resp, http.StatusBadRequest, "missing_required_parameter", "response_id")
}

// A record stored before items had ids still lists with stable ids.
func TestInputItemsOfRecordsWithoutIDs(t *testing.T) {
	store := respstore.NewMemory()
	x := &executor.Executor{Provider: &recorder{}, Store: store, Logger: quiet}
	err := store.Put(context.Background(), respstore.Record{ID: "resp_old", Identity: "a",
		Items:    []turn.Item{userText("q"), assistantText("a")},
		Response: []byte(`{"id":"resp_old","object":"response","output":[{"type":"message","id":"msg_old_out"}]}`)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, first, _ := listInputItems(t, x, "a", `{"response_id":"resp_old","limit":1,"order":"asc"}`)
	_, second, _ := listInputItems(t, x, "a", `{"response_id":"resp_old","limit":1,"order":"asc","after":"`+first[0]["id"].(string)+`"}`)
	if len(first) != 1 || len(second) != 1 || first[0]["id"] == "" || first[0]["id"] == second[0]["id"] {
		t.Errorf("pages %v / %v", first, second)
	}
}

// webSearcher is a provider that can search the web and reports what it
// was asked.
func webSearcher() *recorder {
	p := &recorder{caps: turn.Capabilities{Tools: true, WebSearch: true}}
	p.run = func(context.Context, *turn.Request, turn.Sink) (*turn.Result, error) {
		return &turn.Result{Text: "ok", Finish: turn.FinishStop}, nil
	}
	return p
}

func TestWebSearchGates(t *testing.T) {
	cat, err := catalog.Parse("test", []byte(`[{"id":"open"},{"id":"closed","web_search":false},{"id":"explicit","web_search":true}]`))
	if err != nil {
		t.Fatal(err)
	}
	const responsesBody = `{"model":"%s","input":"news?","tools":[{"type":"function","name":"f"},{"type":"web_search","search_context_size":"low"}]}`
	const chatBody = `{"model":"%s","messages":[{"role":"user","content":"news?"}],"web_search_options":{}}`
	tests := []struct {
		name    string
		x       *executor.Executor
		op      llmapi.Operation
		body    string
		model   string
		allowed bool
		param   string
	}{
		{"responses, open model", &executor.Executor{Catalog: cat}, llmapi.OpResponses, responsesBody, "open", true, ""},
		{"responses, explicit model", &executor.Executor{Catalog: cat}, llmapi.OpResponses, responsesBody, "explicit", true, ""},
		{"responses, catalog off", &executor.Executor{Catalog: cat}, llmapi.OpResponses, responsesBody, "closed", false, "tools[1].type"},
		{"responses, worker off", &executor.Executor{Catalog: cat, DisableWebSearch: true}, llmapi.OpResponses, responsesBody, "open", false, "tools[1].type"},
		{"responses, no catalog", &executor.Executor{}, llmapi.OpResponses, responsesBody, "any", true, ""},
		{"chat, open model", &executor.Executor{Catalog: cat}, llmapi.OpChatCompletions, chatBody, "open", true, ""},
		{"chat, catalog off", &executor.Executor{Catalog: cat}, llmapi.OpChatCompletions, chatBody, "closed", false, "web_search_options"},
		{"chat, worker off", &executor.Executor{DisableWebSearch: true}, llmapi.OpChatCompletions, chatBody, "any", false, "web_search_options"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := webSearcher()
			tc.x.Provider, tc.x.Logger = p, quiet
			resp, _ := run(t, tc.x, call{op: tc.op, body: strings.Replace(tc.body, "%s", tc.model, 1)})
			if !tc.allowed {
				obj := wantError(t, resp, http.StatusBadRequest, "unsupported_parameter", tc.param)
				if tc.op == llmapi.OpResponses && !strings.Contains(obj.Message, `"web_search"`) {
					t.Errorf("message %q does not name the tool", obj.Message)
				}
				if p.calls() != 0 {
					t.Error("provider ran")
				}
				return
			}
			wantOK(t, resp)
			if ws := p.last(t).WebSearch; ws == nil || (tc.op == llmapi.OpResponses && ws.ContextSize != "low") {
				t.Errorf("web search %+v", ws)
			}
		})
	}
}

// TestAgentTurnStoredAndStreamed runs a turn with web searches, a
// citation, a namespaced call and a custom call, streamed: the stored
// items carry the ids the client saw, in the stream's order, and can be
// referred to.
func TestAgentTurnStoredAndStreamed(t *testing.T) {
	search := json.RawMessage(`{"type":"search","query":"bus news"}`)
	cite := json.RawMessage(`{"type":"url_citation","start_index":0,"end_index":4,"url":"https://bus.example/news","title":"Bus news"}`)
	res := &turn.Result{
		Text: "News: none.", Annotations: []json.RawMessage{cite},
		WebSearches: []turn.WebSearchCall{{Action: search}},
		ToolCalls: []turn.ToolCall{
			{ID: "call_ns", Name: "get", Namespace: "weather", Arguments: `{}`},
			{ID: "call_cu", Name: "apply_patch", Custom: true, Arguments: "*** Begin Patch"},
		},
		Finish: turn.FinishToolCalls,
	}
	p := &recorder{caps: turn.Capabilities{Tools: true, WebSearch: true}}
	p.run = func(_ context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error) {
		if len(p.reqs) > 1 {
			return &turn.Result{Text: "done"}, nil
		}
		// The text comes before the search: the stream decides the order.
		sink(turn.Delta{Kind: turn.DeltaText, Text: "News: "})
		sink(turn.Delta{Kind: turn.DeltaWebSearch, Index: 0})
		sink(turn.Delta{Kind: turn.DeltaWebSearch, Index: 0, WebSearch: turn.WebSearchCall{Action: search}, Done: true})
		return res, nil
	}
	x := &executor.Executor{Provider: p, Store: respstore.NewMemory(), Logger: quiet}
	resp, frames := run(t, x, call{op: llmapi.OpResponses, identity: "a", stream: true, body: `{"model":"m","input":"news?","stream":true,
		"tools":[{"type":"web_search"},{"type":"namespace","name":"weather","description":"w","tools":[{"type":"function","name":"get"}]},{"type":"custom","name":"apply_patch"}]}`})
	obj := wantOK(t, resp)
	ids, types := outputIDs(t, obj)
	if want := []string{"message", "web_search_call", "function_call", "custom_tool_call"}; !slices.Equal(types, want) {
		t.Fatalf("output %v, want %v (the stream's order)", types, want)
	}
	var completed struct {
		Response struct {
			Output []struct {
				ID string `json:"id"`
			} `json:"output"`
		} `json:"response"`
	}
	if err := json.Unmarshal(frames[len(frames)-1], &completed); err != nil || len(completed.Response.Output) != 4 {
		t.Fatalf("last frame %s", frames[len(frames)-1])
	}
	for i, o := range completed.Response.Output {
		if o.ID != ids[i] {
			t.Errorf("response.completed output %d id %s, body %s", i, o.ID, ids[i])
		}
	}
	out := obj["output"].([]any)
	if fc := out[2].(map[string]any); fc["namespace"] != "weather" || fc["name"] != "get" {
		t.Errorf("namespaced call %v", fc)
	}
	if cc := out[3].(map[string]any); cc["input"] != "*** Begin Patch" || cc["call_id"] != "call_cu" {
		t.Errorf("custom call %v", cc)
	}
	// Every output item can be referred to; the provider gets them back as they were.
	refs := `{"model":"m","tools":[{"type":"custom","name":"apply_patch"}],"input":[`
	for _, id := range ids {
		refs += `{"type":"item_reference","id":"` + id + `"},`
	}
	refs += `{"type":"custom_tool_call_output","call_id":"call_cu","output":"patched"}]}`
	resp, _ = run(t, x, call{op: llmapi.OpResponses, identity: "a", body: refs})
	wantOK(t, resp)
	in := p.last(t).Input
	if len(in) != 5 || in[0].Type != turn.ItemMessage || len(in[0].Content[0].Annotations) != 1 ||
		in[1].Type != turn.ItemWebSearchCall || string(in[1].Action) != string(search) ||
		in[2].Namespace != "weather" || in[3].Type != turn.ItemCustomToolCall || in[3].Input != "*** Begin Patch" ||
		in[4].Type != turn.ItemCustomToolCallOutput {
		b, _ := json.Marshal(in)
		t.Errorf("resolved input %s", b)
	}
}

// The requests Codex CLI sends (see internal/openaiwire/testdata) run and
// store nothing (store: false).
func TestCodexCLIRequests(t *testing.T) {
	p := &recorder{caps: turn.Capabilities{Tools: true, Images: true, Schema: true, WebSearch: true}}
	p.run = func(_ context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error) {
		if req.Input[len(req.Input)-1].Type == turn.ItemFunctionCallOutput {
			return &turn.Result{Text: "a.txt"}, nil
		}
		return &turn.Result{ToolCalls: []turn.ToolCall{{ID: "call_echo", Name: "exec_command", Arguments: `{"cmd":"ls"}`}}}, nil
	}
	store := respstore.NewMemory()
	x := &executor.Executor{Provider: p, Store: store, Logger: quiet}
	for _, name := range []string{"codex-exec-first-request.json", "codex-exec-second-request.json"} {
		body, err := os.ReadFile("../openaiwire/testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		resp, frames := run(t, x, call{op: llmapi.OpResponses, identity: "codex", stream: true, body: string(body)})
		obj := wantOK(t, resp)
		if len(frames) == 0 || !llmapi.IsTerminalFrame(llmapi.OpResponses, frames[len(frames)-1], false) {
			t.Errorf("%s: %d frames", name, len(frames))
		}
		r, _ := run(t, x, call{op: llmapi.OpResponsesRetrieve, identity: "codex", body: `{"response_id":"` + obj["id"].(string) + `"}`})
		wantError(t, r, http.StatusNotFound, "response_not_found", "")
	}
}
