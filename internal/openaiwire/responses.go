package openaiwire

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// responsesRequest is the subset of POST /v1/responses this bridge reads.
// temperature, top_p, max_output_tokens, metadata, user and truncation are
// accepted (type- and range-checked), echoed, and have no effect on
// generation; include, prompt_cache_key, prompt_cache_retention,
// client_metadata, safety_identifier, service_tier, text.verbosity and
// reasoning.summary are accepted and have no effect either (see the
// README's mapping).
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
		Format    json.RawMessage `json:"format"`
		Verbosity *string         `json:"verbosity"`
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
	TopLogprobs        *int              `json:"top_logprobs"`
	// Accepted for compatibility (Codex CLI sends them), type-checked only.
	Include        []string       `json:"include"`
	PromptCacheKey *string        `json:"prompt_cache_key"`
	ClientMetadata map[string]any `json:"client_metadata"`
	ServiceTier    *string        `json:"service_tier"`
	SafetyID       *string        `json:"safety_identifier"`
	StreamOptions  map[string]any `json:"stream_options"`
}

// responsesNumbers are the numeric fields of a Responses request, checked
// as OpenAI checks them (they have no effect on the model).
var responsesNumbers = []numberRule{
	{param: "temperature", min: 0, max: 2},
	{param: "top_p", min: 0, max: 1},
	{param: "max_output_tokens", integer: true, min: 16, max: math.MaxInt32},
	{param: "max_tool_calls", integer: true, min: 1, max: math.MaxInt32},
	{param: "top_logprobs", integer: true, min: 0, max: 20},
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
	verbosity       *string
}

