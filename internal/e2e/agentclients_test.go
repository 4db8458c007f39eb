package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"

	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/turn"
)

// Agent clients (the AI SDK's item references, openai-node's input item
// listing, Codex CLI's namespaces, custom tools and hosted web search)
// through the whole stack with the official SDK.

// scripted is a provider written for these tests: it answers each turn
// with what reply makes of the request (streaming the deltas it returns
// first) and records the requests. It stands for the model engine, whose
// real provider has its own tests; everything between the SDK and the
// provider is the real stack.
type scripted struct {
	mu    sync.Mutex
	reqs  []turn.Request
	reply func(req *turn.Request) (*turn.Result, []turn.Delta)
}

func (p *scripted) Run(_ context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error) {
	p.mu.Lock()
	p.reqs = append(p.reqs, *req)
	p.mu.Unlock()
	res, deltas := p.reply(req)
	if sink != nil {
		for _, d := range deltas {
			sink(d)
		}
	}
	return res, nil
}

func (p *scripted) Capabilities() turn.Capabilities {
	return turn.Capabilities{Tools: true, Images: true, Schema: true, WebSearch: true}
}

func (p *scripted) Close() error { return nil }

func (p *scripted) last(t *testing.T) turn.Request {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reqs) == 0 {
		t.Fatal("the provider was not called")
	}
	return p.reqs[len(p.reqs)-1]
}

// transcript describes a turn's input, one "role:text" or "type" per item.
func transcript(req *turn.Request) string {
	var parts []string
	for _, it := range req.Input {
		if it.Type == turn.ItemMessage {
			parts = append(parts, string(it.Role)+":"+it.Text())
		} else {
			parts = append(parts, string(it.Type))
		}
	}
	return strings.Join(parts, "|")
}

// startStored runs a stack whose worker keeps responses in a memory store.
func startStored(t *testing.T, p turn.Provider) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	w := &stack.WorkerConfig{Executor: &executor.Executor{Provider: p, Store: respstore.NewMemory(), Logger: testLogger(t)}, Release: p.Close}
	st, err := stack.Start(ctx, stack.Config{Worker: w, Timeout: waitLimit, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("stack close: %v", err)
		}
	})
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	e := &env{st: st, http: &http.Client{Transport: transport}}
	e.client = e.sdk(st.Token)
	return e
}

