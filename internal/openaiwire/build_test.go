package openaiwire_test

import (
	"encoding/json"
	"strings"
	"testing"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/busdk/bus-integration-codex/internal/openaiwire"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

func mustParse(t *testing.T, op llmapi.Operation, body string) *openaiwire.Call {
	t.Helper()
	c, err := openaiwire.Parse(op, []byte(body), allCaps)
	if err != nil {
		t.Fatalf("Parse(%s): %v", body, err)
	}
	return c
}

var (
	chatBody      = `{"model":"public-model","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"get"}}]}`
	responsesBody = `{"model":"public-model","input":"hi","instructions":"be brief","tools":[{"type":"function","name":"get"}]}`
	completeBody  = `{"model":"public-model","prompt":"hi"}`

	fullUsage = turn.Usage{InputTokens: 10, CachedTokens: 4, OutputTokens: 7, ReasoningTokens: 3, TotalTokens: 17}
	textRes   = &turn.Result{Text: "hello world", Finish: turn.FinishStop, Usage: fullUsage}
	toolRes   = &turn.Result{
		ToolCalls: []turn.ToolCall{{ID: "call_a", Name: "get", Arguments: `{"city":"Oulu"}`}, {ID: "call_b", Name: "get", Arguments: `{}`}},
		Usage:     turn.Usage{InputTokens: 5, OutputTokens: 2}, // no finish, no total: both derived
	}
)

func decode(t *testing.T, raw []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, raw)
	}
}

// rawFields decodes a JSON object into its raw fields.
func rawFields(t *testing.T, raw []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	decode(t, raw, &m)
	return m
}

func TestBuildChat(t *testing.T) {
	meta := openaiwire.Meta{ID: "chatcmpl-1", Created: 1700000000, Model: "public-model"}
	t.Run("text", func(t *testing.T) {
		body := mustParse(t, llmapi.OpChatCompletions, chatBody).Build(meta, textRes)
		var cc sdk.ChatCompletion
		decode(t, body, &cc)
		if cc.ID != meta.ID || cc.Object != "chat.completion" || cc.Created != meta.Created || cc.Model != "public-model" {
			t.Errorf("header %s", body)
		}
		if len(cc.Choices) != 1 {
			t.Fatalf("choices %s", body)
		}
		ch := cc.Choices[0]
		if ch.Index != 0 || ch.Message.Role != "assistant" || ch.Message.Content != "hello world" || ch.FinishReason != "stop" || len(ch.Message.ToolCalls) != 0 {
			t.Errorf("choice %s", ch.RawJSON())
		}
		u := cc.Usage
		if u.PromptTokens != 10 || u.CompletionTokens != 7 || u.TotalTokens != 17 ||
			u.PromptTokensDetails.CachedTokens != 4 || u.CompletionTokensDetails.ReasoningTokens != 3 {
			t.Errorf("usage %s", u.RawJSON())
		}
		if strings.Contains(string(body), "tool_calls") {
			t.Errorf("tool_calls on a text answer: %s", body)
		}
	})
	t.Run("tool calls", func(t *testing.T) {
		body := mustParse(t, llmapi.OpChatCompletions, chatBody).Build(meta, toolRes)
		var cc sdk.ChatCompletion
		decode(t, body, &cc)
		ch := cc.Choices[0]
		if ch.Message.JSON.Content.Valid() || !strings.Contains(ch.Message.RawJSON(), `"content":null`) {
			t.Errorf("content is not null: %s", ch.Message.RawJSON())
		}
		if ch.FinishReason != "tool_calls" {
			t.Errorf("finish_reason %q", ch.FinishReason)
		}
		if len(ch.Message.ToolCalls) != 2 {
			t.Fatalf("tool_calls %s", ch.Message.RawJSON())
		}
		for i, want := range toolRes.ToolCalls {
			tc := ch.Message.ToolCalls[i]
			if tc.ID != want.ID || tc.Type != "function" || tc.Function.Name != want.Name || tc.Function.Arguments != want.Arguments {
				t.Errorf("tool call %d: %s", i, tc.RawJSON())
			}
			if strings.Contains(tc.RawJSON(), `"index"`) {
				t.Errorf("tool call %d of a completion has an index: %s", i, tc.RawJSON())
			}
		}
		if cc.Usage.TotalTokens != 7 {
			t.Errorf("total_tokens %d, want input+output 7", cc.Usage.TotalTokens)
		}
	})
	t.Run("text and tool calls", func(t *testing.T) {
		res := &turn.Result{Text: "let me look", ToolCalls: toolRes.ToolCalls[:1], Finish: turn.FinishToolCalls}
		var cc sdk.ChatCompletion
		decode(t, mustParse(t, llmapi.OpChatCompletions, chatBody).Build(meta, res), &cc)
		m := cc.Choices[0].Message
		if m.Content != "let me look" || len(m.ToolCalls) != 1 || cc.Choices[0].FinishReason != "tool_calls" {
			t.Errorf("message %s", m.RawJSON())
		}
	})
	t.Run("empty answer has empty content", func(t *testing.T) {
		var cc sdk.ChatCompletion
		decode(t, mustParse(t, llmapi.OpChatCompletions, chatBody).Build(meta, &turn.Result{Finish: turn.FinishLength}), &cc)
		if !cc.Choices[0].Message.JSON.Content.Valid() || cc.Choices[0].FinishReason != "length" {
			t.Errorf("message %s", cc.Choices[0].RawJSON())
		}
	})
}

