package openaiwire

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// chatRequest is the subset of POST /v1/chat/completions this bridge reads.
// Sampling hints (temperature, top_p, penalties, seed), max_tokens,
// metadata, user and service_tier are accepted (type- and range-checked as
// OpenAI does, see chatNumbers) and have no effect.
type chatRequest struct {
	Model             string          `json:"model"`
	Messages          []chatMessage   `json:"messages"`
	Stream            bool            `json:"stream"`
	StreamOptions     *streamOptions  `json:"stream_options"`
	ReasoningEffort   string          `json:"reasoning_effort"`
	ResponseFormat    json.RawMessage `json:"response_format"`
	Tools             []chatTool      `json:"tools"`
	ToolChoice        json.RawMessage `json:"tool_choice"`
	ParallelToolCalls *bool           `json:"parallel_tool_calls"`
	N                 *int            `json:"n"`
	Logprobs          *bool           `json:"logprobs"`
	TopLogprobs       json.RawMessage `json:"top_logprobs"`
	Audio             json.RawMessage `json:"audio"`
	Modalities        []string        `json:"modalities"`
	Prediction        json.RawMessage `json:"prediction"`
	LogitBias         map[string]any  `json:"logit_bias"`
	Stop              json.RawMessage `json:"stop"`
	Functions         json.RawMessage `json:"functions"`
	FunctionCall      json.RawMessage `json:"function_call"`
	WebSearchOptions  json.RawMessage `json:"web_search_options"`
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// newStreamCall starts the Call of a chat or text completion request with
// its stream and stream_options.
func newStreamCall(stream bool, opts *streamOptions) (*Call, error) {
	c := &Call{Stream: stream}
	if opts != nil {
		if !stream {
			return nil, llmapi.InvalidRequest("stream_options", "invalid_value", "stream_options is only allowed when stream is true")
		}
		c.IncludeUsage = opts.IncludeUsage
	}
	return c, nil
}

type chatMessage struct {
	Role         string          `json:"role"`
	Content      json.RawMessage `json:"content"`
	ToolCalls    []chatToolCall  `json:"tool_calls"`
	ToolCallID   string          `json:"tool_call_id"`
	FunctionCall json.RawMessage `json:"function_call"`
}

type chatToolCall struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Function struct {
		Name      string `json:"name"`
		Arguments string `json:"arguments"`
	} `json:"function"`
	Custom struct {
		Name  string `json:"name"`
		Input string `json:"input"`
	} `json:"custom"`
}

type chatTool struct {
	Type     string `json:"type"`
	Function struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
	} `json:"function"`
	Custom struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Format      json.RawMessage `json:"format"`
	} `json:"custom"`
}

// chatNumbers are the numeric fields of a chat request, checked as OpenAI
// checks them (they have no effect on the model).
var chatNumbers = []numberRule{
	{param: "temperature", min: 0, max: 2},
	{param: "top_p", min: 0, max: 1},
	{param: "frequency_penalty", min: -2, max: 2},
	{param: "presence_penalty", min: -2, max: 2},
	{param: "seed", integer: true, min: math.MinInt64, max: math.MaxInt64},
	{param: "max_tokens", integer: true, min: 1, max: math.MaxInt32},
	{param: "max_completion_tokens", integer: true, min: 1, max: math.MaxInt32},
	{param: "top_logprobs", integer: true, min: 0, max: 20},
}

type chatContentPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL *struct {
		URL string `json:"url"`
	} `json:"image_url"`
}

