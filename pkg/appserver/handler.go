package appserver

import (
	"context"
	"encoding/json"
	"fmt"
)

// Server-initiated request methods (app-server → client) of the pinned
// Codex version.
const (
	MethodCommandApproval     = "item/commandExecution/requestApproval"
	MethodFileChangeApproval  = "item/fileChange/requestApproval"
	MethodPermissionsApproval = "item/permissions/requestApproval"
	MethodToolUserInput       = "item/tool/requestUserInput"
	MethodMCPElicitation      = "mcpServer/elicitation/request"
	MethodDynamicToolCall     = "item/tool/call"
	MethodAuthTokensRefresh   = "account/chatgptAuthTokens/refresh"
	MethodAttestationGenerate = "attestation/generate"
	MethodLegacyApplyPatch    = "applyPatchApproval"
	MethodLegacyExecCommand   = "execCommandApproval"
)

// ServerRequest is a request the app-server sent to the client. It must be
// answered; the Process does so with whatever the Handler returns.
type ServerRequest struct {
	// ID is the JSON-RPC id, echoed in the answer.
	ID json.RawMessage
	// Method is the request method (see the Method* constants).
	Method string
	// ThreadID, TurnID and ItemID are taken from params when present
	// (threadId/conversationId, turnId, itemId/callId).
	ThreadID string
	TurnID   string
	ItemID   string
	// Params is the raw params object. It may hold secrets: do not log it.
	Params json.RawMessage
}

// Handler answers server-initiated requests. The returned value is sent as
// the JSON-RPC result; a returned error is sent as a JSON-RPC error (an
// *RPCError keeps its code, anything else becomes -32603). ctx is cancelled
// when the run that owns the thread ends or the process exits; a Handler
// must return promptly then.
type Handler interface {
	HandleServerRequest(ctx context.Context, req *ServerRequest) (any, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *ServerRequest) (any, error)

// HandleServerRequest calls f.
func (f HandlerFunc) HandleServerRequest(ctx context.Context, req *ServerRequest) (any, error) {
	return f(ctx, req)
}

// Deny is the default answer to every server request: approvals are
// declined, permission requests get an empty grant, user input gets no
// answers, MCP elicitations are declined, dynamic tool calls fail, legacy
// approvals are denied, auth-token refresh and attestation get a JSON-RPC
// error, and unknown methods get
// -32601.
func Deny(_ context.Context, req *ServerRequest) (any, error) {
	switch req.Method {
	case MethodCommandApproval, MethodFileChangeApproval:
		return map[string]any{"decision": "decline"}, nil
	case MethodPermissionsApproval:
		return map[string]any{"permissions": map[string]any{}, "scope": "turn"}, nil
	case MethodToolUserInput:
		return map[string]any{"answers": map[string]any{}}, nil
	case MethodMCPElicitation:
		return map[string]any{"action": "decline"}, nil
	case MethodDynamicToolCall:
		return ToolResult{Success: false, ContentItems: []ToolContent{
			{Type: "inputText", Text: "tool calls are not available in this session"},
		}}, nil
	case MethodLegacyApplyPatch, MethodLegacyExecCommand:
		return map[string]any{"decision": "denied"}, nil
	case MethodAuthTokensRefresh, MethodAttestationGenerate:
		return nil, &RPCError{Code: CodeRequestDenied, Message: req.Method + " is not supported by this client"}
	}
	return nil, &RPCError{Code: CodeMethodNotFound, Message: "method not found: " + req.Method}
}

// ToolCall is the params of an item/tool/call request (a dynamic tool call).
type ToolCall struct {
	ThreadID  string          `json:"threadId"`
	TurnID    string          `json:"turnId"`
	CallID    string          `json:"callId"`
	Tool      string          `json:"tool"`
	Namespace string          `json:"namespace,omitempty"`
	Arguments json.RawMessage `json:"arguments"`
}

// ToolCall decodes the params of an item/tool/call request.
func (r *ServerRequest) ToolCall() (*ToolCall, error) {
	if r.Method != MethodDynamicToolCall {
		return nil, fmt.Errorf("appserver: %s is not a dynamic tool call", r.Method)
	}
	var c ToolCall
	if err := json.Unmarshal(r.Params, &c); err != nil {
		return nil, fmt.Errorf("appserver: decode tool call: %w", err)
	}
	return &c, nil
}

// ToolResult answers a dynamic tool call (DynamicToolCallResponse).
type ToolResult struct {
	Success      bool          `json:"success"`
	ContentItems []ToolContent `json:"contentItems"`
}

// ToolContent is one content item of a ToolResult: Type "inputText" with
// Text, or "inputImage" with ImageURL.
type ToolContent struct {
	Type     string `json:"type"`
	Text     string `json:"text,omitempty"`
	ImageURL string `json:"imageUrl,omitempty"`
}

// TextToolResult is a ToolResult with one text item.
func TextToolResult(success bool, text string) ToolResult {
	return ToolResult{Success: success, ContentItems: []ToolContent{{Type: "inputText", Text: text}}}
}

// ToolHandler returns a Handler that answers dynamic tool calls with fn and
// every other request with Deny.
func ToolHandler(fn func(ctx context.Context, call *ToolCall) (ToolResult, error)) Handler {
	return HandlerFunc(func(ctx context.Context, req *ServerRequest) (any, error) {
		if req.Method != MethodDynamicToolCall {
			return Deny(ctx, req)
		}
		call, err := req.ToolCall()
		if err != nil {
			return nil, &RPCError{Code: CodeInvalidParams, Message: err.Error()}
		}
		res, err := fn(ctx, call)
		if err != nil {
			return nil, err
		}
		if res.ContentItems == nil {
			res.ContentItems = []ToolContent{}
		}
		return res, nil
	})
}

// requestRefs extracts the routing ids of a server request's params.
type requestRefs struct {
	ThreadID       string `json:"threadId"`
	ConversationID string `json:"conversationId"`
	TurnID         string `json:"turnId"`
	ItemID         string `json:"itemId"`
	CallID         string `json:"callId"`
}

func (r requestRefs) thread() string {
	if r.ThreadID != "" {
		return r.ThreadID
	}
	return r.ConversationID
}

func (r requestRefs) item() string {
	if r.ItemID != "" {
		return r.ItemID
	}
	return r.CallID
}
