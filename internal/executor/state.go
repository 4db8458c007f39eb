package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
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

// resolveReferences replaces the call's item_reference input items with
// the stored items they name. An item id names the response that holds it
// (openaiwire.ResponseOfItem), so each referenced response is read once,
// scoped by identity: another identity's item is not found, exactly as an
// unknown, expired or deleted one (OpenAI's 404).
func (x *Executor) resolveReferences(ctx context.Context, call *openaiwire.Call, identity string) error {
	ids := call.References()
	if len(ids) == 0 {
		return nil
	}
	found := map[string]turn.Item{}
	records := map[string][]turn.Item{} // response id -> its items (nil: not found)
	for _, id := range ids {
		respID, ok := openaiwire.ResponseOfItem(id)
		if !ok || x.Store == nil {
			continue
		}
		items, seen := records[respID]
		if !seen {
			rec, err := x.Store.Get(ctx, identity, respID)
			switch {
			case errors.Is(err, respstore.ErrNotFound):
			case err != nil:
				return storeUnavailable()
			default:
				items = rec.Items
			}
			records[respID] = items
		}
		for _, it := range items {
			if it.ID == id {
				found[id] = it
				break
			}
		}
	}
	return call.ResolveReferences(found)
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

// save stores a completed response for later continuation, retrieval,
// item references and input item listing: a link to the response it
// continued and its own items — its new input items after the resumed
// history (given ids of this response when they came without), then its
// output items, with the ids the client was given.
func (x *Executor) save(ctx context.Context, call *openaiwire.Call, identity string, m openaiwire.Meta, history int, res *turn.Result, body json.RawMessage) error {
	if x.Store == nil || call.Responses == nil || !call.Responses.Store {
		return nil
	}
	items := append([]turn.Item(nil), call.Request.Input[min(history, len(call.Request.Input)):]...)
	openaiwire.AssignItemIDs(items, m.ID)
	items = append(items, call.OutputItems(m, res)...)
	ttl := x.StoreTTL
	if ttl <= 0 {
		ttl = respstore.DefaultTTL
	}
	return x.Store.Put(ctx, respstore.Record{ID: m.ID, Identity: identity, CreatedAt: x.now().UTC(), Previous: call.Responses.PreviousResponseID,
		Items: items, Response: body}, ttl)
}

// inputItems returns the items a stored response was generated from: the
// items of the conversation it continued (read through its chain), then
// its own items without its output items (those listed in its response
// object).
func (x *Executor) inputItems(ctx context.Context, identity string, rec respstore.Record) ([]turn.Item, error) {
	var obj struct {
		Output []struct {
			ID string `json:"id"`
		} `json:"output"`
	}
	_ = json.Unmarshal(rec.Response, &obj) // stored by save: always a response object
	output := map[string]bool{}
	for _, o := range obj.Output {
		output[o.ID] = true
	}
	var in []turn.Item
	if rec.Previous != "" {
		chain, err := x.Store.Chain(ctx, identity, rec.ID)
		if err != nil {
			return nil, err
		}
		for i := len(chain) - 1; i >= 1; i-- {
			in = append(in, withIDs(chain[i])...)
		}
	}
	for _, it := range withIDs(rec) {
		if !output[it.ID] {
			in = append(in, it)
		}
	}
	return in, nil
}

// withIDs returns rec's items; items of records stored before items had
// ids get ids derived from their record and position, so paging over them
// is stable.
func withIDs(rec respstore.Record) []turn.Item {
	items := append([]turn.Item(nil), rec.Items...)
	for i := range items {
		if items[i].ID == "" {
			items[i].ID = fmt.Sprintf("item_%s_%d", strings.TrimPrefix(rec.ID, "resp_"), i)
		}
	}
	return items
}

// state serves the stored-response operations.
func (x *Executor) state(ctx context.Context, req *llmapi.ExecutionEventRequest) llmapi.ExecutionEventResponse {
	var body llmapi.InputItemsRequest // a StateRequest with the listing's fields
	if err := json.Unmarshal(req.Body, &body); err != nil || body.ResponseID == "" {
		return llmapi.ErrorResponse(req, llmapi.InvalidRequest("response_id", "missing_required_parameter", "response_id is required"))
	}
	if err := body.Validate(); err != nil {
		return llmapi.ErrorResponse(req, err)
	}
	notFound := llmapi.NewError(http.StatusNotFound, llmapi.TypeInvalidRequest, "response_not_found", "",
		fmt.Sprintf("No response found with id '%s'.", body.ResponseID))
	if x.Store == nil {
		return llmapi.ErrorResponse(req, notFound)
	}
	ok := func(b json.RawMessage) llmapi.ExecutionEventResponse {
		return llmapi.ExecutionEventResponse{RequestID: req.RequestID, Operation: req.Operation, StatusCode: http.StatusOK, Body: b}
	}
	fail := func(err error) llmapi.ExecutionEventResponse {
		switch {
		case errors.Is(err, respstore.ErrNotFound):
			return llmapi.ErrorResponse(req, notFound)
		case errors.Is(err, respstore.ErrHistoryTooLong):
			return llmapi.ErrorResponse(req, llmapi.InvalidRequest("response_id", "conversation_too_long",
				fmt.Sprintf("The conversation of '%s' is too long to list.", body.ResponseID)))
		default:
			return llmapi.ErrorResponse(req, storeUnavailable())
		}
	}
	if req.Operation == llmapi.OpResponsesDelete {
		if err := x.Store.Delete(ctx, req.IdentityID, body.ResponseID); err != nil {
			return fail(err)
		}
		b, _ := json.Marshal(map[string]any{"id": body.ResponseID, "object": "response.deleted", "deleted": true})
		return ok(b)
	}
	rec, err := x.Store.Get(ctx, req.IdentityID, body.ResponseID)
	if err != nil {
		return fail(err)
	}
	if req.Operation == llmapi.OpResponsesRetrieve {
		return ok(rec.Response)
	}
	items, err := x.inputItems(ctx, req.IdentityID, rec)
	if err != nil {
		return fail(err)
	}
	list, err := openaiwire.ListItems(items, body)
	if err != nil {
		return llmapi.ErrorResponse(req, err)
	}
	return ok(list)
}

func (x *Executor) now() time.Time {
	if x.Now != nil {
		return x.Now()
	}
	return time.Now()
}
