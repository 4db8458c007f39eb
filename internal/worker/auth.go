package worker

import (
	"context"
	"errors"
	"net/http"
	"sync"
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
	mu      sync.Mutex
	refused error         // the last refusal; nil while accepted
	open    chan struct{} // closed while accepted
	// since is when the current outage began. An outage ends when a
	// publish or an acknowledgement succeeds, or when the token was
	// accepted for longer than the recovery bound: a token that may listen
	// but not publish cannot reset it by flapping.
	since      time.Time
	acceptedAt time.Time
	// stopTaking closes the current request stream (nil when none).
	stopTaking func()
}

func newAuthGate() *authGate {
	open := make(chan struct{})
	close(open)
	return &authGate{open: open}
}

// refuse records a refusal. It returns true when a new outage begins (the
// caller logs it once) and closes the request stream.
func (g *authGate) refuse(err error, now time.Time, bound time.Duration) (newOutage bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopTaking != nil {
		g.stopTaking()
	}
	if g.refused != nil {
		g.refused = err
		return false
	}
	g.refused = err
	g.open = make(chan struct{})
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
	close(g.open)
	return true
}

// wait returns nil once the gate is open, or ctx's error, or errStopping
// when stop is closed first.
func (g *authGate) wait(ctx context.Context, stop <-chan struct{}) error {
	g.mu.Lock()
	open := g.open
	g.mu.Unlock()
	select {
	case <-open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return errStopping
	}
}

// state returns when the current outage began and its refusal (nil while
// accepted).
func (g *authGate) state() (since time.Time, refused error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.since, g.refused
}

// setStopTaking installs the function that closes the current request
// stream; it is called at once when the token is already refused.
func (g *authGate) setStopTaking(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopTaking = f
	if f != nil && g.refused != nil {
		f()
	}
}

// errStopping ends waits when the worker stops.
var errStopping = errors.New("worker stopping")