func parseChat(body []byte, caps turn.Capabilities) (*Call, error) {
	var r chatRequest
	if err := decodeRequest(body, &r, &r.Model, chatNumbers); err != nil {
		return nil, err
	}
	if len(r.Messages) == 0 {
		return nil, llmapi.InvalidRequest("messages", "missing_required_parameter", "messages must be a non-empty array")
	}
	switch {
	case r.N != nil && *r.N != 1:
		return nil, unsupported("n", "only one choice (n=1) is generated")
	case r.Logprobs != nil && *r.Logprobs:
		return nil, unsupported("logprobs", "the model backend does not expose token log probabilities")
	case !isNull(r.TopLogprobs):
		return nil, unsupported("top_logprobs", "the model backend does not expose token log probabilities")
	case !isNull(r.Audio):
		return nil, unsupported("audio", "audio output is not available")
	case !isNull(r.Prediction):
		return nil, unsupported("prediction", "predicted outputs are not available")
	case len(r.LogitBias) > 0:
		return nil, unsupported("logit_bias", "the model backend does not take logit biases")
	case !isNull(r.Stop) && string(r.Stop) != "[]":
		return nil, unsupported("stop", "stop sequences cannot be enforced by the model backend")
	case !isNull(r.Functions) || !isNull(r.FunctionCall):
		return nil, unsupported("functions", "the legacy functions/function_call fields are not supported; use tools and tool_choice")
	}
	for _, m := range r.Modalities {
		if m != "text" {
			return nil, unsupported("modalities", "only text output is available")
		}
	}
	if err := checkEffort("reasoning_effort", r.ReasoningEffort); err != nil {
		return nil, err
	}
	c, err := newStreamCall(r.Stream, r.StreamOptions)
	if err != nil {
		return nil, err
	}
	req := &c.Request
	req.Model = r.Model
	req.Effort = r.ReasoningEffort
	req.ParallelToolCalls = r.ParallelToolCalls == nil || *r.ParallelToolCalls
	if err := parseChatMessages(r.Messages, req, caps); err != nil {
		return nil, err
	}
	format, err := parseChatResponseFormat(r.ResponseFormat, caps)
	if err != nil {
		return nil, err
	}
	req.Format = format
	tools := make([]turn.Tool, 0, len(r.Tools))
	for i, t := range r.Tools {
		param := fmt.Sprintf("tools[%d]", i)
		switch t.Type {
		case "function":
			if t.Function.Name == "" {
				return nil, llmapi.InvalidRequest(param+".function.name", "missing_required_parameter", "function name is required")
			}
			tools = append(tools, turn.Tool{
				Name: t.Function.Name, Description: t.Function.Description,
				Parameters: t.Function.Parameters, Strict: t.Function.Strict != nil && *t.Function.Strict,
			})
		case "custom":
			if t.Custom.Name == "" {
				return nil, llmapi.InvalidRequest(param+".custom.name", "missing_required_parameter", "custom tool name is required")
			}
			format, err := chatCustomFormat(param+".custom.format", t.Custom.Format)
			if err != nil {
				return nil, err
			}
			tools = append(tools, turn.Tool{Kind: turn.ToolCustom, Name: t.Custom.Name, Description: t.Custom.Description, Format: format})
		default:
			return nil, unsupported(param+".type", fmt.Sprintf("tool type %q is not available; function and custom tools are", t.Type))
		}
	}
	choice, err := parseToolChoice(r.ToolChoice, tools, func(raw json.RawMessage) (string, bool) {
		var obj struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
			Custom struct {
				Name string `json:"name"`
			} `json:"custom"`
		}
		if json.Unmarshal(raw, &obj) != nil {
			return "", false
		}
		switch {
		case obj.Type == "function" && obj.Function.Name != "":
			return obj.Function.Name, true
		case obj.Type == "custom" && obj.Custom.Name != "":
			return obj.Custom.Name, true
		}
		return "", false
	})
	if err != nil {
		return nil, err
	}
	if err := applyTools(req, tools, choice, caps); err != nil {
		return nil, err
	}
	if err := c.chatWebSearch(r.WebSearchOptions, caps); err != nil {
		return nil, err
	}
	return c, nil
}

