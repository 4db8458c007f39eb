package agents_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"

	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
)

var weatherParams = map[string]any{
	"type":       "object",
	"properties": map[string]any{"city": map[string]any{"type": "string"}},
	"required":   []string{"city"},
}

func chatTools() []openai.ChatCompletionToolUnionParam {
	return []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
		Name: "get_weather", Description: openai.String("Weather of a city"), Parameters: weatherParams,
	})}
}

// twoCalls scripts a model step that calls get_weather twice in parallel.
func twoCalls() fakemodel.Reply {
	return fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{
		{Name: "get_weather", CallID: "call_paris", Arguments: `{"city":"Paris"}`},
		{Name: "get_weather", CallID: "call_rome", Arguments: `{"city":"Rome"}`},
	}, Usage: fakemodel.Usage{InputTokens: 60, OutputTokens: 8}}
}

// wantTwoCalls checks both calls of the step came back, in the order the
// model emitted them.
func wantTwoCalls(t *testing.T, ids, names, args []string) {
	t.Helper()
	if !slices.Equal(ids, []string{"call_paris", "call_rome"}) || !slices.Equal(names, []string{"get_weather", "get_weather"}) ||
		!slices.Equal(args, []string{`{"city":"Paris"}`, `{"city":"Rome"}`}) {
		t.Fatalf("tool calls ids %q names %q args %q", ids, names, args)
	}
}

// checkToolResultsReachedModel: the follow-up ran on a thread whose history
// holds both calls and both outputs, in order.
func checkToolResultsReachedModel(t *testing.T, fake *fakemodel.Server) {
	t.Helper()
	reqs := fake.Requests()
	last := reqs[len(reqs)-1]
	calls, outs := last.ItemsOfType("function_call"), last.ItemsOfType("function_call_output")
	if len(calls) != 2 || len(outs) != 2 {
		t.Fatalf("model saw calls %v and outputs %v", calls, outs)
	}
	callIDs := []string{fmt.Sprint(calls[0]["call_id"]), fmt.Sprint(calls[1]["call_id"])}
	if !slices.Equal(callIDs, []string{"call_paris", "call_rome"}) || outs[0]["call_id"] != "call_paris" ||
		outs[0]["output"] != "sunny" || outs[1]["output"] != "rainy" {
		t.Fatalf("model saw calls %v and outputs %v", calls, outs)
	}
}

func TestChatToolLoop(t *testing.T) {
	b := newBridge(t, memoryStore())
	b.startWorker("w1")
	client := b.client("alice")
	for _, stream := range []bool{false, true} {
		name := "plain"
		if stream {
			name = "stream"
		}
		t.Run(name, func(t *testing.T) {
			b.fake.Enqueue(twoCalls())
			params := openai.ChatCompletionNewParams{
				Model: model, Tools: chatTools(),
				Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Weather in Paris and Rome?")},
			}
			var msg openai.ChatCompletionMessage
			var finish string
			if !stream {
				c, err := client.Chat.Completions.New(ctxT(t), params)
				if err != nil {
					t.Fatal(err)
				}
				msg, finish = c.Choices[0].Message, c.Choices[0].FinishReason
				if c.Usage.PromptTokens != 60 || c.Usage.CompletionTokens != 8 {
					t.Fatalf("step usage %s", c.Usage.RawJSON())
				}
			} else {
				s := client.Chat.Completions.NewStreaming(ctxT(t), params)
				var acc openai.ChatCompletionAccumulator
				finished := 0
				for s.Next() {
					acc.AddChunk(s.Current())
					if _, ok := acc.JustFinishedToolCall(); ok {
						finished++
					}
				}
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
				if finished != 2 {
					t.Fatalf("the stream finished %d tool calls, want 2", finished)
				}
				msg, finish = acc.Choices[0].Message, acc.Choices[0].FinishReason
			}
			if finish != "tool_calls" || msg.Content != "" {
				t.Fatalf("finish %q content %q", finish, msg.Content)
			}
			var ids, names, args []string
			for _, tc := range msg.ToolCalls {
				ids, names, args = append(ids, tc.ID), append(names, tc.Function.Name), append(args, tc.Function.Arguments)
				if tc.Type != "function" {
					t.Fatalf("tool call type %q", tc.Type)
				}
			}
			wantTwoCalls(t, ids, names, args)

			// The client runs the functions and sends the results back.
			b.fake.Enqueue(fakemodel.Reply{Text: "Paris is sunny, Rome is rainy."})
			params.Messages = append(params.Messages, msg.ToParam(),
				openai.ToolMessage("sunny", "call_paris"), openai.ToolMessage("rainy", "call_rome"))
			c, err := client.Chat.Completions.New(ctxT(t), params)
			if err != nil {
				t.Fatal(err)
			}
			if got := c.Choices[0].Message.Content; got != "Paris is sunny, Rome is rainy." || c.Choices[0].FinishReason != "stop" {
				t.Fatalf("final answer %s", c.RawJSON())
			}
			checkToolResultsReachedModel(t, b.fake)
		})
	}
}

