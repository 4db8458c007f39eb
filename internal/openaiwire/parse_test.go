package openaiwire_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/openaiwire"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

var (
	allCaps = turn.Capabilities{Tools: true, Images: true, Schema: true}
	noCaps  = turn.Capabilities{}
)

func text(s string) []turn.Part { return []turn.Part{{Type: turn.PartText, Text: s}} }

func msg(role turn.Role, s string) turn.Item {
	return turn.Item{Type: turn.ItemMessage, Role: role, Content: text(s)}
}

// sameRequest compares two neutral requests by their JSON encoding, so a
// nil and an empty slice of an omitempty field are the same.
func sameRequest(t *testing.T, got, want turn.Request) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("request\n got %s\nwant %s", g, w)
	}
}

type parseCase struct {
	name         string
	caps         turn.Capabilities
	body         string
	want         turn.Request
	stream       bool
	includeUsage bool
}

func runParse(t *testing.T, op llmapi.Operation, cases []parseCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := openaiwire.Parse(op, []byte(tc.body), tc.caps)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if c.Op != op {
				t.Errorf("Op = %q, want %q", c.Op, op)
			}
			sameRequest(t, c.Request, tc.want)
			if c.Stream != tc.stream || c.IncludeUsage != tc.includeUsage {
				t.Errorf("Stream, IncludeUsage = %v, %v; want %v, %v", c.Stream, c.IncludeUsage, tc.stream, tc.includeUsage)
			}
			if (c.Responses != nil) != (op == llmapi.OpResponses) {
				t.Errorf("Responses = %+v for %s", c.Responses, op)
			}
		})
	}
}

