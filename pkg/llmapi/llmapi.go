// Package llmapi is the single Go definition of the bus.llm.* wire contract:
// the payloads that travel between the OpenAI-compatible REST front door
// (bus-api-provider-llm in events mode) and execution workers such as
// bus-integration-codex over the Bus Events API.
//
// Every request event gets exactly one response event with the same
// correlation id (the request's RequestID). Streaming requests additionally
// get sequence-numbered chunk events before the response, and the front door
// may publish a cancel event when its client goes away.
//
// Delivery modes: request events are consumed with unicast delivery in one
// worker group; response and chunk events are read by front doors with
// broadcast delivery; cancel events are read by workers with broadcast
// delivery.
//
// It imports only the standard library: it is the contract, and everything else depends on it.
package llmapi

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Operation names one OpenAI-compatible execution endpoint.
type Operation string

// The three operations the bus carries.
const (
	// OpChatCompletions is POST /v1/chat/completions.
	OpChatCompletions Operation = "chat.completions"
	// OpResponses is POST /v1/responses.
	OpResponses Operation = "responses"
	// OpCompletions is POST /v1/completions (legacy text completions).
	OpCompletions Operation = "completions"
)

// Stored-response operations: an extension of the contract that serves
// GET and DELETE /v1/responses/{id} and GET /v1/responses/{id}/input_items
// through the bus, so the response store stays with the workers. The
// request body of retrieve and delete is a StateRequest
// {"response_id": "resp_…"}, that of input_items an InputItemsRequest; the
// response body is the stored response object, for a delete
// {"id", "object": "response.deleted", "deleted": true}, and for
// input_items OpenAI's list {"object": "list", "data", "first_id",
// "last_id", "has_more"}. They are never streamed.
const (
	OpResponsesRetrieve   Operation = "responses.retrieve"
	OpResponsesDelete     Operation = "responses.delete"
	OpResponsesInputItems Operation = "responses.input_items"
)

// Operations lists the three execution operations in a stable order.
func Operations() []Operation {
	return []Operation{OpChatCompletions, OpResponses, OpCompletions}
}

// StateOperations lists the stored-response operations.
func StateOperations() []Operation {
	return []Operation{OpResponsesRetrieve, OpResponsesDelete, OpResponsesInputItems}
}

// AllOperations lists execution and stored-response operations.
func AllOperations() []Operation { return append(Operations(), StateOperations()...) }

// IsState reports whether op is a stored-response operation.
func (op Operation) IsState() bool {
	return op == OpResponsesRetrieve || op == OpResponsesDelete || op == OpResponsesInputItems
}

// StateRequest is the body of a stored-response operation request.
type StateRequest struct {
	// ResponseID is the stored response's id.
	ResponseID string `json:"response_id"`
}

// ParseOperation returns the operation named s, or an error.
func ParseOperation(s string) (Operation, error) {
	for _, op := range AllOperations() {
		if string(op) == s {
			return op, nil
		}
	}
	return "", fmt.Errorf("llmapi: unknown operation %q", s)
}

// Valid reports whether op is one of the three operations.
func (op Operation) Valid() bool {
	_, err := ParseOperation(string(op))
	return err == nil
}

const eventPrefix = "bus.llm."

func (op Operation) event(kind string) string { return eventPrefix + string(op) + "." + kind }

// RequestEvent is the event name a front door publishes for op,
// for example "bus.llm.chat.completions.request".
func (op Operation) RequestEvent() string { return op.event("request") }

// ResponseEvent is the event name a worker publishes the answer on.
func (op Operation) ResponseEvent() string { return op.event("response") }

// ChunkEvent is the event name of streaming chunks for op.
func (op Operation) ChunkEvent() string { return op.event("chunk") }

// CancelEvent is the event name a front door publishes to cancel work.
func (op Operation) CancelEvent() string { return op.event("cancel") }

// RESTPath is the OpenAI-compatible HTTP path of op, for example
// "/v1/chat/completions" ("/v1/responses/{id}" for retrieve and delete,
// "/v1/responses/{id}/input_items" for input_items).
func (op Operation) RESTPath() string {
	switch op {
	case OpResponsesInputItems:
		return "/v1/responses/{id}/input_items"
	case OpResponsesRetrieve, OpResponsesDelete:
		return "/v1/responses/{id}"
	}
	return "/v1/" + strings.ReplaceAll(string(op), ".", "/")
}

// Slug is op with dots replaced by underscores ("chat_completions"), the
// form used in capability ids such as "codex.chat_completions.receive".
func (op Operation) Slug() string { return strings.ReplaceAll(string(op), ".", "_") }

// EventKind is the last segment of a bus.llm.* event name.
type EventKind string

// The four kinds of bus.llm.* events.
const (
	KindRequest  EventKind = "request"
	KindResponse EventKind = "response"
	KindChunk    EventKind = "chunk"
	KindCancel   EventKind = "cancel"
)

// ParseEventName splits a bus.llm.* event name into its operation and kind.
func ParseEventName(name string) (Operation, EventKind, error) {
	rest, ok := strings.CutPrefix(name, eventPrefix)
	if !ok {
		return "", "", fmt.Errorf("llmapi: %q is not a bus.llm.* event", name)
	}
	i := strings.LastIndexByte(rest, '.')
	if i < 0 {
		return "", "", fmt.Errorf("llmapi: %q has no kind", name)
	}
	op, err := ParseOperation(rest[:i])
	if err != nil {
		return "", "", err
	}
	switch k := EventKind(rest[i+1:]); k {
	case KindRequest, KindResponse, KindChunk, KindCancel:
		return op, k, nil
	default:
		return "", "", fmt.Errorf("llmapi: unknown event kind %q in %q", k, name)
	}
}

