// Package turn holds the provider-neutral shape of one model turn: what the
// OpenAI wire formats are parsed into (package openai) and what an
// execution provider (static, codex) runs. Keeping the three OpenAI APIs on
// one neutral request lets every provider serve all of them.
//
// It imports only the standard library: every other layer depends on it, it depends on none.
package turn

import (
	"context"
	"encoding/json"
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

// Tool is a function the client offers the model.
type Tool struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      bool            `json:"strict,omitempty"`
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

// ToolCall is a function call the model made.
type ToolCall struct {
	// ID is the call id the client echoes in its function output.
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
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
	Text      string       `json:"text"`
	ToolCalls []ToolCall   `json:"toolCalls,omitempty"`
	Usage     Usage        `json:"usage"`
	Finish    FinishReason `json:"finish"`
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
)

// Delta is one streamed piece of a turn, in order.
type Delta struct {
	Kind           DeltaKind
	Text           string
	Index          int
	ToolCall       ToolCall
	ArgumentsDelta string
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

// Capabilities lists optional features of a provider.
type Capabilities struct {
	Tools  bool
	Images bool
	// Schema: json_schema output formats are enforced.
	Schema bool
}