func TestParseChat(t *testing.T) {
	auto := turn.ToolChoice{Mode: turn.ToolChoiceAuto}
	runParse(t, llmapi.OpChatCompletions, []parseCase{
		{
			name: "one user message",
			body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "hi")}, ToolChoice: auto, ParallelToolCalls: true},
		},
		{
			name: "leading system and developer become instructions, later ones developer items",
			body: `{"model":"m","messages":[
				{"role":"system","content":"be brief"},
				{"role":"developer","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},
				{"role":"user","content":"q1"},
				{"role":"assistant","content":"a1"},
				{"role":"system","content":"now formal"},
				{"role":"user","content":"q2"}]}`,
			want: turn.Request{
				Model: "m", Instructions: []string{"be brief", "ab"},
				Input: []turn.Item{
					msg(turn.RoleUser, "q1"), msg(turn.RoleAssistant, "a1"),
					msg(turn.RoleDeveloper, "now formal"), msg(turn.RoleUser, "q2"),
				},
				ToolChoice: auto, ParallelToolCalls: true,
			},
		},
		{
			name: "tool call history",
			caps: allCaps,
			body: `{"model":"m","messages":[
				{"role":"user","content":"weather?"},
				{"role":"assistant","content":null,"tool_calls":[
					{"id":"call_1","type":"function","function":{"name":"get","arguments":"{\"city\":\"Oulu\"}"}},
					{"id":"call_2","type":"function","function":{"name":"get","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"call_1","content":"cold"},
				{"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"warm"}]},
				{"role":"assistant","content":"thinking","tool_calls":[{"id":"call_3","type":"function","function":{"name":"get","arguments":""}}]}]}`,
			want: turn.Request{
				Model: "m",
				Input: []turn.Item{
					msg(turn.RoleUser, "weather?"),
					{Type: turn.ItemFunctionCall, CallID: "call_1", Name: "get", Arguments: `{"city":"Oulu"}`},
					{Type: turn.ItemFunctionCall, CallID: "call_2", Name: "get", Arguments: `{}`},
					{Type: turn.ItemFunctionCallOutput, CallID: "call_1", Output: "cold"},
					{Type: turn.ItemFunctionCallOutput, CallID: "call_2", Output: "warm"},
					msg(turn.RoleAssistant, "thinking"),
					{Type: turn.ItemFunctionCall, CallID: "call_3", Name: "get"},
				},
				ToolChoice: auto, ParallelToolCalls: true,
			},
		},
		{
			name: "images in user content",
			caps: turn.Capabilities{Images: true},
			body: `{"model":"m","messages":[{"role":"user","content":[
				{"type":"text","text":"what is this"},
				{"type":"image_url","image_url":{"url":"https://example.com/a.png","detail":"low"}},
				{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}]}`,
			want: turn.Request{
				Model: "m",
				Input: []turn.Item{{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{
					{Type: turn.PartText, Text: "what is this"},
					{Type: turn.PartImage, ImageURL: "https://example.com/a.png"},
					{Type: turn.PartImage, ImageURL: "data:image/png;base64,AAAA"},
				}}},
				ToolChoice: auto, ParallelToolCalls: true,
			},
		},
		{
			name: "tools, named tool_choice, parallel off",
			caps: allCaps,
			body: `{"model":"m","messages":[{"role":"user","content":"x"}],
				"tools":[{"type":"function","function":{"name":"f","description":"does f","parameters":{"type":"object"},"strict":true}},
				         {"type":"function","function":{"name":"g"}}],
				"tool_choice":{"type":"function","function":{"name":"g"}},
				"parallel_tool_calls":false}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")},
				Tools: []turn.Tool{
					{Name: "f", Description: "does f", Parameters: json.RawMessage(`{"type":"object"}`), Strict: true},
					{Name: "g"},
				},
				ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceFunction, Name: "g"},
			},
		},
		{
			name: "tool_choice required",
			caps: allCaps,
			body: `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"required"}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, Tools: []turn.Tool{{Name: "f"}},
				ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceRequired}, ParallelToolCalls: true,
			},
		},
		{
			name: "tools without the capability are accepted with tool_choice none",
			caps: noCaps,
			body: `{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none"}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")},
				ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceNone}, ParallelToolCalls: true,
			},
		},
		{
			name: "json_object format and effort",
			body: `{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_object"},"reasoning_effort":"high"}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true,
				Format: &turn.OutputFormat{Type: "json_object"}, Effort: "high",
			},
		},
		{
			name: "json_schema format",
			caps: turn.Capabilities{Schema: true},
			body: `{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"},"strict":true}}}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true,
				Format: &turn.OutputFormat{Type: "json_schema", Name: "s", Schema: json.RawMessage(`{"type":"object"}`), Strict: true},
			},
		},
		{
			name: "text format is no constraint",
			body: `{"model":"m","messages":[{"role":"user","content":"x"}],"response_format":{"type":"text"}}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true},
		},
		{
			name: "harmless defaults are accepted",
			body: `{"model":"m","messages":[{"role":"user","content":"x"}],"n":1,"logprobs":false,"stop":[],"modalities":["text"],
				"temperature":0.2,"top_p":0.5,"max_tokens":5,"seed":1,"user":"u","metadata":{"a":"b"}}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true},
		},
		{
			name:   "stream with usage",
			body:   `{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true,"stream_options":{"include_usage":true}}`,
			want:   turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true},
			stream: true, includeUsage: true,
		},
		{
			name:   "stream without usage",
			body:   `{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}`,
			want:   turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true},
			stream: true,
		},
	})
}

func TestParseResponses(t *testing.T) {
	auto := turn.ToolChoice{Mode: turn.ToolChoiceAuto}
	runParse(t, llmapi.OpResponses, []parseCase{
		{
			name: "string input and instructions",
			body: `{"model":"m","input":"hi","instructions":"be brief"}`,
			want: turn.Request{Model: "m", Instructions: []string{"be brief"}, Input: []turn.Item{msg(turn.RoleUser, "hi")}, ToolChoice: auto, ParallelToolCalls: true},
		},
		{
			name: "item list in order",
			caps: allCaps,
			body: `{"model":"m","input":[
				{"role":"system","content":"sys"},
				{"type":"message","role":"developer","content":"dev"},
				{"type":"message","role":"user","content":[{"type":"input_text","text":"look "},{"type":"input_image","image_url":"https://example.com/x.jpg"}]},
				{"type":"message","role":"assistant","content":[{"type":"output_text","text":"calling"}]},
				{"type":"reasoning","id":"rs_1","summary":[]},
				{"type":"function_call","call_id":"call_1","name":"f","arguments":"{\"a\":1}"},
				{"type":"function_call_output","call_id":"call_1","output":"42"},
				{"type":"function_call_output","call_id":"call_2","output":[{"type":"input_text","text":"4"},{"type":"output_text","text":"3"}]},
				{"role":"user","content":"next"}],
				"tools":[{"type":"function","name":"f","parameters":{"type":"object"}}]}`,
			want: turn.Request{
				Model: "m",
				Input: []turn.Item{
					msg(turn.RoleDeveloper, "sys"),
					msg(turn.RoleDeveloper, "dev"),
					{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: "look "}, {Type: turn.PartImage, ImageURL: "https://example.com/x.jpg"}}},
					msg(turn.RoleAssistant, "calling"),
					{Type: turn.ItemFunctionCall, CallID: "call_1", Name: "f", Arguments: `{"a":1}`},
					{Type: turn.ItemFunctionCallOutput, CallID: "call_1", Output: "42"},
					{Type: turn.ItemFunctionCallOutput, CallID: "call_2", Output: "43"},
					msg(turn.RoleUser, "next"),
				},
				// Responses function tools are strict unless strict is false.
				Tools:      []turn.Tool{{Name: "f", Parameters: json.RawMessage(`{"type":"object"}`), Strict: true}},
				ToolChoice: auto, ParallelToolCalls: true,
			},
		},
		{
			name: "named tool_choice, parallel off, non-strict tool",
			caps: allCaps,
			body: `{"model":"m","input":"x","tools":[{"type":"function","name":"f","strict":false},{"type":"function","name":"g","description":"G"}],
				"tool_choice":{"type":"function","name":"f"},"parallel_tool_calls":false}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")},
				Tools:      []turn.Tool{{Name: "f"}, {Name: "g", Description: "G", Strict: true}},
				ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceFunction, Name: "f"},
			},
		},
		{
			name: "tools without the capability are accepted with tool_choice none",
			body: `{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":"none"}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceNone}, ParallelToolCalls: true},
		},
		{
			name: "json_schema text format and effort",
			caps: turn.Capabilities{Schema: true},
			body: `{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object"},"strict":true}},"reasoning":{"effort":"low","summary":"auto"}}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true,
				Format: &turn.OutputFormat{Type: "json_schema", Name: "s", Schema: json.RawMessage(`{"type":"object"}`), Strict: true},
				Effort: "low",
			},
		},
		{
			name: "json_object text format",
			body: `{"model":"m","input":"x","text":{"format":{"type":"json_object"}}}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true, Format: &turn.OutputFormat{Type: "json_object"}},
		},
		{
			name: "continuation without input",
			body: `{"model":"m","previous_response_id":"resp_1","store":false,"stream":true}`,
			want: turn.Request{Model: "m", ToolChoice: auto, ParallelToolCalls: true},
			// Input is checked against previous_response_id by the executor.
			stream: true,
		},
	})
}

func TestParseResponsesEcho(t *testing.T) {
	tests := []struct {
		body  string
		prev  string
		store bool
		instr *string
	}{
		{body: `{"model":"m","input":"x"}`, store: true},
		{body: `{"model":"m","input":"x","store":true,"previous_response_id":"resp_a","instructions":"i"}`, prev: "resp_a", store: true, instr: ptr("i")},
		{body: `{"model":"m","input":"x","store":false,"instructions":""}`, instr: ptr("")},
	}
	for _, tc := range tests {
		c, err := openaiwire.Parse(llmapi.OpResponses, []byte(tc.body), noCaps)
		if err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		e := c.Responses
		if e.PreviousResponseID != tc.prev || e.Store != tc.store || (e.Instructions == nil) != (tc.instr == nil) ||
			(e.Instructions != nil && *e.Instructions != *tc.instr) {
			t.Errorf("%s: echo = %+v", tc.body, e)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestParseCompletions(t *testing.T) {
	none := turn.ToolChoice{Mode: turn.ToolChoiceNone}
	runParse(t, llmapi.OpCompletions, []parseCase{
		{
			name: "string prompt",
			body: `{"model":"m","prompt":"Once upon"}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "Once upon")}, ToolChoice: none},
		},
		{
			name: "list of one prompt, harmless defaults",
			body: `{"model":"m","prompt":["Once"],"n":1,"best_of":1,"echo":false,"stop":[],"max_tokens":3,"temperature":0}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "Once")}, ToolChoice: none},
		},
		{
			name:   "stream with usage",
			body:   `{"model":"m","prompt":"x","stream":true,"stream_options":{"include_usage":true}}`,
			want:   turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: none},
			stream: true, includeUsage: true,
		},
	})
}

type rejectCase struct {
	name  string
	caps  turn.Capabilities
	body  string
	param string
	code  string
}

func runReject(t *testing.T, op llmapi.Operation, cases []rejectCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := openaiwire.Parse(op, []byte(tc.body), tc.caps)
			if err == nil {
				t.Fatalf("Parse accepted %s: %+v", tc.body, c.Request)
			}
			var apiErr *llmapi.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("error %T %v, want *llmapi.APIError", err, err)
			}
			if apiErr.Status != http.StatusBadRequest || apiErr.Type != llmapi.TypeInvalidRequest {
				t.Errorf("status %d type %q, want 400 invalid_request_error", apiErr.Status, apiErr.Type)
			}
			if apiErr.Param != tc.param || apiErr.Code != tc.code {
				t.Errorf("param %q code %q, want %q %q (%s)", apiErr.Param, apiErr.Code, tc.param, tc.code, apiErr.Message)
			}
			if apiErr.Message == "" {
				t.Error("empty message")
			}
		})
	}
}

const (
	unsupportedCode = "unsupported_parameter"
	invalidValue    = "invalid_value"
	missingParam    = "missing_required_parameter"
)

func TestParseChatRejects(t *testing.T) {
	const user = `"messages":[{"role":"user","content":"x"}]`
	fTool := `"tools":[{"type":"function","function":{"name":"f"}}]`
	runReject(t, llmapi.OpChatCompletions, []rejectCase{
		{name: "not an object", body: `[1]`, code: "invalid_json"},
		{name: "not JSON", body: `{"model":`, code: "invalid_json"},
		{name: "empty body", body: ``, code: "invalid_json"},
		{name: "wrong type", body: `{"model":1,` + user + `}`, param: "model", code: "invalid_type"},
		{name: "no model", body: `{` + user + `}`, param: "model", code: missingParam},
		{name: "no messages", body: `{"model":"m","messages":[]}`, param: "messages", code: missingParam},
		{name: "only instructions", body: `{"model":"m","messages":[{"role":"system","content":"s"}]}`, param: "messages", code: invalidValue},
		{name: "n=2", body: `{"model":"m",` + user + `,"n":2}`, param: "n", code: unsupportedCode},
		{name: "logprobs", body: `{"model":"m",` + user + `,"logprobs":true}`, param: "logprobs", code: unsupportedCode},
		{name: "top_logprobs", body: `{"model":"m",` + user + `,"top_logprobs":2}`, param: "top_logprobs", code: unsupportedCode},
		{name: "stop string", body: `{"model":"m",` + user + `,"stop":"\n"}`, param: "stop", code: unsupportedCode},
		{name: "stop list", body: `{"model":"m",` + user + `,"stop":["END"]}`, param: "stop", code: unsupportedCode},
		{name: "logit_bias", body: `{"model":"m",` + user + `,"logit_bias":{"50256":-100}}`, param: "logit_bias", code: unsupportedCode},
		{name: "audio", body: `{"model":"m",` + user + `,"audio":{"voice":"alloy","format":"wav"}}`, param: "audio", code: unsupportedCode},
		{name: "modalities audio", body: `{"model":"m",` + user + `,"modalities":["text","audio"]}`, param: "modalities", code: unsupportedCode},
		{name: "prediction", body: `{"model":"m",` + user + `,"prediction":{"type":"content","content":"x"}}`, param: "prediction", code: unsupportedCode},
		{name: "functions", body: `{"model":"m",` + user + `,"functions":[{"name":"f"}]}`, param: "functions", code: unsupportedCode},
		{name: "function_call", body: `{"model":"m",` + user + `,"function_call":"auto"}`, param: "functions", code: unsupportedCode},
		{name: "web_search_options", body: `{"model":"m",` + user + `,"web_search_options":{}}`, param: "web_search_options", code: unsupportedCode},
		{name: "role function", body: `{"model":"m","messages":[{"role":"function","name":"f","content":"x"}]}`, param: "messages[0].role", code: unsupportedCode},
		{name: "unknown role", body: `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"robot","content":"x"}]}`, param: "messages[1].role", code: invalidValue},
		{name: "assistant function_call", body: `{"model":"m","messages":[{"role":"assistant","content":null,"function_call":{"name":"f","arguments":"{}"}}]}`, param: "messages[0].function_call", code: unsupportedCode},
		{name: "tool message without id", body: `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, param: "messages[0].tool_call_id", code: missingParam},
		{name: "tool call without id", body: `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f"}}]}]}`, param: "messages[0].tool_calls[0]", code: missingParam},
		{name: "system image part", body: `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url"}]},{"role":"user","content":"x"}]}`, param: "messages[0].content[0].type", code: invalidValue},
		{name: "user audio part", body: `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}`, param: "messages[0].content[0].type", code: unsupportedCode},
		{name: "bad image URL", caps: allCaps, body: `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://example.com/a.png"}}]}]}`, param: "messages[0].content[0].image_url.url", code: invalidValue},
		{name: "data URL of no image", caps: allCaps, body: `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:text/plain;base64,AA"}}]}]}`, param: "messages[0].content[0].image_url.url", code: invalidValue},
		{name: "image without URL", caps: allCaps, body: `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image_url","image_url":{}}]}]}`, param: "messages[0].content[1].image_url.url", code: missingParam},
		{name: "images without the capability", caps: turn.Capabilities{Tools: true, Schema: true}, body: `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}`, param: "messages[0].content[0].image_url.url", code: unsupportedCode},
		{name: "tools without the capability", caps: turn.Capabilities{Images: true, Schema: true}, body: `{"model":"m",` + user + `,` + fTool + `}`, param: "tools", code: unsupportedCode},
		{name: "tools without the capability, tool_choice auto", body: `{"model":"m",` + user + `,` + fTool + `,"tool_choice":"auto"}`, param: "tools", code: unsupportedCode},
		{name: "json_schema without the capability", caps: turn.Capabilities{Tools: true, Images: true}, body: `{"model":"m",` + user + `,"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object"}}}}`, param: "response_format", code: unsupportedCode},
		{name: "json_schema without schema", caps: allCaps, body: `{"model":"m",` + user + `,"response_format":{"type":"json_schema","json_schema":{"name":"s"}}}`, param: "response_format.json_schema.schema", code: missingParam},
		{name: "unknown response_format", body: `{"model":"m",` + user + `,"response_format":{"type":"yaml"}}`, param: "response_format.type", code: invalidValue},
		{name: "tool_choice not in tools", caps: allCaps, body: `{"model":"m",` + user + `,` + fTool + `,"tool_choice":{"type":"function","function":{"name":"g"}}}`, param: "tool_choice", code: invalidValue},
		{name: "tool_choice unknown string", caps: allCaps, body: `{"model":"m",` + user + `,` + fTool + `,"tool_choice":"any"}`, param: "tool_choice", code: invalidValue},
		{name: "tool_choice allowed_tools", caps: allCaps, body: `{"model":"m",` + user + `,` + fTool + `,"tool_choice":{"type":"allowed_tools","allowed_tools":{}}}`, param: "tool_choice", code: unsupportedCode},
		{name: "tool_choice required without tools", caps: allCaps, body: `{"model":"m",` + user + `,"tool_choice":"required"}`, param: "tool_choice", code: invalidValue},
		{name: "custom tool without name", caps: allCaps, body: `{"model":"m",` + user + `,"tools":[{"type":"custom","custom":{}}]}`, param: "tools[0].custom.name", code: missingParam},
		{name: "unknown tool type", caps: allCaps, body: `{"model":"m",` + user + `,"tools":[{"type":"retrieval"}]}`, param: "tools[0].type", code: unsupportedCode},
		{name: "tool without name", caps: allCaps, body: `{"model":"m",` + user + `,"tools":[{"type":"function","function":{}}]}`, param: "tools[0].function.name", code: missingParam},
		{name: "bad reasoning_effort", body: `{"model":"m",` + user + `,"reasoning_effort":"extreme"}`, param: "reasoning_effort", code: invalidValue},
		{name: "stream_options without stream", body: `{"model":"m",` + user + `,"stream_options":{"include_usage":true}}`, param: "stream_options", code: invalidValue},
	})
}

