package openaiwire_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/busdk/bus-integration-codex/internal/openaiwire"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Deltas shared by the stream tests.
func textDeltas(parts ...string) []turn.Delta {
	var out []turn.Delta
	for _, p := range parts {
		out = append(out, turn.Delta{Kind: turn.DeltaText, Text: p})
	}
	return out
}

func callStart(i int, id, name string) turn.Delta {
	return turn.Delta{Kind: turn.DeltaToolCall, Index: i, ToolCall: turn.ToolCall{ID: id, Name: name}}
}

func callArgs(i int, args string) turn.Delta {
	return turn.Delta{Kind: turn.DeltaToolCall, Index: i, ArgumentsDelta: args}
}

var (
	toolDeltas = []turn.Delta{
		callStart(0, "call_a", "get"), callArgs(0, `{"city":`), callArgs(0, `"Oulu"}`),
		callStart(1, "call_b", "get"), callArgs(1, `{}`),
	}
	toolResult = &turn.Result{
		ToolCalls: []turn.ToolCall{{ID: "call_a", Name: "get", Arguments: `{"city":"Oulu"}`}, {ID: "call_b", Name: "get", Arguments: `{}`}},
		Finish:    turn.FinishToolCalls, Usage: turn.Usage{InputTokens: 3, OutputTokens: 4, TotalTokens: 7},
	}
	helloResult = &turn.Result{Text: "Hello world", Finish: turn.FinishStop, Usage: fullUsage}
	failure     = llmapi.NewError(http.StatusGatewayTimeout, "", "timeout", "", "too slow")
)

// streamRun feeds deltas to a fresh stream of call and ends it with
// Finish(res), or with Fail(failErr) when failErr is set.
func streamRun(call *openaiwire.Call, meta openaiwire.Meta, deltas []turn.Delta, res *turn.Result, failErr *llmapi.APIError) []json.RawMessage {
	s := call.NewStream(meta)
	var frames []json.RawMessage
	for _, d := range deltas {
		frames = append(frames, s.Delta(d)...)
	}
	if failErr != nil {
		return append(frames, s.Fail(failErr)...)
	}
	return append(frames, s.Finish(res)...)
}

// checkTerminal asserts that only the last frame is terminal.
func checkTerminal(t *testing.T, op llmapi.Operation, frames []json.RawMessage, includeUsage bool) {
	t.Helper()
	if len(frames) == 0 {
		t.Fatal("no frames")
	}
	for i, f := range frames {
		if got, want := llmapi.IsTerminalFrame(op, f, includeUsage), i == len(frames)-1; got != want {
			t.Errorf("frame %d/%d terminal = %v: %s", i, len(frames), got, f)
		}
	}
}

// chatSig describes a chat chunk compactly.
func chatSig(t *testing.T, f json.RawMessage) string {
	t.Helper()
	if _, ok := llmapi.ParseErrorBody(f); ok {
		return "error"
	}
	var ch sdk.ChatCompletionChunk
	decode(t, f, &ch)
	if len(ch.Choices) == 0 {
		return fmt.Sprintf("usage:%d/%d/%d", ch.Usage.PromptTokens, ch.Usage.CompletionTokens, ch.Usage.TotalTokens)
	}
	c := ch.Choices[0]
	var parts []string
	if c.Delta.Role != "" {
		parts = append(parts, "role:"+c.Delta.Role)
	}
	if c.Delta.JSON.Content.Valid() {
		parts = append(parts, "content:"+c.Delta.Content)
	}
	for _, tc := range c.Delta.ToolCalls {
		s := fmt.Sprintf("tool:%d", tc.Index)
		if tc.ID != "" || tc.Type != "" || tc.Function.Name != "" {
			s += fmt.Sprintf(":%s:%s:%s", tc.ID, tc.Type, tc.Function.Name)
		}
		parts = append(parts, s+" args:"+tc.Function.Arguments)
	}
	if c.FinishReason != "" {
		parts = append(parts, "finish:"+c.FinishReason)
	}
	return strings.Join(parts, " ")
}

