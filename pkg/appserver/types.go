package appserver

import (
	"encoding/json"
)

// Sandbox modes for RunRequest.Sandbox.
const (
	SandboxReadOnly         = "read-only"
	SandboxWorkspaceWrite   = "workspace-write"
	SandboxDangerFullAccess = "danger-full-access"
)

// Approval policies for RunRequest.ApprovalPolicy.
const (
	ApprovalUntrusted = "untrusted"
	ApprovalOnRequest = "on-request"
	ApprovalNever     = "never"
)

// Turn statuses (RunResult.Status).
const (
	StatusCompleted   = "completed"
	StatusInterrupted = "interrupted"
	StatusFailed      = "failed"
	StatusInProgress  = "inProgress"
)

// RunRequest describes one run: a fresh ephemeral thread and one turn.
type RunRequest struct {
	// Cwd is the thread's working directory (absolute). Empty lets Codex
	// use the process's working directory.
	Cwd string
	// ApprovalPolicy is "untrusted" (default), "on-request" or "never".
	// With "untrusted" Codex asks before running anything not known to be
	// safe, and the default Handler declines.
	ApprovalPolicy string
	// Sandbox is the sandbox mode; default "read-only".
	Sandbox string
	// Model is the model to use. Empty or "auto" lets Codex choose.
	Model string
	// BaseInstructions, if set, replaces Codex's base prompt.
	BaseInstructions string
	// DeveloperInstructions, if set, are sent as a developer message.
	DeveloperInstructions string
	// DynamicTools are client-implemented tools offered to the model
	// (experimental API). Calls reach Handler as item/tool/call requests.
	DynamicTools []DynamicTool
	// Config holds per-thread config overrides (thread/start "config").
	Config map[string]any
	// History holds raw Responses-API items injected into the thread
	// (thread/inject_items) before the turn, e.g. from MessageItem,
	// FunctionCallItem and FunctionCallOutputItem.
	History []any
	// Input is the user input of the turn. It may be empty when History
	// ends with the user message to answer.
	Input []UserInput
	// Effort is the reasoning effort ("low", "medium", "high", ...).
	Effort string
	// OutputSchema is a JSON Schema constraining the final message.
	OutputSchema json.RawMessage
	// ServiceName is passed to thread/start (telemetry label).
	ServiceName string

	// OnEvent, if set, is called for every event of the turn, in order,
	// on the goroutine that called Run.
	OnEvent func(Event)
	// Handler answers server-initiated requests for this run's thread.
	// Nil uses the Process's Config.Handler, or Deny.
	Handler Handler
}

func (r *RunRequest) threadParams() ThreadParams {
	return ThreadParams{
		Cwd: r.Cwd, ApprovalPolicy: r.ApprovalPolicy, Sandbox: r.Sandbox, Model: r.Model,
		BaseInstructions: r.BaseInstructions, DeveloperInstructions: r.DeveloperInstructions,
		DynamicTools: r.DynamicTools, Config: r.Config, ServiceName: r.ServiceName, Handler: r.Handler,
	}
}