func TestBuildCompletion(t *testing.T) {
	meta := openaiwire.Meta{ID: "cmpl-1", Created: 1700000001, Model: "public-model"}
	body := mustParse(t, llmapi.OpCompletions, completeBody).Build(meta, textRes)
	var c sdk.Completion
	decode(t, body, &c)
	if c.ID != meta.ID || c.Object != "text_completion" || c.Created != meta.Created || c.Model != "public-model" {
		t.Errorf("header %s", body)
	}
	if len(c.Choices) != 1 || c.Choices[0].Text != "hello world" || c.Choices[0].FinishReason != "stop" || c.Choices[0].Index != 0 {
		t.Errorf("choices %s", body)
	}
	u := c.Usage
	if u.PromptTokens != 10 || u.CompletionTokens != 7 || u.TotalTokens != 17 ||
		u.PromptTokensDetails.CachedTokens != 4 || u.CompletionTokensDetails.ReasoningTokens != 3 {
		t.Errorf("usage %s", u.RawJSON())
	}
}

func TestBuildResponse(t *testing.T) {
	meta := openaiwire.Meta{ID: "resp_1", Created: 1700000002, Model: "public-model"}
	t.Run("text", func(t *testing.T) {
		call := mustParse(t, llmapi.OpResponses, responsesBody)
		body := call.Build(meta, textRes)
		var r responses.Response
		decode(t, body, &r)
		if r.ID != meta.ID || string(r.Object) != "response" || int64(r.CreatedAt) != meta.Created || r.Model != "public-model" || r.Status != "completed" {
			t.Errorf("header %s", body)
		}
		if r.Instructions.OfString != "be brief" || !r.ParallelToolCalls || r.PreviousResponseID != "" {
			t.Errorf("echo %s", body)
		}
		if len(r.Output) != 1 || r.Output[0].Type != "message" {
			t.Fatalf("output %s", body)
		}
		m := r.Output[0].AsMessage()
		if !strings.HasPrefix(m.ID, "msg_") || m.Role != "assistant" || m.Status != "completed" || len(m.Content) != 1 ||
			m.Content[0].Type != "output_text" || m.Content[0].Text != "hello world" {
			t.Errorf("message %s", r.Output[0].RawJSON())
		}
		if r.OutputText() != "hello world" {
			t.Errorf("OutputText %q", r.OutputText())
		}
		u := r.Usage
		if u.InputTokens != 10 || u.OutputTokens != 7 || u.TotalTokens != 17 ||
			u.InputTokensDetails.CachedTokens != 4 || u.OutputTokensDetails.ReasoningTokens != 3 {
			t.Errorf("usage %s", u.RawJSON())
		}
		if len(r.Tools) != 1 || r.Tools[0].Name != "get" {
			t.Errorf("tools not echoed: %s", body)
		}
		// The same call builds the same message id again.
		var again responses.Response
		decode(t, call.Build(meta, textRes), &again)
		if again.Output[0].ID != m.ID {
			t.Errorf("message id changed: %s then %s", m.ID, again.Output[0].ID)
		}
	})
	t.Run("tool calls", func(t *testing.T) {
		call := mustParse(t, llmapi.OpResponses, responsesBody)
		body := call.Build(meta, toolRes)
		var r responses.Response
		decode(t, body, &r)
		if len(r.Output) != 2 {
			t.Fatalf("output %s", body)
		}
		ids := map[string]bool{}
		for i, want := range toolRes.ToolCalls {
			fc := r.Output[i].AsFunctionCall()
			if r.Output[i].Type != "function_call" || !strings.HasPrefix(fc.ID, "fc_") || fc.CallID != want.ID ||
				fc.Name != want.Name || fc.Arguments != want.Arguments || fc.Status != "completed" {
				t.Errorf("output %d: %s", i, r.Output[i].RawJSON())
			}
			ids[fc.ID] = true
		}
		if len(ids) != 2 {
			t.Errorf("function call item ids not distinct: %v", ids)
		}
		if r.Usage.TotalTokens != 7 {
			t.Errorf("total_tokens %d, want 7", r.Usage.TotalTokens)
		}
		// OutputItems gives the same items with the same ids.
		items := call.OutputItems(meta, toolRes)
		if len(items) != 2 {
			t.Fatalf("OutputItems %+v", items)
		}
		for i, it := range items {
			if it.ID != r.Output[i].ID || it.Type != turn.ItemFunctionCall || it.CallID != toolRes.ToolCalls[i].ID {
				t.Errorf("OutputItems[%d] %+v, Build %s", i, it, r.Output[i].RawJSON())
			}
		}
	})
	t.Run("text then tool call", func(t *testing.T) {
		res := &turn.Result{Text: "looking", ToolCalls: toolRes.ToolCalls[:1]}
		var r responses.Response
		decode(t, mustParse(t, llmapi.OpResponses, responsesBody).Build(meta, res), &r)
		if len(r.Output) != 2 || r.Output[0].Type != "message" || r.Output[1].Type != "function_call" {
			t.Errorf("output %s", r.RawJSON())
		}
	})
	t.Run("echoed request fields", func(t *testing.T) {
		body := `{"model":"public-model","input":"x","store":false,"previous_response_id":"resp_0","temperature":0.5,"top_p":0.9,
			"max_output_tokens":64,"metadata":{"k":"v"},"user":"u1","truncation":"auto","parallel_tool_calls":false,
			"reasoning":{"effort":"low","summary":"auto"},"text":{"format":{"type":"json_object"}},"tool_choice":"none"}`
		raw := rawFields(t, mustParse(t, llmapi.OpResponses, body).Build(meta, textRes))
		want := map[string]string{
			"store": `false`, "previous_response_id": `"resp_0"`, "temperature": `0.5`, "top_p": `0.9`,
			"max_output_tokens": `64`, "metadata": `{"k":"v"}`, "user": `"u1"`, "truncation": `"auto"`,
			"parallel_tool_calls": `false`, "reasoning": `{"effort":"low","summary":"auto"}`,
			"text": `{"format":{"type":"json_object"}}`, "tool_choice": `"none"`, "instructions": `null`,
			"error": `null`, "incomplete_details": `null`, "tools": `[]`,
		}
		for k, v := range want {
			if string(raw[k]) != v {
				t.Errorf("%s = %s, want %s", k, raw[k], v)
			}
		}
	})
	t.Run("defaults", func(t *testing.T) {
		raw := rawFields(t, mustParse(t, llmapi.OpResponses, `{"model":"public-model","input":"x"}`).Build(meta, textRes))
		want := map[string]string{
			"store": `true`, "previous_response_id": `null`, "temperature": `1`, "top_p": `1`, "max_output_tokens": `null`,
			"metadata": `{}`, "user": `null`, "truncation": `"disabled"`, "parallel_tool_calls": `true`,
			"reasoning": `{"effort":null,"summary":null}`, "text": `{"format":{"type":"text"}}`, "tool_choice": `"auto"`, "tools": `[]`,
		}
		for k, v := range want {
			if string(raw[k]) != v {
				t.Errorf("%s = %s, want %s", k, raw[k], v)
			}
		}
	})
}

