// Package contract declares the event contract of the worker once — which
// events it receives and sends, with which delivery, scope and payload — and
// renders that one declaration for people (text), programs (JSON) and
// discovery tools (AsyncAPI 3.0). The worker derives the streams it opens
// from the same declaration.
//
// It imports only pkg/events and pkg/llmapi.
package contract

import (
	"fmt"

	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Action is what the service does with an event.
type Action string

// Actions.
const (
	Receive Action = "receive"
	Send    Action = "send"
)

// Capability is one declared use of an event.
type Capability struct {
	// ID names the capability, e.g. "codex.chat_completions.receive".
	ID string `json:"id"`
	// Action is receive or send.
	Action Action `json:"action"`
	// Event is the event name.
	Event string `json:"event"`
	// Delivery is how the service listens (receive only).
	Delivery events.Delivery `json:"delivery,omitempty"`
	// Group is the unicast group (unicast receive only).
	Group string `json:"group,omitempty"`
	// Scope is the token scope the event needs.
	Scope string `json:"scope"`
	// Operation is the bus.llm operation.
	Operation llmapi.Operation `json:"operation"`
	// Payload names the Go payload type.
	Payload string `json:"payload"`
	// Summary is one line on what it is for.
	Summary string `json:"summary"`
	// Description explains it in full (for --event-help).
	Description string `json:"description"`
}

// Service is a service's whole declared contract.
type Service struct {
	Name         string       `json:"name"`
	Version      string       `json:"version"`
	Description  string       `json:"description"`
	Capabilities []Capability `json:"capabilities"`
}

// Worker declares the contract of bus-integration-codex listening in group.
func Worker(version, group string) Service {
	s := Service{
		Name:    "bus-integration-codex",
		Version: version,
		Description: "Bus Events worker that runs provider-neutral LLM execution requests " +
			"(OpenAI chat completions, Responses and completions) through the Codex App Server " +
			"and answers each with exactly one correlated response event.",
	}
	for _, op := range llmapi.Operations() {
		slug := "codex." + op.Slug()
		s.Capabilities = append(s.Capabilities,
			Capability{
				ID: slug + ".receive", Action: Receive, Event: op.RequestEvent(), Delivery: events.Unicast, Group: group,
				Scope: llmapi.Scope, Operation: op, Payload: "llmapi.ExecutionEventRequest",
				Summary: fmt.Sprintf("Take %s requests (unicast: one worker of the group runs each).", op.RESTPath()),
				Description: fmt.Sprintf("The worker listens to %s with unicast delivery in group %q, so each request "+
					"runs once however many workers share the group. The payload is llmapi.ExecutionEventRequest; its body is the "+
					"client's OpenAI-compatible %s request, unchanged. Deliveries are acknowledged after the response is published, "+
					"and at most --concurrency requests are taken at a time; a worker that stops releases what it received but will not run, "+
					"so another worker of the group takes it at once.", op.RequestEvent(), group, op.RESTPath()),
			},
			Capability{
				ID: slug + ".respond", Action: Send, Event: op.ResponseEvent(),
				Scope: llmapi.Scope, Operation: op, Payload: "llmapi.ExecutionEventResponse",
				Summary: "Publish exactly one correlated response per accepted request, errors included.",
				Description: fmt.Sprintf("For every request taken from %s the worker publishes one %s event whose correlationId "+
					"and requestId equal the request's. statusCode is the HTTP status for the client and body the OpenAI-compatible "+
					"object, or an OpenAI error object {\"error\": {...}} when statusCode >= 400. usage carries exact token counts when known.",
					op.RequestEvent(), op.ResponseEvent()),
			},
			Capability{
				ID: slug + ".stream", Action: Send, Event: op.ChunkEvent(),
				Scope: llmapi.Scope, Operation: op, Payload: "llmapi.ExecutionEventChunk",
				Summary: "Publish streaming chunks (stream: true) as Codex produces them, before the response.",
				Description: fmt.Sprintf("When a request has stream: true the worker publishes %s events, seq 0, 1, 2, ... without gaps, "+
					"each carrying one OpenAI stream frame in data, as the model produces it; the last frame of a stream is terminal "+
					"(finish_reason, the usage frame, response.completed/failed, or an error). The final %s follows with the complete object.",
					op.ChunkEvent(), op.ResponseEvent()),
			},
			Capability{
				ID: slug + ".cancel", Action: Receive, Event: op.CancelEvent(), Delivery: events.Broadcast,
				Scope: llmapi.Scope, Operation: op, Payload: "llmapi.ExecutionEventCancel",
				Summary: "Interrupt a running request when its client goes away.",
				Description: fmt.Sprintf("Every worker listens to %s with broadcast delivery; the one running that requestId interrupts "+
					"the Codex turn, the others ignore it. The request still gets its one response event.", op.CancelEvent()),
			},
		)
	}
	for _, op := range llmapi.StateOperations() {
		slug := "codex." + op.Slug()
		route := map[llmapi.Operation]string{
			llmapi.OpResponsesRetrieve:   "GET /v1/responses/{id}",
			llmapi.OpResponsesDelete:     "DELETE /v1/responses/{id}",
			llmapi.OpResponsesInputItems: "GET /v1/responses/{id}/input_items",
		}[op]
		body, answer := `{"response_id": "resp_..."}`, "statusCode 200 with the stored response object (retrieve) or "+
			`{"id", "object": "response.deleted", "deleted": true} (delete)`
		summary := "Publish the stored response object (or the deletion result, or a 404)."
		if op == llmapi.OpResponsesInputItems {
			body = `llmapi.InputItemsRequest {"response_id", "limit" (1-100, default 20), "order" ("asc" or "desc", the default), "after", "before", "include"}`
			answer = `statusCode 200 with OpenAI's list {"object": "list", "data": [items with ids], "first_id", "last_id", "has_more"} ` +
				"of the items the response was generated from (its input, after the history it continued), or a 400 for a bad query"
			summary = "Publish one page of a stored response's input items (or a 404)."
		}
		s.Capabilities = append(s.Capabilities,
			Capability{
				ID: slug + ".receive", Action: Receive, Event: op.RequestEvent(), Delivery: events.Unicast, Group: group,
				Scope: llmapi.Scope, Operation: op, Payload: "llmapi.ExecutionEventRequest",
				Summary: fmt.Sprintf("Take %s requests for stored responses (an extension of the contract).", route),
				Description: fmt.Sprintf("The worker listens to %s with unicast delivery in group %q. The request body is "+
					"%s; identityId scopes the lookup: a response stored by another identity is not found. "+
					"Stored responses live in the shared response store (memory, Redis or PostgreSQL).", op.RequestEvent(), group, body),
			},
			Capability{
				ID: slug + ".respond", Action: Send, Event: op.ResponseEvent(),
				Scope: llmapi.Scope, Operation: op, Payload: "llmapi.ExecutionEventResponse",
				Summary:     summary,
				Description: fmt.Sprintf("One %s per request: %s, else an OpenAI error (404 response_not_found).", op.ResponseEvent(), answer),
			},
		)
	}
	return s
}

// Lookup returns the capability with id.
func (s Service) Lookup(id string) (Capability, bool) {
	for _, c := range s.Capabilities {
		if c.ID == id {
			return c, true
		}
	}
	return Capability{}, false
}

// Names returns the event names of capabilities with action a and delivery d.
func (s Service) Names(a Action, d events.Delivery) []string {
	var out []string
	for _, c := range s.Capabilities {
		if c.Action == a && c.Delivery == d {
			out = append(out, c.Event)
		}
	}
	return out
}
