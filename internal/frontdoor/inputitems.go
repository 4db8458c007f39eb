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
	op := llmapi.OpResponsesInputItems
	o, w, r := s.observe(w, r, op, start)
	defer o.end()
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
	x := &exchange{s: s, w: w, r: r, op: op, id: correlator.NewRequestID(), identity: claims.Subject, start: start, obs: o}
	o.x, x.deadline = x, start.Add(s.cfg.Timeout)
	if !x.register(false, false) {
		return
	}
	defer s.calls.Forget(x.wt)
	w.Header().Set("X-Request-Id", x.id)
	x.run(claims.Subject, body)
	x.logDone()
}
