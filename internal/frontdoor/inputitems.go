package frontdoor

import (
	"net/http"

	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// handleInputItems serves GET /v1/responses/{id}/input_items through the
// bus as responses.input_items, like GET /v1/responses/{id}: the response
// store belongs to the workers, and the caller's identity scopes the
// lookup. The query (limit, order, after, before, include) is checked here
// and travels as an llmapi.InputItemsRequest.
func (s *Server) handleInputItems(w http.ResponseWriter, r *http.Request) {
	s.serveStored(w, r, llmapi.OpResponsesInputItems, []string{http.MethodGet}, func(r *http.Request) (any, *llmapi.APIError) {
		return llmapi.InputItemsQuery(r.PathValue("id"), r.URL.Query())
	})
}
