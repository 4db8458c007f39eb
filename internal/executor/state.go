package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/internal/openaiwire"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// storeUnavailable is the answer when the response store fails.
func storeUnavailable() *llmapi.APIError {
	return llmapi.NewError(http.StatusServiceUnavailable, llmapi.TypeUnavailable, "response_store_unavailable", "",
		"the response store is unavailable; retry shortly")
}

func previousNotFound(id string) *llmapi.APIError {
	return llmapi.NewError(http.StatusNotFound, llmapi.TypeInvalidRequest, "previous_response_not_found", "previous_response_id",
		fmt.Sprintf("Previous response with id '%s' not found.", id))
}

// resume prepends the stored conversation of previous_response_id to the
// call's input: the items of its chain, as if sent again (instructions are
// not carried over). It returns how many items it prepended.
func (x *Executor) resume(ctx context.Context, call *openaiwire.Call, identity string) (int, error) {
	prev := call.Responses.PreviousResponseID
	if prev == "" {
		if len(call.Request.Input) == 0 {
			return 0, llmapi.InvalidRequest("input", "missing_required_parameter", "input is required")
		}
		return 0, nil
	}
	if x.Store == nil {
		return 0, previousNotFound(prev)
	}
	chain, err := x.Store.Chain(ctx, identity, prev)
	switch {
	case errors.Is(err, respstore.ErrNotFound):
		return 0, previousNotFound(prev)
	case errors.Is(err, respstore.ErrHistoryTooLong):
		return 0, llmapi.InvalidRequest("previous_response_id", "conversation_too_long",
			fmt.Sprintf("The conversation of '%s' is too long to continue; start a new one.", prev))
	case err != nil:
		x.log().Error("stored conversation not read", "response", prev, "err", err)
		return 0, storeUnavailable()
	}
	history := respstore.History(chain)
	call.Request.Input = append(history, call.Request.Input...)
	return len(history), nil
}

// save stores a completed response for later continuation and retrieval:
// a link to the response it continued and its own items (its new input
// after the history resumed items, then its output).
func (x *Executor) save(ctx context.Context, call *openaiwire.Call, identity, id string, history int, res *turn.Result, body json.RawMessage) error {
	if x.Store == nil || call.Responses == nil || !call.Responses.Store {
		return nil
	}
	items := append([]turn.Item(nil), call.Request.Input[min(history, len(call.Request.Input)):]...)
	if res.Text != "" {
		items = append(items, turn.Item{Type: turn.ItemMessage, Role: turn.RoleAssistant, Content: []turn.Part{{Type: turn.PartText, Text: res.Text}}})
	}
	for _, tc := range res.ToolCalls {
		items = append(items, turn.Item{Type: turn.ItemFunctionCall, CallID: tc.ID, Name: tc.Name, Arguments: tc.Arguments})
	}
	ttl := x.StoreTTL
	if ttl <= 0 {
		ttl = respstore.DefaultTTL
	}
	return x.Store.Put(ctx, respstore.Record{ID: id, Identity: identity, CreatedAt: x.now().UTC(), Previous: call.Responses.PreviousResponseID,
		Items: items, Response: body}, ttl)
}

// state serves the stored-response operations.
func (x *Executor) state(ctx context.Context, req *llmapi.ExecutionEventRequest) llmapi.ExecutionEventResponse {
	var body llmapi.StateRequest
	if err := json.Unmarshal(req.Body, &body); err != nil || body.ResponseID == "" {
		return llmapi.ErrorResponse(req, llmapi.InvalidRequest("response_id", "missing_required_parameter", "response_id is required"))
	}
	notFound := llmapi.NewError(http.StatusNotFound, llmapi.TypeInvalidRequest, "response_not_found", "",
		fmt.Sprintf("No response found with id '%s'.", body.ResponseID))
	if x.Store == nil {
		return llmapi.ErrorResponse(req, notFound)
	}
	ok := func(b json.RawMessage) llmapi.ExecutionEventResponse {
		return llmapi.ExecutionEventResponse{RequestID: req.RequestID, Operation: req.Operation, StatusCode: http.StatusOK, Body: b}
	}
	switch req.Operation {
	case llmapi.OpResponsesRetrieve:
		rec, err := x.Store.Get(ctx, req.IdentityID, body.ResponseID)
		switch {
		case errors.Is(err, respstore.ErrNotFound):
			return llmapi.ErrorResponse(req, notFound)
		case err != nil:
			return llmapi.ErrorResponse(req, storeUnavailable())
		}
		return ok(rec.Response)
	default:
		err := x.Store.Delete(ctx, req.IdentityID, body.ResponseID)
		switch {
		case errors.Is(err, respstore.ErrNotFound):
			return llmapi.ErrorResponse(req, notFound)
		case err != nil:
			return llmapi.ErrorResponse(req, storeUnavailable())
		}
		b, _ := json.Marshal(map[string]any{"id": body.ResponseID, "object": "response.deleted", "deleted": true})
		return ok(b)
	}
}

func (x *Executor) now() time.Time {
	if x.Now != nil {
		return x.Now()
	}
	return time.Now()
}
