package llmapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// ErrorObject is the OpenAI error shape: the value of the "error" key.
type ErrorObject struct {
	// Message is a human-readable description, safe to show to the caller.
	Message string `json:"message"`
	// Type is the OpenAI error class, such as "invalid_request_error".
	Type string `json:"type"`
	// Code is a machine-readable code such as "model_not_found", or null.
	Code *string `json:"code"`
	// Param names the offending request parameter, or null.
	Param *string `json:"param"`
}

// ErrorBody is the OpenAI error document {"error": {...}}.
type ErrorBody struct {
	// Error is the error itself.
	Error ErrorObject `json:"error"`
}

// OpenAI error types.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeAuthentication = "authentication_error"
	TypePermission     = "permission_error"
	TypeNotFound       = "not_found_error"
	TypeRateLimit      = "rate_limit_error"
	TypeServer         = "server_error"
	TypeTimeout        = "timeout_error"
	TypeUnavailable    = "service_unavailable_error"
)

// APIError is an error that knows its HTTP status and OpenAI error body. It
// satisfies the error interface so it can travel through ordinary Go error
// handling and be recovered with errors.As.
type APIError struct {
	// Status is the HTTP status code.
	Status int
	// Type is the OpenAI error type.
	Type string
	// Code is the OpenAI error code ("" for null).
	Code string
	// Param is the offending parameter ("" for null).
	Param string
	// Message is the caller-facing message.
	Message string
	// RetryAfter, when positive, says when retrying may succeed (a
	// rate or usage limit that resets); the front door sends it as the
	// retry-after header.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	if e.Code != "" {
		return e.Code + ": " + e.Message
	}
	return e.Message
}

// Body returns the OpenAI error document of e.
func (e *APIError) Body() ErrorBody {
	obj := ErrorObject{Message: e.Message, Type: e.Type}
	if e.Code != "" {
		c := e.Code
		obj.Code = &c
	}
	if e.Param != "" {
		p := e.Param
		obj.Param = &p
	}
	return ErrorBody{Error: obj}
}

// JSON returns the encoded OpenAI error document of e.
func (e *APIError) JSON() json.RawMessage {
	b, _ := json.Marshal(e.Body()) // a struct of strings always encodes
	return b
}

// NewError builds an APIError; typ defaults from the status when empty.
func NewError(status int, typ, code, param, message string) *APIError {
	if typ == "" {
		typ = DefaultErrorType(status)
	}
	return &APIError{Status: status, Type: typ, Code: code, Param: param, Message: message}
}

// InvalidRequest is a 400 invalid_request_error about param.
func InvalidRequest(param, code, message string) *APIError {
	return NewError(http.StatusBadRequest, TypeInvalidRequest, code, param, message)
}

// DefaultErrorType maps an HTTP status to the OpenAI error type used for it.
func DefaultErrorType(status int) string {
	switch {
	case status == http.StatusUnauthorized:
		return TypeAuthentication
	case status == http.StatusForbidden:
		return TypePermission
	case status == http.StatusNotFound:
		return TypeNotFound
	case status == http.StatusTooManyRequests:
		return TypeRateLimit
	case status == http.StatusGatewayTimeout || status == http.StatusRequestTimeout:
		return TypeTimeout
	case status == http.StatusServiceUnavailable:
		return TypeUnavailable
	case status >= 500:
		return TypeServer
	default:
		return TypeInvalidRequest
	}
}

// ErrorResponse builds the response event payload for a request that failed
// with err. An *APIError anywhere in err's chain keeps its status and body;
// any other error becomes a 500 server_error whose message is err's text.
func ErrorResponse(req *ExecutionEventRequest, err error) ExecutionEventResponse {
	apiErr := AsAPIError(err)
	resp := ExecutionEventResponse{
		RequestID:  req.RequestID,
		Operation:  req.Operation,
		StatusCode: apiErr.Status,
		Body:       apiErr.JSON(),
	}
	if apiErr.RetryAfter > 0 {
		resp.RetryAfter = int64((apiErr.RetryAfter + time.Second - 1) / time.Second)
	}
	return resp
}

// AsAPIError returns the *APIError in err's chain, or wraps err as a 500.
func AsAPIError(err error) *APIError {
	var apiErr *APIError
	if err != nil && errors.As(err, &apiErr) {
		return apiErr
	}
	return NewError(http.StatusInternalServerError, TypeServer, "internal_error", "", err.Error())
}

// ParseErrorBody decodes an OpenAI error document; ok is false when body is
// not one.
func ParseErrorBody(body []byte) (ErrorObject, bool) {
	var doc struct {
		Error *ErrorObject `json:"error"`
	}
	if json.Unmarshal(body, &doc) != nil || doc.Error == nil {
		return ErrorObject{}, false
	}
	return *doc.Error, true
}