// get sends a GET with the caller token and returns status and body.
func (e *env) get(t *testing.T, path string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(reqCtx(t), http.MethodGet, e.st.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.st.Token)
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func functionOutput(callID, output string) responses.ResponseInputItemUnionParam {
	item := responses.ResponseInputItemParamOfFunctionCallOutput(output)
	item.OfFunctionCallOutput.CallID = openai.String(callID)
	return item
}

func userInput(text string) responses.ResponseInputItemUnionParam {
	return responses.ResponseInputItemParamOfMessage(text, responses.EasyInputMessageRoleUser)
}

func TestInputItemsSDK(t *testing.T) {
	e := startStored(t, static.New())
	ctx := reqCtx(t)
	r1, err := e.client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Instructions: openai.String("not an item"),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("one")}})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := e.client.Responses.New(ctx, responses.ResponseNewParams{Model: model, PreviousResponseID: openai.String(r1.ID),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("two")}})
	if err != nil {
		t.Fatal(err)
	}
	r3, err := e.client.Responses.New(ctx, responses.ResponseNewParams{Model: model, PreviousResponseID: openai.String(r2.ID),
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{userInput("a"), userInput("b"), userInput("c")}}})
	if err != nil {
		t.Fatal(err)
	}
	text := func(it responses.ResponseItemUnion) string {
		var m struct {
			Role    string `json:"role"`
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		}
		if json.Unmarshal([]byte(it.RawJSON()), &m) != nil || len(m.Content) == 0 {
			return it.Type
		}
		return m.Role + ":" + m.Content[0].Text
	}

	// openai-go's auto-pager walks every page, oldest first.
	var got []string
	var ids []string
	pager := e.client.Responses.InputItems.ListAutoPaging(ctx, r3.ID, responses.InputItemListParams{Limit: openai.Int(2), Order: responses.InputItemListParamsOrderAsc})
	for pager.Next() {
		got = append(got, text(pager.Current()))
		ids = append(ids, pager.Current().ID)
	}
	if err := pager.Err(); err != nil {
		t.Fatal(err)
	}
	want := []string{"user:one", "assistant:Echo: one", "user:two", "assistant:Echo: two", "user:a", "user:b", "user:c"}
	if !slices.Equal(got, want) {
		t.Fatalf("input items %v, want %v", got, want)
	}
	if ids[1] != r1.Output[0].ID || ids[3] != r2.Output[0].ID || slices.Contains(ids, r3.Output[0].ID) || slices.Contains(ids, "") {
		t.Errorf("ids %v (outputs %s, %s, %s)", ids, r1.Output[0].ID, r2.Output[0].ID, r3.Output[0].ID)
	}
	// One page, newest first (the default order), with OpenAI's list fields.
	page, err := e.client.Responses.InputItems.List(ctx, r3.ID, responses.InputItemListParams{Limit: openai.Int(3)})
	if err != nil {
		t.Fatal(err)
	}
	var list responses.ResponseItemList
	if err := json.Unmarshal([]byte(page.RawJSON()), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Data) != 3 || text(list.Data[0]) != "user:c" || !list.HasMore || list.FirstID != ids[6] || list.LastID != ids[4] || list.Object != "list" {
		t.Errorf("page %s", page.RawJSON())
	}
	// before: the page that ends just before an item.
	status, body := e.get(t, "/responses/"+r3.ID+"/input_items?order=asc&limit=2&before="+ids[4]+"&include[]=message.input_image.image_url")
	if err := json.Unmarshal(body, &list); err != nil || status != http.StatusOK || len(list.Data) != 2 || list.Data[0].ID != ids[2] || list.Data[1].ID != ids[3] || !list.HasMore {
		t.Errorf("before: %d %s", status, body)
	}

	// Another identity, an unknown response: 404; a bad query: 400 at the front door.
	other, err := e.st.IssueToken("someone-else", "llm:proxy")
	if err != nil {
		t.Fatal(err)
	}
	otherClient := e.sdk(other)
	_, err = otherClient.Responses.InputItems.List(ctx, r3.ID, responses.InputItemListParams{})
	if apiErr := apiError(t, err); apiErr.StatusCode != http.StatusNotFound || apiErr.Code != "response_not_found" {
		t.Errorf("other identity: %s", apiErr.RawJSON())
	}
	_, err = e.client.Responses.InputItems.List(ctx, "resp_unknown", responses.InputItemListParams{})
	if apiErr := apiError(t, err); apiErr.StatusCode != http.StatusNotFound {
		t.Errorf("unknown response: %s", apiErr.RawJSON())
	}
	for query, param := range map[string]string{"limit=0": "limit", "limit=101": "limit", "limit=ten": "limit", "order=up": "order", "after=x&before=y": "before"} {
		status, body := e.get(t, "/responses/"+r3.ID+"/input_items?"+query)
		var doc struct {
			Error struct {
				Param string `json:"param"`
				Type  string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &doc); err != nil || status != http.StatusBadRequest || doc.Error.Param != param || doc.Error.Type != "invalid_request_error" {
			t.Errorf("%s: %d %s", query, status, body)
		}
	}
	resp := e.post(t, ctx, "/responses/"+r3.ID+"/input_items", `{}`)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST input_items: %d", resp.StatusCode)
	}
}