// Scope is the token scope every bus.llm.* event needs, to publish and to listen.
const Scope = "llm:proxy"

// ExecutionEventRequest is the payload of a bus.llm.<op>.request event.
type ExecutionEventRequest struct {
	// RequestID is unique per request; the envelope correlationId equals it.
	RequestID string `json:"requestId"`
	// Operation is one of the three operations and matches the event name.
	Operation Operation `json:"operation"`
	// Model is the public model id the client asked for (a catalog id such
	// as "codex-chatgpt"), not necessarily the model that runs it.
	Model string `json:"model"`
	// Stream is true when the client asked for Server-Sent Events; the worker
	// then publishes chunk events before the response.
	Stream bool `json:"stream"`
	// IdentityID is the JWT sub of the end user, for audit and for
	// per-identity state. It is never trusted for authorization by the worker
	// beyond scoping that identity's own data.
	IdentityID string `json:"identityId,omitempty"`
	// Deadline, when set, is the instant after which the worker gives up and
	// answers with a timeout error.
	Deadline *time.Time `json:"deadline,omitempty"`
	// Body is the client's OpenAI-compatible request JSON, unchanged.
	Body json.RawMessage `json:"body"`
	// TraceParent is the W3C traceparent of the front door's publish
	// span ("00-<trace id>-<span id>-<flags>"), which continues the
	// client's own traceparent header when it sent one; the worker's
	// spans and logs continue that trace. An extension of the contract:
	// absent when the publisher does not trace.
	TraceParent string `json:"traceparent,omitempty"`
}

// Validate checks the fields a worker needs before it can run the request.
func (r *ExecutionEventRequest) Validate() error {
	switch {
	case r.RequestID == "":
		return fmt.Errorf("llmapi: requestId is required")
	case !r.Operation.Valid():
		return fmt.Errorf("llmapi: unknown operation %q", r.Operation)
	case len(r.Body) == 0 || string(r.Body) == "null":
		return fmt.Errorf("llmapi: body is required")
	}
	return nil
}

// Usage is the token accounting of one request, when the worker knows it.
type Usage struct {
	// PromptTokens counts input tokens, cached ones included.
	PromptTokens int64 `json:"promptTokens"`
	// CompletionTokens counts output tokens, reasoning ones included.
	CompletionTokens int64 `json:"completionTokens"`
	// TotalTokens is PromptTokens + CompletionTokens as the model reported it.
	TotalTokens int64 `json:"totalTokens"`
	// CachedTokens is the part of PromptTokens served from the prompt cache.
	CachedTokens int64 `json:"cachedTokens,omitempty"`
	// ReasoningTokens is the part of CompletionTokens spent on reasoning.
	ReasoningTokens int64 `json:"reasoningTokens,omitempty"`
}

// ExecutionEventResponse is the payload of a bus.llm.<op>.response event.
// Exactly one is published for every request event a worker accepts.
type ExecutionEventResponse struct {
	// RequestID repeats the request's RequestID.
	RequestID string `json:"requestId"`
	// Operation repeats the request's operation.
	Operation Operation `json:"operation"`
	// StatusCode is the HTTP status the front door returns to its client.
	StatusCode int `json:"statusCode"`
	// Body is the OpenAI-compatible success object, or {"error": {...}} when
	// StatusCode is 400 or more.
	Body json.RawMessage `json:"body"`
	// Usage is the token usage, when known.
	Usage *Usage `json:"usage,omitempty"`
	// Worker names the worker that answered, for diagnostics
	// ("bus-integration-codex/<consumer>").
	Worker string `json:"worker,omitempty"`
	// RetryAfter, on an error response, is how many seconds until a retry
	// may succeed (a rate or usage limit that resets); the front door
	// sends it as the retry-after header. An extension of the contract.
	RetryAfter int64 `json:"retryAfter,omitempty"`
	// TraceParent is the W3C traceparent of the worker's span that
	// answered, in the request's trace. An extension of the contract.
	TraceParent string `json:"traceparent,omitempty"`
}

// IsError reports whether the response carries an error body.
func (r *ExecutionEventResponse) IsError() bool { return r.StatusCode >= 400 }

// ExecutionEventChunk is the payload of a bus.llm.<op>.chunk event: one
// OpenAI stream frame of a streaming request.
type ExecutionEventChunk struct {
	// RequestID repeats the request's RequestID.
	RequestID string `json:"requestId"`
	// Operation repeats the request's operation.
	Operation Operation `json:"operation"`
	// Seq starts at 0 and increases by one per chunk, without gaps.
	Seq int64 `json:"seq"`
	// Data is one OpenAI stream frame for the operation, exactly as it goes
	// on the wire after "data: " (for the Responses API, the typed event
	// object whose "type" field names the SSE event).
	Data json.RawMessage `json:"data"`
}

// Cancel reasons.
const (
	// ReasonClientDisconnected means the REST client went away.
	ReasonClientDisconnected = "client_disconnected"
	// ReasonTimeout means the front door stopped waiting.
	ReasonTimeout = "timeout"
)

// ExecutionEventCancel is the payload of a bus.llm.<op>.cancel event.
type ExecutionEventCancel struct {
	// RequestID names the request to cancel.
	RequestID string `json:"requestId"`
	// Operation repeats the request's operation.
	Operation Operation `json:"operation"`
	// Reason says why, for example "client_disconnected".
	Reason string `json:"reason,omitempty"`
}