func TestParseResponsesRejects(t *testing.T) {
	runReject(t, llmapi.OpResponses, []rejectCase{
		{name: "not an object", body: `"hi"`, code: "invalid_json"},
		{name: "no model", body: `{"input":"x"}`, param: "model", code: missingParam},
		{name: "background", body: `{"model":"m","input":"x","background":true}`, param: "background", code: unsupportedCode},
		{name: "conversation", body: `{"model":"m","input":"x","conversation":"conv_1"}`, param: "conversation", code: unsupportedCode},
		{name: "prompt", body: `{"model":"m","input":"x","prompt":{"id":"pmpt_1"}}`, param: "prompt", code: unsupportedCode},
		{name: "file_search tool", caps: allCaps, body: `{"model":"m","input":"x","tools":[{"type":"file_search","vector_store_ids":["vs"]}]}`, param: "tools[0].type", code: unsupportedCode},
		{name: "web_search tool", caps: allCaps, body: `{"model":"m","input":"x","tools":[{"type":"function","name":"f"},{"type":"web_search"}]}`, param: "tools[1].type", code: unsupportedCode},
		{name: "computer_use_preview tool", caps: allCaps, body: `{"model":"m","input":"x","tools":[{"type":"computer_use_preview","display_width":1,"display_height":1,"environment":"linux"}]}`, param: "tools[0].type", code: unsupportedCode},
		{name: "tool not an object", caps: allCaps, body: `{"model":"m","input":"x","tools":[1]}`, param: "tools[0]", code: "invalid_type"},
		{name: "tool without name", caps: allCaps, body: `{"model":"m","input":"x","tools":[{"type":"function"}]}`, param: "tools[0].name", code: missingParam},
		{name: "input not a list", body: `{"model":"m","input":{"role":"user"}}`, param: "input", code: "invalid_type"},
		{name: "unknown role", body: `{"model":"m","input":[{"type":"message","role":"robot","content":"x"}]}`, param: "input[0].role", code: invalidValue},
		{name: "input_file part", body: `{"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}`, param: "input[0].content[0].type", code: unsupportedCode},
		{name: "image by file_id", caps: allCaps, body: `{"model":"m","input":[{"role":"user","content":[{"type":"input_image","file_id":"file_1"}]}]}`, param: "input[0].content[0].file_id", code: unsupportedCode},
		{name: "bad image URL", caps: allCaps, body: `{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"file:///etc/passwd"}]}]}`, param: "input[0].content[0].image_url", code: invalidValue},
		{name: "images without the capability", body: `{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"https://example.com/a.png"}]}]}`, param: "input[0].content[0].image_url", code: unsupportedCode},
		{name: "function_call without call_id", body: `{"model":"m","input":[{"type":"function_call","name":"f","arguments":"{}"}]}`, param: "input[0]", code: missingParam},
		{name: "function_call_output without call_id", body: `{"model":"m","input":[{"type":"function_call_output","output":"x"}]}`, param: "input[0].call_id", code: missingParam},
		{name: "tools without the capability", body: `{"model":"m","input":"x","tools":[{"type":"function","name":"f"}]}`, param: "tools", code: unsupportedCode},
		{name: "json_schema without the capability", body: `{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object"}}}}`, param: "text.format", code: unsupportedCode},
		{name: "json_schema without schema", caps: allCaps, body: `{"model":"m","input":"x","text":{"format":{"type":"json_schema","name":"s"}}}`, param: "text.format.schema", code: missingParam},
		{name: "unknown text format", body: `{"model":"m","input":"x","text":{"format":{"type":"xml"}}}`, param: "text.format.type", code: invalidValue},
		{name: "tool_choice not in tools", caps: allCaps, body: `{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}}`, param: "tool_choice", code: invalidValue},
		{name: "built-in tool_choice", caps: allCaps, body: `{"model":"m","input":"x","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"file_search"}}`, param: "tool_choice", code: unsupportedCode},
		{name: "bad reasoning effort", body: `{"model":"m","input":"x","reasoning":{"effort":"max"}}`, param: "reasoning.effort", code: invalidValue},
	})
}

