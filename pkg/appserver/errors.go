package appserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors. Match them with errors.Is.
var (
	// ErrNotInstalled means the codex command could not be found or is not
	// executable.
	ErrNotInstalled = errors.New("appserver: codex command not installed")
	// ErrProcessExited means the app-server process exited (crashed, was
	// killed, or was closed) while a call was in flight or before it began.
	ErrProcessExited = errors.New("appserver: codex app-server process exited")
	// ErrClosed means the Process or Pool was closed or is shutting down.
	// Calls cut short by Close match both ErrClosed and ErrProcessExited.
	ErrClosed = errors.New("appserver: closed")
	// ErrTurnInterrupted means the turn ended with status "interrupted"
	// although the caller did not cancel it.
	ErrTurnInterrupted = errors.New("appserver: turn interrupted")
)

// JSON-RPC error codes used by this package.
const (
	CodeMethodNotFound = -32601
	CodeInvalidParams  = -32602
	CodeInternalError  = -32603
	// CodeRequestDenied is used when the client refuses a server request
	// that has no "deny" answer in its response schema (e.g. auth token
	// refresh).
	CodeRequestDenied = -32000
)

// RPCError is a JSON-RPC error object, either returned by the app-server
// for a client request or returned by a Handler to answer a server request.
type RPCError struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data,omitempty"`
}

// Error formats the code and message.
func (e *RPCError) Error() string {
	return fmt.Sprintf("json-rpc error %d: %s", e.Code, e.Message)
}

// Known codexErrorInfo kinds (TurnError.Kind). The schema of the pinned
// Codex version is the source of truth; unknown kinds pass through as-is.
const (
	KindContextWindowExceeded          = "contextWindowExceeded"
	KindSessionBudgetExceeded          = "sessionBudgetExceeded"
	KindUsageLimitExceeded             = "usageLimitExceeded"
	KindRateLimitExceeded              = "rateLimitExceeded"
	KindServerOverloaded               = "serverOverloaded"
	KindModelNotFound                  = "modelNotFound"
	KindInternalServerError            = "internalServerError"
	KindUnauthorized                   = "unauthorized"
	KindBadRequest                     = "badRequest"
	KindSandboxError                   = "sandboxError"
	KindBioPolicy                      = "bioPolicy"
	KindCyberPolicy                    = "cyberPolicy"
	KindOther                          = "other"
	KindHTTPConnectionFailed           = "httpConnectionFailed"
	KindResponseStreamConnectionFailed = "responseStreamConnectionFailed"
	KindResponseStreamDisconnected     = "responseStreamDisconnected"
	KindResponseTooManyFailedAttempts  = "responseTooManyFailedAttempts"
)

// TurnError is the error of a failed turn (turn.error in turn/completed, or
// the error notification). Recover it with errors.As.
type TurnError struct {
	// Message is Codex's human-readable message. It may quote the
	// upstream provider's error text.
	Message string
	// Kind is the codexErrorInfo variant: the string value
	// ("unauthorized", "rateLimitExceeded", ...) or, for object variants,
	// the key ("httpConnectionFailed", "responseStreamDisconnected", ...).
	// Empty when Codex gave no codexErrorInfo.
	Kind string
	// HTTPStatus is the upstream HTTP status when Codex reported one
	// (httpStatusCode of an object variant), else 0.
	HTTPStatus int
	// AdditionalDetails is Codex's additionalDetails, if any.
	AdditionalDetails string
	// Info is the raw codexErrorInfo JSON.
	Info json.RawMessage
	// ThreadID and TurnID identify the failed turn.
	ThreadID string
	TurnID   string
}

// Error formats kind, HTTP status and message.
func (e *TurnError) Error() string {
	var b strings.Builder
	b.WriteString("appserver: turn failed")
	if e.Kind != "" {
		b.WriteString(" (")
		b.WriteString(e.Kind)
		if e.HTTPStatus != 0 {
			fmt.Fprintf(&b, ", http %d", e.HTTPStatus)
		}
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// wireTurnError is TurnError as sent by the app-server.
type wireTurnError struct {
	Message           string          `json:"message"`
	CodexErrorInfo    json.RawMessage `json:"codexErrorInfo"`
	AdditionalDetails *string         `json:"additionalDetails"`
}

func (w *wireTurnError) toError(threadID, turnID string) *TurnError {
	if w == nil {
		return nil
	}
	e := &TurnError{Message: w.Message, ThreadID: threadID, TurnID: turnID}
	if w.AdditionalDetails != nil {
		e.AdditionalDetails = *w.AdditionalDetails
	}
	info := w.CodexErrorInfo
	if len(info) > 0 && string(info) != "null" {
		e.Info = append(json.RawMessage(nil), info...)
		e.Kind, e.HTTPStatus = parseErrorInfo(info)
	}
	return e
}

// parseErrorInfo decodes a codexErrorInfo: a string, or an object with one
// key whose value may carry httpStatusCode.
func parseErrorInfo(info json.RawMessage) (kind string, status int) {
	var s string
	if json.Unmarshal(info, &s) == nil {
		return s, 0
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(info, &obj) != nil {
		return "", 0
	}
	for k, v := range obj {
		kind = k
		var inner struct {
			HTTPStatusCode *int `json:"httpStatusCode"`
		}
		if json.Unmarshal(v, &inner) == nil && inner.HTTPStatusCode != nil {
			status = *inner.HTTPStatusCode
		}
		break // exactly one key by schema
	}
	return kind, status
}
