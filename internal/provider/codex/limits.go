package codex

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/appserver"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// DefaultExhaustedBackoff is how long a login whose usage limit is
// exhausted is left alone when Codex names no reset time.
const DefaultExhaustedBackoff = 5 * time.Minute

// limits follows the login's rate-limit state: what Codex reports after
// every model response, and whether its usage limit is exhausted.
type limits struct {
	backoff time.Duration
	now     func() time.Time

	mu        sync.Mutex
	state     appserver.RateLimits
	known     bool
	exhausted time.Time // zero when not exhausted
}

func (l *limits) update(u appserver.RateLimits) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state, l.known = l.state.Merge(u), true
}

// snapshot returns the last known state.
func (l *limits) snapshot() (appserver.RateLimits, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state, l.known
}

// exhaust marks the login exhausted until its reset and returns it: the
// latest reset among the full windows, else the nearest known reset, else
// the back-off.
func (l *limits) exhaust() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	var full, any time.Time
	for _, w := range []*appserver.RateLimitWindow{l.state.Primary, l.state.Secondary} {
		if w == nil || w.ResetsAt == nil {
			continue
		}
		at := time.Unix(*w.ResetsAt, 0)
		if !at.After(now) {
			continue
		}
		if w.UsedPercent >= 100 && at.After(full) {
			full = at
		}
		if any.IsZero() || at.Before(any) {
			any = at
		}
	}
	until := full
	switch {
	case !until.IsZero():
	case !any.IsZero():
		until = any
	default:
		until = now.Add(l.backoff)
	}
	l.exhausted = until
	return until
}

// until reports until when the login is exhausted (ok false when it is
// not, or no longer).
func (l *limits) until() (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.exhausted.IsZero() || !l.now().Before(l.exhausted) {
		l.exhausted = time.Time{}
		return time.Time{}, false
	}
	return l.exhausted, true
}

// quotaError is the 429 a request gets while the login is exhausted.
func quotaError(until time.Time, now time.Time, detail string) *llmapi.APIError {
	e := llmapi.NewError(http.StatusTooManyRequests, llmapi.TypeRateLimit, "insufficient_quota", "",
		fmt.Sprintf("the Codex account's usage limit is exhausted; it resets at %s%s", until.UTC().Format(time.RFC3339), detail))
	e.RetryAfter = until.Sub(now)
	return e
}

// readLimits asks a live process for the login's state once (it fails
// without a Codex login, e.g. with an API-key provider: then the state
// comes from the notifications only).
func (p *Provider) readLimits(ctx context.Context) {
	procs := p.pool.Processes()
	if len(procs) == 0 {
		return
	}
	if rl, err := procs[0].RateLimits(ctx); err == nil {
		p.limits.update(*rl)
	}
}

// RateLimits returns the login's last known rate-limit state.
func (p *Provider) RateLimits() (appserver.RateLimits, bool) { return p.limits.snapshot() }

// Exhausted reports until when the login's usage limit is exhausted: a
// worker stops taking requests until then, so workers with other logins
// serve them.
func (p *Provider) Exhausted() (time.Time, bool) { return p.limits.until() }
