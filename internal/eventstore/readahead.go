package eventstore

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/events"
)

// ReadResult is what one read of a backend produces.
type ReadResult struct {
	// Envs are the events read, in delivery order.
	Envs []events.Envelope
	// End reports that a non-following subscription's snapshot is
	// exhausted.
	End bool
	// Err is the read's failure. It is returned by Next only when Envs is
	// empty and nothing read earlier is waiting.
	Err error
}

// ReadFunc reads a subscription once: it returns what it found, or an empty
// result when a following subscription found nothing for a while. It must
// return promptly once ctx ends. One read runs at a time per Reader, so it
// may keep unsynchronised state (cursors) of its subscription.
type ReadFunc func(ctx context.Context) ReadResult

// ClaimTimeout bounds one claim of a unicast read.
const ClaimTimeout = 10 * time.Second

// ClaimContext returns the context of one claim of a unicast read: it is
// not cut short when the read's ctx ends (the store could take an event
// without the reader learning of it, and then nobody could release it),
// only bounded by ClaimTimeout. A read checks ctx before it claims.
func ClaimContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), ClaimTimeout)
}

// ReleaseFunc gives back acknowledged-mode deliveries a subscription took
// from the store but never returned from Next (Backend.Release). It runs
// with the backend's lifetime as ctx, bounded by releaseTimeout: when the
// backend is closing, it is not called at all.
type ReleaseFunc func(ctx context.Context, envs []events.Envelope)

// GiveBack is the ReleaseFunc of subscription sub on backend b (named who
// in the log): it releases what the subscription read ahead when it is an
// acknowledged-mode one (nil otherwise). A failure is logged, unless the
// backend's lifetime has ended (it is closing).
func GiveBack(lifetime context.Context, b Backend, who string, sub Subscription, log *slog.Logger) ReleaseFunc {
	if !sub.Ack {
		return nil
	}
	return func(ctx context.Context, envs []events.Envelope) {
		if _, err := ReleaseEnvelopes(ctx, b, sub.Group, sub.Consumer, envs); err != nil && lifetime.Err() == nil {
			log.Warn(who+": deliveries read ahead not released; they are redelivered after their visibility timeout", "group", sub.Group, "consumer", sub.Consumer, "err", err)
		}
	}
}

// releaseTimeout bounds the release of a closed Reader's leftovers.
const releaseTimeout = 10 * time.Second

// ReadGroup owns the read goroutines of a backend: Close waits for every
// read in flight, so nothing a backend's read uses is released under it.
// The zero value is ready to use.
type ReadGroup struct {
	mu     sync.Mutex // guards closed and wg.Add
	closed bool
	wg     sync.WaitGroup
}

// Close refuses new reads and waits for those in flight. The backend ends
// the readers' parent context first, so that the reads return promptly. It
// reports whether this call closed the group (false when it was already
// closed), which makes the backend's Close idempotent.
func (g *ReadGroup) Close() bool {
	g.mu.Lock()
	first := !g.closed
	g.closed = true
	g.mu.Unlock()
	if first {
		g.wg.Wait()
	}
	return first
}

// start runs read on a goroutine of the group and returns the channel its
// result arrives on (buffered: the goroutine never waits for a receiver),
// or nil once the group is closed.
func (g *ReadGroup) start(ctx context.Context, read ReadFunc) chan ReadResult {
	ch := make(chan ReadResult, 1)
	if !g.spawn(func() { ch <- read(ctx) }) {
		return nil
	}
	return ch
}

// spawn runs f on a goroutine of the group, unless the group is closed.
func (g *ReadGroup) spawn(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Go(f)
	return true
}

