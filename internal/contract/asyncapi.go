package contract

import (
	"strings"

	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

type obj = map[string]any

// AsyncAPI returns s as an AsyncAPI 3.0.0 document: one channel per event
// name (its address), one operation per capability, and the payload JSON
// Schemas of the bus.llm.* contract under components.
func AsyncAPI(s Service) map[string]any {
	channels := obj{}
	operations := obj{}
	for _, c := range s.Capabilities {
		msgKey := lowerFirst(strings.TrimPrefix(c.Payload, "llmapi."))
		if _, ok := channels[c.Event]; !ok {
			channels[c.Event] = obj{
				"address":     c.Event,
				"description": "Bus event " + c.Event + " (scope " + c.Scope + ").",
				"messages":    obj{msgKey: obj{"$ref": "#/components/messages/" + strings.TrimPrefix(c.Payload, "llmapi.")}},
			}
		}
		op := obj{
			"action":      string(c.Action),
			"channel":     obj{"$ref": "#/channels/" + c.Event},
			"messages":    []any{obj{"$ref": "#/channels/" + c.Event + "/messages/" + msgKey}},
			"summary":     c.Summary,
			"description": c.Description,
			"x-scope":     c.Scope,
		}
		if c.Delivery != "" {
			op["x-delivery"] = string(c.Delivery)
		}
		if c.Group != "" {
			op["x-group"] = c.Group
		}
		operations[c.ID] = op
	}
	return obj{
		"asyncapi": "3.0.0",
		"info": obj{
			"title":       s.Name,
			"version":     s.Version,
			"description": s.Description,
		},
		"defaultContentType": "application/json",
		"servers": obj{
			"events": obj{
				"host":        "127.0.0.1:8081",
				"protocol":    "http",
				"pathname":    "/api/v1/events",
				"description": "Bus Events API: POST /api/v1/events publishes; GET /api/v1/events/stream streams NDJSON envelopes. Bearer JWT (audience ai.hg.fi/api) with scope llm:proxy.",
				"security":    []any{obj{"$ref": "#/components/securitySchemes/busJWT"}},
			},
		},
		"channels":   channels,
		"operations": operations,
		"components": obj{
			"securitySchemes": obj{
				"busJWT": obj{"type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "HS256 JWT with sub, aud ai.hg.fi/api, scope, iat, exp."},
			},
			"messages": obj{
				"ExecutionEventRequest":  message("ExecutionEventRequest", "A bus.llm.<op>.request payload."),
				"ExecutionEventResponse": message("ExecutionEventResponse", "A bus.llm.<op>.response payload."),
				"ExecutionEventChunk":    message("ExecutionEventChunk", "A bus.llm.<op>.chunk payload (streaming)."),
				"ExecutionEventCancel":   message("ExecutionEventCancel", "A bus.llm.<op>.cancel payload."),
			},
			"schemas": Schemas(),
		},
	}
}

func message(name, summary string) obj {
	return obj{
		"name":          name,
		"title":         name,
		"summary":       summary,
		"contentType":   "application/json",
		"correlationId": obj{"description": "The request id; the envelope correlationId equals it.", "location": "$message.payload#/requestId"},
		"payload":       obj{"$ref": "#/components/schemas/" + name},
	}
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToLower(s[:1]) + s[1:]
}

// traceparent is the schema of a W3C traceparent field (an extension).
func traceparent(of string) obj {
	return obj{"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
		"description": "W3C traceparent " + of + " (an extension; absent when not traced)."}
}

// Schemas returns the JSON Schemas of the bus.llm.* payloads.
func Schemas() map[string]any {
	var ops []any
	for _, op := range llmapi.AllOperations() {
		ops = append(ops, string(op))
	}
	operation := obj{"type": "string", "enum": ops}
	requestID := obj{"type": "string", "minLength": 1, "description": "Unique request id; equals the envelope correlationId."}
	return obj{
		"ExecutionEventRequest": obj{
			"type":     "object",
			"required": []any{"requestId", "operation", "model", "stream", "body"},
			"properties": obj{
				"requestId":   requestID,
				"operation":   operation,
				"model":       obj{"type": "string", "description": "Public (catalog) model id the client asked for."},
				"stream":      obj{"type": "boolean", "description": "The client asked for Server-Sent Events."},
				"identityId":  obj{"type": "string", "description": "JWT sub of the end user (audit; never trusted for auth)."},
				"deadline":    obj{"type": "string", "format": "date-time", "description": "The worker gives up after this instant."},
				"body":        obj{"type": "object", "description": "The client's OpenAI-compatible request JSON, unchanged."},
				"traceparent": traceparent("of the front door's publish span; the worker continues its trace"),
			},
		},
		"ExecutionEventResponse": obj{
			"type":     "object",
			"required": []any{"requestId", "operation", "statusCode", "body"},
			"properties": obj{
				"requestId":  requestID,
				"operation":  operation,
				"statusCode": obj{"type": "integer", "minimum": 100, "maximum": 599, "description": "HTTP status for the client."},
				"body":       obj{"type": "object", "description": "OpenAI-compatible object, or {\"error\": {...}} when statusCode >= 400."},
				"usage": obj{
					"type": "object",
					"properties": obj{
						"promptTokens":     obj{"type": "integer"},
						"completionTokens": obj{"type": "integer"},
						"totalTokens":      obj{"type": "integer"},
						"cachedTokens":     obj{"type": "integer"},
						"reasoningTokens":  obj{"type": "integer"},
					},
				},
				"worker":      obj{"type": "string", "description": "Which worker answered (diagnostics)."},
				"traceparent": traceparent("of the worker's span that answered"),
			},
		},
		"ExecutionEventChunk": obj{
			"type":     "object",
			"required": []any{"requestId", "operation", "seq", "data"},
			"properties": obj{
				"requestId": requestID,
				"operation": operation,
				"seq":       obj{"type": "integer", "minimum": 0, "description": "0, 1, 2, ... without gaps."},
				"data":      obj{"type": "object", "description": "One OpenAI stream frame, as it goes on the wire."},
			},
		},
		"ExecutionEventCancel": obj{
			"type":     "object",
			"required": []any{"requestId", "operation"},
			"properties": obj{
				"requestId": requestID,
				"operation": operation,
				"reason":    obj{"type": "string", "examples": []any{"client_disconnected", "timeout"}},
			},
		},
	}
}