func TestParseCompletionsRejects(t *testing.T) {
	runReject(t, llmapi.OpCompletions, []rejectCase{
		{name: "not an object", body: `null`, code: "invalid_json"},
		{name: "no model", body: `{"prompt":"x"}`, param: "model", code: missingParam},
		{name: "no prompt", body: `{"model":"m"}`, param: "prompt", code: missingParam},
		{name: "echo", body: `{"model":"m","prompt":"x","echo":true}`, param: "echo", code: unsupportedCode},
		{name: "suffix", body: `{"model":"m","prompt":"x","suffix":"end"}`, param: "suffix", code: unsupportedCode},
		{name: "best_of", body: `{"model":"m","prompt":"x","best_of":3}`, param: "best_of", code: unsupportedCode},
		{name: "logprobs", body: `{"model":"m","prompt":"x","logprobs":1}`, param: "logprobs", code: unsupportedCode},
		{name: "n=2", body: `{"model":"m","prompt":"x","n":2}`, param: "n", code: unsupportedCode},
		{name: "stop", body: `{"model":"m","prompt":"x","stop":"\n"}`, param: "stop", code: unsupportedCode},
		{name: "logit_bias", body: `{"model":"m","prompt":"x","logit_bias":{"1":1}}`, param: "logit_bias", code: unsupportedCode},
		{name: "token-array prompt", body: `{"model":"m","prompt":[[1,2,3]]}`, param: "prompt", code: unsupportedCode},
		{name: "flat token array", body: `{"model":"m","prompt":[1,2,3]}`, param: "prompt", code: unsupportedCode},
		{name: "two prompts", body: `{"model":"m","prompt":["a","b"]}`, param: "prompt", code: unsupportedCode},
		{name: "prompt object", body: `{"model":"m","prompt":{"text":"a"}}`, param: "prompt", code: "invalid_type"},
		{name: "stream_options without stream", body: `{"model":"m","prompt":"x","stream_options":{"include_usage":true}}`, param: "stream_options", code: invalidValue},
	})
}

func TestParseUnknownOperation(t *testing.T) {
	for _, op := range []llmapi.Operation{"embeddings", llmapi.OpResponsesRetrieve, llmapi.OpResponsesDelete} {
		_, err := openaiwire.Parse(op, []byte(`{"model":"m"}`), allCaps)
		var apiErr *llmapi.APIError
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || apiErr.Code != "unsupported_operation" {
			t.Errorf("%s: err = %v, want 400 unsupported_operation", op, err)
		}
	}
}
