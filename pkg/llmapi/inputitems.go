package llmapi

import (
	"fmt"
	"net/url"
	"strconv"
)

// Paging defaults and bounds of responses.input_items (as OpenAI's).
const (
	// DefaultInputItemsLimit is the page size when none is asked for.
	DefaultInputItemsLimit = 20
	// MaxInputItemsLimit is the largest page size.
	MaxInputItemsLimit = 100
)

// InputItemsRequest is the body of a responses.input_items request: the
// query of GET /v1/responses/{id}/input_items.
type InputItemsRequest struct {
	// ResponseID is the stored response's id.
	ResponseID string `json:"response_id"`
	// Limit is the page size, 1 to MaxInputItemsLimit (0: the default).
	Limit int `json:"limit,omitempty"`
	// Order is "asc" or "desc" ("": desc, OpenAI's default).
	Order string `json:"order,omitempty"`
	// After and Before are item ids: the page starts after (or ends
	// before) that item, in Order.
	After  string `json:"after,omitempty"`
	Before string `json:"before,omitempty"`
	// Include lists OpenAI "include" values; they add nothing here (the
	// stored items carry no search results, image URLs beyond those sent,
	// logprobs or encrypted reasoning) and are accepted for compatibility.
	Include []string `json:"include,omitempty"`
}

// InputItemsQuery builds the request of GET /v1/responses/{id}/input_items
// from its path id and query string (include may be repeated, as include
// or include[]), checked with Validate.
func InputItemsQuery(responseID string, q url.Values) (InputItemsRequest, *APIError) {
	r := InputItemsRequest{ResponseID: responseID, Order: q.Get("order"), After: q.Get("after"), Before: q.Get("before")}
	r.Include = append(append(r.Include, q["include"]...), q["include[]"]...)
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return r, InvalidRequest("limit", "invalid_type", fmt.Sprintf("Invalid type for 'limit': expected an integer, but got %q instead.", s))
		}
		if n < 1 { // an explicit 0 is out of range, not the default
			return r, limitBelowMin(n)
		}
		r.Limit = n
	}
	if err := r.Validate(); err != nil {
		return r, err
	}
	return r, nil
}

// Validate checks r as OpenAI checks the query: a response id, a limit of
// 1 to 100, an order of asc or desc, and at most one of after and before.
func (r *InputItemsRequest) Validate() *APIError {
	switch {
	case r.ResponseID == "":
		return InvalidRequest("response_id", "missing_required_parameter", "response_id is required")
	case r.Limit < 0:
		return limitBelowMin(r.Limit)
	case r.Limit > MaxInputItemsLimit:
		return InvalidRequest("limit", "integer_above_max_value", fmt.Sprintf("Invalid 'limit': integer above maximum value. Expected a value <= %d, but got %d instead.", MaxInputItemsLimit, r.Limit))
	case r.Order != "" && r.Order != "asc" && r.Order != "desc":
		return InvalidRequest("order", "invalid_value", fmt.Sprintf("Invalid value: '%s'. Supported values are: 'asc' and 'desc'.", r.Order))
	case r.After != "" && r.Before != "":
		return InvalidRequest("before", "invalid_value", "Use either 'after' or 'before', not both.")
	}
	return nil
}

// PageSize is Limit, or DefaultInputItemsLimit when unset.
func (r *InputItemsRequest) PageSize() int {
	if r.Limit <= 0 {
		return DefaultInputItemsLimit
	}
	return r.Limit
}

// Ascending reports whether the page is in ascending order.
func (r *InputItemsRequest) Ascending() bool { return r.Order == "asc" }

func limitBelowMin(n int) *APIError {
	return InvalidRequest("limit", "integer_below_min_value", fmt.Sprintf("Invalid 'limit': integer below minimum value. Expected a value >= 1, but got %d instead.", n))
}