// chatCustomFormat converts a chat custom tool's format
// ({"type":"text"} or {"type":"grammar","grammar":{"syntax","definition"}})
// to the Responses API shape turn.Tool.Format holds.
func chatCustomFormat(param string, raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	var f struct {
		Type    string `json:"type"`
		Grammar *struct {
			Syntax     string `json:"syntax"`
			Definition string `json:"definition"`
		} `json:"grammar"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, llmapi.InvalidRequest(param, "invalid_type", param+" must be an object")
	}
	if f.Type != "grammar" {
		return customFormat(param, f.Type, "", "")
	}
	if f.Grammar == nil {
		return nil, llmapi.InvalidRequest(param+".grammar", "missing_required_parameter", "a grammar format needs grammar.syntax and grammar.definition")
	}
	return customFormat(param+".grammar", f.Type, f.Grammar.Syntax, f.Grammar.Definition)
}

// customFormat checks a custom tool's format of type typ (its grammar, if
// any, given at param) and returns it in the Responses API shape.
func customFormat(param, typ, syntax, definition string) (json.RawMessage, error) {
	switch typ {
	case "text":
		return json.RawMessage(`{"type":"text"}`), nil
	case "grammar":
		return customGrammar(param, syntax, definition)
	default:
		return nil, llmapi.InvalidRequest(param+".type", "invalid_value", "format.type must be text or grammar")
	}
}

// customGrammar checks a grammar format and returns it in the Responses
// API shape.
func customGrammar(param, syntax, definition string) (json.RawMessage, error) {
	if syntax != "lark" && syntax != "regex" {
		return nil, llmapi.InvalidRequest(param+".syntax", "invalid_value", "grammar syntax must be lark or regex")
	}
	if definition == "" {
		return nil, llmapi.InvalidRequest(param+".definition", "missing_required_parameter", "grammar definition is required")
	}
	return mustJSON(map[string]string{"type": "grammar", "syntax": syntax, "definition": definition}), nil
}

// chatWebSearch maps web_search_options (search models' hosted web search)
// onto the turn's web search.
func (c *Call) chatWebSearch(raw json.RawMessage, caps turn.Capabilities) error {
	if isNull(raw) {
		return nil
	}
	var o struct {
		SearchContextSize string `json:"search_context_size"`
		UserLocation      *struct {
			Type        string          `json:"type"`
			Approximate json.RawMessage `json:"approximate"`
		} `json:"user_location"`
	}
	if err := json.Unmarshal(raw, &o); err != nil {
		return llmapi.InvalidRequest("web_search_options", "invalid_type", "web_search_options must be an object")
	}
	if !caps.WebSearch {
		return unsupported("web_search_options", "hosted web search is not available on this worker")
	}
	ws := &turn.WebSearch{}
	if err := checkContextSize("web_search_options.search_context_size", o.SearchContextSize); err != nil {
		return err
	}
	ws.ContextSize = o.SearchContextSize
	if o.UserLocation != nil && !isNull(o.UserLocation.Approximate) {
		// Responses' user_location is the approximate object itself, typed.
		var loc map[string]any
		if err := json.Unmarshal(o.UserLocation.Approximate, &loc); err != nil {
			return llmapi.InvalidRequest("web_search_options.user_location.approximate", "invalid_type", "user_location.approximate must be an object")
		}
		loc["type"] = "approximate"
		ws.Location = mustJSON(loc)
	}
	c.Request.WebSearch = ws
	c.webSearchParam = "web_search_options"
	return nil
}

func checkContextSize(param, size string) error {
	switch size {
	case "", "low", "medium", "high":
		return nil
	}
	return llmapi.InvalidRequest(param, "invalid_value", param+" must be low, medium or high")
}

// applyTools sets the request's tools, rejecting them when the provider
// cannot call tools (unless tool_choice "none" makes them irrelevant).
func applyTools(req *turn.Request, tools []turn.Tool, choice turn.ToolChoice, caps turn.Capabilities) error {
	req.ToolChoice = choice
	if choice.Mode == turn.ToolChoiceNone {
		return nil // the model is offered no tool
	}
	if len(tools) > 0 && !caps.Tools {
		return unsupported("tools", "this provider cannot call client tools")
	}
	required := choice.Mode == turn.ToolChoiceRequired && req.WebSearch == nil // a hosted tool counts
	if len(tools) == 0 && (required || choice.Mode == turn.ToolChoiceFunction) {
		return llmapi.InvalidRequest("tool_choice", "invalid_value", "tool_choice requires tools")
	}
	req.Tools = tools
	return nil
}

// parseToolChoice reads "none" | "auto" | "required" | a named-function
// object (decoded by named).
func parseToolChoice(raw json.RawMessage, tools []turn.Tool, named func(json.RawMessage) (string, bool)) (turn.ToolChoice, error) {
	if isNull(raw) {
		return turn.ToolChoice{Mode: turn.ToolChoiceAuto}, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch turn.ToolChoiceMode(s) {
		case turn.ToolChoiceAuto, turn.ToolChoiceNone, turn.ToolChoiceRequired:
			return turn.ToolChoice{Mode: turn.ToolChoiceMode(s)}, nil
		}
		return turn.ToolChoice{}, llmapi.InvalidRequest("tool_choice", "invalid_value", `tool_choice must be "none", "auto", "required" or a function`)
	}
	name, ok := named(raw)
	if !ok {
		return turn.ToolChoice{}, unsupported("tool_choice", "only none, auto, required or one named function can be chosen")
	}
	for _, t := range tools {
		if t.Name == name {
			return turn.ToolChoice{Mode: turn.ToolChoiceFunction, Name: name}, nil
		}
	}
	return turn.ToolChoice{}, llmapi.InvalidRequest("tool_choice", "invalid_value", fmt.Sprintf("tool_choice names function %q, which is not in tools", name))
}

func parseChatMessages(msgs []chatMessage, req *turn.Request, caps turn.Capabilities) error {
	leading := true
	custom := map[string]bool{} // call ids of custom tool calls, whose outputs are custom too
	for i, m := range msgs {
		param := fmt.Sprintf("messages[%d]", i)
		if m.Role != "assistant" {
			if err := notNull(param+".content", m.Content, "a string or an array of content parts"); err != nil {
				return err
			}
		}
		switch m.Role {
		case "system", "developer":
			text, err := textOf(param+".content", m.Content, "text")
			if err != nil {
				return err
			}
			if leading {
				req.Instructions = append(req.Instructions, text)
			} else {
				req.Input = append(req.Input, turn.Item{Type: turn.ItemMessage, Role: turn.RoleDeveloper, Content: []turn.Part{{Type: turn.PartText, Text: text}}})
			}
			continue
		case "user":
			parts, err := chatUserParts(param+".content", m.Content, caps)
			if err != nil {
				return err
			}
			req.Input = append(req.Input, turn.Item{Type: turn.ItemMessage, Role: turn.RoleUser, Content: parts})
		case "assistant":
			if !isNull(m.FunctionCall) {
				return unsupported(param+".function_call", "the legacy function_call field is not supported; use tool_calls")
			}
			text, err := textOf(param+".content", m.Content, "text", "refusal")
			if err != nil {
				return err
			}
			if text != "" || len(m.ToolCalls) == 0 {
				req.Input = append(req.Input, turn.Item{Type: turn.ItemMessage, Role: turn.RoleAssistant, Content: []turn.Part{{Type: turn.PartText, Text: text}}})
			}
			for j, tc := range m.ToolCalls {
				if tc.Type == "custom" {
					if tc.ID == "" || tc.Custom.Name == "" {
						return llmapi.InvalidRequest(fmt.Sprintf("%s.tool_calls[%d]", param, j), "missing_required_parameter", "custom tool calls need an id and custom.name")
					}
					custom[tc.ID] = true
					req.Input = append(req.Input, turn.Item{Type: turn.ItemCustomToolCall, CallID: tc.ID, Name: tc.Custom.Name, Input: tc.Custom.Input})
					continue
				}
				if tc.ID == "" || tc.Function.Name == "" {
					return llmapi.InvalidRequest(fmt.Sprintf("%s.tool_calls[%d]", param, j), "missing_required_parameter", "tool calls need an id and a function name")
				}
				req.Input = append(req.Input, turn.Item{Type: turn.ItemFunctionCall, CallID: tc.ID, Name: tc.Function.Name, Arguments: tc.Function.Arguments})
			}
		case "tool":
			if m.ToolCallID == "" {
				return llmapi.InvalidRequest(param+".tool_call_id", "missing_required_parameter", "tool messages need tool_call_id")
			}
			text, err := textOf(param+".content", m.Content, "text")
			if err != nil {
				return err
			}
			typ := turn.ItemFunctionCallOutput
			if custom[m.ToolCallID] {
				typ = turn.ItemCustomToolCallOutput
			}
			req.Input = append(req.Input, turn.Item{Type: typ, CallID: m.ToolCallID, Output: text})
		case "function":
			return unsupported(param+".role", `the legacy "function" role is not supported; use "tool"`)
		default:
			return llmapi.InvalidRequest(param+".role", "invalid_value", fmt.Sprintf("unknown role %q", m.Role))
		}
		leading = false
	}
	if len(req.Input) == 0 {
		return llmapi.InvalidRequest("messages", "invalid_value", "messages need at least one user, assistant or tool message")
	}
	return nil
}

func chatUserParts(param string, raw json.RawMessage, caps turn.Capabilities) ([]turn.Part, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []turn.Part{{Type: turn.PartText, Text: s}}, nil
	}
	var parts []chatContentPart
	if err := json.Unmarshal(raw, &parts); err != nil || len(parts) == 0 {
		return nil, llmapi.InvalidRequest(param, "invalid_type", "user content must be a string or a non-empty array of content parts")
	}
	out := make([]turn.Part, 0, len(parts))
	for j, p := range parts {
		pp := fmt.Sprintf("%s[%d]", param, j)
		switch p.Type {
		case "text":
			out = append(out, turn.Part{Type: turn.PartText, Text: p.Text})
		case "image_url":
			if p.ImageURL == nil || p.ImageURL.URL == "" {
				return nil, llmapi.InvalidRequest(pp+".image_url.url", "missing_required_parameter", "image_url.url is required")
			}
			part, err := imagePart(pp+".image_url.url", p.ImageURL.URL, caps)
			if err != nil {
				return nil, err
			}
			out = append(out, part)
		default:
			return nil, unsupported(pp+".type", fmt.Sprintf("content part type %q is not available; text and image_url are", p.Type))
		}
	}
	return out, nil
}

func imagePart(param, url string, caps turn.Capabilities) (turn.Part, error) {
	if !caps.Images {
		return turn.Part{}, unsupported(param, "this provider does not take images")
	}
	if !hasAnyPrefix(url, "http://", "https://", "data:image/") {
		return turn.Part{}, llmapi.InvalidRequest(param, "invalid_value", "image URL must be http(s) or a data:image/... URL")
	}
	return turn.Part{Type: turn.PartImage, ImageURL: url}, nil
}

func hasAnyPrefix(s string, prefixes ...string) bool {
	for _, p := range prefixes {
		if len(s) >= len(p) && s[:len(p)] == p {
			return true
		}
	}
	return false
}

func parseChatResponseFormat(raw json.RawMessage, caps turn.Capabilities) (*turn.OutputFormat, error) {
	if isNull(raw) {
		return nil, nil
	}
	var rf struct {
		Type       string      `json:"type"`
		JSONSchema *formatSpec `json:"json_schema"`
	}
	if err := json.Unmarshal(raw, &rf); err != nil {
		return nil, llmapi.InvalidRequest("response_format", "invalid_type", "response_format must be an object")
	}
	var spec formatSpec
	if rf.JSONSchema != nil {
		spec = *rf.JSONSchema
	}
	spec.Type = rf.Type // json_schema's own fields, under response_format's type
	return spec.convert("response_format", "response_format.json_schema.schema", caps)
}

// Wire shapes of the chat completion object and its chunks.

// completionObject is the object of a chat completion and of a text
// completion (and of their chunks); they differ in their choices.
type completionObject[C any] struct {
	ID                string     `json:"id"`
	Object            string     `json:"object"`
	Created           int64      `json:"created"`
	Model             string     `json:"model"`
	Choices           []C        `json:"choices"`
	Usage             *chatUsage `json:"usage,omitempty"`
	SystemFingerprint *string    `json:"system_fingerprint"`
}

type chatCompletion = completionObject[chatChoice]

type chatChoice struct {
	Index        int             `json:"index"`
	Message      chatOutMessage  `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason string          `json:"finish_reason"`
}

type chatOutMessage struct {
	Role        string            `json:"role"`
	Content     *string           `json:"content"`
	Refusal     *string           `json:"refusal"`
	ToolCalls   []chatOutToolCall `json:"tool_calls,omitempty"`
	Annotations []json.RawMessage `json:"annotations"`
}

// chatOutToolCall is a tool call of a message or a chunk: a function call
// ("function": name and arguments) or a custom tool call ("custom": name
// and input).
type chatOutToolCall struct {
	Index    *int          `json:"index,omitempty"`
	ID       string        `json:"id,omitempty"`
	Type     string        `json:"type,omitempty"`
	Function *chatOutFunc  `json:"function,omitempty"`
	Custom   *chatOutInput `json:"custom,omitempty"`
}

type chatOutFunc struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

type chatOutInput struct {
	Name  string `json:"name,omitempty"`
	Input string `json:"input"`
}

// chatToolCallOut renders a call (a whole one, or a chunk's piece: header
// fields only when id is set).
func chatToolCallOut(tc turn.ToolCall, custom bool, args string) chatOutToolCall {
	var out chatOutToolCall
	out.ID = tc.ID
	if custom {
		out.Custom = &chatOutInput{Input: args}
		if tc.ID != "" {
			out.Type, out.Custom.Name = "custom", tc.Name
		}
		return out
	}
	out.Function = &chatOutFunc{Arguments: args}
	if tc.ID != "" {
		out.Type, out.Function.Name = "function", tc.Name
	}
	return out
}

// chatAnnotations converts the Responses API url_citation annotations of
// a turn ({"type","start_index","end_index","url","title"}) to chat's
// ({"type":"url_citation","url_citation":{...}}); other kinds pass as they are.
func chatAnnotations(anns []json.RawMessage) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(anns))
	for _, a := range anns {
		var c map[string]json.RawMessage
		if json.Unmarshal(a, &c) != nil || string(c["type"]) != `"url_citation"` {
			out = append(out, a)
			continue
		}
		delete(c, "type")
		out = append(out, mustJSON(map[string]any{"type": "url_citation", "url_citation": c}))
	}
	return out
}

