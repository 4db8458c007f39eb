// Package memory is the in-process, non-durable Events API backend: the
// default for local development and single-process stacks.
//
// It imports only internal/eventstore and pkg/events.
package memory

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// DefaultRetention is how many events of each name are kept for replay.
const DefaultRetention = 10000

// Options configure a Backend.
type Options struct {
	// Retention is the number of events kept per name (DefaultRetention
	// when 0). Older events drop out of replay and out of groups that have
	// not read them yet.
	Retention int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Backend is the memory backend. The zero value is not usable; call New.
type Backend struct {
	retention int
	now       func() time.Time

	mu      sync.Mutex
	seq     uint64
	logs    map[string][]stored
	groups  map[groupKey]*group
	changed chan struct{} // closed and replaced whenever something changes
	closed  bool
}

type stored struct {
	seq uint64
	env events.Envelope
}

type groupKey struct{ name, group string }

type group struct {
	cursor  uint64 // seq of the last event handed out
	pending map[string]*pendingDelivery
}

type pendingDelivery struct {
	st       stored
	deadline time.Time
}

// New returns an empty memory backend.
func New(opts Options) *Backend {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Backend{
		retention: opts.Retention,
		now:       opts.Now,
		logs:      map[string][]stored{},
		groups:    map[groupKey]*group{},
		changed:   make(chan struct{}),
	}
}

func eventID(seq uint64) string { return "evt_" + strconv.FormatUint(seq, 10) }

// signalLocked wakes every waiting subscriber. b.mu must be held.
func (b *Backend) signalLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Publish implements eventstore.Backend.
func (b *Backend) Publish(ctx context.Context, ev events.Envelope) (events.Envelope, error) {
	if err := ctx.Err(); err != nil {
		return events.Envelope{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return events.Envelope{}, eventstore.ErrClosed
	}
	b.seq++
	ev.ID = eventID(b.seq)
	ev.CreatedAt = b.now().UTC()
	log := append(b.logs[ev.Name], stored{seq: b.seq, env: ev})
	if len(log) > 2*b.retention {
		log = slices.Clone(log[len(log)-b.retention:])
	}
	b.logs[ev.Name] = log
	b.signalLocked()
	return ev, nil
}

// visible returns the retained events of name (at most retention of them).
func (b *Backend) visibleLocked(name string) []stored {
	log := b.logs[name]
	if len(log) > b.retention {
		log = log[len(log)-b.retention:]
	}
	return log
}

// firstAfterLocked returns the first retained event of name with seq > after.
func (b *Backend) firstAfterLocked(name string, after uint64) (stored, bool) {
	log := b.visibleLocked(name)
	i := sort.Search(len(log), func(i int) bool { return log[i].seq > after })
	if i == len(log) {
		return stored{}, false
	}
	return log[i], true
}

// Subscribe implements eventstore.Backend.
func (b *Backend) Subscribe(ctx context.Context, sub eventstore.Subscription) (eventstore.Subscriber, error) {
	if err := sub.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, eventstore.ErrClosed
	}
	s := &subscriber{b: b, sub: sub, snapshot: b.seq, done: make(chan struct{})}
	s.sub.Names = slices.Clone(sub.Names)
	if sub.Delivery == events.Broadcast {
		if !sub.Replay {
			s.cursor = b.seq
		}
		return s, nil
	}
	for _, name := range sub.Names {
		k := groupKey{name, sub.Group}
		if _, ok := b.groups[k]; ok {
			continue
		}
		g := &group{pending: map[string]*pendingDelivery{}}
		if !sub.Replay {
			g.cursor = b.seq
		}
		b.groups[k] = g
	}
	return s, nil
}

// Ack implements eventstore.Backend.
func (b *Backend) Ack(ctx context.Context, name, groupName string, ids []string) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, eventstore.ErrClosed
	}
	g := b.groups[groupKey{name, groupName}]
	if g == nil {
		return 0, nil
	}
	n := 0
	for _, id := range ids {
		if _, ok := g.pending[id]; ok {
			delete(g.pending, id)
			n++
		}
	}
	return n, nil
}

// Close implements eventstore.Backend; open subscriptions end with ErrClosed.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		close(b.changed)
	}
	return nil
}