// Reader is the read-ahead buffer of one subscription; it implements the
// Next and Close of a Subscriber on top of a ReadFunc. Guarantees:
//
//   - Next never loses an event that a read claimed: reads run on a
//     goroutine of the ReadGroup, so when Next's ctx ends first, Next
//     returns ctx's error and the read goes on; its result waits for the
//     next call.
//   - Close (or the end of the parent context) unblocks a waiting Next
//     promptly with ErrClosed and ends the context of the read in flight.
//   - Close gives what reads took but Next never returned (including the
//     result of the read in flight) to the Reader's ReleaseFunc, if any.
//   - The ReadGroup's Close waits for the read in flight and that release.
//
// Concurrent calls of Next are served one at a time.
type Reader struct {
	group    *ReadGroup
	read     ReadFunc
	giveBack ReleaseFunc // nil: nothing to release

	parent    context.Context
	ctx       context.Context // ends with Close or the parent context
	cancel    context.CancelFunc
	closeOnce sync.Once

	turn chan struct{} // held by the running Next

	// Owned by the goroutine holding turn.
	inflight chan ReadResult // the running read, nil when none
	ready    []events.Envelope
	end      bool
}

// NewReader returns a Reader whose reads run read on goroutines of g. It
// ends when parent (the backend's lifetime) ends or when it is closed.
// giveBack, when not nil, receives on Close what was read but never
// returned (acknowledged-mode subscriptions release it).
func (g *ReadGroup) NewReader(parent context.Context, read ReadFunc, giveBack ReleaseFunc) *Reader {
	ctx, cancel := context.WithCancel(parent)
	return &Reader{group: g, read: read, giveBack: giveBack, parent: parent, ctx: ctx, cancel: cancel, turn: make(chan struct{}, 1)}
}

// Context returns the context of the Reader's reads: it ends with Close or
// with the parent context.
func (r *Reader) Context() context.Context { return r.ctx }

// Close ends the Reader. A read in flight is told to stop; what it and
// earlier reads took but Next never returned goes to the ReleaseFunc (on a
// goroutine of the group, so Close does not wait for it).
func (r *Reader) Close() {
	r.closeOnce.Do(func() {
		r.cancel()
		if r.giveBack != nil {
			r.group.spawn(r.releaseLeftovers)
		}
	})
}

// releaseLeftovers hands what was read but not returned to giveBack. It
// takes the turn (a running Next returns promptly once the Reader is
// closed) and waits for the read in flight (which returns promptly once
// its context ended).
func (r *Reader) releaseLeftovers() {
	r.turn <- struct{}{}
	defer func() { <-r.turn }()
	left := r.ready
	r.ready = nil
	if r.inflight != nil {
		left = append(left, (<-r.inflight).Envs...)
		r.inflight = nil
	}
	if len(left) == 0 || r.parent.Err() != nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.parent, releaseTimeout)
	defer cancel()
	r.giveBack(ctx, left)
}

// Next returns the next event read. It returns ctx's error when ctx ends
// first (handing nothing over), ErrEndOfSnapshot once a read reported the
// end and every event read before it was returned, ErrClosed after Close,
// and a read's error when that read found nothing.
func (r *Reader) Next(ctx context.Context) (events.Envelope, error) {
	select {
	case r.turn <- struct{}{}:
	case <-ctx.Done():
		return events.Envelope{}, ctx.Err()
	case <-r.ctx.Done():
		return events.Envelope{}, ErrClosed
	}
	defer func() { <-r.turn }()
	for {
		if r.ctx.Err() != nil {
			return events.Envelope{}, ErrClosed
		}
		if len(r.ready) > 0 {
			env := r.ready[0]
			r.ready[0] = events.Envelope{} // do not keep its payload alive
			r.ready = r.ready[1:]
			if len(r.ready) == 0 {
				r.ready = nil
			}
			return env, nil
		}
		if r.end {
			return events.Envelope{}, ErrEndOfSnapshot
		}
		if err := ctx.Err(); err != nil {
			return events.Envelope{}, err
		}
		if r.inflight == nil {
			if r.inflight = r.group.start(r.ctx, r.read); r.inflight == nil {
				return events.Envelope{}, ErrClosed
			}
		}
		select {
		case res := <-r.inflight:
			r.inflight = nil
			r.ready = append(r.ready, res.Envs...)
			r.end = r.end || res.End
			if res.Err != nil && len(r.ready) == 0 {
				if r.ctx.Err() != nil {
					return events.Envelope{}, ErrClosed
				}
				return events.Envelope{}, res.Err
			}
		case <-ctx.Done():
			return events.Envelope{}, ctx.Err()
		case <-r.ctx.Done():
			return events.Envelope{}, ErrClosed
		}
	}
}
