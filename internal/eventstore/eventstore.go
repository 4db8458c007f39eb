// Package eventstore defines the storage interface behind the Events API
// server. Each backend (memory, Redis Streams, PostgreSQL) lives in its own
// package and passes the one conformance suite in package conformance, so the
// public behaviour is the same whichever backend runs.
//
// Semantics every backend implements:
//
//   - Publish appends an event to the log of its name and assigns its ID and
//     CreatedAt. Events of one name keep their publish order.
//   - Broadcast subscriptions see every event published after they were
//     opened (and, with Replay, the retained history first).
//   - Unicast subscriptions share a group: each event is handed to exactly one
//     subscription of the group. A group is created by its first subscription,
//     positioned at the end of the log (or, with Replay, at its start), and
//     from then on collects every new event even while no consumer is
//     connected.
//   - With Ack, a unicast delivery stays pending until acknowledged by the
//     consumer that holds it (an acknowledgement naming another consumer is
//     ignored); a pending delivery not acknowledged within Visibility is
//     handed again to a subscription of the group (possibly the same one),
//     which then holds it. Each delivery carries Envelope.Deliveries: 1 the
//     first time, 2 on the first redelivery, and so on. Without Ack,
//     handing an event over is final (at most once) and Deliveries is 0.
//   - Release gives pending deliveries back to the group at once, as if
//     their visibility timeout had passed, but only those the releasing
//     consumer holds (a release naming another consumer is ignored). A
//     released delivery does not count: the next delivery of the event
//     carries the same Deliveries as the released one. A release means the
//     event was not handled (its stream could not write it, or its
//     consumer gave it back unhandled), so it must not bring the event
//     closer to a poison or dead-letter limit. After a
//     release nobody holds the delivery, so the former holder's Ack or
//     Release of it is ignored. The group's subscriptions take it within
//     about their backend's polling interval (at once on memory and
//     PostgreSQL, within Block on Redis).
//   - Closing an acknowledged-mode subscription releases the deliveries
//     it took from the store but never returned from Next (read ahead),
//     so a consumer that goes away does not hold what it never saw.
//   - Publish reports how many unicast groups of the event's name exist,
//     so a publisher can tell that nobody will ever take the event.
//   - A group that has had no open subscription for the backend's group
//     idle TTL (DefaultGroupIdleTTL unless configured) is deleted with its
//     pending deliveries; a later subscription creates it afresh. A group
//     with an open subscription never expires.
//   - The stored envelope keeps Name, CorrelationID, IdentityID,
//     IdentityType and Payload as published.
//   - Next never loses an event: when it returns an error, no event was
//     handed over by that call, even when its context was cancelled.
//
// It imports only pkg/events; backends import it, never the other way round.
package eventstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/events"
)

// ErrEndOfSnapshot is returned by Next of a subscription with Follow false
// once the replayed snapshot is exhausted.
var ErrEndOfSnapshot = errors.New("eventstore: end of snapshot")

// ErrClosed is returned after the backend or subscription was closed.
var ErrClosed = errors.New("eventstore: closed")

// DefaultVisibility is the acknowledgement deadline when none is given.
const DefaultVisibility = 30 * time.Second

// DefaultGroupIdleTTL is how long a unicast group with no open
// subscription is kept.
const DefaultGroupIdleTTL = 24 * time.Hour

// ReadBudget bounds about how many payload bytes one read of a broadcast
// subscription fetches (at least one event), so a reader replaying a large
// history, or one whose client stalls, holds little of it at a time.
const ReadBudget = 1 << 20

// Subscription describes a stream of events.
type Subscription struct {
	// Names are the event names to read (at least one, no wildcards).
	Names []string
	// Delivery is events.Broadcast or events.Unicast.
	Delivery events.Delivery
	// Group and Consumer identify a unicast consumer; ignored for broadcast.
	Group    string
	Consumer string
	// Replay includes the retained history first (broadcast), or starts a
	// group that does not exist yet at the start of the log (unicast).
	Replay bool
	// Follow keeps the subscription open for new events. With Follow false,
	// Next returns ErrEndOfSnapshot once the replayed snapshot is read.
	Follow bool
	// Ack makes unicast deliveries pending until acknowledged.
	Ack bool
	// Visibility is how long an acknowledged-mode delivery may stay
	// unacknowledged before it is handed out again (DefaultVisibility if 0).
	Visibility time.Duration
}