// The Vercel AI SDK's second turn (store: true): the earlier answer as an
// item_reference.
func TestItemReferenceSDK(t *testing.T) {
	p := &scripted{reply: func(req *turn.Request) (*turn.Result, []turn.Delta) {
		return &turn.Result{Text: transcript(req), Finish: turn.FinishStop}, nil
	}}
	e := startStored(t, p)
	ctx := reqCtx(t)
	first, err := e.client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello")}})
	if err != nil {
		t.Fatal(err)
	}
	answer := first.Output[0].ID
	second, err := e.client.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
		userInput("hello"), responses.ResponseInputItemParamOfItemReference(answer), userInput("again"),
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := second.OutputText(), "user:hello|assistant:user:hello|user:again"; got != want {
		t.Errorf("the provider saw %q, want %q", got, want)
	}
	// Another identity's item is a 404, as OpenAI answers an unknown one.
	other, err := e.st.IssueToken("someone-else", "llm:proxy")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c  openai.Client
		id string
	}{{e.sdk(other), answer}, {e.client, "msg_unknown"}} {
		id := tc.id
		_, err = tc.c.Responses.New(ctx, responses.ResponseNewParams{Model: model, Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			responses.ResponseInputItemParamOfItemReference(id)}}})
		apiErr := apiError(t, err)
		if apiErr.StatusCode != http.StatusNotFound || apiErr.Param != "input" || apiErr.Type != "invalid_request_error" || !strings.Contains(apiErr.Message, id) {
			t.Errorf("reference to %s: %s", id, apiErr.RawJSON())
		}
	}
}

// agentReply answers the first turn as a Codex-like agent would: a web
// search, an answer citing it, a namespaced function call and a custom
// tool call; later turns answer "done".
func agentReply(req *turn.Request) (*turn.Result, []turn.Delta) {
	if req.Input[len(req.Input)-1].Type != turn.ItemMessage {
		return &turn.Result{Text: "done", Finish: turn.FinishStop}, nil
	}
	search := turn.WebSearchCall{Action: json.RawMessage(`{"type":"search","query":"bus timetable"}`)}
	res := &turn.Result{
		WebSearches: []turn.WebSearchCall{search},
		Text:        "Buses run hourly.",
		Annotations: []json.RawMessage{json.RawMessage(`{"type":"url_citation","start_index":0,"end_index":5,"url":"https://bus.example/timetable","title":"Timetable"}`)},
		ToolCalls: []turn.ToolCall{
			{ID: "call_ns", Name: "get", Namespace: "weather", Arguments: `{"city":"Oulu"}`},
			{ID: "call_cu", Name: "apply_patch", Custom: true, Arguments: "*** Begin Patch\n*** End Patch"},
		},
		Finish: turn.FinishToolCalls,
	}
	// Streamed: the search and the text; the calls come with the result.
	return res, []turn.Delta{
		{Kind: turn.DeltaWebSearch, Index: 0},
		{Kind: turn.DeltaWebSearch, Index: 0, WebSearch: search, Done: true},
		{Kind: turn.DeltaText, Text: "Buses "}, {Kind: turn.DeltaText, Text: "run hourly."},
	}
}

func agentParams() responses.ResponseNewParams {
	return responses.ResponseNewParams{
		Model: model,
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("When do buses run, and fix the file")},
		Tools: []responses.ToolUnionParam{
			{OfWebSearch: &responses.WebSearchToolParam{Type: responses.WebSearchToolTypeWebSearch, SearchContextSize: responses.WebSearchToolSearchContextSizeLow}},
			{OfNamespace: &responses.NamespaceToolParam{Name: "weather", Description: "Weather tools", Tools: []responses.NamespaceToolToolUnionParam{
				{OfFunction: &responses.NamespaceToolToolFunctionParam{Name: "get", Parameters: map[string]any{"type": "object"}}},
			}}},
			{OfCustom: &responses.CustomToolParam{Name: "apply_patch", Description: openai.String("Patch files"),
				Format: shared.CustomToolInputFormatUnionParam{OfGrammar: &shared.CustomToolInputFormatGrammarParam{Syntax: "lark", Definition: `start: /[\s\S]+/`}}}},
		},
	}
}

