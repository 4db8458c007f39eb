package openaiwire

import (
	"encoding/json"
	"fmt"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// responsesRequest is the subset of POST /v1/responses this bridge reads.
// temperature, top_p, max_output_tokens, metadata, user, truncation and
// include are accepted, echoed, and have no effect on generation.
type responsesRequest struct {
	Model        string          `json:"model"`
	Input        json.RawMessage `json:"input"`
	Instructions *string         `json:"instructions"`
	Stream       bool            `json:"stream"`
	Reasoning    *struct {
		Effort  string  `json:"effort"`
		Summary *string `json:"summary"`
	} `json:"reasoning"`
	Text *struct {
		Format json.RawMessage `json:"format"`
	} `json:"text"`
	Tools              []json.RawMessage `json:"tools"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	ParallelToolCalls  *bool             `json:"parallel_tool_calls"`
	PreviousResponseID string            `json:"previous_response_id"`
	Store              *bool             `json:"store"`
	MaxOutputTokens    json.RawMessage   `json:"max_output_tokens"`
	Temperature        json.RawMessage   `json:"temperature"`
	TopP               json.RawMessage   `json:"top_p"`
	Metadata           json.RawMessage   `json:"metadata"`
	User               json.RawMessage   `json:"user"`
	Truncation         json.RawMessage   `json:"truncation"`
	Background         bool              `json:"background"`
	Conversation       json.RawMessage   `json:"conversation"`
	Prompt             json.RawMessage   `json:"prompt"`
}

// ResponsesEcho is what a Responses API object repeats from its request,
// and the conversation-state fields the executor acts on.
type ResponsesEcho struct {
	// PreviousResponseID continues a stored conversation.
	PreviousResponseID string
	// Store keeps this response for later continuation (default true).
	Store bool
	// Instructions as sent (not carried over to continuations).
	Instructions *string

	maxOutputTokens json.RawMessage
	temperature     json.RawMessage
	topP            json.RawMessage
	metadata        json.RawMessage
	user            json.RawMessage
	truncation      json.RawMessage
	tools           []json.RawMessage
	toolChoice      json.RawMessage
	parallel        bool
	reasoningEffort string
	reasoningSum    *string
	format          json.RawMessage
}

func parseResponses(body []byte, caps turn.Capabilities) (*Call, error) {
	var r responsesRequest
	if err := decodeObject(body, &r); err != nil {
		return nil, err
	}
	if r.Model == "" {
		return nil, llmapi.InvalidRequest("model", "missing_required_parameter", "model is required")
	}
	switch {
	case r.Background:
		return nil, unsupported("background", "background responses are not available")
	case !isNull(r.Conversation):
		return nil, unsupported("conversation", "use previous_response_id to continue a conversation")
	case !isNull(r.Prompt):
		return nil, unsupported("prompt", "stored prompt templates are not available")
	}
	echo := &ResponsesEcho{
		PreviousResponseID: r.PreviousResponseID,
		Store:              r.Store == nil || *r.Store,
		Instructions:       r.Instructions,
		maxOutputTokens:    r.MaxOutputTokens, temperature: r.Temperature, topP: r.TopP,
		metadata: r.Metadata, user: r.User, truncation: r.Truncation,
		tools: r.Tools, toolChoice: r.ToolChoice,
		parallel: r.ParallelToolCalls == nil || *r.ParallelToolCalls,
	}
	c := &Call{Stream: r.Stream, Responses: echo}
	req := &c.Request
	req.Model = r.Model
	req.ParallelToolCalls = echo.parallel
	if r.Instructions != nil && *r.Instructions != "" {
		req.Instructions = []string{*r.Instructions}
	}
	if r.Reasoning != nil {
		if err := checkEffort("reasoning.effort", r.Reasoning.Effort); err != nil {
			return nil, err
		}
		req.Effort = r.Reasoning.Effort
		echo.reasoningEffort, echo.reasoningSum = r.Reasoning.Effort, r.Reasoning.Summary
	}
	items, err := parseResponsesInput(r.Input, caps)
	if err != nil {
		return nil, err
	}
	req.Input = items
	if r.Text != nil && !isNull(r.Text.Format) {
		f, err := parseTextFormat(r.Text.Format, caps)
		if err != nil {
			return nil, err
		}
		req.Format = f
		echo.format = r.Text.Format
	}
	tools := make([]turn.Tool, 0, len(r.Tools))
	for i, raw := range r.Tools {
		var t struct {
			Type        string          `json:"type"`
			Name        string          `json:"name"`
			Description string          `json:"description"`
			Parameters  json.RawMessage `json:"parameters"`
			Strict      *bool           `json:"strict"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, llmapi.InvalidRequest(fmt.Sprintf("tools[%d]", i), "invalid_type", "tools entries must be objects")
		}
		if t.Type != "function" {
			return nil, unsupported(fmt.Sprintf("tools[%d].type", i), fmt.Sprintf("built-in tool %q cannot be honoured by this backend; only function tools are", t.Type))
		}
		if t.Name == "" {
			return nil, llmapi.InvalidRequest(fmt.Sprintf("tools[%d].name", i), "missing_required_parameter", "function name is required")
		}
		tools = append(tools, turn.Tool{Name: t.Name, Description: t.Description, Parameters: t.Parameters, Strict: t.Strict == nil || *t.Strict})
	}
	choice, err := parseToolChoice(r.ToolChoice, tools, func(raw json.RawMessage) (string, bool) {
		var obj struct {
			Type string `json:"type"`
			Name string `json:"name"`
		}
		if json.Unmarshal(raw, &obj) != nil || obj.Type != "function" || obj.Name == "" {
			return "", false
		}
		return obj.Name, true
	})
	if err != nil {
		return nil, err
	}
	if err := applyTools(req, tools, choice, caps); err != nil {
		return nil, err
	}
	return c, nil
}