func TestResponsesToolLoop(t *testing.T) {
	b := newBridge(t, memoryStore())
	b.startWorker("w1")
	client := b.client("alice")
	tools := []responses.ToolUnionParam{responses.ToolParamOfFunction("get_weather", weatherParams, false)}
	for _, stream := range []bool{false, true} {
		name := "plain"
		if stream {
			name = "stream"
		}
		t.Run(name, func(t *testing.T) {
			b.fake.Enqueue(twoCalls())
			params := responses.ResponseNewParams{
				Model: model, Tools: tools, Store: openai.Bool(false),
				Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("Weather in Paris and Rome?")},
			}
			var r *responses.Response
			if !stream {
				var err error
				if r, err = client.Responses.New(ctxT(t), params); err != nil {
					t.Fatal(err)
				}
			} else {
				s := client.Responses.NewStreaming(ctxT(t), params)
				var types []string
				argDeltas := ""
				for s.Next() {
					ev := s.Current()
					types = append(types, ev.Type)
					switch ev.Type {
					case "response.function_call_arguments.delta":
						argDeltas += ev.Delta
					case "response.completed":
						resp := ev.Response
						r = &resp
					}
				}
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
				for _, want := range []string{"response.created", "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.done", "response.output_item.done", "response.completed"} {
					if !slices.Contains(types, want) {
						t.Fatalf("stream %v lacks %s", types, want)
					}
				}
				if argDeltas != `{"city":"Paris"}{"city":"Rome"}` && argDeltas != `{"city":"Rome"}{"city":"Paris"}` {
					t.Fatalf("argument deltas %q", argDeltas)
				}
			}
			if r == nil {
				t.Fatal("no response")
			}
			var ids, names, args []string
			var input responses.ResponseInputParam
			input = append(input, responses.ResponseInputItemParamOfMessage("Weather in Paris and Rome?", responses.EasyInputMessageRoleUser))
			for _, it := range r.Output {
				if it.Type != "function_call" {
					t.Fatalf("output item %s", it.RawJSON())
				}
				ids, names, args = append(ids, it.CallID), append(names, it.Name), append(args, it.Arguments.OfString)
				input = append(input, responses.ResponseInputItemParamOfFunctionCall(it.Arguments.OfString, it.CallID, it.Name))
			}
			wantTwoCalls(t, ids, names, args)
			for _, o := range []struct{ id, out string }{{"call_paris", "sunny"}, {"call_rome", "rainy"}} {
				item := responses.ResponseInputItemParamOfFunctionCallOutput(o.out)
				item.OfFunctionCallOutput.CallID = openai.String(o.id)
				input = append(input, item)
			}
			b.fake.Enqueue(fakemodel.Reply{Text: "Paris is sunny, Rome is rainy."})
			params.Input = responses.ResponseNewParamsInputUnion{OfInputItemList: input}
			final, err := client.Responses.New(ctxT(t), params)
			if err != nil {
				t.Fatal(err)
			}
			if final.OutputText() != "Paris is sunny, Rome is rainy." || final.Status != "completed" {
				t.Fatalf("final %s", final.RawJSON())
			}
			checkToolResultsReachedModel(t, b.fake)
		})
	}
}

func TestToolChoiceNoneOffersNoTool(t *testing.T) {
	b := newBridge(t, memoryStore())
	b.startWorker("w1")
	client := b.client("alice")
	b.fake.Enqueue(fakemodel.Reply{Text: "no tools needed"})
	_, err := client.Chat.Completions.New(ctxT(t), openai.ChatCompletionNewParams{
		Model: model, Tools: chatTools(),
		ToolChoice: openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("none")},
		Messages:   []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	})
	if err != nil {
		t.Fatal(err)
	}
	reqs := b.fake.Requests()
	if names := reqs[len(reqs)-1].ToolNames(); slices.Contains(names, "get_weather") || slices.Contains(names, "client_get_weather") {
		t.Fatalf("tool_choice none still offered the tool: %v", names)
	}
	// With auto, it is offered under its own name.
	b.fake.Enqueue(fakemodel.Reply{Text: "ok"})
	if _, err := client.Chat.Completions.New(ctxT(t), openai.ChatCompletionNewParams{
		Model: model, Tools: chatTools(), Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")},
	}); err != nil {
		t.Fatal(err)
	}
	reqs = b.fake.Requests()
	tool := reqs[len(reqs)-1].Tool("get_weather")
	if tool == nil {
		t.Fatal("tool_choice auto did not offer the tool")
	}
	if b, _ := json.Marshal(tool["parameters"]); string(b) != `{"properties":{"city":{"type":"string"}},"required":["city"],"type":"object"}` {
		t.Fatalf("parameters offered as %s", b)
	}
}

func TestClashingToolNameStaysTheClients(t *testing.T) {
	b := newBridge(t, memoryStore())
	b.startWorker("w1")
	client := b.client("alice")
	// The client's own "exec_command" must not reach Codex's tool of that
	// name: it is offered as client_exec_command and mapped back.
	b.fake.Enqueue(fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{{Name: "client_exec_command", CallID: "call_x", Arguments: `{"cmd":"ls"}`}}})
	c, err := client.Chat.Completions.New(ctxT(t), openai.ChatCompletionNewParams{
		Model: model,
		Tools: []openai.ChatCompletionToolUnionParam{openai.ChatCompletionFunctionTool(shared.FunctionDefinitionParam{
			Name: "exec_command", Parameters: map[string]any{"type": "object", "properties": map[string]any{"cmd": map[string]any{"type": "string"}}},
		})},
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("list files")},
	})
	if err != nil {
		t.Fatal(err)
	}
	reqs := b.fake.Requests()
	if reqs[len(reqs)-1].Tool("client_exec_command") == nil {
		t.Fatalf("clashing tool not offered as client_exec_command: %v", reqs[len(reqs)-1].ToolNames())
	}
	if tc := c.Choices[0].Message.ToolCalls; len(tc) != 1 || tc[0].Function.Name != "exec_command" || tc[0].ID != "call_x" {
		t.Fatalf("tool calls %s", c.RawJSON())
	}
}
