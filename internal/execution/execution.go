// Package execution runs one bus.llm.* request through a provider: it
// parses the OpenAI body (package openai), runs the neutral turn on the
// provider, encodes streaming deltas as OpenAI frames, and builds the
// response payload — errors included, so every request gets exactly one
// response.
package execution

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/internal/llm"
	"github.com/busdk/bus-integration-codex/internal/openai"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Executor runs requests on a provider.
type Executor struct {
	// Provider runs the turns.
	Provider llm.Provider
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Emit publishes one stream frame; frames arrive in order.
type Emit func(frame json.RawMessage)

// StatusClientClosed is the status of a request its client cancelled
// (nginx's 499): nobody is waiting for it any more.
const StatusClientClosed = 499

// Execute runs req. When req.Stream is set, frames go to emit before the
// response is returned, and a stream that has begun always ends with a
// terminal frame. The response carries the complete object (or the error).
func (x *Executor) Execute(ctx context.Context, req *llmapi.ExecutionEventRequest, emit Emit) llmapi.ExecutionEventResponse {
	if err := req.Validate(); err != nil {
		return llmapi.ErrorResponse(req, llmapi.InvalidRequest("", "invalid_event", err.Error()))
	}
	call, err := openai.Parse(req.Operation, req.Body, x.Provider.Capabilities())
	if err != nil {
		return llmapi.ErrorResponse(req, err)
	}
	call.Request.IdentityID = req.IdentityID
	now := time.Now
	if x.Now != nil {
		now = x.Now
	}
	meta := openai.NewMeta(req.Operation, call.Request.Model, now().Unix())

	var (
		stream  openai.Stream
		sink    llm.Sink
		emitted bool
	)
	send := func(frames []json.RawMessage) {
		for _, f := range frames {
			emitted = true
			emit(f)
		}
	}
	if req.Stream && call.Stream && emit != nil {
		stream = call.NewStream(meta)
		sink = func(d llm.Delta) { send(stream.Delta(d)) }
	}
	res, err := x.Provider.Run(ctx, &call.Request, sink)
	if err != nil {
		apiErr := classify(ctx, err)
		if stream != nil && emitted {
			send(stream.Fail(apiErr))
		}
		return llmapi.ErrorResponse(req, apiErr)
	}
	if stream != nil {
		send(stream.Finish(res))
	}
	return llmapi.ExecutionEventResponse{
		RequestID:  req.RequestID,
		Operation:  req.Operation,
		StatusCode: http.StatusOK,
		Body:       call.Build(meta, res),
		Usage:      openai.UsageOf(res.Usage),
	}
}

// classify maps a provider error to the API error the client sees.
func classify(ctx context.Context, err error) *llmapi.APIError {
	var apiErr *llmapi.APIError
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		return llmapi.NewError(http.StatusGatewayTimeout, llmapi.TypeTimeout, "timeout", "", "the model did not finish before the request deadline")
	case errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.Canceled):
		return llmapi.NewError(StatusClientClosed, llmapi.TypeInvalidRequest, "request_cancelled", "", "the request was cancelled")
	default:
		return llmapi.NewError(http.StatusInternalServerError, llmapi.TypeServer, "provider_error", "", err.Error())
	}
}
