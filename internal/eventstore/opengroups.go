package eventstore

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// OpenGroups is what a shared backend (Redis, PostgreSQL) keeps of the
// unicast groups its open subscriptions use, so that its group loop
// refreshes them (every GroupSweepInterval) and the groups nobody uses
// any more expire after their idle TTL. K names a group in the backend's
// terms. The zero value is ready; it is safe for concurrent use.
type OpenGroups[K comparable] struct {
	mu   sync.Mutex
	open map[K]int // group -> open subscriptions
	// left are the groups whose last open subscription closed since the
	// last Refreshing: refreshed once more, so their idle time starts at
	// the close.
	left map[K]bool
}

// Track counts an open subscription of groups (delta +1) or its end (-1).
func (g *OpenGroups[K]) Track(groups []K, delta int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open == nil {
		g.open, g.left = map[K]int{}, map[K]bool{}
	}
	for _, k := range groups {
		if g.open[k] += delta; g.open[k] <= 0 {
			delete(g.open, k)
			g.left[k] = true
		}
	}
}

// Loop calls sweep every GroupSweepInterval(ttl) until ctx ends, with the
// groups to mark as used now (Refreshing); sweep also deletes the groups
// idle for longer than ttl. A failure is logged as who's, unless ctx has
// ended.
func (g *OpenGroups[K]) Loop(ctx context.Context, ttl time.Duration, log *slog.Logger, who string, sweep func(ctx context.Context, used []K) error) {
	t := time.NewTicker(GroupSweepInterval(ttl))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := sweep(ctx, g.Refreshing()); err != nil && ctx.Err() == nil {
			log.Warn(who+": group refresh and expiry failed", "err", err)
		}
	}
}

// Refreshing returns the groups to mark as used now: those with an open
// subscription, and those left since the last call.
func (g *OpenGroups[K]) Refreshing() []K {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]K, 0, len(g.open)+len(g.left))
	for k := range g.open {
		out = append(out, k)
	}
	for k := range g.left {
		if g.open[k] == 0 {
			out = append(out, k)
		}
	}
	clear(g.left)
	return out
}