// Backend stores events and hands them to subscriptions.
type Backend interface {
	// Publish stores ev. Name, CorrelationID, IdentityID, IdentityType
	// and Payload are taken from ev; ID and CreatedAt are assigned. It
	// returns the stored envelope and how many unicast groups of the name
	// exist, each of which will be handed the event. (A group created at
	// the very moment of the publish may take the event without being
	// counted.)
	Publish(ctx context.Context, ev events.Envelope) (stored events.Envelope, groups int, err error)
	// Subscribe opens a subscription; the caller must Close it.
	Subscribe(ctx context.Context, sub Subscription) (Subscriber, error)
	// Ack acknowledges pending unicast deliveries of group on the named
	// event that consumer holds. Unknown or already acknowledged ids, and
	// deliveries another consumer holds, are ignored; the result is how
	// many were newly acknowledged.
	Ack(ctx context.Context, name, group, consumer string, ids []string) (int, error)
	// Release makes pending unicast deliveries of group on the named event
	// that consumer holds available to the group again at once, without
	// counting them (see the package comment). Unknown ids and deliveries
	// another consumer holds are ignored; the result is how many were
	// released.
	Release(ctx context.Context, name, group, consumer string, ids []string) (int, error)
	// Close releases the backend's resources.
	Close() error
}

// Subscriber reads one subscription.
type Subscriber interface {
	// Next blocks until an event is available and returns it. It returns
	// ctx's error when ctx ends first, ErrEndOfSnapshot at the end of a
	// non-following subscription, and ErrClosed after Close.
	Next(ctx context.Context) (events.Envelope, error)
	// Close ends the subscription. Pending acknowledged-mode deliveries
	// Next returned stay pending and are redelivered after their visibility
	// timeout; those it took but never returned are released.
	Close() error
}

// Unheld is the holder backends record for a released delivery until it is
// handed out again. No consumer has this name (consumer names cannot
// contain '/'), so nobody can acknowledge or release it meanwhile.
const Unheld = "/released"

// ReleaseEnvelopes releases deliveries envs of group that consumer holds,
// with one Backend.Release call per event name. It returns how many were
// released and the first error.
func ReleaseEnvelopes(ctx context.Context, b Backend, group, consumer string, envs []events.Envelope) (int, error) {
	var (
		names []string
		ids   = map[string][]string{}
	)
	for _, env := range envs {
		if ids[env.Name] == nil {
			names = append(names, env.Name)
		}
		ids[env.Name] = append(ids[env.Name], env.ID)
	}
	total := 0
	var first error
	for _, name := range names {
		n, err := b.Release(ctx, name, group, consumer, ids[name])
		total += n
		if err != nil && first == nil {
			first = err
		}
	}
	return total, first
}

// GroupSweepInterval is how often a backend with group idle TTL ttl
// refreshes the groups its open subscriptions use and deletes expired ones:
// a quarter of ttl, between 10ms and a minute.
func GroupSweepInterval(ttl time.Duration) time.Duration {
	return min(max(ttl/4, 10*time.Millisecond), time.Minute)
}

// EffectiveGroupIdleTTL returns ttl, or DefaultGroupIdleTTL when it is not
// positive.
func EffectiveGroupIdleTTL(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return DefaultGroupIdleTTL
	}
	return ttl
}

// EffectiveVisibility returns s.Visibility, or DefaultVisibility when unset.
func (s Subscription) EffectiveVisibility() time.Duration {
	if s.Visibility <= 0 {
		return DefaultVisibility
	}
	return s.Visibility
}

// Validate checks the fields every backend relies on. The Events API
// validates user input before it gets here; backends call Validate to
// protect themselves from programming errors.
func (s Subscription) Validate() error {
	if len(s.Names) == 0 {
		return errors.New("eventstore: subscription needs at least one name")
	}
	for _, n := range s.Names {
		if err := events.ValidateName(n); err != nil {
			return fmt.Errorf("eventstore: %w", err)
		}
	}
	switch s.Delivery {
	case events.Broadcast:
		if s.Ack {
			return errors.New("eventstore: acknowledgement applies to unicast delivery only")
		}
	case events.Unicast:
		if err := validateStoreKey("group", s.Group); err != nil {
			return err
		}
		if err := validateStoreKey("consumer", s.Consumer); err != nil {
			return err
		}
	default:
		return fmt.Errorf("eventstore: unknown delivery %q", s.Delivery)
	}
	return nil
}

// validateStoreKey accepts the group and consumer names the Events API hands
// to backends: client names (events.ValidateKey) and the server's internal
// identity-scoped group names, which add a '~' suffix.
func validateStoreKey(kind, v string) error {
	if v == "" || len(v) > 200 || strings.IndexFunc(v, func(r rune) bool { return r <= ' ' || r == '/' || r == 0x7f }) >= 0 {
		return fmt.Errorf("eventstore: invalid %s %q", kind, v)
	}
	return nil
}