func TestChatStream(t *testing.T) {
	meta := openaiwire.Meta{ID: "chatcmpl-s", Created: 1700000003, Model: "public-model"}
	tests := []struct {
		name   string
		usage  bool
		deltas []turn.Delta
		res    *turn.Result
		fail   bool
		want   []string
	}{
		{
			name: "text", deltas: textDeltas("Hello", "", " world"), res: helloResult,
			want: []string{"role:assistant content:", "content:Hello", "content: world", "finish:stop"},
		},
		{
			name: "text with usage", usage: true, deltas: textDeltas("Hello", " world"), res: helloResult,
			want: []string{"role:assistant content:", "content:Hello", "content: world", "finish:stop", "usage:10/7/17"},
		},
		{
			name: "tool calls", deltas: toolDeltas, res: toolResult,
			want: []string{
				"role:assistant content:",
				"tool:0:call_a:function:get args:", `tool:0 args:{"city":`, `tool:0 args:"Oulu"}`,
				"tool:1:call_b:function:get args:", `tool:1 args:{}`,
				"finish:tool_calls",
			},
		},
		{
			name: "tool calls with usage", usage: true, deltas: toolDeltas, res: toolResult,
			want: []string{
				"role:assistant content:",
				"tool:0:call_a:function:get args:", `tool:0 args:{"city":`, `tool:0 args:"Oulu"}`,
				"tool:1:call_b:function:get args:", `tool:1 args:{}`,
				"finish:tool_calls", "usage:3/4/7",
			},
		},
		{
			name: "nothing streamed: finish catches up the text", res: helloResult,
			want: []string{"role:assistant content:", "content:Hello world", "finish:stop"},
		},
		{
			name: "nothing streamed: finish catches up tool calls", usage: true, res: toolResult,
			want: []string{
				"role:assistant content:",
				"tool:0:call_a:function:get args:", `tool:0 args:{"city":"Oulu"}`,
				"tool:1:call_b:function:get args:", `tool:1 args:{}`,
				"finish:tool_calls", "usage:3/4/7",
			},
		},
		{
			name: "one of two tool calls streamed", deltas: toolDeltas[:3], res: toolResult,
			want: []string{
				"role:assistant content:",
				"tool:0:call_a:function:get args:", `tool:0 args:{"city":`, `tool:0 args:"Oulu"}`,
				"tool:1:call_b:function:get args:", `tool:1 args:{}`,
				"finish:tool_calls",
			},
		},
		{
			name: "fail after text", deltas: textDeltas("Hel"), fail: true,
			want: []string{"role:assistant content:", "content:Hel", "error"},
		},
		{
			name: "fail with usage", usage: true, deltas: textDeltas("Hel"), fail: true,
			want: []string{"role:assistant content:", "content:Hel", "error"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"model":"public-model","messages":[{"role":"user","content":"hi"}],"stream":true` +
				`,"tools":[{"type":"function","function":{"name":"get"}}]`
			if tc.usage {
				body += `,"stream_options":{"include_usage":true}`
			}
			call := mustParse(t, llmapi.OpChatCompletions, body+`}`)
			var failErr *llmapi.APIError
			if tc.fail {
				failErr = failure
			}
			frames := streamRun(call, meta, tc.deltas, tc.res, failErr)
			var got []string
			for _, f := range frames {
				got = append(got, chatSig(t, f))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("frames\n got %q\nwant %q", got, tc.want)
			}
			checkTerminal(t, llmapi.OpChatCompletions, frames, tc.usage)
			for i, f := range frames {
				if tc.fail && i == len(frames)-1 {
					e, ok := llmapi.ParseErrorBody(f)
					if !ok || e.Message != "too slow" || e.Code == nil || *e.Code != "timeout" || e.Type != llmapi.TypeTimeout {
						t.Errorf("error frame %s", f)
					}
					continue
				}
				var ch sdk.ChatCompletionChunk
				decode(t, f, &ch)
				if ch.ID != meta.ID || ch.Object != "chat.completion.chunk" || ch.Model != meta.Model || ch.Created != meta.Created {
					t.Errorf("frame %d header: %s", i, f)
				}
				fields := rawFields(t, f)
				usage, hasUsage := fields["usage"]
				isUsageFrame := len(ch.Choices) == 0
				switch {
				case !tc.usage && hasUsage:
					t.Errorf("frame %d has usage without include_usage: %s", i, f)
				case tc.usage && !isUsageFrame && string(usage) != "null":
					t.Errorf("frame %d: usage %s, want null: %s", i, usage, f)
				case isUsageFrame && string(fields["choices"]) != "[]":
					t.Errorf("usage frame choices %s", fields["choices"])
				}
			}
		})
	}
}

func TestCompletionStream(t *testing.T) {
	meta := openaiwire.Meta{ID: "cmpl-s", Created: 1700000004, Model: "public-model"}
	tests := []struct {
		name   string
		usage  bool
		deltas []turn.Delta
		res    *turn.Result
		fail   bool
		want   []string
	}{
		{name: "text", deltas: textDeltas("Hello", "", " world"), res: helloResult, want: []string{"Hello", " world", "finish:stop"}},
		{name: "text with usage", usage: true, deltas: textDeltas("Hello", " world"), res: helloResult, want: []string{"Hello", " world", "finish:stop", "usage:10/7/17"}},
		{name: "nothing streamed", res: helloResult, want: []string{"Hello world", "finish:stop"}},
		{name: "nothing streamed with usage", usage: true, res: &turn.Result{Text: "x", Finish: turn.FinishLength}, want: []string{"x", "finish:length", "usage:0/0/0"}},
		{name: "fail", deltas: textDeltas("He"), fail: true, want: []string{"He", "error"}},
		{name: "fail before anything", usage: true, fail: true, want: []string{"error"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"model":"public-model","prompt":"hi","stream":true`
			if tc.usage {
				body += `,"stream_options":{"include_usage":true}`
			}
			call := mustParse(t, llmapi.OpCompletions, body+`}`)
			var failErr *llmapi.APIError
			if tc.fail {
				failErr = failure
			}
			frames := streamRun(call, meta, tc.deltas, tc.res, failErr)
			var got []string
			for _, f := range frames {
				if _, ok := llmapi.ParseErrorBody(f); ok {
					got = append(got, "error")
					continue
				}
				var c sdk.Completion
				decode(t, f, &c)
				if c.ID != meta.ID || c.Object != "text_completion" || c.Model != meta.Model || c.Created != meta.Created {
					t.Errorf("header %s", f)
				}
				switch {
				case len(c.Choices) == 0:
					got = append(got, fmt.Sprintf("usage:%d/%d/%d", c.Usage.PromptTokens, c.Usage.CompletionTokens, c.Usage.TotalTokens))
				case c.Choices[0].FinishReason != "":
					if c.Choices[0].Text != "" {
						t.Errorf("finish frame carries text: %s", f)
					}
					got = append(got, "finish:"+string(c.Choices[0].FinishReason))
				default:
					got = append(got, c.Choices[0].Text)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("frames\n got %q\nwant %q", got, tc.want)
			}
			checkTerminal(t, llmapi.OpCompletions, frames, tc.usage)
		})
	}
}

