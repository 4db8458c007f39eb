package openaiwire_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"

	"github.com/busdk/bus-integration-codex/internal/openaiwire"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// agentCaps is a provider that runs client tools and hosted web search.
var agentCaps = turn.Capabilities{Tools: true, Images: true, Schema: true, WebSearch: true}

func TestParseResponsesAgentTools(t *testing.T) {
	auto := turn.ToolChoice{Mode: turn.ToolChoiceAuto}
	runParse(t, llmapi.OpResponses, []parseCase{
		{
			name: "namespace of function and custom tools, beside top-level ones",
			caps: agentCaps,
			body: `{"model":"m","input":"x","tools":[
				{"type":"function","name":"top","parameters":{"type":"object"}},
				{"type":"namespace","name":"weather","description":"Weather tools","tools":[
					{"type":"function","name":"get","description":"Get it","parameters":{"type":"object"},"strict":false},
					{"type":"custom","name":"script","format":{"type":"grammar","syntax":"lark","definition":"start: /.+/"}}]},
				{"type":"custom","name":"apply_patch","description":"Patch files","format":{"type":"text"}},
				{"type":"custom","name":"free"}]}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true,
				Tools: []turn.Tool{
					{Name: "top", Parameters: json.RawMessage(`{"type":"object"}`), Strict: true},
					{Name: "get", Description: "Get it", Parameters: json.RawMessage(`{"type":"object"}`), Namespace: "weather", NamespaceDescription: "Weather tools"},
					{Kind: turn.ToolCustom, Name: "script", Format: json.RawMessage(`{"definition":"start: /.+/","syntax":"lark","type":"grammar"}`), Namespace: "weather", NamespaceDescription: "Weather tools"},
					{Kind: turn.ToolCustom, Name: "apply_patch", Description: "Patch files", Format: json.RawMessage(`{"type":"text"}`)},
					{Kind: turn.ToolCustom, Name: "free"},
				},
			},
		},
		{
			name: "custom tool named by tool_choice",
			caps: agentCaps,
			body: `{"model":"m","input":"x","tools":[{"type":"custom","name":"c"}],"tool_choice":{"type":"custom","name":"c"}}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ParallelToolCalls: true,
				Tools: []turn.Tool{{Kind: turn.ToolCustom, Name: "c"}}, ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceFunction, Name: "c"},
			},
		},
		{
			name: "web_search with every option",
			caps: agentCaps,
			body: `{"model":"m","input":"x","tools":[{"type":"web_search","search_context_size":"high",
				"filters":{"allowed_domains":["example.com","go.dev"]},
				"user_location":{"type":"approximate","city":"Oulu","country":"FI"},"external_web_access":false}]}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true,
				WebSearch: &turn.WebSearch{ContextSize: "high", AllowedDomains: []string{"example.com", "go.dev"},
					Location: json.RawMessage(`{"type":"approximate","city":"Oulu","country":"FI"}`), CachedOnly: true},
			},
		},
		{
			name: "web_search_preview, no options, without other tools or the tools capability",
			caps: turn.Capabilities{WebSearch: true},
			body: `{"model":"m","input":"x","tools":[{"type":"web_search_preview"}]}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true, WebSearch: &turn.WebSearch{}},
		},
		{
			name: "tool_choice required with web search as the only tool",
			caps: turn.Capabilities{WebSearch: true},
			body: `{"model":"m","input":"x","tools":[{"type":"web_search"}],"tool_choice":"required"}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceRequired}, ParallelToolCalls: true, WebSearch: &turn.WebSearch{}},
		},
		{
			name: "tool_choice none offers no web search, capability or not",
			body: `{"model":"m","input":"x","tools":[{"type":"web_search"}],"tool_choice":"none"}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceNone}, ParallelToolCalls: true},
		},
		{
			name: "agent history items keep their ids, namespaces and annotations",
			caps: agentCaps,
			body: `{"model":"m","input":[
				{"type":"message","id":"msg_u1","role":"user","content":[{"type":"input_text","text":"q"}]},
				{"type":"web_search_call","id":"ws_1","status":"completed","action":{"type":"search","query":"go"}},
				{"type":"message","id":"msg_a1","role":"assistant","status":"completed","content":[{"type":"output_text","text":"see","annotations":[{"type":"url_citation","start_index":0,"end_index":3,"url":"https://go.dev","title":"Go"}]}]},
				{"type":"reasoning","id":"rs_1","summary":[],"encrypted_content":"gAAAA"},
				{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get","namespace":"weather","arguments":"{}","status":"completed"},
				{"type":"function_call_output","id":"fco_1","call_id":"call_1","output":"cold"},
				{"type":"custom_tool_call","id":"ctc_1","call_id":"call_2","name":"exec","namespace":"functions","input":"ls"},
				{"type":"custom_tool_call_output","call_id":"call_2","output":[{"type":"input_text","text":"a\n"},{"type":"input_text","text":"b"}]}]}`,
			want: turn.Request{
				Model: "m", ToolChoice: auto, ParallelToolCalls: true,
				Input: []turn.Item{
					{Type: turn.ItemMessage, ID: "msg_u1", Role: turn.RoleUser, Content: text("q")},
					{Type: turn.ItemWebSearchCall, ID: "ws_1", Action: json.RawMessage(`{"type":"search","query":"go"}`)},
					{Type: turn.ItemMessage, ID: "msg_a1", Role: turn.RoleAssistant, Content: []turn.Part{{Type: turn.PartText, Text: "see",
						Annotations: []json.RawMessage{json.RawMessage(`{"type":"url_citation","start_index":0,"end_index":3,"url":"https://go.dev","title":"Go"}`)}}}},
					{Type: turn.ItemFunctionCall, ID: "fc_1", CallID: "call_1", Name: "get", Namespace: "weather", Arguments: "{}"},
					{Type: turn.ItemFunctionCallOutput, ID: "fco_1", CallID: "call_1", Output: "cold"},
					{Type: turn.ItemCustomToolCall, ID: "ctc_1", CallID: "call_2", Name: "exec", Namespace: "functions", Input: "ls"},
					{Type: turn.ItemCustomToolCallOutput, CallID: "call_2", Output: "a\nb"},
				},
			},
		},
		{
			name: "sampling fields at their bounds and null are accepted",
			body: `{"model":"m","input":"x","temperature":2,"top_p":0,"max_output_tokens":16,"top_logprobs":0,"max_tool_calls":null,
				"include":["reasoning.encrypted_content"],"prompt_cache_key":"k","client_metadata":{"a":"b"},"text":{"verbosity":"low"},
				"service_tier":"auto","safety_identifier":"s","stream_options":{"include_obfuscation":false}}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true},
		},
	})
}

func TestParseChatAgentTools(t *testing.T) {
	auto := turn.ToolChoice{Mode: turn.ToolChoiceAuto}
	runParse(t, llmapi.OpChatCompletions, []parseCase{
		{
			name: "custom tools, their calls and outputs",
			caps: agentCaps,
			body: `{"model":"m","messages":[
				{"role":"user","content":"patch it"},
				{"role":"assistant","content":null,"tool_calls":[
					{"id":"call_c","type":"custom","custom":{"name":"apply_patch","input":"*** Begin Patch"}},
					{"id":"call_f","type":"function","function":{"name":"get","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"call_c","content":"Done"},
				{"role":"tool","tool_call_id":"call_f","content":"42"}],
				"tools":[{"type":"custom","custom":{"name":"apply_patch","description":"Patch","format":{"type":"grammar","grammar":{"syntax":"regex","definition":"\\*\\*\\*.*"}}}},
					{"type":"custom","custom":{"name":"free","format":{"type":"text"}}},
					{"type":"function","function":{"name":"get"}}],
				"tool_choice":{"type":"custom","custom":{"name":"apply_patch"}}}`,
			want: turn.Request{
				Model: "m", ParallelToolCalls: true,
				Input: []turn.Item{
					msg(turn.RoleUser, "patch it"),
					{Type: turn.ItemCustomToolCall, CallID: "call_c", Name: "apply_patch", Input: "*** Begin Patch"},
					{Type: turn.ItemFunctionCall, CallID: "call_f", Name: "get", Arguments: "{}"},
					{Type: turn.ItemCustomToolCallOutput, CallID: "call_c", Output: "Done"},
					{Type: turn.ItemFunctionCallOutput, CallID: "call_f", Output: "42"},
				},
				Tools: []turn.Tool{
					{Kind: turn.ToolCustom, Name: "apply_patch", Description: "Patch", Format: json.RawMessage(`{"definition":"\\*\\*\\*.*","syntax":"regex","type":"grammar"}`)},
					{Kind: turn.ToolCustom, Name: "free", Format: json.RawMessage(`{"type":"text"}`)},
					{Name: "get"},
				},
				ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceFunction, Name: "apply_patch"},
			},
		},
		{
			name: "web_search_options become the turn's web search",
			caps: turn.Capabilities{WebSearch: true},
			body: `{"model":"m","messages":[{"role":"user","content":"news?"}],"web_search_options":{"search_context_size":"low",
				"user_location":{"type":"approximate","approximate":{"city":"Oulu","country":"FI"}}}}`,
			want: turn.Request{
				Model: "m", Input: []turn.Item{msg(turn.RoleUser, "news?")}, ToolChoice: auto, ParallelToolCalls: true,
				WebSearch: &turn.WebSearch{ContextSize: "low", Location: json.RawMessage(`{"city":"Oulu","country":"FI","type":"approximate"}`)},
			},
		},
		{
			name: "sampling fields at their bounds and null are accepted",
			body: `{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0,"top_p":1,"frequency_penalty":-2,
				"presence_penalty":2,"seed":-5,"max_tokens":1,"max_completion_tokens":null,"temperature":1.5}`,
			want: turn.Request{Model: "m", Input: []turn.Item{msg(turn.RoleUser, "x")}, ToolChoice: auto, ParallelToolCalls: true},
		},
	})
}

// Wrong types and out-of-range values are 400s in OpenAI's shape, as
// OpenAI answers them (issue 15, item 9).
func TestParseRejectsWrongTypes(t *testing.T) {
	const user = `"messages":[{"role":"user","content":"x"}]`
	runReject(t, llmapi.OpChatCompletions, []rejectCase{
		{name: "null user content", body: `{"model":"m","messages":[{"role":"user","content":null}]}`, param: "messages[0].content", code: "invalid_type"},
		{name: "missing user content", body: `{"model":"m","messages":[{"role":"user"}]}`, param: "messages[0].content", code: "invalid_type"},
		{name: "null system content", body: `{"model":"m","messages":[{"role":"system","content":null},{"role":"user","content":"x"}]}`, param: "messages[0].content", code: "invalid_type"},
		{name: "null tool content", body: `{"model":"m","messages":[{"role":"user","content":"x"},{"role":"tool","tool_call_id":"c","content":null}]}`, param: "messages[1].content", code: "invalid_type"},
		{name: "string temperature", body: `{"model":"m",` + user + `,"temperature":"0.5"}`, param: "temperature", code: "invalid_type"},
		{name: "boolean temperature", body: `{"model":"m",` + user + `,"temperature":true}`, param: "temperature", code: "invalid_type"},
		{name: "infinite temperature", body: `{"model":"m",` + user + `,"temperature":1e999}`, param: "temperature", code: "decimal_above_max_value"},
		{name: "temperature above 2", body: `{"model":"m",` + user + `,"temperature":2.5}`, param: "temperature", code: "decimal_above_max_value"},
		{name: "negative temperature", body: `{"model":"m",` + user + `,"temperature":-0.1}`, param: "temperature", code: "decimal_below_min_value"},
		{name: "top_p above 1", body: `{"model":"m",` + user + `,"top_p":1.01}`, param: "top_p", code: "decimal_above_max_value"},
		{name: "string top_p", body: `{"model":"m",` + user + `,"top_p":"1"}`, param: "top_p", code: "invalid_type"},
		{name: "frequency_penalty below -2", body: `{"model":"m",` + user + `,"frequency_penalty":-2.5}`, param: "frequency_penalty", code: "decimal_below_min_value"},
		{name: "presence_penalty object", body: `{"model":"m",` + user + `,"presence_penalty":{}}`, param: "presence_penalty", code: "invalid_type"},
		{name: "decimal max_tokens", body: `{"model":"m",` + user + `,"max_tokens":1.5}`, param: "max_tokens", code: "invalid_type"},
		{name: "string max_tokens", body: `{"model":"m",` + user + `,"max_tokens":"100"}`, param: "max_tokens", code: "invalid_type"},
		{name: "zero max_completion_tokens", body: `{"model":"m",` + user + `,"max_completion_tokens":0}`, param: "max_completion_tokens", code: "integer_below_min_value"},
		{name: "string seed", body: `{"model":"m",` + user + `,"seed":"7"}`, param: "seed", code: "invalid_type"},
		{name: "string n", body: `{"model":"m",` + user + `,"n":"1"}`, param: "n", code: "invalid_type"},
		{name: "string stream", body: `{"model":"m",` + user + `,"stream":"yes"}`, param: "stream", code: "invalid_type"},
		{name: "web_search_options without the capability", caps: allCaps, body: `{"model":"m",` + user + `,"web_search_options":{}}`, param: "web_search_options", code: unsupportedCode},
		{name: "bad search_context_size", caps: agentCaps, body: `{"model":"m",` + user + `,"web_search_options":{"search_context_size":"huge"}}`, param: "web_search_options.search_context_size", code: invalidValue},
		{name: "custom grammar of an unknown syntax", caps: agentCaps, body: `{"model":"m",` + user + `,"tools":[{"type":"custom","custom":{"name":"c","format":{"type":"grammar","grammar":{"syntax":"peg","definition":"x"}}}}]}`, param: "tools[0].custom.format.grammar.syntax", code: invalidValue},
		{name: "custom tool call without name", caps: agentCaps, body: `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"custom","custom":{"input":"x"}}]}]}`, param: "messages[0].tool_calls[0]", code: missingParam},
	})
	runReject(t, llmapi.OpResponses, []rejectCase{
		{name: "null message content", body: `{"model":"m","input":[{"role":"user","content":null}]}`, param: "input[0].content", code: "invalid_type"},
		{name: "string temperature", body: `{"model":"m","input":"x","temperature":"hot"}`, param: "temperature", code: "invalid_type"},
		{name: "infinite temperature", body: `{"model":"m","input":"x","temperature":-1e400}`, param: "temperature", code: "decimal_below_min_value"},
		{name: "top_p array", body: `{"model":"m","input":"x","top_p":[1]}`, param: "top_p", code: "invalid_type"},
		{name: "max_output_tokens below 16", body: `{"model":"m","input":"x","max_output_tokens":8}`, param: "max_output_tokens", code: "integer_below_min_value"},
		{name: "decimal max_output_tokens", body: `{"model":"m","input":"x","max_output_tokens":100.5}`, param: "max_output_tokens", code: "invalid_type"},
		{name: "top_logprobs", body: `{"model":"m","input":"x","top_logprobs":3}`, param: "top_logprobs", code: unsupportedCode},
		{name: "include not a list", body: `{"model":"m","input":"x","include":"reasoning.encrypted_content"}`, param: "include", code: "invalid_type"},
		{name: "bad verbosity", body: `{"model":"m","input":"x","text":{"verbosity":"loud"}}`, param: "text.verbosity", code: invalidValue},
		{name: "null function_call_output", body: `{"model":"m","input":[{"type":"function_call_output","call_id":"c","output":null}]}`, param: "input[0].output", code: "invalid_type"},
	})
	runReject(t, llmapi.OpCompletions, []rejectCase{
		{name: "string temperature", body: `{"model":"m","prompt":"x","temperature":"0"}`, param: "temperature", code: "invalid_type"},
		{name: "negative max_tokens", body: `{"model":"m","prompt":"x","max_tokens":-1}`, param: "max_tokens", code: "integer_below_min_value"},
		{name: "presence_penalty above 2", body: `{"model":"m","prompt":"x","presence_penalty":3}`, param: "presence_penalty", code: "decimal_above_max_value"},
	})
}

func TestParseResponsesAgentRejects(t *testing.T) {
	noSearch := turn.Capabilities{Tools: true, Images: true, Schema: true}
	runReject(t, llmapi.OpResponses, []rejectCase{
		{name: "web_search without the capability names the tool", caps: noSearch, body: `{"model":"m","input":"x","tools":[{"type":"function","name":"f"},{"type":"web_search"}]}`, param: "tools[1].type", code: unsupportedCode},
		{name: "web_search_preview without the capability", caps: noSearch, body: `{"model":"m","input":"x","tools":[{"type":"web_search_preview"}]}`, param: "tools[0].type", code: unsupportedCode},
		{name: "two web search tools", caps: agentCaps, body: `{"model":"m","input":"x","tools":[{"type":"web_search"},{"type":"web_search_preview"}]}`, param: "tools[1]", code: invalidValue},
		{name: "bad search_context_size", caps: agentCaps, body: `{"model":"m","input":"x","tools":[{"type":"web_search","search_context_size":"max"}]}`, param: "tools[0].search_context_size", code: invalidValue},
		{name: "allowed_domains not a list", caps: agentCaps, body: `{"model":"m","input":"x","tools":[{"type":"web_search","filters":{"allowed_domains":"a.com"}}]}`, param: "tools[0]", code: "invalid_type"},
		{name: "namespace without name", caps: agentCaps, body: `{"model":"m","input":"x","tools":[{"type":"namespace","tools":[{"type":"function","name":"f"}]}]}`, param: "tools[0].name", code: missingParam},
		{name: "empty namespace", caps: agentCaps, body: `{"model":"m","input":"x","tools":[{"type":"namespace","name":"n","tools":[]}]}`, param: "tools[0].tools", code: missingParam},
		{name: "hosted tool in a namespace", caps: agentCaps, body: `{"model":"m","input":"x","tools":[{"type":"namespace","name":"n","tools":[{"type":"web_search"}]}]}`, param: "tools[0].tools[0].type", code: invalidValue},
		{name: "namespace member without name", caps: agentCaps, body: `{"model":"m","input":"x","tools":[{"type":"namespace","name":"n","tools":[{"type":"custom"}]}]}`, param: "tools[0].tools[0].name", code: missingParam},
		{name: "namespaced tools without the tools capability", caps: turn.Capabilities{WebSearch: true}, body: `{"model":"m","input":"x","tools":[{"type":"namespace","name":"n","tools":[{"type":"function","name":"f"}]}]}`, param: "tools", code: unsupportedCode},
		{name: "custom format of an unknown type", caps: agentCaps, body: `{"model":"m","input":"x","tools":[{"type":"custom","name":"c","format":{"type":"json"}}]}`, param: "tools[0].format.type", code: invalidValue},
		{name: "custom grammar without definition", caps: agentCaps, body: `{"model":"m","input":"x","tools":[{"type":"custom","name":"c","format":{"type":"grammar","syntax":"lark"}}]}`, param: "tools[0].format.definition", code: missingParam},
		{name: "custom_tool_call without input", body: `{"model":"m","input":[{"type":"custom_tool_call","call_id":"c","name":"n"}]}`, param: "input[0]", code: missingParam},
		{name: "custom_tool_call_output without call_id", body: `{"model":"m","input":[{"type":"custom_tool_call_output","output":"x"}]}`, param: "input[0].call_id", code: missingParam},
		{name: "web_search_call without id", body: `{"model":"m","input":[{"type":"web_search_call","action":{"type":"search"}}]}`, param: "input[0].id", code: missingParam},
		{name: "item_reference without id", body: `{"model":"m","input":[{"type":"item_reference"}]}`, param: "input[0].id", code: missingParam},
		{name: "additional_tools without tools", body: `{"model":"m","input":[{"type":"additional_tools","role":"developer","tools":[]}]}`, param: "input[0].tools", code: missingParam},
		{name: "hosted tool in additional_tools", caps: agentCaps, body: `{"model":"m","input":[{"type":"additional_tools","role":"developer","tools":[{"type":"code_interpreter"}]}]}`, param: "input[0].tools[0].type", code: unsupportedCode},
	})
}

// codexCapture parses a request body Codex CLI 0.171.0 sent (codex exec
// with a custom model provider whose model is unknown to Codex's catalog,
// the configuration that points Codex at this API); see testdata.
func codexCapture(t *testing.T, name string, caps turn.Capabilities) (*openaiwire.Call, error) {
	t.Helper()
	body, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return openaiwire.Parse(llmapi.OpResponses, body, caps)
}

func TestParseCodexCLIRequests(t *testing.T) {
	first, err := codexCapture(t, "codex-exec-first-request.json", agentCaps)
	if err != nil {
		t.Fatalf("first request: %v", err)
	}
	req := first.Request
	if req.Model != "fake-model" || !first.Stream || !req.ParallelToolCalls || req.ToolChoice.Mode != turn.ToolChoiceAuto || first.Responses.Store {
		t.Errorf("header fields: model %q stream %v parallel %v choice %+v store %v", req.Model, first.Stream, req.ParallelToolCalls, req.ToolChoice, first.Responses.Store)
	}
	// The offered tools: seven functions and the namespace's members.
	var top, spaced []string
	for _, tl := range req.Tools {
		if tl.Namespace == "" {
			top = append(top, tl.Name)
			continue
		}
		if tl.Namespace != "multi_agent_v1" || tl.NamespaceDescription == "" || tl.Kind != turn.ToolFunction {
			t.Errorf("namespaced tool %+v", tl)
		}
		spaced = append(spaced, tl.Name)
	}
	if want := []string{"exec_command", "write_stdin", "request_user_input", "view_image", "get_goal", "create_goal", "update_goal"}; !slices.Equal(top, want) {
		t.Errorf("top-level tools %v, want %v", top, want)
	}
	if !slices.Contains(spaced, "spawn_agent") || !slices.Contains(spaced, "close_agent") {
		t.Errorf("namespace members %v", spaced)
	}
	if ws := req.WebSearch; ws == nil || !ws.CachedOnly {
		t.Errorf("web search %+v, want cached only (external_web_access false)", ws)
	}
	// Input: the developer prompt, skills, environment and the user's ask,
	// with Codex's own ids.
	if len(req.Input) != 4 || req.Input[0].Role != turn.RoleDeveloper || req.Input[3].Text() != "list files" ||
		!strings.HasPrefix(req.Input[3].ID, "msg_") {
		t.Errorf("input %+v", req.Input)
	}
	if req.Effort != "" || len(req.Instructions) != 0 {
		t.Errorf("effort %q instructions %q", req.Effort, req.Instructions)
	}
	// The response echoes store:false and the summary setting.
	builtRaw := first.Build(openaiwire.Meta{ID: "resp_codex", Model: req.Model}, &turn.Result{Text: "ok"})
	var built responses.Response
	decode(t, builtRaw, &built)
	if string(rawFields(t, builtRaw)["store"]) != "false" || string(built.Reasoning.Summary) != "auto" || len(built.Tools) != 9 {
		t.Errorf("echo: store %s summary %q tools %d", rawFields(t, builtRaw)["store"], built.Reasoning.Summary, len(built.Tools))
	}

	// Without hosted web search (the operator's choice) the request is a
	// 400 that names the tool.
	_, err = codexCapture(t, "codex-exec-first-request.json", turn.Capabilities{Tools: true, Images: true, Schema: true})
	var apiErr *llmapi.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || apiErr.Param != "tools[8].type" || !strings.Contains(apiErr.Message, `"web_search"`) {
		t.Errorf("without web search: %v", err)
	}

	// The second request replays the shell call and its output.
	second, err := codexCapture(t, "codex-exec-second-request.json", agentCaps)
	if err != nil {
		t.Fatalf("second request: %v", err)
	}
	in := second.Request.Input
	if len(in) != 6 {
		t.Fatalf("second input has %d items", len(in))
	}
	call, out := in[4], in[5]
	if call.Type != turn.ItemFunctionCall || call.ID != "fc_1_0" || call.CallID != "call_echo" || call.Name != "exec_command" || call.Arguments != `{"cmd":"echo hi"}` {
		t.Errorf("function call %+v", call)
	}
	if out.Type != turn.ItemFunctionCallOutput || out.CallID != "call_echo" || !strings.Contains(out.Output, "\nhi\n") || !strings.HasPrefix(out.ID, "fco_") {
		t.Errorf("function call output %+v", out)
	}
}

// Codex's default configuration (its own model, a Responses "lite"
// request) offers its tools in an additional_tools input item: namespaces
// of function and custom tools, the custom exec tool with a lark grammar.
func TestParseCodexCLIDefaultModelRequest(t *testing.T) {
	c, err := codexCapture(t, "codex-exec-default-model-first-request.json", agentCaps)
	if err != nil {
		t.Fatal(err)
	}
	req := c.Request
	byName := map[string]turn.Tool{}
	for _, tl := range req.Tools {
		byName[tl.Namespace+"."+tl.Name] = tl
	}
	exec, ok := byName["functions.exec"]
	var format struct{ Type, Syntax, Definition string }
	if !ok || exec.Kind != turn.ToolCustom || json.Unmarshal(exec.Format, &format) != nil || format.Type != "grammar" || format.Syntax != "lark" || format.Definition == "" {
		t.Errorf("functions.exec = %+v", exec)
	}
	for _, name := range []string{"functions.wait", "clock.sleep", "collaboration.spawn_agent"} {
		if tl, ok := byName[name]; !ok || tl.Kind != turn.ToolFunction {
			t.Errorf("%s = %+v (tools %v)", name, tl, req.Tools)
		}
	}
	if req.ParallelToolCalls || req.Effort != "low" || req.WebSearch != nil || len(req.Input) != 6 || req.Input[0].Role != turn.RoleDeveloper {
		t.Errorf("request %+v", req)
	}
}

func TestItemIDs(t *testing.T) {
	meta := openaiwire.NewMeta(llmapi.OpResponses, "m", 1)
	seen := map[string]bool{}
	for _, prefix := range []string{"msg", "fc", "ctc", "ws", "msg"} {
		id := openaiwire.NewItemID(prefix, meta.ID)
		if !strings.HasPrefix(id, prefix+"_") || seen[id] {
			t.Errorf("NewItemID(%s) = %s", prefix, id)
		}
		seen[id] = true
		if owner, ok := openaiwire.ResponseOfItem(id); !ok || owner != meta.ID {
			t.Errorf("ResponseOfItem(%s) = %s, %v; want %s", id, owner, ok, meta.ID)
		}
	}
	// Ids this project did not make name no response.
	for _, id := range []string{"", "msg", "msg_", "msg_abc", "fc_1_0", "msg_d93c91f3-1988-5e76-8bc7-15c7209bca8b", "rs_0123456789abcdef0123456789abcdef01234567!"} {
		if owner, ok := openaiwire.ResponseOfItem(id); ok {
			t.Errorf("ResponseOfItem(%q) = %s", id, owner)
		}
	}

	items := []turn.Item{
		{Type: turn.ItemMessage, Role: turn.RoleUser}, {Type: turn.ItemFunctionCall, ID: "fc_theirs"}, {Type: turn.ItemFunctionCallOutput},
		{Type: turn.ItemCustomToolCall}, {Type: turn.ItemCustomToolCallOutput}, {Type: turn.ItemWebSearchCall},
	}
	openaiwire.AssignItemIDs(items, meta.ID)
	for i, want := range []string{"msg_", "fc_theirs", "fco_", "ctc_", "ctco_", "ws_"} {
		if !strings.HasPrefix(items[i].ID, want) {
			t.Errorf("item %d id %q, want prefix %q", i, items[i].ID, want)
		}
		if i != 1 {
			if owner, _ := openaiwire.ResponseOfItem(items[i].ID); owner != meta.ID {
				t.Errorf("item %d id %q names %q", i, items[i].ID, owner)
			}
		}
	}
}

func TestItemReferences(t *testing.T) {
	c := mustParse(t, llmapi.OpResponses, `{"model":"m","input":[
		{"role":"user","content":"hi"},
		{"type":"item_reference","id":"msg_a"},
		{"id":"fc_b"},
		{"role":"user","content":"again"}]}`)
	if refs := c.References(); !slices.Equal(refs, []string{"msg_a", "fc_b"}) {
		t.Fatalf("References = %v", refs)
	}
	stored := map[string]turn.Item{
		"msg_a": {Type: turn.ItemMessage, ID: "msg_a", Role: turn.RoleAssistant, Content: text("Echo: hi")},
		"fc_b":  {Type: turn.ItemFunctionCall, ID: "fc_b", CallID: "call_1", Name: "f", Arguments: "{}"},
	}
	if err := c.ResolveReferences(stored); err != nil {
		t.Fatal(err)
	}
	sameRequest(t, c.Request, turn.Request{Model: "m", ToolChoice: turn.ToolChoice{Mode: turn.ToolChoiceAuto}, ParallelToolCalls: true,
		Input: []turn.Item{msg(turn.RoleUser, "hi"), stored["msg_a"], stored["fc_b"], msg(turn.RoleUser, "again")}})
	if len(c.References()) != 0 {
		t.Errorf("references left after resolving: %v", c.References())
	}

	c = mustParse(t, llmapi.OpResponses, `{"model":"m","input":[{"type":"item_reference","id":"msg_a"},{"type":"item_reference","id":"msg_gone"}]}`)
	err := c.ResolveReferences(map[string]turn.Item{"msg_a": stored["msg_a"]})
	var apiErr *llmapi.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusNotFound || apiErr.Type != llmapi.TypeInvalidRequest ||
		apiErr.Param != "input" || apiErr.Code != "" || !strings.HasPrefix(apiErr.Message, "Item with id 'msg_gone' not found.") {
		t.Errorf("missing reference: %#v", err)
	}
}

// agentResult is a turn that searched the web twice, answered with a
// citation and called a namespaced function and a custom tool.
var agentResult = &turn.Result{
	WebSearches: []turn.WebSearchCall{
		{ID: "provider-ws-1", Action: json.RawMessage(`{"type":"search","query":"go release"}`)},
		{Action: json.RawMessage(`{"type":"open_page","url":"https://go.dev/doc"}`)},
	},
	Text:        "Go 1.26 is out.",
	Annotations: []json.RawMessage{json.RawMessage(`{"type":"url_citation","start_index":0,"end_index":7,"url":"https://go.dev/doc","title":"Go docs"}`)},
	ToolCalls: []turn.ToolCall{
		{ID: "call_ns", Name: "get", Namespace: "weather", Arguments: `{"city":"Oulu"}`},
		{ID: "call_cu", Name: "apply_patch", Arguments: "*** Begin Patch\n*** End Patch", Custom: true},
	},
	Finish: turn.FinishToolCalls,
	Usage:  turn.Usage{InputTokens: 3, OutputTokens: 4},
}

const agentBody = `{"model":"m","input":"hi","stream":true,"tools":[{"type":"web_search"},
	{"type":"namespace","name":"weather","description":"w","tools":[{"type":"function","name":"get"}]},{"type":"custom","name":"apply_patch"}]}`

func TestBuildResponseAgentOutput(t *testing.T) {
	meta := openaiwire.NewMeta(llmapi.OpResponses, "m", 1)
	c, err := openaiwire.Parse(llmapi.OpResponses, []byte(agentBody), agentCaps)
	if err != nil {
		t.Fatal(err)
	}
	var r responses.Response
	body := c.Build(meta, agentResult)
	decode(t, body, &r)
	var types []string
	for _, o := range r.Output {
		types = append(types, o.Type)
		if owner, ok := openaiwire.ResponseOfItem(o.ID); !ok || owner != meta.ID {
			t.Errorf("output item id %s does not name %s", o.ID, meta.ID)
		}
	}
	if want := []string{"web_search_call", "web_search_call", "message", "function_call", "custom_tool_call"}; !slices.Equal(types, want) {
		t.Fatalf("output types %v, want %v\n%s", types, want, body)
	}
	ws := r.Output[0].AsWebSearchCall()
	if !strings.HasPrefix(ws.ID, "ws_") || ws.Status != "completed" || ws.Action.Type != "search" || ws.Action.Query != "go release" {
		t.Errorf("web search %s", r.Output[0].RawJSON())
	}
	if page := r.Output[1].AsWebSearchCall(); page.Action.Type != "open_page" || page.Action.URL != "https://go.dev/doc" {
		t.Errorf("open_page %s", r.Output[1].RawJSON())
	}
	m := r.Output[2].AsMessage()
	if len(m.Content) != 1 || len(m.Content[0].Annotations) != 1 {
		t.Fatalf("message %s", r.Output[2].RawJSON())
	}
	a := m.Content[0].Annotations[0]
	if a.Type != "url_citation" || a.URL != "https://go.dev/doc" || a.Title != "Go docs" || a.StartIndex != 0 || a.EndIndex != 7 {
		t.Errorf("annotation %s", a.RawJSON())
	}
	fc := r.Output[3].AsFunctionCall()
	if !strings.HasPrefix(fc.ID, "fc_") || fc.Name != "get" || fc.Namespace != "weather" || fc.CallID != "call_ns" {
		t.Errorf("namespaced call %s", r.Output[3].RawJSON())
	}
	cc := r.Output[4].AsCustomToolCall()
	if !strings.HasPrefix(cc.ID, "ctc_") || cc.Name != "apply_patch" || cc.CallID != "call_cu" || cc.Input != agentResult.ToolCalls[1].Arguments || cc.Namespace != "" {
		t.Errorf("custom call %s", r.Output[4].RawJSON())
	}
	// The stored items are the same, with the same ids.
	items := c.OutputItems(meta, agentResult)
	wantTypes := []turn.ItemType{turn.ItemWebSearchCall, turn.ItemWebSearchCall, turn.ItemMessage, turn.ItemFunctionCall, turn.ItemCustomToolCall}
	for i, it := range items {
		if it.Type != wantTypes[i] || it.ID != r.Output[i].ID {
			t.Errorf("OutputItems[%d] = %+v, output %s", i, it, r.Output[i].RawJSON())
		}
	}
	if items[3].Namespace != "weather" || items[4].Input != agentResult.ToolCalls[1].Arguments || len(items[2].Content[0].Annotations) != 1 {
		t.Errorf("OutputItems %+v", items)
	}

	// Chat: the custom call and the citation in chat's shapes.
	chat := mustParse(t, llmapi.OpChatCompletions, `{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"custom","custom":{"name":"apply_patch"}}]}`)
	var cc2 sdk.ChatCompletion
	decode(t, chat.Build(openaiwire.Meta{ID: "chatcmpl-a", Model: "m"}, agentResult), &cc2)
	msg := cc2.Choices[0].Message
	if len(msg.ToolCalls) != 2 || msg.ToolCalls[0].Type != "function" || msg.ToolCalls[1].Type != "custom" ||
		msg.ToolCalls[1].Custom.Name != "apply_patch" || msg.ToolCalls[1].Custom.Input != agentResult.ToolCalls[1].Arguments || msg.ToolCalls[1].ID != "call_cu" {
		t.Errorf("chat tool calls %s", msg.RawJSON())
	}
	if len(msg.Annotations) != 1 || msg.Annotations[0].URLCitation.URL != "https://go.dev/doc" || msg.Annotations[0].URLCitation.EndIndex != 7 {
		t.Errorf("chat annotations %s", msg.RawJSON())
	}
}

// agentDeltas stream what agentResult holds, as a provider would.
var agentDeltas = []turn.Delta{
	{Kind: turn.DeltaWebSearch, Index: 0, WebSearch: turn.WebSearchCall{ID: "provider-ws-1"}},
	{Kind: turn.DeltaWebSearch, Index: 0, WebSearch: agentResult.WebSearches[0], Done: true},
	{Kind: turn.DeltaWebSearch, Index: 1},
	{Kind: turn.DeltaWebSearch, Index: 1, WebSearch: agentResult.WebSearches[1], Done: true},
	{Kind: turn.DeltaText, Text: "Go 1.26"}, {Kind: turn.DeltaText, Text: " is out."},
	{Kind: turn.DeltaToolCall, Index: 0, ToolCall: turn.ToolCall{ID: "call_ns", Name: "get", Namespace: "weather"}},
	{Kind: turn.DeltaToolCall, Index: 0, ArgumentsDelta: `{"city":"Oulu"}`},
	{Kind: turn.DeltaToolCall, Index: 1, ToolCall: turn.ToolCall{ID: "call_cu", Name: "apply_patch", Custom: true}},
	{Kind: turn.DeltaToolCall, Index: 1, ArgumentsDelta: "*** Begin Patch\n"},
	{Kind: turn.DeltaToolCall, Index: 1, ArgumentsDelta: "*** End Patch"},
}

func TestResponsesStreamAgent(t *testing.T) {
	search := func(i int) []string {
		return []string{
			fmt.Sprintf("response.output_item.added:web_search_call:%d", i), "response.web_search_call.in_progress", "response.web_search_call.searching",
			"response.web_search_call.completed", fmt.Sprintf("response.output_item.done:web_search_call:%d", i),
		}
	}
	message := func(i int, deltas ...string) []string {
		out := []string{fmt.Sprintf("response.output_item.added:message:%d", i), "response.content_part.added"}
		for _, d := range deltas {
			out = append(out, "response.output_text.delta:"+d)
		}
		return append(out, "response.output_text.annotation.added", "response.output_text.done:Go 1.26 is out.", "response.content_part.done",
			fmt.Sprintf("response.output_item.done:message:%d", i))
	}
	calls := func(i int, argDeltas ...string) []string {
		patch := agentResult.ToolCalls[1].Arguments
		out := []string{fmt.Sprintf("response.output_item.added:function_call:%d", i), `response.function_call_arguments.delta:{"city":"Oulu"}`,
			fmt.Sprintf("response.output_item.added:custom_tool_call:%d", i+1)}
		for _, d := range argDeltas {
			out = append(out, "response.custom_tool_call_input.delta:"+d)
		}
		return append(out, `response.function_call_arguments.done:{"city":"Oulu"}`, fmt.Sprintf("response.output_item.done:function_call:%d", i),
			"response.custom_tool_call_input.done:"+patch, fmt.Sprintf("response.output_item.done:custom_tool_call:%d", i+1))
	}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }
	head, tail := []string{"response.created", "response.in_progress"}, []string{"response.completed"}
	tests := []struct {
		name      string
		deltas    []turn.Delta
		want      []string
		wantTypes []string
	}{
		{
			name:   "everything streamed",
			deltas: agentDeltas,
			want: cat(head, search(0), search(1), message(2, "Go 1.26", " is out.")[:4],
				// a streamed call starting closes the message before the
				// annotations are known: they come in response.completed only
				[]string{"response.output_text.done:Go 1.26 is out.", "response.content_part.done", "response.output_item.done:message:2"},
				calls(3, "*** Begin Patch\n", "*** End Patch"), tail),
			wantTypes: []string{"web_search_call", "web_search_call", "message", "function_call", "custom_tool_call"},
		},
		{
			name:      "nothing streamed: Finish catches up, searches first",
			want:      cat(head, search(0), search(1), message(2, "Go 1.26 is out."), calls(3, "*** Begin Patch\n*** End Patch"), tail),
			wantTypes: []string{"web_search_call", "web_search_call", "message", "function_call", "custom_tool_call"},
		},
		{
			name: "a search after the text keeps the stream's order in the final object",
			deltas: []turn.Delta{
				{Kind: turn.DeltaText, Text: "Go 1.26"},
				{Kind: turn.DeltaWebSearch, Index: 0, WebSearch: agentResult.WebSearches[0], Done: true},
			},
			want: cat(head, []string{"response.output_item.added:message:0", "response.content_part.added", "response.output_text.delta:Go 1.26"},
				search(1), []string{"response.output_item.added:web_search_call:2", "response.web_search_call.in_progress", "response.web_search_call.searching",
					"response.web_search_call.completed", "response.output_item.done:web_search_call:2",
					"response.output_text.delta: is out."},
				[]string{"response.output_text.annotation.added", "response.output_text.done:Go 1.26 is out.", "response.content_part.done", "response.output_item.done:message:0"},
				calls(3, "*** Begin Patch\n*** End Patch"), tail),
			wantTypes: []string{"message", "web_search_call", "web_search_call", "function_call", "custom_tool_call"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			call, err := openaiwire.Parse(llmapi.OpResponses, []byte(agentBody), agentCaps)
			if err != nil {
				t.Fatal(err)
			}
			meta := openaiwire.NewMeta(llmapi.OpResponses, "m", 1)
			raw := streamRun(call, meta, tc.deltas, agentResult, nil)
			frames := make([]respFrame, len(raw))
			var got []string
			for i, f := range raw {
				decode(t, f, &frames[i].ev)
				frames[i].raw = f
				got = append(got, agentSig(frames[i]))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("frames\n got %q\nwant %q", got, tc.want)
			}
			checkTerminal(t, llmapi.OpResponses, raw, false)
			checkResponsesIDs(t, meta, frames)
			for _, f := range frames {
				ev := f.ev
				switch ev.Type {
				case "response.output_text.annotation.added":
					a := ev.AsResponseOutputTextAnnotationAdded()
					if a.AnnotationIndex != 0 || a.ContentIndex != 0 || !strings.Contains(string(f.raw), `"url":"https://go.dev/doc"`) {
						t.Errorf("annotation event %s", f.raw)
					}
				case "response.output_item.added":
					if ev.Item.Type == "function_call" && ev.Item.Namespace != "weather" {
						t.Errorf("namespaced call added without its namespace: %s", f.raw)
					}
				case "response.output_item.done":
					if ev.Item.Type == "web_search_call" && ev.Item.Action.Type == "" {
						t.Errorf("web search done without its action: %s", f.raw)
					}
				}
			}
			// Build after the stream gives the stream's items, in its order.
			var built responses.Response
			decode(t, call.Build(meta, agentResult), &built)
			done := frames[len(frames)-1].ev.Response
			var types []string
			for i, o := range built.Output {
				types = append(types, o.Type)
				if done.Output[i].ID != o.ID {
					t.Errorf("output %d: completed %s, Build %s", i, done.Output[i].ID, o.ID)
				}
			}
			if !slices.Equal(types, tc.wantTypes) {
				t.Errorf("Build output %v, want %v", types, tc.wantTypes)
			}
			if ids := call.OutputItems(meta, agentResult); ids[0].ID != built.Output[0].ID {
				t.Errorf("OutputItems order differs from Build: %s vs %s", ids[0].ID, built.Output[0].ID)
			}
		})
	}
}

// agentSig extends respSig with the agent events.
func agentSig(f respFrame) string {
	ev := f.ev
	switch ev.Type {
	case "response.custom_tool_call_input.delta":
		return ev.Type + ":" + ev.Delta
	case "response.custom_tool_call_input.done":
		return ev.Type + ":" + ev.Input
	}
	return respSig(f)
}

func TestChatStreamAgent(t *testing.T) {
	call := mustParse(t, llmapi.OpChatCompletions, `{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,
		"tools":[{"type":"function","function":{"name":"get"}},{"type":"custom","custom":{"name":"apply_patch"}}]}`)
	raw := streamRun(call, openaiwire.Meta{ID: "chatcmpl-a", Model: "m"}, agentDeltas, agentResult, nil)
	var got []string
	for _, f := range raw {
		var ch map[string]any
		decode(t, f, &ch)
		choices := ch["choices"].([]any)
		delta := choices[0].(map[string]any)["delta"].(map[string]any)
		delete(delta, "role")
		if c, ok := delta["content"]; ok && c == "" {
			delete(delta, "content")
		}
		got = append(got, string(mustMarshal(t, delta)))
	}
	want := []string{
		`{}`, `{"content":"Go 1.26"}`, `{"content":" is out."}`,
		`{"tool_calls":[{"function":{"arguments":"","name":"get"},"id":"call_ns","index":0,"type":"function"}]}`,
		`{"tool_calls":[{"function":{"arguments":"{\"city\":\"Oulu\"}"},"index":0}]}`,
		`{"tool_calls":[{"custom":{"input":"","name":"apply_patch"},"id":"call_cu","index":1,"type":"custom"}]}`,
		`{"tool_calls":[{"custom":{"input":"*** Begin Patch\n"},"index":1}]}`,
		`{"tool_calls":[{"custom":{"input":"*** End Patch"},"index":1}]}`,
		`{"annotations":[{"type":"url_citation","url_citation":{"end_index":7,"start_index":0,"title":"Go docs","url":"https://go.dev/doc"}}]}`,
		`{}`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("chat deltas\n got %q\nwant %q", got, want)
	}
	// The SDK's accumulator still assembles the function call.
	var acc sdk.ChatCompletionAccumulator
	for _, f := range raw {
		var ch sdk.ChatCompletionChunk
		decode(t, f, &ch)
		acc.AddChunk(ch)
	}
	if tc := acc.Choices[0].Message.ToolCalls; len(tc) < 1 || tc[0].Function.Arguments != `{"city":"Oulu"}` {
		t.Errorf("accumulated %s", acc.Choices[0].Message.RawJSON())
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestListItems(t *testing.T) {
	items := make([]turn.Item, 5)
	for i := range items {
		items[i] = turn.Item{Type: turn.ItemMessage, ID: fmt.Sprintf("msg_%d", i), Role: turn.RoleUser, Content: text(fmt.Sprint(i))}
	}
	tests := []struct {
		name        string
		q           llmapi.InputItemsRequest
		ids         []string
		first, last string
		more        bool
	}{
		{name: "default: newest first, all", q: llmapi.InputItemsRequest{}, ids: []string{"msg_4", "msg_3", "msg_2", "msg_1", "msg_0"}, first: "msg_4", last: "msg_0"},
		{name: "asc", q: llmapi.InputItemsRequest{Order: "asc"}, ids: []string{"msg_0", "msg_1", "msg_2", "msg_3", "msg_4"}, first: "msg_0", last: "msg_4"},
		{name: "limit", q: llmapi.InputItemsRequest{Order: "asc", Limit: 2}, ids: []string{"msg_0", "msg_1"}, first: "msg_0", last: "msg_1", more: true},
		{name: "after", q: llmapi.InputItemsRequest{Order: "asc", Limit: 2, After: "msg_1"}, ids: []string{"msg_2", "msg_3"}, first: "msg_2", last: "msg_3", more: true},
		{name: "last page", q: llmapi.InputItemsRequest{Order: "asc", Limit: 2, After: "msg_3"}, ids: []string{"msg_4"}, first: "msg_4", last: "msg_4"},
		{name: "after the last", q: llmapi.InputItemsRequest{Order: "asc", After: "msg_4"}, ids: []string{}},
		{name: "desc after", q: llmapi.InputItemsRequest{Limit: 2, After: "msg_3"}, ids: []string{"msg_2", "msg_1"}, first: "msg_2", last: "msg_1", more: true},
		{name: "before", q: llmapi.InputItemsRequest{Order: "asc", Limit: 2, Before: "msg_4"}, ids: []string{"msg_2", "msg_3"}, first: "msg_2", last: "msg_3", more: true},
		{name: "before, the first page", q: llmapi.InputItemsRequest{Order: "asc", Limit: 5, Before: "msg_2"}, ids: []string{"msg_0", "msg_1"}, first: "msg_0", last: "msg_1"},
		{name: "desc before", q: llmapi.InputItemsRequest{Limit: 1, Before: "msg_2"}, ids: []string{"msg_3"}, first: "msg_3", last: "msg_3", more: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := openaiwire.ListItems(items, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			var list struct {
				Object  string                        `json:"object"`
				Data    []responses.ResponseItemUnion `json:"data"`
				FirstID *string                       `json:"first_id"`
				LastID  *string                       `json:"last_id"`
				HasMore bool                          `json:"has_more"`
			}
			decode(t, raw, &list)
			ids := []string{}
			for _, d := range list.Data {
				ids = append(ids, d.ID)
			}
			first, last := "", ""
			if list.FirstID != nil {
				first, last = *list.FirstID, *list.LastID
			}
			if list.Object != "list" || !slices.Equal(ids, tc.ids) || first != tc.first || last != tc.last || list.HasMore != tc.more {
				t.Errorf("got %s", raw)
			}
		})
	}
	for _, q := range []llmapi.InputItemsRequest{{After: "msg_9"}, {Before: "nope"}} {
		_, err := openaiwire.ListItems(items, q)
		var apiErr *llmapi.APIError
		if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || (apiErr.Param != "after" && apiErr.Param != "before") {
			t.Errorf("%+v: %v", q, err)
		}
	}
}

// Every kind of stored item lists as the Responses API item the SDK reads.
func TestItemJSON(t *testing.T) {
	cite := json.RawMessage(`{"type":"url_citation","start_index":0,"end_index":1,"url":"https://a.example","title":"A"}`)
	items := []turn.Item{
		{Type: turn.ItemMessage, ID: "msg_u", Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: "look"}, {Type: turn.PartImage, ImageURL: "https://a.example/x.png"}}},
		{Type: turn.ItemMessage, ID: "msg_d", Role: turn.RoleDeveloper, Content: text("rules")},
		{Type: turn.ItemMessage, ID: "msg_a", Role: turn.RoleAssistant, Content: []turn.Part{{Type: turn.PartText, Text: "A", Annotations: []json.RawMessage{cite}}}},
		{Type: turn.ItemFunctionCall, ID: "fc_1", CallID: "call_1", Name: "get", Namespace: "weather", Arguments: "{}"},
		{Type: turn.ItemFunctionCallOutput, ID: "fco_1", CallID: "call_1", Output: "cold"},
		{Type: turn.ItemCustomToolCall, ID: "ctc_1", CallID: "call_2", Name: "exec", Input: "ls"},
		{Type: turn.ItemCustomToolCallOutput, ID: "ctco_1", CallID: "call_2", Output: "a.txt"},
		{Type: turn.ItemWebSearchCall, ID: "ws_1", Action: json.RawMessage(`{"type":"search","query":"q"}`)},
	}
	for _, it := range items {
		raw := openaiwire.ItemJSON(it)
		var u responses.ResponseItemUnion
		decode(t, raw, &u)
		if u.ID != it.ID || u.Type != string(it.Type) {
			t.Errorf("%s: %s", it.ID, raw)
			continue
		}
		var ok bool
		switch it.ID {
		case "msg_u":
			m := u.AsMessage()
			ok = m.Role == "user" && len(m.Content) == 2 && m.Content[0].Type == "input_text" && m.Content[0].Text == "look" &&
				m.Content[1].Type == "input_image" && m.Content[1].ImageURL == "https://a.example/x.png" && m.Status == "completed"
		case "msg_d":
			ok = u.AsMessage().Role == "developer" && u.AsMessage().Content[0].Text == "rules"
		case "msg_a":
			m := u.AsMessage()
			ok = m.Role == "assistant" && len(m.Content) == 1 && m.Content[0].Type == "output_text" && strings.Contains(string(raw), `"url":"https://a.example"`)
		case "fc_1":
			f := u.AsFunctionCall()
			ok = f.CallID == "call_1" && f.Name == "get" && f.Namespace == "weather" && f.Arguments == "{}"
		case "fco_1":
			ok = u.CallID == "call_1" && strings.Contains(string(raw), `"output":"cold"`)
		case "ctc_1":
			c := u.AsCustomToolCall()
			ok = c.CallID == "call_2" && c.Name == "exec" && c.Input == "ls"
		case "ctco_1":
			ok = u.CallID == "call_2" && strings.Contains(string(raw), `"output":"a.txt"`)
		case "ws_1":
			ok = u.AsWebSearchCall().Action.Query == "q" && u.Status == "completed"
		}
		if !ok {
			t.Errorf("%s: %s", it.ID, raw)
		}
	}
}
