// Package memory is the in-process, non-durable Events API backend: the
// default for local development and single-process stacks.
//
// It keeps at most Retention events per name and at most RetentionBytes of
// events in all (the oldest go first), so no publisher can make it grow
// without bound; unicast groups nobody has subscribed to for GroupIdleTTL
// are deleted with their pending deliveries.
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

// Retention defaults.
const (
	// DefaultRetention is how many events of each name are kept.
	DefaultRetention = 10000
	// DefaultRetentionBytes is how many bytes of events are kept in all.
	DefaultRetentionBytes = 128 << 20
)

// eventOverhead is what one retained event costs besides its strings and
// payload (the envelope, its index entries), counted against
// RetentionBytes so that many tiny events are bounded too.
const eventOverhead = 200

// Options configure a Backend.
type Options struct {
	// Retention is the number of events kept per name (DefaultRetention
	// when 0). Older events drop out of replay and out of groups that have
	// not read them yet.
	Retention int
	// RetentionBytes bounds the size of all retained events together
	// (payloads, names, ids and a fixed overhead per event;
	// DefaultRetentionBytes when 0). When a publish goes over it, the
	// oldest events of any name are dropped, as with Retention. The event
	// just published is always kept.
	RetentionBytes int64
	// GroupIdleTTL is how long a unicast group without an open
	// subscription is kept (eventstore.DefaultGroupIdleTTL when 0).
	GroupIdleTTL time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Backend is the memory backend. The zero value is not usable; call New.
type Backend struct {
	retention int
	maxBytes  int64
	groupTTL  time.Duration
	now       func() time.Time

	mu        sync.Mutex
	seq       uint64
	logs      map[string]*eventLog
	bytes     int64                        // size of every retained event
	count     int                          // number of retained events
	order     []orderRef                   // publish order of retained (and some dropped) events
	orderHead int                          // order[:orderHead] are consumed
	groups    map[string]map[string]*group // event name -> group name
	nextSweep time.Time
	changed   chan struct{} // closed and replaced whenever something changes
	closed    bool
}

// eventLog is the retained events of one name: entries[head:], in seq
// order.
type eventLog struct {
	entries []stored
	head    int
}

type stored struct {
	seq  uint64
	size int64
	env  events.Envelope
}

// orderRef names a published event, for dropping the oldest by bytes.
type orderRef struct {
	name string
	seq  uint64
}

type group struct {
	cursor  uint64 // seq of the last event handed out
	pending map[string]*pendingDelivery
	// subs counts the open subscriptions; with none, the group expires
	// GroupIdleTTL after idleSince.
	subs      int
	idleSince time.Time
}

type pendingDelivery struct {
	st         stored
	consumer   string // the holder
	deadline   time.Time
	deliveries int
}

// New returns an empty memory backend.
func New(opts Options) *Backend {
	if opts.Retention <= 0 {
		opts.Retention = DefaultRetention
	}
	if opts.RetentionBytes <= 0 {
		opts.RetentionBytes = DefaultRetentionBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Backend{
		retention: opts.Retention,
		maxBytes:  opts.RetentionBytes,
		groupTTL:  eventstore.EffectiveGroupIdleTTL(opts.GroupIdleTTL),
		now:       opts.Now,
		logs:      map[string]*eventLog{},
		groups:    map[string]map[string]*group{},
		changed:   make(chan struct{}),
	}
}

func eventID(seq uint64) string { return "evt_" + strconv.FormatUint(seq, 10) }

// size is what an event counts against RetentionBytes.
func size(env events.Envelope) int64 {
	return int64(len(env.Payload)+len(env.Name)+len(env.CorrelationID)+len(env.IdentityID)+len(env.IdentityType)) + eventOverhead
}

// signalLocked wakes every waiting subscriber. b.mu must be held.
func (b *Backend) signalLocked() {
	close(b.changed)
	b.changed = make(chan struct{})
}

// Publish implements eventstore.Backend.
func (b *Backend) Publish(ctx context.Context, ev events.Envelope) (events.Envelope, int, error) {
	if err := ctx.Err(); err != nil {
		return events.Envelope{}, 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return events.Envelope{}, 0, eventstore.ErrClosed
	}
	now := b.now()
	b.sweepLocked(now)
	b.seq++
	ev.ID = eventID(b.seq)
	ev.CreatedAt = now.UTC()
	ev.Deliveries = 0
	st := stored{seq: b.seq, size: size(ev), env: ev}
	log := b.logs[ev.Name]
	if log == nil {
		log = &eventLog{}
		b.logs[ev.Name] = log
	}
	log.entries = append(log.entries, st)
	b.bytes += st.size
	b.count++
	b.order = append(b.order, orderRef{name: ev.Name, seq: st.seq})
	for len(log.entries)-log.head > b.retention {
		b.dropFirstLocked(ev.Name, log)
	}
	b.trimBytesLocked()
	// The groups of this name that expired are gone before they are
	// counted, whenever the last sweep was.
	for name, g := range b.groups[ev.Name] {
		if b.expiredLocked(g, now) {
			delete(b.groups[ev.Name], name)
		}
	}
	groups := len(b.groups[ev.Name])
	b.signalLocked()
	return ev, groups, nil
}

// dropFirstLocked drops the oldest retained event of name.
func (b *Backend) dropFirstLocked(name string, log *eventLog) {
	b.bytes -= log.entries[log.head].size
	b.count--
	log.entries[log.head] = stored{} // release the payload
	log.head++
	switch {
	case log.head == len(log.entries):
		delete(b.logs, name)
	case log.head > 64 && log.head > len(log.entries)/2:
		log.entries = slices.Clone(log.entries[log.head:])
		log.head = 0
	}
}

// trimBytesLocked drops the oldest events of any name while the retained
// bytes exceed the budget, keeping at least the newest event.
func (b *Backend) trimBytesLocked() {
	for b.bytes > b.maxBytes && b.count > 1 && b.orderHead < len(b.order) {
		ref := b.order[b.orderHead]
		b.order[b.orderHead] = orderRef{}
		b.orderHead++
		if log := b.logs[ref.name]; log != nil && log.entries[log.head].seq == ref.seq {
			b.dropFirstLocked(ref.name, log)
		}
	}
	// order also holds events dropped by count: compact it once they
	// dominate, so it stays proportional to what is retained.
	if live := len(b.order) - b.orderHead; live > 2*b.count+1024 || (b.orderHead > 1024 && b.orderHead > len(b.order)/2) {
		kept := make([]orderRef, 0, b.count)
		for _, ref := range b.order[b.orderHead:] {
			if log := b.logs[ref.name]; log != nil && log.entries[log.head].seq <= ref.seq {
				kept = append(kept, ref)
			}
		}
		b.order, b.orderHead = kept, 0
	}
}

// expiredLocked reports whether g has had no subscription for the TTL.
func (b *Backend) expiredLocked(g *group, now time.Time) bool {
	return g.subs == 0 && now.Sub(g.idleSince) >= b.groupTTL
}

// sweepLocked deletes expired groups, at most once per sweep interval.
func (b *Backend) sweepLocked(now time.Time) {
	if now.Before(b.nextSweep) {
		return
	}
	b.nextSweep = now.Add(eventstore.GroupSweepInterval(b.groupTTL))
	for name, gs := range b.groups {
		for gname, g := range gs {
			if b.expiredLocked(g, now) {
				delete(gs, gname)
			}
		}
		if len(gs) == 0 {
			delete(b.groups, name)
		}
	}
}

// retainedLocked returns the retained events of name.
func (b *Backend) retainedLocked(name string) []stored {
	log := b.logs[name]
	if log == nil {
		return nil
	}
	return log.entries[log.head:]
}

// firstAfterLocked returns the first retained event of name with seq > after.
func (b *Backend) firstAfterLocked(name string, after uint64) (stored, bool) {
	log := b.retainedLocked(name)
	i := sort.Search(len(log), func(i int) bool { return log[i].seq > after })
	if i == len(log) {
		return stored{}, false
	}
	return log[i], true
}

// groupLocked returns the group of name, nil when it does not exist.
func (b *Backend) groupLocked(name, groupName string) *group {
	return b.groups[name][groupName]
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
	now := b.now()
	b.sweepLocked(now)
	s := &subscriber{b: b, sub: sub, snapshot: b.seq, done: make(chan struct{})}
	s.sub.Names = slices.Compact(slices.Sorted(slices.Values(sub.Names)))
	if sub.Delivery == events.Broadcast {
		if !sub.Replay {
			s.cursor = b.seq
		}
		return s, nil
	}
	for _, name := range s.sub.Names {
		g := b.groupLocked(name, sub.Group)
		if g == nil || b.expiredLocked(g, now) {
			g = &group{pending: map[string]*pendingDelivery{}}
			if !sub.Replay {
				g.cursor = b.seq
			}
			if b.groups[name] == nil {
				b.groups[name] = map[string]*group{}
			}
			b.groups[name][sub.Group] = g
		}
		g.subs++
	}
	return s, nil
}

// Ack implements eventstore.Backend.
func (b *Backend) Ack(ctx context.Context, name, groupName, consumer string, ids []string) (int, error) {
	return b.settle(ctx, name, groupName, consumer, ids, false, func(g *group, id string, _ *pendingDelivery) {
		delete(g.pending, id)
	})
}

// Release implements eventstore.Backend: the deliveries consumer holds
// expire now, without counting, and wake the group's subscriptions.
func (b *Backend) Release(ctx context.Context, name, groupName, consumer string, ids []string) (int, error) {
	return b.settle(ctx, name, groupName, consumer, ids, true, func(_ *group, _ string, p *pendingDelivery) {
		p.consumer = eventstore.Unheld
		p.deadline = time.Time{}
		p.deliveries--
	})
}

// settle applies f, under the lock, to each delivery of ids that consumer
// holds in the group, and counts them; with wake, settling any wakes the
// subscriptions once.
func (b *Backend) settle(ctx context.Context, name, groupName, consumer string, ids []string, wake bool, f func(g *group, id string, p *pendingDelivery)) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, eventstore.ErrClosed
	}
	g := b.groupLocked(name, groupName)
	if g == nil {
		return 0, nil
	}
	n := 0
	for _, id := range ids {
		if p, ok := g.pending[id]; ok && p.consumer == consumer {
			f(g, id, p)
			n++
		}
	}
	if wake && n > 0 {
		b.signalLocked()
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

// Close implements eventstore.Subscriber: the subscription's groups start
// their idle time when their last subscription closes.
func (s *subscriber) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		if s.sub.Delivery != events.Unicast {
			return
		}
		b := s.b
		b.mu.Lock()
		defer b.mu.Unlock()
		now := b.now()
		for _, name := range s.sub.Names {
			if g := b.groupLocked(name, s.sub.Group); g != nil {
				if g.subs--; g.subs == 0 {
					g.idleSince = now
				}
			}
		}
	})
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
		g := b.groupLocked(name, s.sub.Group)
		if len(g.pending) == 0 {
			continue
		}
		for _, p := range oldestFirst(g.pending) {
			if !p.deadline.After(now) {
				p.deadline = now.Add(s.sub.EffectiveVisibility())
				p.consumer = s.sub.Consumer
				p.deliveries++
				env := p.st.env
				env.Deliveries = p.deliveries
				return env, true, time.Time{}
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
		g := b.groupLocked(name, s.sub.Group)
		st, ok := b.firstAfterLocked(name, g.cursor)
		if ok && st.seq <= s.limit() && (!found || st.seq < best.seq) {
			best, bestName, found = st, name, true
		}
	}
	if !found {
		return events.Envelope{}, false, earliest
	}
	g := b.groupLocked(bestName, s.sub.Group)
	g.cursor = best.seq
	env := best.env
	if s.sub.Ack {
		g.pending[env.ID] = &pendingDelivery{st: best, consumer: s.sub.Consumer, deadline: now.Add(s.sub.EffectiveVisibility()), deliveries: 1}
		env.Deliveries = 1
	}
	return env, true, time.Time{}
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
	return fmt.Sprintf("memory(retention=%d bytes=%d)", b.retention, b.maxBytes)
}

var _ eventstore.Backend = (*Backend)(nil)