// DynamicTool is a client-side function tool offered to the model.
type DynamicTool struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"inputSchema"`
	// Namespace, when set, groups the tool with the others of the same
	// Namespace into one namespace tool (NamespaceDescription describes
	// it); the model then calls it with that namespace, and
	// item/tool/call carries it.
	Namespace            string `json:"-"`
	NamespaceDescription string `json:"-"`
}

// UserInput is one element of turn/start "input".
type UserInput struct {
	// Type is "text", "image" (URL, including data: URLs) or "localImage".
	Type string
	// Text is the text of a "text" input.
	Text string
	// URL is the image URL of an "image" input.
	URL string
	// Path is the file path of a "localImage" input.
	Path string
}

// MarshalJSON encodes the input in the app-server's UserInput shape.
func (u UserInput) MarshalJSON() ([]byte, error) {
	switch u.Type {
	case "text":
		return json.Marshal(map[string]any{"type": "text", "text": u.Text})
	case "image":
		return json.Marshal(map[string]any{"type": "image", "url": u.URL})
	case "localImage":
		return json.Marshal(map[string]any{"type": "localImage", "path": u.Path})
	}
	m := map[string]any{"type": u.Type}
	if u.Text != "" {
		m["text"] = u.Text
	}
	if u.URL != "" {
		m["url"] = u.URL
	}
	if u.Path != "" {
		m["path"] = u.Path
	}
	return json.Marshal(m)
}

// TextInput is a text user input.
func TextInput(text string) UserInput { return UserInput{Type: "text", Text: text} }

// ImageInput is an image user input by URL (http(s) or data: URL).
func ImageInput(url string) UserInput { return UserInput{Type: "image", URL: url} }

// MessageItem is a raw Responses-API message item for History. role is
// "user", "assistant" or "developer"; assistant text is output_text, the
// others input_text.
func MessageItem(role, text string) map[string]any {
	partType := "input_text"
	if role == "assistant" {
		partType = "output_text"
	}
	return map[string]any{
		"type":    "message",
		"role":    role,
		"content": []any{map[string]any{"type": partType, "text": text}},
	}
}

// FunctionCallItem is a raw Responses-API function_call item for History.
func FunctionCallItem(callID, name, arguments string) map[string]any {
	return map[string]any{"type": "function_call", "call_id": callID, "name": name, "arguments": arguments}
}

// FunctionCallOutputItem is a raw Responses-API function_call_output item
// for History.
func FunctionCallOutputItem(callID, output string) map[string]any {
	return map[string]any{"type": "function_call_output", "call_id": callID, "output": output}
}

// TokenUsageBreakdown is one token count breakdown.
type TokenUsageBreakdown struct {
	InputTokens           int64 `json:"inputTokens"`
	CachedInputTokens     int64 `json:"cachedInputTokens"`
	CacheWriteInputTokens int64 `json:"cacheWriteInputTokens,omitempty"`
	OutputTokens          int64 `json:"outputTokens"`
	ReasoningOutputTokens int64 `json:"reasoningOutputTokens"`
	TotalTokens           int64 `json:"totalTokens"`
}

// TokenUsage is thread/tokenUsage/updated's tokenUsage: Last is the last
// model call, Total the whole thread (for a fresh thread: the whole run).
type TokenUsage struct {
	Last               TokenUsageBreakdown `json:"last"`
	Total              TokenUsageBreakdown `json:"total"`
	ModelContextWindow int64               `json:"modelContextWindow,omitempty"`
}

// EventKind classifies an Event.
type EventKind string

// Event kinds.
const (
	// EventTurnStarted: turn/started.
	EventTurnStarted EventKind = "turnStarted"
	// EventAgentMessageDelta: item/agentMessage/delta; Delta and ItemID set.
	EventAgentMessageDelta EventKind = "agentMessageDelta"
	// EventItemStarted: item/started; Item set.
	EventItemStarted EventKind = "itemStarted"
	// EventItemCompleted: item/completed; Item set (agentMessage with
	// full Text; other types pass through in Item.Raw).
	EventItemCompleted EventKind = "itemCompleted"
	// EventTokenUsage: thread/tokenUsage/updated; Usage set.
	EventTokenUsage EventKind = "tokenUsage"
	// EventError: error notification; Error and WillRetry set.
	EventError EventKind = "error"
	// EventTurnCompleted: turn/completed; Status (and Error) set.
	EventTurnCompleted EventKind = "turnCompleted"
	// EventToolCall: a dynamic tool call (item/tool/call) held for the
	// reader of a thread started with HoldToolCalls; ToolCall set. Answer
	// it with Turn.Respond.
	EventToolCall EventKind = "toolCall"
	// EventRawItem: rawResponseItem/completed (threads with RawEvents):
	// an item appended to the history — model output, and also user
	// messages, tool outputs and harness items; RawItem set.
	EventRawItem EventKind = "rawItem"
	// EventRawResponse: rawResponse/completed (threads with RawEvents):
	// a model response ended; ResponseID and ResponseUsage set.
	EventRawResponse EventKind = "rawResponse"
	// EventNotification: any other notification for the thread; only
	// Method and Raw set.
	EventNotification EventKind = "notification"
)

// Event is one streamed event of a run.
type Event struct {
	Kind     EventKind
	Method   string
	ThreadID string
	TurnID   string
	ItemID   string
	// Delta is the text delta of EventAgentMessageDelta.
	Delta string
	// Item is the item of EventItemStarted / EventItemCompleted.
	Item *Item
	// Usage is the usage of EventTokenUsage.
	Usage *TokenUsage
	// Error is the error of EventError / a failed EventTurnCompleted.
	Error *TurnError
	// WillRetry tells, for EventError, that Codex retries on its own.
	WillRetry bool
	// Status is the turn status of EventTurnCompleted.
	Status string
	// TurnItems are the items turn/completed carried (EventTurnCompleted).
	TurnItems []Item
	// ToolCall is the held dynamic tool call of EventToolCall.
	ToolCall *ToolCall
	// RawItem is the Responses API item of EventRawItem.
	RawItem json.RawMessage
	// ResponseID and ResponseUsage describe the model response of
	// EventRawResponse (ResponseUsage nil when the provider sent none).
	ResponseID    string
	ResponseUsage *TokenUsageBreakdown
	// Raw is the notification's params.
	Raw json.RawMessage
}

// Item is a thread item (ThreadItem) from item/started or item/completed.
type Item struct {
	// Type is the item type: "agentMessage", "userMessage", "reasoning",
	// "commandExecution", "dynamicToolCall", ...
	Type string
	ID   string
	// Text is the text of an agentMessage (full text when completed).
	Text string
	// Phase is an agentMessage's phase ("commentary", "final_answer", ...)
	// when the provider reported it.
	Phase string
	// Raw is the full item JSON.
	Raw json.RawMessage
}

// RunResult is the outcome of a run.
type RunResult struct {
	ThreadID string
	TurnID   string
	// Status is the final turn status ("completed", "interrupted",
	// "failed"), or "" if the turn never finished.
	Status string
	// Text is the final agent message: the last agentMessage item marked
	// final_answer, else the last agentMessage item of the turn.
	Text string
	// Usage is the last token usage reported, if HasUsage.
	Usage    TokenUsage
	HasUsage bool
	// Error is the turn error of a failed (or interrupted) turn.
	Error *TurnError
	// Items are the items completed during the turn, in order.
	Items []Item
}