type subscriber struct {
	b        *Backend
	sub      eventstore.Subscription
	snapshot uint64 // last seq that existed when the subscription opened
	cursor   uint64 // broadcast: last seq handed out

	closeOnce sync.Once
	done      chan struct{}
}

func (s *subscriber) Close() error {
	s.closeOnce.Do(func() { close(s.done) })
	return nil
}

func (s *subscriber) Next(ctx context.Context) (events.Envelope, error) {
	b := s.b
	for {
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			return events.Envelope{}, eventstore.ErrClosed
		}
		select {
		case <-s.done:
			b.mu.Unlock()
			return events.Envelope{}, eventstore.ErrClosed
		default:
		}
		if err := ctx.Err(); err != nil {
			b.mu.Unlock()
			return events.Envelope{}, err
		}
		var (
			env      events.Envelope
			ok       bool
			deadline time.Time
		)
		if s.sub.Delivery == events.Broadcast {
			env, ok = s.nextBroadcastLocked()
		} else {
			env, ok, deadline = s.nextUnicastLocked()
		}
		if ok {
			b.mu.Unlock()
			return env, nil
		}
		if !s.sub.Follow {
			b.mu.Unlock()
			return events.Envelope{}, eventstore.ErrEndOfSnapshot
		}
		wake := b.changed
		b.mu.Unlock()

		var (
			timer *time.Timer
			fire  <-chan time.Time
		)
		if !deadline.IsZero() {
			timer = time.NewTimer(max(deadline.Sub(b.now()), time.Millisecond))
			fire = timer.C
		}
		select {
		case <-wake:
		case <-fire:
		case <-s.done:
		case <-ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// limit is the highest seq a non-following subscription may return.
func (s *subscriber) limit() uint64 {
	if s.sub.Follow {
		return ^uint64(0)
	}
	return s.snapshot
}

func (s *subscriber) nextBroadcastLocked() (events.Envelope, bool) {
	best, found := stored{}, false
	for _, name := range s.sub.Names {
		st, ok := s.b.firstAfterLocked(name, s.cursor)
		if ok && st.seq <= s.limit() && (!found || st.seq < best.seq) {
			best, found = st, true
		}
	}
	if !found {
		return events.Envelope{}, false
	}
	s.cursor = best.seq
	return best.env, true
}

// nextUnicastLocked hands out an expired pending delivery of the group, or
// the group's next new event. When nothing is available it returns the
// earliest pending deadline of the group (zero when none), so the caller can
// wake up for redelivery.
func (s *subscriber) nextUnicastLocked() (events.Envelope, bool, time.Time) {
	b := s.b
	now := b.now()
	var earliest time.Time
	for _, name := range s.sub.Names {
		g := b.groups[groupKey{name, s.sub.Group}]
		if len(g.pending) == 0 {
			continue
		}
		for _, p := range oldestFirst(g.pending) {
			if !p.deadline.After(now) {
				p.deadline = now.Add(s.sub.EffectiveVisibility())
				return p.st.env, true, time.Time{}
			}
			if earliest.IsZero() || p.deadline.Before(earliest) {
				earliest = p.deadline
			}
		}
	}
	var (
		best     stored
		bestName string
		found    bool
	)
	for _, name := range s.sub.Names {
		g := b.groups[groupKey{name, s.sub.Group}]
		st, ok := b.firstAfterLocked(name, g.cursor)
		if ok && st.seq <= s.limit() && (!found || st.seq < best.seq) {
			best, bestName, found = st, name, true
		}
	}
	if !found {
		return events.Envelope{}, false, earliest
	}
	g := b.groups[groupKey{bestName, s.sub.Group}]
	g.cursor = best.seq
	if s.sub.Ack {
		g.pending[best.env.ID] = &pendingDelivery{st: best, deadline: now.Add(s.sub.EffectiveVisibility())}
	}
	return best.env, true, time.Time{}
}

// oldestFirst returns the pending deliveries in publish order, so
// redelivery keeps the original order.
func oldestFirst(m map[string]*pendingDelivery) []*pendingDelivery {
	out := make([]*pendingDelivery, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *pendingDelivery) int { return cmp.Compare(a.st.seq, b.st.seq) })
	return out
}

// String describes the backend for logs.
func (b *Backend) String() string {
	return fmt.Sprintf("memory(retention=%d)", b.retention)
}

var _ eventstore.Backend = (*Backend)(nil)