func TestNewMeta(t *testing.T) {
	for op, prefix := range map[llmapi.Operation]string{
		llmapi.OpChatCompletions: "chatcmpl-", llmapi.OpResponses: "resp_", llmapi.OpCompletions: "cmpl-",
	} {
		a, b := openaiwire.NewMeta(op, "m", 42), openaiwire.NewMeta(op, "m", 42)
		if !strings.HasPrefix(a.ID, prefix) || len(a.ID) != len(prefix)+24 || a.ID == b.ID || a.Model != "m" || a.Created != 42 {
			t.Errorf("%s: %+v / %+v", op, a, b)
		}
	}
	if id := openaiwire.NewToolCallID(); !strings.HasPrefix(id, "call_") || id == openaiwire.NewToolCallID() {
		t.Errorf("NewToolCallID %q", id)
	}
}

func TestUsageOf(t *testing.T) {
	tests := []struct {
		in   turn.Usage
		want llmapi.Usage
	}{
		{fullUsage, llmapi.Usage{PromptTokens: 10, CompletionTokens: 7, TotalTokens: 17, CachedTokens: 4, ReasoningTokens: 3}},
		{turn.Usage{InputTokens: 2, OutputTokens: 3}, llmapi.Usage{PromptTokens: 2, CompletionTokens: 3, TotalTokens: 5}},
		{turn.Usage{}, llmapi.Usage{}},
	}
	for _, tc := range tests {
		if got := openaiwire.UsageOf(tc.in); *got != tc.want {
			t.Errorf("UsageOf(%+v) = %+v, want %+v", tc.in, *got, tc.want)
		}
	}
}