// respFrame is the part of a Responses stream event the tests check.
type respFrame struct {
	ev  responses.ResponseStreamEventUnion
	raw json.RawMessage
}

func respSig(f respFrame) string {
	ev := f.ev
	switch ev.Type {
	case "response.output_item.added", "response.output_item.done":
		return fmt.Sprintf("%s:%s:%d", ev.Type, ev.Item.Type, ev.OutputIndex)
	case "response.output_text.delta", "response.function_call_arguments.delta":
		return ev.Type + ":" + ev.Delta
	case "response.output_text.done":
		return ev.Type + ":" + ev.Text
	case "response.function_call_arguments.done":
		return ev.Type + ":" + ev.Arguments
	}
	return ev.Type
}

func TestResponsesStream(t *testing.T) {
	meta := openaiwire.Meta{ID: "resp_s", Created: 1700000005, Model: "public-model"}
	const (
		created   = "response.created"
		progress  = "response.in_progress"
		msgAdded  = "response.output_item.added:message:0"
		partAdded = "response.content_part.added"
		partDone  = "response.content_part.done"
		msgDone   = "response.output_item.done:message:0"
		completed = "response.completed"
	)
	toolFrames := func(first int) []string {
		return []string{
			fmt.Sprintf("response.output_item.added:function_call:%d", first),
			`response.function_call_arguments.delta:{"city":`, `response.function_call_arguments.delta:"Oulu"}`,
			fmt.Sprintf("response.output_item.added:function_call:%d", first+1),
			`response.function_call_arguments.delta:{}`,
			`response.function_call_arguments.done:{"city":"Oulu"}`, fmt.Sprintf("response.output_item.done:function_call:%d", first),
			`response.function_call_arguments.done:{}`, fmt.Sprintf("response.output_item.done:function_call:%d", first+1),
		}
	}
	tests := []struct {
		name   string
		deltas []turn.Delta
		res    *turn.Result
		fail   bool
		want   []string
	}{
		{
			name: "text", deltas: textDeltas("Hello", "", " world"), res: helloResult,
			want: []string{created, progress, msgAdded, partAdded, "response.output_text.delta:Hello", "response.output_text.delta: world",
				"response.output_text.done:Hello world", partDone, msgDone, completed},
		},
		{
			name: "tool calls", deltas: toolDeltas, res: toolResult,
			want: append(append([]string{created, progress}, toolFrames(0)...), completed),
		},
		{
			name:   "text then tool calls",
			deltas: append(textDeltas("Looking"), toolDeltas...),
			res:    &turn.Result{Text: "Looking", ToolCalls: toolResult.ToolCalls, Finish: turn.FinishToolCalls},
			want: append(append([]string{created, progress, msgAdded, partAdded, "response.output_text.delta:Looking",
				"response.output_text.done:Looking", partDone, msgDone}, toolFrames(1)...), completed),
		},
		{
			name: "nothing streamed: finish catches up the text", res: helloResult,
			want: []string{created, progress, msgAdded, partAdded, "response.output_text.delta:Hello world",
				"response.output_text.done:Hello world", partDone, msgDone, completed},
		},
		{
			name: "nothing streamed: finish catches up tool calls", res: toolResult,
			want: []string{created, progress,
				"response.output_item.added:function_call:0", `response.function_call_arguments.delta:{"city":"Oulu"}`,
				"response.output_item.added:function_call:1", `response.function_call_arguments.delta:{}`,
				`response.function_call_arguments.done:{"city":"Oulu"}`, "response.output_item.done:function_call:0",
				`response.function_call_arguments.done:{}`, "response.output_item.done:function_call:1",
				completed},
		},
		{
			name: "empty answer is still a message", res: &turn.Result{Finish: turn.FinishStop},
			want: []string{created, progress, msgAdded, partAdded, "response.output_text.done:", partDone, msgDone, completed},
		},
		{
			name: "fail after text", deltas: textDeltas("Hel"), fail: true,
			want: []string{created, progress, msgAdded, partAdded, "response.output_text.delta:Hel", "response.failed"},
		},
		{
			name: "fail before anything", fail: true,
			want: []string{created, progress, "response.failed"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			call := mustParse(t, llmapi.OpResponses, `{"model":"public-model","input":"hi","stream":true,"tools":[{"type":"function","name":"get"}]}`)
			var failErr *llmapi.APIError
			if tc.fail {
				failErr = failure
			}
			raw := streamRun(call, meta, tc.deltas, tc.res, failErr)
			frames := make([]respFrame, len(raw))
			var got []string
			for i, f := range raw {
				decode(t, f, &frames[i].ev)
				frames[i].raw = f
				got = append(got, respSig(frames[i]))
				if frames[i].ev.SequenceNumber != int64(i) {
					t.Errorf("frame %d sequence_number %d", i, frames[i].ev.SequenceNumber)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("frames\n got %q\nwant %q", got, tc.want)
			}
			checkTerminal(t, llmapi.OpResponses, raw, false)
			checkTerminal(t, llmapi.OpResponses, raw, true) // include_usage does not matter here
			checkResponsesIDs(t, meta, frames)
			last := frames[len(frames)-1].ev
			if tc.fail {
				r := last.Response
				if r.Status != "failed" || string(r.Error.Code) != "timeout" || r.Error.Message != "too slow" || r.ID != meta.ID {
					t.Errorf("failed frame %s", frames[len(frames)-1].raw)
				}
				return
			}
			// The completed response equals what Build returns for the same call.
			done := last.AsResponseCompleted().Response
			var built responses.Response
			decode(t, call.Build(meta, tc.res), &built)
			if len(done.Output) != len(built.Output) {
				t.Fatalf("completed output %d items, Build %d", len(done.Output), len(built.Output))
			}
			for i := range done.Output {
				if done.Output[i].ID != built.Output[i].ID {
					t.Errorf("output %d id: stream %s, Build %s", i, done.Output[i].ID, built.Output[i].ID)
				}
			}
			if done.Status != "completed" || done.Usage.TotalTokens != built.Usage.TotalTokens || done.Usage.InputTokens != tc.res.Usage.InputTokens {
				t.Errorf("completed %s", done.RawJSON())
			}
		})
	}
}

// checkResponsesIDs asserts that every frame names the response of meta,
// that item events use the ids of the items they belong to, and that the
// ids in response.completed are the ids used in the stream.
func checkResponsesIDs(t *testing.T, meta openaiwire.Meta, frames []respFrame) {
	t.Helper()
	itemIDs := map[int64]string{} // output_index -> item id
	itemType := map[int64]string{}
	for i, f := range frames {
		ev := f.ev
		switch ev.Type {
		case "response.created", "response.in_progress":
			if ev.Response.ID != meta.ID || ev.Response.Status != "in_progress" || len(ev.Response.Output) != 0 || ev.Response.Model != meta.Model {
				t.Errorf("frame %d: %s", i, f.raw)
			}
		case "response.output_item.added":
			if _, dup := itemIDs[ev.OutputIndex]; dup {
				t.Errorf("frame %d: output_index %d added twice", i, ev.OutputIndex)
			}
			itemIDs[ev.OutputIndex], itemType[ev.OutputIndex] = ev.Item.ID, ev.Item.Type
			if ev.Item.Status != "in_progress" {
				t.Errorf("frame %d: added item status %q", i, ev.Item.Status)
			}
			wantPrefix := map[string]string{"message": "msg_", "function_call": "fc_", "custom_tool_call": "ctc_", "web_search_call": "ws_"}[ev.Item.Type]
			if wantPrefix == "" || !strings.HasPrefix(ev.Item.ID, wantPrefix) {
				t.Errorf("frame %d: item %s", i, f.raw)
			}
			if (ev.Item.Type == "function_call" || ev.Item.Type == "custom_tool_call") && (ev.Item.CallID == "" || ev.Item.Name == "") {
				t.Errorf("frame %d: function call item %s", i, f.raw)
			}
		case "response.output_item.done":
			if owner, ok := openaiwire.ResponseOfItem(ev.Item.ID); !ok || owner != meta.ID {
				t.Errorf("frame %d: item id %s does not name response %s", i, ev.Item.ID, meta.ID)
			}
			if itemIDs[ev.OutputIndex] != ev.Item.ID || ev.Item.Status != "completed" {
				t.Errorf("frame %d: done item %s, added id %s", i, f.raw, itemIDs[ev.OutputIndex])
			}
		case "response.content_part.added", "response.content_part.done", "response.output_text.delta", "response.output_text.done",
			"response.function_call_arguments.delta", "response.function_call_arguments.done",
			"response.custom_tool_call_input.delta", "response.custom_tool_call_input.done", "response.output_text.annotation.added",
			"response.web_search_call.in_progress", "response.web_search_call.searching", "response.web_search_call.completed":
			id, ok := itemIDs[ev.OutputIndex]
			if !ok || ev.ItemID != id {
				t.Errorf("frame %d: item_id %q at output_index %d, want %q", i, ev.ItemID, ev.OutputIndex, id)
			}
		case "response.completed":
			out := ev.Response.Output
			if ev.Response.ID != meta.ID || len(out) != len(itemIDs) {
				t.Errorf("completed: %s (stream items %v)", f.raw, itemIDs)
			}
			for j, it := range out {
				if it.ID != itemIDs[int64(j)] || it.Type != itemType[int64(j)] {
					t.Errorf("completed output %d: %s %s, stream %s %s", j, it.Type, it.ID, itemType[int64(j)], itemIDs[int64(j)])
				}
			}
		}
	}
}

// A Call's ids are stable whichever is built first, the stream or the
// final object (the executor builds the object before finishing the stream).
func TestResponsesIDsBuildFirst(t *testing.T) {
	meta := openaiwire.Meta{ID: "resp_b", Created: 1, Model: "m"}
	call := mustParse(t, llmapi.OpResponses, `{"model":"m","input":"hi","stream":true,"tools":[{"type":"function","name":"get"}]}`)
	res := &turn.Result{Text: "hi", ToolCalls: toolResult.ToolCalls}
	var built responses.Response
	decode(t, call.Build(meta, res), &built)
	raw := streamRun(call, meta, nil, res, nil)
	var last responses.ResponseStreamEventUnion
	decode(t, raw[len(raw)-1], &last)
	for i, it := range last.Response.Output {
		if it.ID != built.Output[i].ID {
			t.Errorf("output %d: stream %s, Build %s", i, it.ID, built.Output[i].ID)
		}
	}
	if len(last.Response.Output) != 3 {
		t.Errorf("output %s", last.Response.RawJSON())
	}
}

// A provider that streams a tool call's header but not its arguments gets
// the arguments only in the final result; the stream should still carry
// them. Known gap (see the test report): catchUp skips any call whose index
// was seen, so the chat stream never sends the arguments and the Responses
// stream's function_call_arguments.done / output_item.done say "" while
// response.completed has the real arguments. The codex provider always
// streams header and arguments together, so it is latent today.
func TestStreamCatchUpPartialToolCall(t *testing.T) {
	call := mustParse(t, llmapi.OpResponses, `{"model":"m","input":"hi","stream":true,"tools":[{"type":"function","name":"get"}]}`)
	res := &turn.Result{ToolCalls: []turn.ToolCall{{ID: "call_a", Name: "get", Arguments: `{"a":1}`}}}
	raw := streamRun(call, openaiwire.Meta{ID: "resp_p", Model: "m"}, []turn.Delta{callStart(0, "call_a", "get")}, res, nil)
	for _, f := range raw {
		var ev responses.ResponseStreamEventUnion
		decode(t, f, &ev)
		if ev.Type == "response.function_call_arguments.done" && ev.Arguments != `{"a":1}` {
			t.Errorf("arguments.done %q, want the result's arguments", ev.Arguments)
		}
	}
}
