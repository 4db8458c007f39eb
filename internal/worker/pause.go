package worker

import (
	"time"
)

// pauseGate keeps the worker from taking requests while its provider
// cannot run them for a while (the Codex login's usage limit is
// exhausted): the request stream is closed so the other workers of the
// group serve the requests, and opened again at the reset.
type pauseGate struct {
	gate            // shut while paused
	until time.Time // zero while not paused
}

// pause closes the gate until until; it returns true when a new pause
// begins (the caller logs it once).
func (g *pauseGate) pause(until time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.until.IsZero() {
		if until.After(g.until) {
			g.until = until
		}
		return false
	}
	g.until = until
	g.shutLocked()
	return true
}

// resume opens the gate once its time has come; it returns true when it
// was closed.
func (g *pauseGate) resume(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.until.IsZero() || now.Before(g.until) {
		return false
	}
	g.until = time.Time{}
	return g.openLocked()
}

// paused returns until when the gate is closed (zero when open).
func (g *pauseGate) paused() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.until
}

// checkExhausted pauses the worker while the executor's provider reports
// that it cannot run requests (its login's usage limit), and resumes it
// at the reset.
func (w *Worker) checkExhausted(now time.Time) {
	if x := w.exec.Load(); x != nil {
		if until, ok := x.Exhausted(); ok && until.After(now) {
			if w.pause.pause(until) {
				w.log.Warn("the Codex login's usage limit is exhausted: not taking requests until it resets, so the other workers of the group serve them",
					"until", until.UTC().Format(time.RFC3339))
			}
			return
		}
	}
	if w.pause.resume(now) {
		w.log.Info("the Codex login's usage limit has reset; taking requests again")
	}
}