var jsonNull = json.RawMessage("null")

func (c *Call) chatCompletion(m Meta, res *turn.Result) chatCompletion {
	msg := chatOutMessage{Role: "assistant", Annotations: chatAnnotations(res.Annotations)}
	if res.Text != "" || len(res.ToolCalls) == 0 {
		text := res.Text
		msg.Content = &text
	}
	for _, tc := range res.ToolCalls {
		msg.ToolCalls = append(msg.ToolCalls, chatToolCallOut(tc, tc.Custom, tc.Arguments))
	}
	u := toChatUsage(res.Usage)
	return chatCompletion{
		ID: m.ID, Object: "chat.completion", Created: m.Created, Model: m.Model,
		Choices: []chatChoice{{Index: 0, Message: msg, Logprobs: jsonNull, FinishReason: string(finishOf(res))}},
		Usage:   &u,
	}
}

func finishOf(res *turn.Result) turn.FinishReason {
	if res.Finish == "" {
		if len(res.ToolCalls) > 0 {
			return turn.FinishToolCalls
		}
		return turn.FinishStop
	}
	return res.Finish
}

type chatChunk struct {
	completionObject[chatChunkChoice]
	withUsageNull bool
}

// MarshalJSON writes "usage": null on every chunk when the client asked
// for usage, as OpenAI does, and omits it otherwise.
func (ch chatChunk) MarshalJSON() ([]byte, error) {
	type plain chatChunk
	if ch.Usage == nil && ch.withUsageNull {
		return json.Marshal(struct {
			plain
			Usage json.RawMessage `json:"usage"`
		}{plain(ch), jsonNull})
	}
	return json.Marshal(plain(ch))
}

