package codex_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

const weatherTool = `{"type":"function","function":{"name":"get_weather","description":"Weather of a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}`

func TestChatToolLoopWithParallelCalls(t *testing.T) {
	s := newStack(t, 60*time.Second, 1)
	s.fake.Enqueue(fakemodel.Reply{
		FunctionCalls: []fakemodel.FunctionCall{
			{Name: "get_weather", CallID: "call_paris", Arguments: `{"city":"Paris"}`},
			{Name: "get_weather", CallID: "call_rome", Arguments: `{"city":"Rome"}`},
		},
		Usage: fakemodel.Usage{InputTokens: 50, OutputTokens: 7},
	})
	res := s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"Weather in Paris and Rome?"}],"tools":[`+weatherTool+`]}`)
	var step1 struct {
		Choices []struct {
			FinishReason string `json:"finish_reason"`
			Message      struct {
				Content   *string `json:"content"`
				ToolCalls []struct {
					ID       string `json:"id"`
					Type     string `json:"type"`
					Function struct {
						Name      string `json:"name"`
						Arguments string `json:"arguments"`
					} `json:"function"`
				} `json:"tool_calls"`
			} `json:"message"`
		} `json:"choices"`
		Usage struct {
			PromptTokens int64 `json:"prompt_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(res.Response.Body, &step1); err != nil || len(step1.Choices) != 1 {
		t.Fatalf("step 1: %s", res.Response.Body)
	}
	c := step1.Choices[0]
	if c.FinishReason != "tool_calls" || c.Message.Content != nil || len(c.Message.ToolCalls) != 2 {
		t.Fatalf("step 1: %s", res.Response.Body)
	}
	// Codex dispatches parallel calls concurrently: find each by id.
	for _, want := range []struct{ id, args string }{{"call_paris", `{"city":"Paris"}`}, {"call_rome", `{"city":"Rome"}`}} {
		found := false
		for _, tc := range c.Message.ToolCalls {
			if tc.ID == want.id {
				found = tc.Type == "function" && tc.Function.Name == "get_weather" && tc.Function.Arguments == want.args
			}
		}
		if !found {
			t.Fatalf("call %s missing or wrong: %s", want.id, res.Response.Body)
		}
	}
	if step1.Usage.PromptTokens != 50 {
		t.Fatalf("step usage %s", res.Response.Body)
	}
	if n := len(s.fake.Requests()); n != 1 {
		t.Fatalf("the model got %d requests in step 1, want 1 (nothing ran after the calls)", n)
	}
	// Step 2: the client ran the tools.
	s.fake.SetReply(fakemodel.Reply{Text: "Paris is sunny, Rome is rainy."})
	res = s.do(t, llmapi.OpChatCompletions, false, `{"model":"codex-chatgpt","messages":[
		{"role":"user","content":"Weather in Paris and Rome?"},
		{"role":"assistant","content":null,"tool_calls":[
			{"id":"call_paris","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
			{"id":"call_rome","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]},
		{"role":"tool","tool_call_id":"call_paris","content":"sunny"},
		{"role":"tool","tool_call_id":"call_rome","content":"rainy"}],"tools":[`+weatherTool+`]}`)
	if !strings.Contains(string(res.Response.Body), "Paris is sunny, Rome is rainy.") {
		t.Fatalf("step 2: %s", res.Response.Body)
	}
	reqs := s.fake.Requests()
	last := reqs[len(reqs)-1]
	calls, outputs := last.ItemsOfType("function_call"), last.ItemsOfType("function_call_output")
	if len(calls) != 2 || len(outputs) != 2 || outputs[0]["call_id"] != "call_paris" || outputs[1]["output"] != "rainy" {
		t.Fatalf("history reached the model as calls %v outputs %v", calls, outputs)
	}
}