func checkAgentOutput(t *testing.T, r *responses.Response) {
	t.Helper()
	var types []string
	for _, o := range r.Output {
		types = append(types, o.Type)
	}
	if want := []string{"web_search_call", "message", "function_call", "custom_tool_call"}; !slices.Equal(types, want) {
		t.Fatalf("output %v, want %v: %s", types, want, r.RawJSON())
	}
	if ws := r.Output[0].AsWebSearchCall(); !strings.HasPrefix(ws.ID, "ws_") || ws.Status != "completed" || ws.Action.Query != "bus timetable" {
		t.Errorf("web search %s", r.Output[0].RawJSON())
	}
	m := r.Output[1].AsMessage()
	if len(m.Content) != 1 || m.Content[0].Text != "Buses run hourly." || len(m.Content[0].Annotations) != 1 ||
		m.Content[0].Annotations[0].URL != "https://bus.example/timetable" || m.Content[0].Annotations[0].EndIndex != 5 {
		t.Errorf("message %s", r.Output[1].RawJSON())
	}
	if fc := r.Output[2].AsFunctionCall(); fc.Name != "get" || fc.Namespace != "weather" || fc.CallID != "call_ns" || fc.Arguments != `{"city":"Oulu"}` {
		t.Errorf("namespaced call %s", r.Output[2].RawJSON())
	}
	if cc := r.Output[3].AsCustomToolCall(); !strings.HasPrefix(cc.ID, "ctc_") || cc.Name != "apply_patch" || cc.CallID != "call_cu" || cc.Input != "*** Begin Patch\n*** End Patch" {
		t.Errorf("custom call %s", r.Output[3].RawJSON())
	}
}

