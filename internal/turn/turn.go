// Package turn holds the provider-neutral shape of one model turn: what the
// OpenAI wire formats are parsed into (package openaiwire) and what an
// execution provider (static, codex) runs. Keeping the three OpenAI APIs on
// one neutral request lets every provider serve all of them.
//
// It imports only the standard library: every other layer depends on it, it depends on none.
package turn

import (
	"context"
	"encoding/json"
	"time"
)

// Role of a message.
type Role string

// Message roles.
const (
	RoleUser      Role = "user"
	RoleAssistant Role = "assistant"
	RoleDeveloper Role = "developer"
)

// ItemType is the kind of a conversation item.
type ItemType string

// Conversation item kinds.
const (
	ItemMessage            ItemType = "message"
	ItemFunctionCall       ItemType = "function_call"
	ItemFunctionCallOutput ItemType = "function_call_output"
	// ItemCustomToolCall is a call of a custom (free-form) tool: CallID,
	// Name, Namespace and Input.
	ItemCustomToolCall ItemType = "custom_tool_call"
	// ItemCustomToolCallOutput is a custom tool's result: CallID, Output.
	ItemCustomToolCallOutput ItemType = "custom_tool_call_output"
	// ItemWebSearchCall is a hosted web search the model ran earlier: ID
	// and Action (replayed as it was).
	ItemWebSearchCall ItemType = "web_search_call"
)

// PartType is the kind of a message content part.
type PartType string

// Content part kinds.
const (
	PartText  PartType = "text"
	PartImage PartType = "image"
)

// Part is one piece of message content.
type Part struct {
	Type PartType `json:"type"`
	// Text of a text part.
	Text string `json:"text,omitempty"`
	// ImageURL of an image part: an http(s) URL or a data: URL.
	ImageURL string `json:"imageUrl,omitempty"`
	// Annotations of an assistant text part (url_citation objects, as
	// the model produced them), kept so a replayed answer is unchanged.
	Annotations []json.RawMessage `json:"annotations,omitempty"`
}

// Item is one entry of the conversation, in order.
type Item struct {
	Type ItemType `json:"type"`
	// Role and Content of a message.
	Role    Role   `json:"role,omitempty"`
	Content []Part `json:"content,omitempty"`
	// CallID links a function call to its output.
	CallID string `json:"callId,omitempty"`
	// Name and Arguments (a JSON text) of a function call.
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments,omitempty"`
	// Output of a function call (text).
	Output string `json:"output,omitempty"`
	// ID is the item's id when it has one (output items this project
	// returned: "msg_…", "fc_…", "ws_…"), so later requests can refer to it.
	ID string `json:"id,omitempty"`
	// Namespace of a function or custom tool call to a namespaced tool.
	Namespace string `json:"namespace,omitempty"`
	// Input of a custom tool call (free-form text).
	Input string `json:"input,omitempty"`
	// Action of a web search call (the Responses API object: type
	// "search" with query, "open_page" with url, ...).
	Action json.RawMessage `json:"action,omitempty"`
}

// Text returns the concatenated text parts of a message item.
func (it Item) Text() string {
	var s string
	for _, p := range it.Content {
		if p.Type == PartText {
			s += p.Text
		}
	}
	return s
}

// ToolKind is the kind of a client tool.
type ToolKind string

// Client tool kinds.
const (
	// ToolFunction takes JSON arguments matching Parameters.
	ToolFunction ToolKind = ""
	// ToolCustom takes free-form text input (optionally constrained by
	// Format, e.g. a grammar).
	ToolCustom ToolKind = "custom"
)

