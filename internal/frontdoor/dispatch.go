package frontdoor

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// dispatch hands one response or chunk event to the request waiting for
// it (package correlator decides); it never blocks on a request handler.
func (s *Server) dispatch(env events.Envelope) {
	out := s.calls.Deliver(env)
	switch {
	case out.Untrusted:
		level := slog.LevelDebug
		if s.untrustedNoted.CompareAndSwap(false, true) {
			level = slog.LevelWarn
		}
		s.log.Log(context.Background(), level, "event not published by a service ignored (further ones are logged at debug level)",
			"name", env.Name, "id", env.ID, "publisher", env.IdentityID, "identity_type", env.IdentityType)
	case out.Problem != "":
		s.log.Warn("malformed event", "name", env.Name, "id", env.ID, "request_id", out.RequestID, "problem", out.Problem)
	case !out.Delivered:
		s.log.Debug("event dropped: no request waits for it", "name", env.Name, "id", env.ID, "request_id", out.RequestID)
	}
}

// register starts waiting for x's answer, or answers 500 on an id clash.
func (x *exchange) register(stream, includeUsage bool) bool {
	call, err := x.s.calls.Register(x.id, x.op, stream, includeUsage)
	if err != nil {
		x.fail(llmapi.NewError(http.StatusInternalServerError, "", "internal_error", "", "request id collision; retry"))
		return false
	}
	x.wt = call
	return true
}