func TestAgentToolsSDK(t *testing.T) {
	p := &scripted{reply: agentReply}
	e := startStored(t, p)
	ctx := reqCtx(t)

	r, err := e.client.Responses.New(ctx, agentParams())
	if err != nil {
		t.Fatal(err)
	}
	checkAgentOutput(t, r)
	req := p.last(t)
	if req.WebSearch == nil || req.WebSearch.ContextSize != "low" || len(req.Tools) != 2 ||
		req.Tools[0].Namespace != "weather" || req.Tools[0].NamespaceDescription != "Weather tools" ||
		req.Tools[1].Kind != turn.ToolCustom || !strings.Contains(string(req.Tools[1].Format), `"lark"`) {
		t.Errorf("the provider was offered %+v, web search %+v", req.Tools, req.WebSearch)
	}

	// The client runs both tools and continues.
	next, err := e.client.Responses.New(ctx, responses.ResponseNewParams{
		Model: model, PreviousResponseID: openai.String(r.ID), Tools: agentParams().Tools,
		Input: responses.ResponseNewParamsInputUnion{OfInputItemList: responses.ResponseInputParam{
			functionOutput("call_ns", "cold"),
			responses.ResponseInputItemParamOfCustomToolCallOutput("call_cu", "patched"),
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if next.OutputText() != "done" {
		t.Errorf("continuation %s", next.RawJSON())
	}
	in := p.last(t).Input
	var kinds []string
	for _, it := range in {
		kinds = append(kinds, string(it.Type))
	}
	if want := []string{"message", "web_search_call", "message", "function_call", "custom_tool_call", "function_call_output", "custom_tool_call_output"}; !slices.Equal(kinds, want) {
		t.Fatalf("continued input %v, want %v", kinds, want)
	}
	if in[3].Namespace != "weather" || in[4].Input != "*** Begin Patch\n*** End Patch" || in[1].ID != r.Output[0].ID || string(in[1].Action) != `{"type":"search","query":"bus timetable"}` {
		t.Errorf("continued input %+v", in)
	}

	// Streaming: the typed web search, annotation and custom input events.
	stream := e.client.Responses.NewStreaming(ctx, agentParams())
	defer stream.Close()
	var (
		types     []string
		custom    strings.Builder
		completed *responses.Response
		annotated bool
	)
	for stream.Next() {
		ev := stream.Current()
		if n := len(types); n == 0 || types[n-1] != ev.Type {
			types = append(types, ev.Type)
		}
		switch ev.Type {
		case "response.custom_tool_call_input.delta":
			custom.WriteString(ev.AsResponseCustomToolCallInputDelta().Delta)
		case "response.output_text.annotation.added":
			a := ev.AsResponseOutputTextAnnotationAdded()
			annotated = a.AnnotationIndex == 0 && a.Annotation.URL == "https://bus.example/timetable"
		case "response.completed":
			r := ev.Response
			completed = &r
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	for _, want := range []string{"response.web_search_call.in_progress", "response.web_search_call.searching", "response.web_search_call.completed",
		"response.output_text.annotation.added", "response.function_call_arguments.delta", "response.custom_tool_call_input.delta", "response.custom_tool_call_input.done"} {
		if !slices.Contains(types, want) {
			t.Errorf("stream lacks %s: %v", want, types)
		}
	}
	if custom.String() != "*** Begin Patch\n*** End Patch" || !annotated || completed == nil {
		t.Fatalf("custom input %q, annotated %v, completed %v", custom.String(), annotated, completed != nil)
	}
	checkAgentOutput(t, completed)
}

func TestChatCustomToolsSDK(t *testing.T) {
	p := &scripted{reply: func(req *turn.Request) (*turn.Result, []turn.Delta) {
		if req.Input[len(req.Input)-1].Type == turn.ItemCustomToolCallOutput {
			return &turn.Result{Text: transcript(req)}, nil
		}
		return &turn.Result{ToolCalls: []turn.ToolCall{{ID: "call_cu", Name: "apply_patch", Custom: true, Arguments: "*** Begin Patch"}}, Finish: turn.FinishToolCalls}, nil
	}}
	e := startStored(t, p)
	ctx := reqCtx(t)
	params := openai.ChatCompletionNewParams{
		Model:    model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("fix it")},
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionCustomTool(openai.ChatCompletionCustomToolCustomParam{
			Name: "apply_patch", Format: openai.ChatCompletionCustomToolCustomFormatUnionParam{OfText: &openai.ChatCompletionCustomToolCustomFormatTextParam{}},
		})},
	}
	c, err := e.client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	msg := c.Choices[0].Message
	if len(msg.ToolCalls) != 1 || msg.ToolCalls[0].Type != "custom" || msg.ToolCalls[0].Custom.Name != "apply_patch" ||
		msg.ToolCalls[0].Custom.Input != "*** Begin Patch" || c.Choices[0].FinishReason != "tool_calls" {
		t.Fatalf("reply %s", c.RawJSON())
	}
	if tl := p.last(t).Tools; len(tl) != 1 || tl[0].Kind != turn.ToolCustom || string(tl[0].Format) != `{"type":"text"}` {
		t.Errorf("offered %+v", tl)
	}
	params.Messages = append(params.Messages, msg.ToParam(), openai.ToolMessage("patched", "call_cu"))
	c, err = e.client.Chat.Completions.New(ctx, params)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Choices[0].Message.Content; got != "user:fix it|custom_tool_call|custom_tool_call_output" {
		t.Errorf("the provider saw %q", got)
	}
}

// Wrong types are 400s in OpenAI's shape through the whole stack (issue
// 15, item 9).
func TestWrongTypesThroughTheStack(t *testing.T) {
	e := startStatic(t)
	tests := []struct{ path, body, param string }{
		{"/chat/completions", `{"model":"` + model + `","messages":[{"role":"user","content":null}]}`, "messages[0].content"},
		{"/chat/completions", `{"model":"` + model + `","messages":[{"role":"user","content":"x"}],"temperature":"hot"}`, "temperature"},
		{"/chat/completions", `{"model":"` + model + `","messages":[{"role":"user","content":"x"}],"top_p":1e999}`, "top_p"},
		{"/responses", `{"model":"` + model + `","input":"x","temperature":3}`, "temperature"},
		{"/responses", `{"model":"` + model + `","input":[{"role":"user","content":null}]}`, "input[0].content"},
		{"/completions", `{"model":"` + model + `","prompt":"x","max_tokens":"many"}`, "max_tokens"},
	}
	for _, tc := range tests {
		resp := e.post(t, reqCtx(t), tc.path, tc.body)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var doc struct {
			Error struct {
				Message string  `json:"message"`
				Type    string  `json:"type"`
				Param   string  `json:"param"`
				Code    *string `json:"code"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &doc); err != nil || resp.StatusCode != http.StatusBadRequest || doc.Error.Type != "invalid_request_error" ||
			doc.Error.Param != tc.param || doc.Error.Message == "" || doc.Error.Code == nil {
			t.Errorf("%s %s: %d %s", tc.path, tc.body, resp.StatusCode, body)
		}
	}
}
