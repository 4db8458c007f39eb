package worker

import (
	"errors"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/events"
)

// ErrTokenRefused wraps the Events API's refusal when the worker's token
// stayed refused for longer than Config.AuthRecoveryTimeout.
var ErrTokenRefused = errors.New("the Events API kept refusing the worker's token")

// isRefusal reports whether err is the Events API refusing the token
// (401) or what the token may do (403).
func isRefusal(err error) bool {
	apiErr, ok := errors.AsType[*events.APIError](err)
	return ok && (apiErr.Status == http.StatusUnauthorized || apiErr.Status == http.StatusForbidden)
}

// authGate tracks whether the Events API accepts the worker's token. While
// it refuses it the worker takes no requests; publishes wait for the gate
// to open again (bounded by their own deadlines).
type authGate struct {
	gate          // shut while refused
	refused error // the last refusal; nil while accepted
	// since is when the current outage began. An outage ends when a
	// publish or an acknowledgement succeeds, or when the token was
	// accepted for longer than the recovery bound: a token that may listen
	// but not publish cannot reset it by flapping.
	since      time.Time
	acceptedAt time.Time
}

// refuse records a refusal. It returns true when a new outage begins (the
// caller logs it once) and closes the request stream.
func (g *authGate) refuse(err error, now time.Time, bound time.Duration) (newOutage bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.shutLocked()
	if g.refused != nil {
		g.refused = err
		return false
	}
	g.refused = err
	if g.since.IsZero() || now.Sub(g.acceptedAt) > bound {
		g.since = now
		return true
	}
	return false
}

// accept records that the token was accepted. confirmed says the call
// that succeeded was a publish or an acknowledgement, which ends the
// outage; a stream or a probe only reopens the gate. It returns true when the gate was closed.
func (g *authGate) accept(now time.Time, confirmed bool) (reopened bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if confirmed {
		g.since = time.Time{}
	}
	if g.refused == nil {
		return false
	}
	g.refused = nil
	g.acceptedAt = now
	return g.openLocked()
}

// state returns when the current outage began and its refusal (nil while
// accepted).
func (g *authGate) state() (since time.Time, refused error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.since, g.refused
}

// errStopping ends waits when the worker stops.
var errStopping = errors.New("worker stopping")
