package frontdoor

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/internal/correlator"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// handleInputItems serves GET /v1/responses/{id}/input_items through the
// bus as responses.input_items, like GET /v1/responses/{id}: the response
// store belongs to the workers, and the caller's identity scopes the
// lookup. The query (limit, order, after, before, include) is checked here
// and travels as an llmapi.InputItemsRequest.
func (s *Server) handleInputItems(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if !allow(w, r, http.MethodGet) {
		return
	}
	claims, apiErr := s.authorize(r, llmapi.Scope)
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	q, apiErr := llmapi.InputItemsQuery(r.PathValue("id"), r.URL.Query())
	if apiErr != nil {
		writeError(w, apiErr)
		return
	}
	op := llmapi.OpResponsesInputItems
	if s.draining.Load() {
		writeError(w, llmapi.NewError(http.StatusServiceUnavailable, "", "shutting_down", "", "The server is shutting down; retry."))
		return
	}
	if !s.canExecute(op, false) {
		writeError(w, llmapi.NewError(http.StatusServiceUnavailable, "", "events_unavailable", "",
			"The Events API response listeners are not connected; retry shortly."))
		return
	}
	body, _ := json.Marshal(q) // strings and ints always encode
	x := &exchange{s: s, w: w, r: r, op: op, id: correlator.NewRequestID(), identity: claims.Subject, start: start}
	x.deadline = start.Add(s.cfg.Timeout)
	if !x.register(false, false) {
		return
	}
	defer s.calls.Forget(x.wt)
	w.Header().Set("X-Request-Id", x.id)
	x.run(claims.Subject, body)
	x.logDone()
}