func parseTextFormat(raw json.RawMessage, caps turn.Capabilities) (*turn.OutputFormat, error) {
	var f struct {
		Type   string          `json:"type"`
		Name   string          `json:"name"`
		Schema json.RawMessage `json:"schema"`
		Strict *bool           `json:"strict"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, llmapi.InvalidRequest("text.format", "invalid_type", "text.format must be an object")
	}
	switch f.Type {
	case "text":
		return nil, nil
	case "json_object":
		return &turn.OutputFormat{Type: "json_object"}, nil
	case "json_schema":
		if isNull(f.Schema) {
			return nil, llmapi.InvalidRequest("text.format.schema", "missing_required_parameter", "text.format.schema is required")
		}
		if !caps.Schema {
			return nil, unsupported("text.format", "this provider cannot enforce a JSON schema")
		}
		return &turn.OutputFormat{Type: "json_schema", Name: f.Name, Schema: f.Schema, Strict: f.Strict != nil && *f.Strict}, nil
	default:
		return nil, llmapi.InvalidRequest("text.format.type", "invalid_value", "text.format.type must be text, json_object or json_schema")
	}
}

type responsesInputItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

type responsesPart struct {
	Type     string `json:"type"`
	Text     string `json:"text"`
	ImageURL string `json:"image_url"`
	FileID   string `json:"file_id"`
}

func parseResponsesInput(raw json.RawMessage, caps turn.Capabilities) ([]turn.Item, error) {
	if isNull(raw) {
		return nil, nil // allowed with previous_response_id; checked by the caller
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []turn.Item{{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: s}}}}, nil
	}
	var list []responsesInputItem
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, llmapi.InvalidRequest("input", "invalid_type", "input must be a string or an array of input items")
	}
	var items []turn.Item
	for i, it := range list {
		param := fmt.Sprintf("input[%d]", i)
		typ := it.Type
		if typ == "" && it.Role != "" {
			typ = "message"
		}
		switch typ {
		case "message":
			item, err := responsesMessage(param, it, caps)
			if err != nil {
				return nil, err
			}
			items = append(items, item)
		case "function_call":
			if it.CallID == "" || it.Name == "" {
				return nil, llmapi.InvalidRequest(param, "missing_required_parameter", "function_call items need call_id and name")
			}
			items = append(items, turn.Item{Type: turn.ItemFunctionCall, CallID: it.CallID, Name: it.Name, Arguments: it.Arguments})
		case "function_call_output":
			if it.CallID == "" {
				return nil, llmapi.InvalidRequest(param+".call_id", "missing_required_parameter", "function_call_output items need call_id")
			}
			out, err := textOf(param+".output", it.Output, "input_text", "output_text")
			if err != nil {
				return nil, err
			}
			items = append(items, turn.Item{Type: turn.ItemFunctionCallOutput, CallID: it.CallID, Output: out})
		case "reasoning":
			// The model's own earlier reasoning cannot be replayed; it is
			// dropped, as it carries no content the model needs.
		default:
			return nil, unsupported(param+".type", fmt.Sprintf("input item type %q is not available", typ))
		}
	}
	return items, nil
}

func responsesMessage(param string, it responsesInputItem, caps turn.Capabilities) (turn.Item, error) {
	var role turn.Role
	switch it.Role {
	case "user":
		role = turn.RoleUser
	case "assistant":
		role = turn.RoleAssistant
	case "system", "developer":
		role = turn.RoleDeveloper
	default:
		return turn.Item{}, llmapi.InvalidRequest(param+".role", "invalid_value", fmt.Sprintf("unknown role %q", it.Role))
	}
	var s string
	if json.Unmarshal(it.Content, &s) == nil {
		return turn.Item{Type: turn.ItemMessage, Role: role, Content: []turn.Part{{Type: turn.PartText, Text: s}}}, nil
	}
	var parts []responsesPart
	if err := json.Unmarshal(it.Content, &parts); err != nil {
		return turn.Item{}, llmapi.InvalidRequest(param+".content", "invalid_type", "content must be a string or an array of content parts")
	}
	item := turn.Item{Type: turn.ItemMessage, Role: role}
	for j, p := range parts {
		pp := fmt.Sprintf("%s.content[%d]", param, j)
		switch p.Type {
		case "input_text", "output_text", "refusal":
			item.Content = append(item.Content, turn.Part{Type: turn.PartText, Text: p.Text})
		case "input_image":
			if p.ImageURL == "" {
				return turn.Item{}, unsupported(pp+".file_id", "images must be given as image_url (http(s) or data URL)")
			}
			part, err := imagePart(pp+".image_url", p.ImageURL, caps)
			if err != nil {
				return turn.Item{}, err
			}
			item.Content = append(item.Content, part)
		default:
			return turn.Item{}, unsupported(pp+".type", fmt.Sprintf("content part type %q is not available", p.Type))
		}
	}
	return item, nil
}

// Wire shapes of the Response object.

type responseObject struct {
	ID                 string            `json:"id"`
	Object             string            `json:"object"`
	CreatedAt          int64             `json:"created_at"`
	Status             string            `json:"status"`
	Error              any               `json:"error"`
	IncompleteDetails  any               `json:"incomplete_details"`
	Instructions       *string           `json:"instructions"`
	MaxOutputTokens    json.RawMessage   `json:"max_output_tokens"`
	Model              string            `json:"model"`
	Output             []any             `json:"output"`
	ParallelToolCalls  bool              `json:"parallel_tool_calls"`
	PreviousResponseID *string           `json:"previous_response_id"`
	Reasoning          map[string]any    `json:"reasoning"`
	Store              bool              `json:"store"`
	Temperature        json.RawMessage   `json:"temperature"`
	Text               map[string]any    `json:"text"`
	ToolChoice         json.RawMessage   `json:"tool_choice"`
	Tools              []json.RawMessage `json:"tools"`
	TopP               json.RawMessage   `json:"top_p"`
	Truncation         json.RawMessage   `json:"truncation"`
	Usage              *responsesUsage   `json:"usage"`
	User               json.RawMessage   `json:"user"`
	Metadata           json.RawMessage   `json:"metadata"`
}

type responsesUsage struct {
	InputTokens         int64            `json:"input_tokens"`
	InputTokensDetails  map[string]int64 `json:"input_tokens_details"`
	OutputTokens        int64            `json:"output_tokens"`
	OutputTokensDetails map[string]int64 `json:"output_tokens_details"`
	TotalTokens         int64            `json:"total_tokens"`
}

type messageItem struct {
	Type    string       `json:"type"`
	ID      string       `json:"id"`
	Status  string       `json:"status"`
	Role    string       `json:"role"`
	Content []outputText `json:"content"`
}

type outputText struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
	Logprobs    []any  `json:"logprobs"`
}

type functionCallItem struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
	Status    string `json:"status"`
}

func orJSON(raw json.RawMessage, def string) json.RawMessage {
	if len(raw) == 0 {
		return json.RawMessage(def)
	}
	return raw
}

// responseObject builds the Response object in the given status
// ("in_progress" without output and usage, or "completed").
func (c *Call) responseObject(m Meta, res *turn.Result, status string) responseObject {
	e := c.Responses
	if e == nil {
		e = &ResponsesEcho{Store: true, parallel: true}
	}
	obj := responseObject{
		ID: m.ID, Object: "response", CreatedAt: m.Created, Status: status, Model: m.Model,
		Instructions: e.Instructions, MaxOutputTokens: orJSON(e.maxOutputTokens, "null"),
		Output: []any{}, ParallelToolCalls: e.parallel, Store: e.Store,
		Reasoning:   map[string]any{"effort": nilIfEmpty(e.reasoningEffort), "summary": e.reasoningSum},
		Temperature: orJSON(e.temperature, "1"), TopP: orJSON(e.topP, "1"),
		Text:       map[string]any{"format": orJSON(e.format, `{"type":"text"}`)},
		ToolChoice: orJSON(e.toolChoice, `"auto"`), Tools: e.tools,
		Truncation: orJSON(e.truncation, `"disabled"`), User: orJSON(e.user, "null"),
		Metadata: orJSON(e.metadata, "{}"),
	}
	if obj.Tools == nil {
		obj.Tools = []json.RawMessage{}
	}
	if e.PreviousResponseID != "" {
		p := e.PreviousResponseID
		obj.PreviousResponseID = &p
	}
	if res == nil {
		return obj
	}
	obj.Output = c.outputItems(res)
	u := res.Usage
	total := u.TotalTokens
	if total == 0 {
		total = u.InputTokens + u.OutputTokens
	}
	obj.Usage = &responsesUsage{
		InputTokens: u.InputTokens, InputTokensDetails: map[string]int64{"cached_tokens": u.CachedTokens},
		OutputTokens: u.OutputTokens, OutputTokensDetails: map[string]int64{"reasoning_tokens": u.ReasoningTokens},
		TotalTokens: total,
	}
	return obj
}

// OutputItems returns the Responses API output items of res as JSON
// values, with the same ids the stream used.
func (c *Call) OutputItems(res *turn.Result) []json.RawMessage {
	items := c.outputItems(res)
	out := make([]json.RawMessage, len(items))
	for i, it := range items {
		out[i] = mustJSON(it)
	}
	return out
}

func (c *Call) outputItems(res *turn.Result) []any {
	var out []any
	if res.Text != "" || len(res.ToolCalls) == 0 {
		out = append(out, c.messageItem(res.Text, "completed"))
	}
	for i, tc := range res.ToolCalls {
		out = append(out, functionCallItem{Type: "function_call", ID: c.toolCallItemID(i), CallID: tc.ID, Name: tc.Name, Arguments: tc.Arguments, Status: "completed"})
	}
	return out
}

func (c *Call) messageItem(text, status string) messageItem {
	content := []outputText{}
	if status == "completed" {
		content = []outputText{{Type: "output_text", Text: text, Annotations: []any{}, Logprobs: []any{}}}
	}
	return messageItem{Type: "message", ID: c.messageID, Status: status, Role: "assistant", Content: content}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// responsesStream emits the typed Responses API stream events.
type responsesStream struct {
	c       *Call
	m       Meta
	seq     int64
	started bool
	// items in output order; text goes to the open message item.
	items     map[int]*streamItem
	order     []*streamItem
	textItem  *streamItem
	toolItems map[int]*streamItem
}

type streamItem struct {
	outputIndex int
	kind        string // "message" or "function_call"
	id          string
	text        string
	call        turn.ToolCall
	done        bool
}

func (s *responsesStream) event(typ string, fields map[string]any) json.RawMessage {
	fields["type"] = typ
	fields["sequence_number"] = s.seq
	s.seq++
	return mustJSON(fields)
}

func (s *responsesStream) start() []json.RawMessage {
	if s.started {
		return nil
	}
	s.started = true
	obj := s.c.responseObject(s.m, nil, "in_progress")
	return []json.RawMessage{
		s.event("response.created", map[string]any{"response": obj}),
		s.event("response.in_progress", map[string]any{"response": obj}),
	}
}

func (s *responsesStream) openText() []json.RawMessage {
	if s.textItem != nil {
		return nil
	}
	it := &streamItem{outputIndex: len(s.order), kind: "message", id: s.c.messageID}
	s.textItem = it
	s.order = append(s.order, it)
	return []json.RawMessage{
		s.event("response.output_item.added", map[string]any{"output_index": it.outputIndex, "item": s.c.messageItem("", "in_progress")}),
		s.event("response.content_part.added", map[string]any{
			"item_id": it.id, "output_index": it.outputIndex, "content_index": 0,
			"part": outputText{Type: "output_text", Text: "", Annotations: []any{}, Logprobs: []any{}},
		}),
	}
}

func (s *responsesStream) closeItem(it *streamItem) []json.RawMessage {
	if it.done {
		return nil
	}
	it.done = true
	if it.kind == "message" {
		part := outputText{Type: "output_text", Text: it.text, Annotations: []any{}, Logprobs: []any{}}
		return []json.RawMessage{
			s.event("response.output_text.done", map[string]any{"item_id": it.id, "output_index": it.outputIndex, "content_index": 0, "text": it.text, "logprobs": []any{}}),
			s.event("response.content_part.done", map[string]any{"item_id": it.id, "output_index": it.outputIndex, "content_index": 0, "part": part}),
			s.event("response.output_item.done", map[string]any{"output_index": it.outputIndex, "item": s.c.messageItem(it.text, "completed")}),
		}
	}
	item := functionCallItem{Type: "function_call", ID: it.id, CallID: it.call.ID, Name: it.call.Name, Arguments: it.call.Arguments, Status: "completed"}
	return []json.RawMessage{
		s.event("response.function_call_arguments.done", map[string]any{"item_id": it.id, "output_index": it.outputIndex, "name": it.call.Name, "arguments": it.call.Arguments}),
		s.event("response.output_item.done", map[string]any{"output_index": it.outputIndex, "item": item}),
	}
}

func (s *responsesStream) Delta(d turn.Delta) []json.RawMessage {
	frames := s.start()
	switch d.Kind {
	case turn.DeltaText:
		if d.Text == "" {
			return frames
		}
		frames = append(frames, s.openText()...)
		it := s.textItem
		it.text += d.Text
		return append(frames, s.event("response.output_text.delta", map[string]any{
			"item_id": it.id, "output_index": it.outputIndex, "content_index": 0, "delta": d.Text, "logprobs": []any{},
		}))
	case turn.DeltaToolCall:
		if s.toolItems == nil {
			s.toolItems = map[int]*streamItem{}
		}
		it := s.toolItems[d.Index]
		if it == nil {
			if s.textItem != nil {
				frames = append(frames, s.closeItem(s.textItem)...)
			}
			it = &streamItem{outputIndex: len(s.order), kind: "function_call", id: s.c.toolCallItemID(d.Index), call: turn.ToolCall{ID: d.ToolCall.ID, Name: d.ToolCall.Name}}
			s.toolItems[d.Index] = it
			s.order = append(s.order, it)
			frames = append(frames, s.event("response.output_item.added", map[string]any{
				"output_index": it.outputIndex,
				"item":         functionCallItem{Type: "function_call", ID: it.id, CallID: it.call.ID, Name: it.call.Name, Arguments: "", Status: "in_progress"},
			}))
		}
		if d.ArgumentsDelta != "" {
			it.call.Arguments += d.ArgumentsDelta
			frames = append(frames, s.event("response.function_call_arguments.delta", map[string]any{
				"item_id": it.id, "output_index": it.outputIndex, "delta": d.ArgumentsDelta,
			}))
		}
		return frames
	}
	return frames
}

func (s *responsesStream) Finish(res *turn.Result) []json.RawMessage {
	frames := s.start()
	var sent streamed
	if s.textItem != nil {
		sent.text = s.textItem.text
	}
	for i, it := range s.toolItems {
		if sent.args == nil {
			sent.args = map[int]string{}
		}
		sent.args[i] = it.call.Arguments
	}
	if s.textItem == nil && res.Text == "" && len(res.ToolCalls) == 0 {
		frames = append(frames, s.openText()...) // an empty answer is still a message
	}
	frames = append(frames, catchUp(s, res, sent)...)
	for _, it := range s.order {
		frames = append(frames, s.closeItem(it)...)
	}
	return append(frames, s.event("response.completed", map[string]any{"response": s.c.responseObject(s.m, res, "completed")}))
}

func (s *responsesStream) Fail(err *llmapi.APIError) []json.RawMessage {
	frames := s.start()
	obj := s.c.responseObject(s.m, nil, "failed")
	code := err.Code
	if code == "" {
		code = "server_error"
	}
	obj.Error = map[string]any{"code": code, "message": err.Message}
	return append(frames, s.event("response.failed", map[string]any{"response": obj}))
}
