package worker

import (
	"context"
	"sync"
)

// gate is a door on the worker's taking of requests. While it is shut the
// worker's request stream is closed (so the group's other workers get the
// requests) and waiters block until it opens. The zero value is open.
// authGate and pauseGate embed it; their own fields share its mutex.
type gate struct {
	mu   sync.Mutex
	shut bool
	open chan struct{} // closed when the gate opens; valid while shut
	// stopTaking closes the current request stream (nil when none).
	stopTaking func()
}

// shutLocked shuts the gate (it may be shut already) and closes the
// current request stream. g.mu is held.
func (g *gate) shutLocked() {
	if !g.shut {
		g.shut, g.open = true, make(chan struct{})
	}
	if g.stopTaking != nil {
		g.stopTaking()
	}
}

// openLocked opens the gate; it returns true when it was shut. g.mu is
// held.
func (g *gate) openLocked() bool {
	if !g.shut {
		return false
	}
	g.shut = false
	close(g.open)
	return true
}

// wait returns nil once the gate is open, or ctx's error, or errStopping
// when stop (which may be nil) is closed first.
func (g *gate) wait(ctx context.Context, stop <-chan struct{}) error {
	g.mu.Lock()
	shut, open := g.shut, g.open
	g.mu.Unlock()
	if !shut {
		return nil
	}
	select {
	case <-open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-stop:
		return errStopping
	}
}

// setStopTaking installs the function that closes the current request
// stream; it is called at once when the gate is shut.
func (g *gate) setStopTaking(f func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopTaking = f
	if f != nil && g.shut {
		f()
	}
}
