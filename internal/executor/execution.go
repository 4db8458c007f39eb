// Package executor runs one bus.llm.* request through a provider: it
// parses the OpenAI body (package openai), runs the neutral turn on the
// provider, encodes streaming deltas as OpenAI frames, and builds the
// response payload — errors included, so every request gets exactly one
// response.
//
// It imports internal/turn, internal/openaiwire, internal/catalog, internal/respstore and pkg/llmapi; never a transport (the bus, HTTP) or a concrete provider.
package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/openaiwire"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Executor runs requests on a provider.
type Executor struct {
	// Provider runs the turns.
	Provider turn.Provider
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Catalog, when set, lists the model ids this worker serves: unknown
	// ids get a 404, and aliases choose the engine model and effort.
	Catalog *catalog.Catalog
	// Store keeps Responses API responses for previous_response_id and
	// GET/DELETE (nil: nothing is stored).
	Store respstore.Store
	// StoreTTL is how long stored responses are kept (respstore.DefaultTTL
	// when 0).
	StoreTTL time.Duration
	// Logger receives store failures (slog.Default when nil).
	Logger *slog.Logger
	// DisableWebSearch turns hosted web search off whatever the provider
	// can do (the worker's --web-search=false): requests that ask for it
	// get a 400 naming the tool.
	DisableWebSearch bool
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
	if req.Operation.IsState() {
		return x.state(ctx, req)
	}
	call, err := openaiwire.Parse(req.Operation, req.Body, x.capabilities(req.Body))
	if err != nil {
		return llmapi.ErrorResponse(req, err)
	}
	call.Request.IdentityID = req.IdentityID
	if err := x.applyCatalog(&call.Request); err != nil {
		return llmapi.ErrorResponse(req, err)
	}
	var history int // items resumed from previous_response_id
	if call.Responses != nil {
		if err := x.resolveReferences(ctx, call, req.IdentityID); err != nil {
			return llmapi.ErrorResponse(req, err)
		}
		if history, err = x.resume(ctx, call, req.IdentityID); err != nil {
			return llmapi.ErrorResponse(req, err)
		}
	}
	meta := openaiwire.NewMeta(req.Operation, call.Request.Model, x.now().Unix())

	var (
		stream  openaiwire.Stream
		sink    turn.Sink
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
		sink = func(d turn.Delta) { send(stream.Delta(d)) }
	}
	res, err := x.Provider.Run(ctx, &call.Request, sink)
	if err != nil {
		apiErr := classify(ctx, err)
		if stream != nil && emitted {
			send(stream.Fail(apiErr))
		}
		return llmapi.ErrorResponse(req, apiErr)
	}
	// The closing frames are made first: they fix the output order of a
	// streamed answer, which the final object and the stored items follow.
	var closing []json.RawMessage
	if stream != nil {
		closing = stream.Finish(res)
	}
	body := call.Build(meta, res)
	if err := x.save(ctx, call, req.IdentityID, meta, history, res, body); err != nil {
		x.log().Error("response not stored", "request", req.RequestID, "response", meta.ID, "err", err)
	}
	send(closing)
	return llmapi.ExecutionEventResponse{
		RequestID:  req.RequestID,
		Operation:  req.Operation,
		StatusCode: http.StatusOK,
		Body:       body,
		Usage:      openaiwire.UsageOf(res.Usage),
	}
}

// Exhausted reports until when the provider cannot run requests (its
// login's usage limit is exhausted), when the provider can tell.
func (x *Executor) Exhausted() (time.Time, bool) {
	if e, ok := x.Provider.(turn.Exhaustible); ok {
		return e.Exhausted()
	}
	return time.Time{}, false
}

func (x *Executor) log() *slog.Logger {
	if x.Logger != nil {
		return x.Logger
	}
	return slog.Default()
}

// capabilities are the provider's, less what the operator turned off:
// hosted web search with DisableWebSearch, or for a catalog model whose
// entry says "web_search": false.
func (x *Executor) capabilities(body json.RawMessage) turn.Capabilities {
	caps := x.Provider.Capabilities()
	if x.DisableWebSearch {
		caps.WebSearch = false
	}
	if caps.WebSearch && x.Catalog != nil {
		var peek struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(body, &peek) // a bad body is Parse's to report
		if e, ok := x.Catalog.Lookup(peek.Model); ok && !e.WebSearchAllowed() {
			caps.WebSearch = false
		}
	}
	return caps
}

// applyCatalog checks the model id against the catalog and applies its
// alias: the engine model, and the reasoning effort unless the request
// sets one.
func (x *Executor) applyCatalog(req *turn.Request) error {
	if x.Catalog == nil {
		return nil
	}
	e, ok := x.Catalog.Lookup(req.Model)
	if !ok {
		return llmapi.NewError(http.StatusNotFound, llmapi.TypeInvalidRequest, "model_not_found", "model",
			fmt.Sprintf("The model '%s' does not exist or you do not have access to it.", req.Model))
	}
	req.EngineModel = e.CodexModel
	req.Mode = turn.Mode(e.Mode)
	if req.Effort == "" {
		req.Effort = e.ReasoningEffort
	}
	return nil
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