type chatChunkChoice struct {
	Index        int             `json:"index"`
	Delta        chatDelta       `json:"delta"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type chatDelta struct {
	Role        string            `json:"role,omitempty"`
	Content     *string           `json:"content,omitempty"`
	ToolCalls   []chatOutToolCall `json:"tool_calls,omitempty"`
	Annotations []json.RawMessage `json:"annotations,omitempty"`
}

type chatStream struct {
	c       *Call
	m       Meta
	started bool
	sent    streamed
	// custom marks the indexes of custom tool calls.
	custom map[int]bool
}

func (s *chatStream) frame(choices []chatChunkChoice, usage *chatUsage) json.RawMessage {
	return mustJSON(chatChunk{completionObject: completionObject[chatChunkChoice]{
		ID: s.m.ID, Object: "chat.completion.chunk", Created: s.m.Created, Model: s.m.Model,
		Choices: choices, Usage: usage,
	}, withUsageNull: s.c.IncludeUsage})
}

func (s *chatStream) delta(d chatDelta, finish *string) json.RawMessage {
	return s.frame([]chatChunkChoice{{Index: 0, Delta: d, Logprobs: jsonNull, FinishReason: finish}}, nil)
}

func (s *chatStream) start() []json.RawMessage {
	if s.started {
		return nil
	}
	s.started = true
	empty := ""
	return []json.RawMessage{s.delta(chatDelta{Role: "assistant", Content: &empty}, nil)}
}

func (s *chatStream) Delta(d turn.Delta) []json.RawMessage {
	frames := s.start()
	switch d.Kind {
	case turn.DeltaText:
		if d.Text == "" {
			return frames
		}
		text := d.Text
		s.sent.text += d.Text
		return append(frames, s.delta(chatDelta{Content: &text}, nil))
	case turn.DeltaToolCall:
		s.sent.tool(d)
		if d.ToolCall.ID != "" && d.ToolCall.Custom {
			if s.custom == nil {
				s.custom = map[int]bool{}
			}
			s.custom[d.Index] = true
		}
		idx := d.Index
		tc := chatToolCallOut(turn.ToolCall{ID: d.ToolCall.ID, Name: d.ToolCall.Name}, s.custom[d.Index], d.ArgumentsDelta)
		tc.Index = &idx
		return append(frames, s.delta(chatDelta{ToolCalls: []chatOutToolCall{tc}}, nil))
	}
	return frames
}

func (s *chatStream) Finish(res *turn.Result) []json.RawMessage {
	frames := s.start()
	frames = append(frames, catchUp(s, res, s.sent)...)
	if len(res.Annotations) > 0 {
		frames = append(frames, s.delta(chatDelta{Annotations: chatAnnotations(res.Annotations)}, nil))
	}
	finish := string(finishOf(res))
	frames = append(frames, s.delta(chatDelta{}, &finish))
	return append(frames, usageFrame(s.c, res, s.frame)...)
}

// usageFrame is a stream's last frame when the client asked for usage
// (stream_options.include_usage): no choices, and the usage.
func usageFrame[C any](c *Call, res *turn.Result, frame func([]C, *chatUsage) json.RawMessage) []json.RawMessage {
	if !c.IncludeUsage {
		return nil
	}
	u := toChatUsage(res.Usage)
	return []json.RawMessage{frame([]C{}, &u)}
}

func (s *chatStream) Fail(err *llmapi.APIError) []json.RawMessage {
	return []json.RawMessage{ErrorFrame(err)}
}

// streamed records what a stream has sent: the answer text, per tool
// call index the arguments (a key is present once the call has started),
// and the indexes of the web searches it has completed.
type streamed struct {
	text     string
	args     map[int]string
	searches map[int]bool
}

func (s *streamed) tool(d turn.Delta) {
	if s.args == nil {
		s.args = map[int]string{}
	}
	s.args[d.Index] += d.ArgumentsDelta
}

// catchUp emits, as deltas, whatever of res the provider did not stream —
// web searches not completed, the rest of the text, calls not started, the
// rest of their arguments — so a streaming client always receives the
// whole answer.
func catchUp(s Stream, res *turn.Result, sent streamed) []json.RawMessage {
	var frames []json.RawMessage
	for i, ws := range res.WebSearches {
		if !sent.searches[i] {
			frames = append(frames, s.Delta(turn.Delta{Kind: turn.DeltaWebSearch, Index: i, WebSearch: ws, Done: true})...)
		}
	}
	if rest, ok := strings.CutPrefix(res.Text, sent.text); ok && rest != "" {
		frames = append(frames, s.Delta(turn.Delta{Kind: turn.DeltaText, Text: rest})...)
	}
	for i, tc := range res.ToolCalls {
		args, started := sent.args[i]
		if !started {
			frames = append(frames, s.Delta(turn.Delta{Kind: turn.DeltaToolCall, Index: i,
				ToolCall: turn.ToolCall{ID: tc.ID, Name: tc.Name, Namespace: tc.Namespace, Custom: tc.Custom}})...)
		}
		if rest, ok := strings.CutPrefix(tc.Arguments, args); ok && rest != "" {
			frames = append(frames, s.Delta(turn.Delta{Kind: turn.DeltaToolCall, Index: i, ArgumentsDelta: rest})...)
		}
	}
	return frames
}