// Tool is a function (or custom tool) the client offers the model.
type Tool struct {
	Kind        ToolKind        `json:"kind,omitempty"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      bool            `json:"strict,omitempty"`
	// Format of a custom tool's input (the Responses API "format"
	// object: text, or a grammar), nil for free text.
	Format json.RawMessage `json:"format,omitempty"`
	// Namespace groups tools under a shared name (the Responses API
	// "namespace" tool); "" for a top-level tool. NamespaceDescription
	// describes the group.
	Namespace            string `json:"namespace,omitempty"`
	NamespaceDescription string `json:"namespaceDescription,omitempty"`
}

// ToolChoiceMode says whether and how the model may call tools.
type ToolChoiceMode string

// Tool choice modes.
const (
	ToolChoiceAuto     ToolChoiceMode = "auto"
	ToolChoiceNone     ToolChoiceMode = "none"
	ToolChoiceRequired ToolChoiceMode = "required"
	// ToolChoiceFunction forces the function named in ToolChoice.Name.
	ToolChoiceFunction ToolChoiceMode = "function"
)

// ToolChoice is the client's tool_choice.
type ToolChoice struct {
	Mode ToolChoiceMode `json:"mode"`
	Name string         `json:"name,omitempty"`
}

// OutputFormat constrains the final answer.
type OutputFormat struct {
	// Type is "text" (no constraint), "json_object" or "json_schema".
	Type string `json:"type"`
	// Name, Schema and Strict of a json_schema format.
	Name   string          `json:"name,omitempty"`
	Schema json.RawMessage `json:"schema,omitempty"`
	Strict bool            `json:"strict,omitempty"`
}

// Request is one model turn to run.
type Request struct {
	// Model is the public (catalog) model id the client asked for.
	Model string `json:"model"`
	// EngineModel is the model to run when the catalog entry of Model
	// names one ("" = the provider's configured model).
	EngineModel string `json:"engineModel,omitempty"`
	// Instructions are system/developer instructions, in order.
	Instructions []string `json:"instructions,omitempty"`
	// Input is the conversation: history and the new input, in order.
	Input []Item `json:"input"`
	// Tools, ToolChoice and ParallelToolCalls describe function calling.
	Tools             []Tool     `json:"tools,omitempty"`
	ToolChoice        ToolChoice `json:"toolChoice"`
	ParallelToolCalls bool       `json:"parallelToolCalls"`
	// Format constrains the output (nil: free text).
	Format *OutputFormat `json:"format,omitempty"`
	// Effort is the reasoning effort ("" = provider default).
	Effort string `json:"effort,omitempty"`
	// IdentityID is the end user (for per-identity state; never for auth).
	IdentityID string `json:"identityId,omitempty"`
	// Mode is how the provider runs the turn: ModeModel (the default) or
	// ModeAgent.
	Mode Mode `json:"mode,omitempty"`
	// WebSearch, when set, lets the model run hosted web searches.
	WebSearch *WebSearch `json:"webSearch,omitempty"`
}

// Mode says how much of the engine's own agent the model sees.
type Mode string

// Execution modes.
const (
	// ModeModel: the model sees the caller's instructions, messages and
	// tools and nothing of the engine's own (the default).
	ModeModel Mode = "model"
	// ModeAgent: the engine runs as a coding agent with its own prompt
	// and tools in its workspace.
	ModeAgent Mode = "agent"
)

// WebSearch configures hosted web search for a turn.
type WebSearch struct {
	// ContextSize is "low", "medium" or "high" ("" = default).
	ContextSize string `json:"contextSize,omitempty"`
	// AllowedDomains restricts results to these domains.
	AllowedDomains []string `json:"allowedDomains,omitempty"`
	// Location is the approximate user location (the Responses API
	// user_location object, {"type":"approximate","city",...}), if given.
	Location json.RawMessage `json:"location,omitempty"`
	// CachedOnly: results come from the search index only, no live page
	// fetches (the Responses API's "external_web_access": false).
	CachedOnly bool `json:"cachedOnly,omitempty"`
}

// LastUserText returns the text of the last user message, or "".
func (r *Request) LastUserText() string {
	for i := len(r.Input) - 1; i >= 0; i-- {
		if it := r.Input[i]; it.Type == ItemMessage && it.Role == RoleUser {
			return it.Text()
		}
	}
	return ""
}

// ToolCall is a function (or custom tool) call the model made.
type ToolCall struct {
	// ID is the call id the client echoes in its function output.
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
	// Namespace of a namespaced tool ("" for a top-level one).
	Namespace string `json:"namespace,omitempty"`
	// Custom marks a custom tool call: Arguments then holds its
	// free-form input.
	Custom bool `json:"custom,omitempty"`
}

// WebSearchCall is a hosted web search the model ran.
type WebSearchCall struct {
	// ID is the call's item id ("ws_…").
	ID string `json:"id"`
	// Action is the Responses API action object (type "search" with
	// query, "open_page" with url, "find_in_page", ...).
	Action json.RawMessage `json:"action"`
}

// Usage is exact token accounting as the model reported it.
type Usage struct {
	InputTokens     int64 `json:"inputTokens"`
	CachedTokens    int64 `json:"cachedTokens"`
	OutputTokens    int64 `json:"outputTokens"`
	ReasoningTokens int64 `json:"reasoningTokens"`
	TotalTokens     int64 `json:"totalTokens"`
}

// FinishReason says why the turn ended.
type FinishReason string

// Finish reasons.
const (
	FinishStop      FinishReason = "stop"
	FinishLength    FinishReason = "length"
	FinishToolCalls FinishReason = "tool_calls"
)

// Result is the outcome of a turn.
type Result struct {
	Text string `json:"text"`
	// Annotations of Text (url_citation objects with start_index,
	// end_index, url and title), as the model produced them.
	Annotations []json.RawMessage `json:"annotations,omitempty"`
	// WebSearches are the hosted web searches of the turn, in order;
	// they come before the answer text.
	WebSearches []WebSearchCall `json:"webSearches,omitempty"`
	ToolCalls   []ToolCall      `json:"toolCalls,omitempty"`
	Usage       Usage           `json:"usage"`
	Finish      FinishReason    `json:"finish"`
}

// DeltaKind is the kind of a streaming delta.
type DeltaKind int

// Delta kinds.
const (
	// DeltaText carries Text, a piece of the answer.
	DeltaText DeltaKind = iota
	// DeltaToolCall starts a tool call (Index, ToolCall.ID and Name) or
	// continues its arguments (Index and ArgumentsDelta).
	DeltaToolCall
	// DeltaWebSearch reports a hosted web search: started (Index,
	// WebSearch.ID) or completed (WebSearch with its Action, Done set).
	DeltaWebSearch
)

// Delta is one streamed piece of a turn, in order.
type Delta struct {
	Kind           DeltaKind
	Text           string
	Index          int
	ToolCall       ToolCall
	ArgumentsDelta string
	WebSearch      WebSearchCall
	Done           bool
}

// Sink receives deltas as the model produces them.
type Sink func(Delta)

// Provider runs model turns.
type Provider interface {
	// Run runs req and returns its result. When sink is non-nil, deltas
	// are passed to it as they arrive, before Run returns. Errors that
	// should reach the client with a status are *llmapi.APIError.
	Run(ctx context.Context, req *Request, sink Sink) (*Result, error)
	// Capabilities says which request features the provider honours, so
	// unsupported ones are rejected with a clear 400 instead of ignored.
	Capabilities() Capabilities
	// Close stops the provider and everything it started.
	Close() error
}

// Exhaustible is implemented by providers whose capacity can run out for
// a while, such as a login whose usage limit is exhausted: until then
// they refuse requests, and a worker stops taking them.
type Exhaustible interface {
	// Exhausted reports until when the provider cannot run requests.
	Exhausted() (until time.Time, ok bool)
}

// Capabilities lists optional features of a provider.
type Capabilities struct {
	Tools  bool
	Images bool
	// Schema: json_schema output formats are enforced.
	Schema bool
	// WebSearch: hosted web search can run.
	WebSearch bool
}