func parseResponses(body []byte, caps turn.Capabilities) (*Call, error) {
	var r responsesRequest
	if err := decodeRequest(body, &r, &r.Model, responsesNumbers); err != nil {
		return nil, err
	}
	switch {
	case r.Background:
		return nil, unsupported("background", "background responses are not available")
	case !isNull(r.Conversation):
		return nil, unsupported("conversation", "use previous_response_id to continue a conversation")
	case !isNull(r.Prompt):
		return nil, unsupported("prompt", "stored prompt templates are not available")
	case r.TopLogprobs != nil && *r.TopLogprobs > 0:
		return nil, unsupported("top_logprobs", "the model backend does not expose token log probabilities")
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
	if err := c.parseResponsesInput(r.Input, caps); err != nil {
		return nil, err
	}
	if r.Text != nil {
		if !isNull(r.Text.Format) {
			f, err := parseTextFormat(r.Text.Format, caps)
			if err != nil {
				return nil, err
			}
			req.Format = f
			echo.format = r.Text.Format
		}
		if v := r.Text.Verbosity; v != nil {
			if *v != "low" && *v != "medium" && *v != "high" {
				return nil, llmapi.InvalidRequest("text.verbosity", "invalid_value", "text.verbosity must be low, medium or high")
			}
			echo.verbosity = v
		}
	}
	tools, err := c.parseResponsesTools("tools", r.Tools)
	if err != nil {
		return nil, err
	}
	for _, extra := range c.extraTools {
		more, err := c.parseResponsesTools(extra.param, extra.raws)
		if err != nil {
			return nil, err
		}
		tools = append(tools, more...)
	}
	choice, err := parseToolChoice(r.ToolChoice, tools, func(raw json.RawMessage) (string, bool) {
		var obj struct {
			Type string `json:"type"`
			Name string `json:"name"`
		}
		if json.Unmarshal(raw, &obj) != nil || (obj.Type != "function" && obj.Type != "custom") || obj.Name == "" {
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
	if req.WebSearch != nil {
		switch {
		case choice.Mode == turn.ToolChoiceNone:
			req.WebSearch = nil // no tool is offered, hosted ones included
		case !caps.WebSearch:
			return nil, unsupported(c.webSearchParam+".type", fmt.Sprintf("hosted tool %q is not available on this worker (the provider cannot search the web, or the operator turned web search off for this model)", c.webSearchName))
		}
	}
	return c, nil
}

// extraTools are the tools of an additional_tools input item (param names
// its list).
type extraTools struct {
	param string
	raws  []json.RawMessage
}

// parseResponsesTools reads the tools of field (the request's "tools", or
// an additional_tools item's): function and custom tools, namespaces
// of them (flattened, each member carrying its namespace), and the hosted
// web search tool (into Request.WebSearch). Other hosted tools are 400s.
func (c *Call) parseResponsesTools(field string, raws []json.RawMessage) ([]turn.Tool, error) {
	tools := make([]turn.Tool, 0, len(raws))
	for i, raw := range raws {
		param := fmt.Sprintf("%s[%d]", field, i)
		var t struct {
			Type        string            `json:"type"`
			Name        string            `json:"name"`
			Description string            `json:"description"`
			Tools       []json.RawMessage `json:"tools"`
		}
		if err := json.Unmarshal(raw, &t); err != nil {
			return nil, llmapi.InvalidRequest(param, "invalid_type", "tools entries must be objects")
		}
		switch t.Type {
		case "function", "custom":
			tool, err := clientTool(param, raw)
			if err != nil {
				return nil, err
			}
			tools = append(tools, tool)
		case "namespace":
			if t.Name == "" {
				return nil, llmapi.InvalidRequest(param+".name", "missing_required_parameter", "namespace name is required")
			}
			if len(t.Tools) == 0 {
				return nil, llmapi.InvalidRequest(param+".tools", "missing_required_parameter", "a namespace needs at least one function or custom tool")
			}
			for j, member := range t.Tools {
				mp := fmt.Sprintf("%s.tools[%d]", param, j)
				var m struct {
					Type string `json:"type"`
				}
				if json.Unmarshal(member, &m) != nil || (m.Type != "function" && m.Type != "custom") {
					return nil, llmapi.InvalidRequest(mp+".type", "invalid_value", "namespace members must be function or custom tools")
				}
				tool, err := clientTool(mp, member)
				if err != nil {
					return nil, err
				}
				tool.Namespace, tool.NamespaceDescription = t.Name, t.Description
				tools = append(tools, tool)
			}
		case "web_search", "web_search_2025_08_26", "web_search_preview", "web_search_preview_2025_03_11":
			if err := c.webSearchTool(param, t.Type, raw); err != nil {
				return nil, err
			}
		default:
			return nil, unsupported(param+".type", fmt.Sprintf("built-in tool %q cannot be honoured by this backend; function, custom, namespace and web_search tools are", t.Type))
		}
	}
	return tools, nil
}

// clientTool reads a function or custom tool (top level or in a namespace).
func clientTool(param string, raw json.RawMessage) (turn.Tool, error) {
	var t struct {
		Type        string          `json:"type"`
		Name        string          `json:"name"`
		Description string          `json:"description"`
		Parameters  json.RawMessage `json:"parameters"`
		Strict      *bool           `json:"strict"`
		Format      json.RawMessage `json:"format"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return turn.Tool{}, llmapi.InvalidRequest(param, "invalid_type", param+" must be a tool object")
	}
	if t.Name == "" {
		return turn.Tool{}, llmapi.InvalidRequest(param+".name", "missing_required_parameter", t.Type+" tool name is required")
	}
	if t.Type == "function" {
		return turn.Tool{Name: t.Name, Description: t.Description, Parameters: t.Parameters, Strict: t.Strict == nil || *t.Strict}, nil
	}
	format, err := responsesCustomFormat(param+".format", t.Format)
	if err != nil {
		return turn.Tool{}, err
	}
	return turn.Tool{Kind: turn.ToolCustom, Name: t.Name, Description: t.Description, Format: format}, nil
}

// responsesCustomFormat checks a custom tool's format ({"type":"text"} or
// {"type":"grammar","syntax":"lark"|"regex","definition"}).
func responsesCustomFormat(param string, raw json.RawMessage) (json.RawMessage, error) {
	if isNull(raw) {
		return nil, nil
	}
	var f struct {
		Type       string `json:"type"`
		Syntax     string `json:"syntax"`
		Definition string `json:"definition"`
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, llmapi.InvalidRequest(param, "invalid_type", param+" must be an object")
	}
	return customFormat(param, f.Type, f.Syntax, f.Definition)
}

// webSearchTool reads the hosted web search tool into Request.WebSearch;
// whether it may run is decided once tool_choice is known.
func (c *Call) webSearchTool(param, typ string, raw json.RawMessage) error {
	if c.Request.WebSearch != nil {
		return llmapi.InvalidRequest(param, "invalid_value", "only one web search tool may be given")
	}
	var w struct {
		SearchContextSize string `json:"search_context_size"`
		Filters           *struct {
			AllowedDomains []string `json:"allowed_domains"`
		} `json:"filters"`
		UserLocation      json.RawMessage `json:"user_location"`
		ExternalWebAccess *bool           `json:"external_web_access"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return llmapi.InvalidRequest(param, "invalid_type", "invalid web search tool: "+err.Error())
	}
	if err := checkContextSize(param+".search_context_size", w.SearchContextSize); err != nil {
		return err
	}
	ws := &turn.WebSearch{ContextSize: w.SearchContextSize, CachedOnly: w.ExternalWebAccess != nil && !*w.ExternalWebAccess}
	if w.Filters != nil {
		ws.AllowedDomains = w.Filters.AllowedDomains
	}
	if !isNull(w.UserLocation) {
		ws.Location = w.UserLocation
	}
	c.Request.WebSearch = ws
	c.webSearchParam, c.webSearchName = param, typ
	return nil
}
func parseTextFormat(raw json.RawMessage, caps turn.Capabilities) (*turn.OutputFormat, error) {
	var f formatSpec
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, llmapi.InvalidRequest("text.format", "invalid_type", "text.format must be an object")
	}
	return f.convert("text.format", "text.format.schema", caps)
}

// formatSpec is an output format as the caller names it: Responses'
// text.format, or Chat's response_format with its json_schema lifted.
type formatSpec struct {
	Type   string          `json:"type"`
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
	Strict *bool           `json:"strict"`
}

// convert checks f, which the caller sent at param (its schema at
// schemaParam), and gives the provider's format (nil for plain text).
func (f formatSpec) convert(param, schemaParam string, caps turn.Capabilities) (*turn.OutputFormat, error) {
	switch f.Type {
	case "text":
		return nil, nil
	case "json_object":
		return &turn.OutputFormat{Type: "json_object"}, nil
	case "json_schema":
		if isNull(f.Schema) {
			return nil, llmapi.InvalidRequest(schemaParam, "missing_required_parameter", schemaParam+" is required")
		}
		if !caps.Schema {
			return nil, unsupported(param, "this provider cannot enforce a JSON schema")
		}
		return &turn.OutputFormat{Type: "json_schema", Name: f.Name, Schema: f.Schema, Strict: f.Strict != nil && *f.Strict}, nil
	default:
		return nil, llmapi.InvalidRequest(param+".type", "invalid_value", param+".type must be text, json_object or json_schema")
	}
}

type responsesInputItem struct {
	Type      string          `json:"type"`
	ID        string          `json:"id"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Namespace string          `json:"namespace"`
	Arguments string          `json:"arguments"`
	Input     *string         `json:"input"`
	Output    json.RawMessage `json:"output"`
	Action    json.RawMessage `json:"action"`
	Tools     json.RawMessage `json:"tools"`
}

type responsesPart struct {
	Type        string            `json:"type"`
	Text        string            `json:"text"`
	ImageURL    string            `json:"image_url"`
	FileID      string            `json:"file_id"`
	Annotations []json.RawMessage `json:"annotations"`
}

// itemReference is the type of the placeholder an item_reference input
// item becomes until ResolveReferences replaces it; providers never see it.
const itemReference turn.ItemType = "item_reference"

// parseResponsesInput reads input: a string (one user message) or a list
// of input items. Items keep the ids they were sent with.
func (c *Call) parseResponsesInput(raw json.RawMessage, caps turn.Capabilities) error {
	if isNull(raw) {
		return nil // allowed with previous_response_id; checked by the executor
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		c.Request.Input = []turn.Item{{Type: turn.ItemMessage, Role: turn.RoleUser, Content: []turn.Part{{Type: turn.PartText, Text: s}}}}
		return nil
	}
	var list []responsesInputItem
	if err := json.Unmarshal(raw, &list); err != nil {
		return llmapi.InvalidRequest("input", "invalid_type", "input must be a string or an array of input items")
	}
	var items []turn.Item
	for i, it := range list {
		param := fmt.Sprintf("input[%d]", i)
		typ := it.Type
		switch {
		case typ == "" && it.Role != "":
			typ = "message"
		case typ == "" && it.ID != "":
			typ = "item_reference" // OpenAI's type is optional on references
		}
		switch typ {
		case "message":
			item, err := responsesMessage(param, it, caps)
			if err != nil {
				return err
			}
			items = append(items, item)
		case "function_call":
			if it.CallID == "" || it.Name == "" {
				return llmapi.InvalidRequest(param, "missing_required_parameter", "function_call items need call_id and name")
			}
			items = append(items, turn.Item{Type: turn.ItemFunctionCall, ID: it.ID, CallID: it.CallID, Name: it.Name, Namespace: it.Namespace, Arguments: it.Arguments})
		case "custom_tool_call":
			if it.CallID == "" || it.Name == "" || it.Input == nil {
				return llmapi.InvalidRequest(param, "missing_required_parameter", "custom_tool_call items need call_id, name and input")
			}
			items = append(items, turn.Item{Type: turn.ItemCustomToolCall, ID: it.ID, CallID: it.CallID, Name: it.Name, Namespace: it.Namespace, Input: *it.Input})
		case "function_call_output", "custom_tool_call_output":
			if it.CallID == "" {
				return llmapi.InvalidRequest(param+".call_id", "missing_required_parameter", typ+" items need call_id")
			}
			if err := notNull(param+".output", it.Output, "a string or an array of content parts"); err != nil {
				return err
			}
			out, err := textOf(param+".output", it.Output, "input_text", "output_text")
			if err != nil {
				return err
			}
			t := turn.ItemFunctionCallOutput
			if typ == "custom_tool_call_output" {
				t = turn.ItemCustomToolCallOutput
			}
			items = append(items, turn.Item{Type: t, ID: it.ID, CallID: it.CallID, Output: out})
		case "web_search_call":
			if it.ID == "" {
				return llmapi.InvalidRequest(param+".id", "missing_required_parameter", "web_search_call items need id")
			}
			items = append(items, turn.Item{Type: turn.ItemWebSearchCall, ID: it.ID, Action: it.Action})
		case "item_reference":
			if it.ID == "" {
				return llmapi.InvalidRequest(param+".id", "missing_required_parameter", "item_reference items need id")
			}
			c.refs = append(c.refs, len(items))
			items = append(items, turn.Item{Type: itemReference, ID: it.ID})
		case "additional_tools":
			// Tools made available from this point of the conversation;
			// they are offered for the whole turn, with the request's tools.
			var raws []json.RawMessage
			if err := json.Unmarshal(it.Tools, &raws); err != nil || len(raws) == 0 {
				return llmapi.InvalidRequest(param+".tools", "missing_required_parameter", "additional_tools items need a list of tools")
			}
			c.extraTools = append(c.extraTools, extraTools{param: param + ".tools", raws: raws})
		case "reasoning":
			// The model's own earlier reasoning (a summary, or content
			// encrypted for OpenAI's servers) cannot be replayed to another
			// engine; it is dropped, as it carries nothing the model needs.
		default:
			return unsupported(param+".type", fmt.Sprintf("input item type %q is not available", typ))
		}
	}
	c.Request.Input = items
	return nil
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
	if err := notNull(param+".content", it.Content, "a string or an array of content parts"); err != nil {
		return turn.Item{}, err
	}
	var s string
	if json.Unmarshal(it.Content, &s) == nil {
		return turn.Item{Type: turn.ItemMessage, ID: it.ID, Role: role, Content: []turn.Part{{Type: turn.PartText, Text: s}}}, nil
	}
	var parts []responsesPart
	if err := json.Unmarshal(it.Content, &parts); err != nil {
		return turn.Item{}, llmapi.InvalidRequest(param+".content", "invalid_type", "content must be a string or an array of content parts")
	}
	item := turn.Item{Type: turn.ItemMessage, ID: it.ID, Role: role}
	for j, p := range parts {
		pp := fmt.Sprintf("%s.content[%d]", param, j)
		switch p.Type {
		case "input_text", "refusal":
			item.Content = append(item.Content, turn.Part{Type: turn.PartText, Text: p.Text})
		case "output_text":
			item.Content = append(item.Content, turn.Part{Type: turn.PartText, Text: p.Text, Annotations: p.Annotations})
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

// References returns the ids of the request's item_reference input items,
// in order.
func (c *Call) References() []string {
	ids := make([]string, 0, len(c.refs))
	for _, i := range c.refs {
		ids = append(ids, c.Request.Input[i].ID)
	}
	return ids
}

// ResolveReferences replaces every item_reference input item with the item
// of that id in items. A reference to an id not in items is OpenAI's 404
// (ItemNotFound).
func (c *Call) ResolveReferences(items map[string]turn.Item) error {
	for _, i := range c.refs {
		id := c.Request.Input[i].ID
		it, ok := items[id]
		if !ok {
			return ItemNotFound(id)
		}
		c.Request.Input[i] = it
	}
	c.refs = nil
	return nil
}

// ItemNotFound is OpenAI's answer to a reference to an item it does not
// have (unknown, expired, deleted, not stored, or another identity's).
func ItemNotFound(id string) *llmapi.APIError {
	return llmapi.NewError(404, llmapi.TypeInvalidRequest, "", "input", fmt.Sprintf("Item with id '%s' not found. Items are not persisted when `store` is set to false. Try again with `store` set to true, or remove this item from your input.", id))
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
	Type        string            `json:"type"`
	Text        string            `json:"text"`
	Annotations []json.RawMessage `json:"annotations"`
	Logprobs    []any             `json:"logprobs"`
}

type functionCallItem struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Arguments string `json:"arguments"`
	Status    string `json:"status"`
}

type customCallItem struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	CallID    string `json:"call_id"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Input     string `json:"input"`
	Status    string `json:"status"`
}

type webSearchItem struct {
	Type   string          `json:"type"`
	ID     string          `json:"id"`
	Status string          `json:"status"`
	Action json.RawMessage `json:"action"`
}

// searchAction is a web search's action object, {"type":"search"} when the
// provider gave none.
func searchAction(a json.RawMessage) json.RawMessage {
	if isNull(a) {
		return json.RawMessage(`{"type":"search"}`)
	}
	return a
}

func annotationsOf(a []json.RawMessage) []json.RawMessage {
	if a == nil {
		return []json.RawMessage{}
	}
	return a
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
	text := map[string]any{"format": orJSON(e.format, `{"type":"text"}`)}
	if e.verbosity != nil {
		text["verbosity"] = *e.verbosity
	}
	obj := responseObject{
		ID: m.ID, Object: "response", CreatedAt: m.Created, Status: status, Model: m.Model,
		Instructions: e.Instructions, MaxOutputTokens: orJSON(e.maxOutputTokens, "null"),
		Output: []any{}, ParallelToolCalls: e.parallel, Store: e.Store,
		Reasoning:   map[string]any{"effort": nilIfEmpty(e.reasoningEffort), "summary": e.reasoningSum},
		Temperature: orJSON(e.temperature, "1"), TopP: orJSON(e.topP, "1"),
		Text:       text,
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
	for _, o := range c.outputs(m, res) {
		obj.Output = append(obj.Output, o.wire)
	}
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

// output is one output item of a response: its key, wire shape and
// neutral form (with its id).
type output struct {
	key  string
	wire any
	item turn.Item
}

// OutputItems returns the output items of res for response m as neutral
// items with their ids, in output order (the order of the final object
// and of the stream), as they are stored for continuations and item
// references.
func (c *Call) OutputItems(m Meta, res *turn.Result) []turn.Item {
	outs := c.outputs(m, res)
	items := make([]turn.Item, len(outs))
	for i, o := range outs {
		items[i] = o.item
	}
	return items
}

// outputs lists the output items of res: web searches, the message (when
// there is text or no call), then the calls — or, for a streamed answer,
// in the order the stream gave them.
func (c *Call) outputs(m Meta, res *turn.Result) []output {
	var outs []output
	for i, ws := range res.WebSearches {
		key := keySearch(i)
		id := c.itemID(m, key, "ws")
		action := searchAction(ws.Action)
		outs = append(outs, output{key,
			webSearchItem{Type: "web_search_call", ID: id, Status: "completed", Action: action},
			turn.Item{Type: turn.ItemWebSearchCall, ID: id, Action: action}})
	}
	if res.Text != "" || len(res.ToolCalls) == 0 {
		id := c.itemID(m, keyMessage, "msg")
		outs = append(outs, output{keyMessage, c.messageItem(m, res.Text, res.Annotations, "completed"),
			turn.Item{Type: turn.ItemMessage, ID: id, Role: turn.RoleAssistant,
				Content: []turn.Part{{Type: turn.PartText, Text: res.Text, Annotations: res.Annotations}}}})
	}
	for i, tc := range res.ToolCalls {
		key := keyCall(i)
		if tc.Custom {
			id := c.itemID(m, key, "ctc")
			outs = append(outs, output{key,
				customCallItem{Type: "custom_tool_call", ID: id, CallID: tc.ID, Name: tc.Name, Namespace: tc.Namespace, Input: tc.Arguments, Status: "completed"},
				turn.Item{Type: turn.ItemCustomToolCall, ID: id, CallID: tc.ID, Name: tc.Name, Namespace: tc.Namespace, Input: tc.Arguments}})
			continue
		}
		id := c.itemID(m, key, "fc")
		outs = append(outs, output{key,
			functionCallItem{Type: "function_call", ID: id, CallID: tc.ID, Name: tc.Name, Namespace: tc.Namespace, Arguments: tc.Arguments, Status: "completed"},
			turn.Item{Type: turn.ItemFunctionCall, ID: id, CallID: tc.ID, Name: tc.Name, Namespace: tc.Namespace, Arguments: tc.Arguments}})
	}
	if len(c.order) == 0 {
		return outs
	}
	// Streamed items first, in stream order; then any the stream lacks.
	sorted := make([]output, 0, len(outs))
	used := make([]bool, len(outs))
	for _, key := range c.order {
		for i, o := range outs {
			if !used[i] && o.key == key {
				sorted, used[i] = append(sorted, o), true
			}
		}
	}
	for i, o := range outs {
		if !used[i] {
			sorted = append(sorted, o)
		}
	}
	return sorted
}

func (c *Call) messageItem(m Meta, text string, annotations []json.RawMessage, status string) messageItem {
	content := []outputText{}
	if status == "completed" {
		content = []outputText{{Type: "output_text", Text: text, Annotations: annotationsOf(annotations), Logprobs: []any{}}}
	}
	return messageItem{Type: "message", ID: c.itemID(m, keyMessage, "msg"), Status: status, Role: "assistant", Content: content}
}

func nilIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}
