package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// broadcastBatch is how many events one broadcast query fetches at most.
const broadcastBatch = 256

// followEnd is the upper id bound of a following subscription.
const followEnd = math.MaxInt64

// eventColumns are the columns every event query returns, in scanRow order.
const eventColumns = "e.id, e.name, e.correlation_id, e.identity_id, e.identity_type, e.payload, e.created_at"

// broadcastSQL returns the next events after per-name cursors, in id order:
// the batch smallest ids of each name, merged and cut to batch, so the result
// is the batch smallest ids overall; and of those only the first events
// whose payloads fit in $5 bytes (at least one), so the result is a prefix of
// the merged order.
const broadcastSQL = `
SELECT ` + eventColumns + ` FROM (
	SELECT e.*, sum(coalesce(octet_length(e.payload), 0)) OVER (ORDER BY e.id) AS upto_bytes,
		row_number() OVER (ORDER BY e.id) AS n
	FROM (
		SELECT ev.* FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS c(name, after, upto)
		CROSS JOIN LATERAL (
			SELECT * FROM bus_events ev
			WHERE ev.name = c.name AND ev.id > c.after AND ev.id <= c.upto
			ORDER BY ev.id LIMIT $4
		) ev
		ORDER BY ev.id LIMIT $4
	) e
) e
WHERE e.n = 1 OR e.upto_bytes <= $5
ORDER BY e.id`

// claimSQL hands the group its next event: lock the group's cursor rows
// of the names (in name order, so claims never deadlock), take the earliest
// event after them, advance that cursor and, with Ack, record the pending
// delivery — one statement, one transaction.
const claimSQL = `
WITH cur AS (
	SELECT name, last_id FROM bus_event_group_cursors
	WHERE group_name = $1 AND name = ANY($2::text[])
	ORDER BY name
	FOR UPDATE
), nxt AS (
	SELECT ` + eventColumns + `
	FROM cur
	JOIN unnest($2::text[], $3::bigint[]) AS b(name, upto) ON b.name = cur.name
	CROSS JOIN LATERAL (
		SELECT * FROM bus_events ev
		WHERE ev.name = cur.name AND ev.id > cur.last_id AND ev.id <= b.upto
		ORDER BY ev.id LIMIT 1
	) e
	ORDER BY e.id LIMIT 1
), adv AS (
	UPDATE bus_event_group_cursors c SET last_id = nxt.id
	FROM nxt WHERE c.group_name = $1 AND c.name = nxt.name
), pend AS (
	INSERT INTO bus_event_pending (group_name, event_id, name, consumer, deadline)
	SELECT $1, nxt.id, nxt.name, $4, clock_timestamp() + $5::bigint * interval '1 microsecond'
	FROM nxt WHERE $6::boolean
	ON CONFLICT (group_name, event_id) DO UPDATE
	SET consumer = EXCLUDED.consumer, deadline = EXCLUDED.deadline,
		deliveries = bus_event_pending.deliveries + 1
	RETURNING deliveries
)
SELECT id, name, correlation_id, identity_id, identity_type, payload, created_at,
	coalesce((SELECT deliveries FROM pend), 0)
FROM nxt`

// redeliverSQL hands out the group's oldest expired pending delivery again,
// resetting its deadline. SKIP LOCKED and the recheck of the deadline keep
// two consumers from taking the same one.
const redeliverSQL = `
WITH p AS (
	SELECT group_name, event_id FROM bus_event_pending
	WHERE group_name = $1 AND name = ANY($2::text[]) AND deadline <= clock_timestamp()
	ORDER BY event_id LIMIT 1
	FOR UPDATE SKIP LOCKED
), upd AS (
	UPDATE bus_event_pending bp
	SET consumer = $3, deadline = clock_timestamp() + $4::bigint * interval '1 microsecond',
		deliveries = bp.deliveries + 1
	FROM p WHERE bp.group_name = p.group_name AND bp.event_id = p.event_id
	RETURNING bp.event_id, bp.deliveries
)
SELECT ` + eventColumns + `, upd.deliveries FROM upd JOIN bus_events e ON e.id = upd.event_id`

type subscriber struct {
	b    *Backend
	sub  eventstore.Subscription
	wake chan struct{} // from the hub
	r    *eventstore.Reader
	refs []groupRef // unicast: its groups

	closeOnce sync.Once

	// Owned by the running read (one at a time; the next one starts after
	// Next received the previous result).
	cursors []int64 // broadcast: last id read per name
	ends    []int64 // last id of the snapshot per name, followEnd when following
}

// Subscribe implements eventstore.Backend.
func (b *Backend) Subscribe(ctx context.Context, sub eventstore.Subscription) (eventstore.Subscriber, error) {
	if err := sub.Validate(); err != nil {
		return nil, err
	}
	if b.ctx.Err() != nil {
		return nil, eventstore.ErrClosed
	}
	names := slices.Clone(sub.Names)
	slices.Sort(names)
	sub.Names = slices.Compact(names)

	s := &subscriber{b: b, sub: sub}
	if sub.Delivery == events.Unicast {
		for _, n := range sub.Names {
			s.refs = append(s.refs, groupRef{name: n, group: sub.Group})
		}
		// Tracked before the groups are created or refreshed, so an
		// expiry sweep never deletes a group being subscribed to.
		b.groups.Track(s.refs, 1)
		_, err := b.pool.Exec(ctx, `
			INSERT INTO bus_event_group_cursors (name, group_name, last_id)
			SELECT c.name, $2, CASE WHEN $3::boolean THEN 0 ELSE
				coalesce((SELECT max(id) FROM bus_events ev WHERE ev.name = c.name), 0) END
			FROM unnest($1::text[]) AS c(name)
			ON CONFLICT (name, group_name) DO UPDATE SET last_seen = clock_timestamp()`, sub.Names, sub.Group, sub.Replay)
		if err != nil {
			b.groups.Track(s.refs, -1)
			return nil, fmt.Errorf("pgstore: create group %s: %w", sub.Group, err)
		}
	}
	s.cursors = make([]int64, len(sub.Names))
	s.ends = make([]int64, len(sub.Names))
	for i := range s.ends {
		s.ends[i] = followEnd
	}
	if sub.Delivery == events.Broadcast || !sub.Follow {
		// The last id of every name, in one snapshot: the start of a
		// broadcast without Replay, the end of a snapshot without Follow.
		rows, err := b.pool.Query(ctx, `
			SELECT coalesce((SELECT max(id) FROM bus_events ev WHERE ev.name = c.name), 0)
			FROM unnest($1::text[]) WITH ORDINALITY AS c(name, n) ORDER BY c.n`, sub.Names)
		if err != nil {
			b.groups.Track(s.refs, -1)
			return nil, fmt.Errorf("pgstore: subscribe: %w", err)
		}
		last, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			b.groups.Track(s.refs, -1)
			return nil, fmt.Errorf("pgstore: subscribe: %w", err)
		}
		for i := range sub.Names {
			if sub.Delivery == events.Broadcast && !sub.Replay {
				s.cursors[i] = last[i]
			}
			if !sub.Follow {
				s.ends[i] = last[i]
			}
		}
	}
	s.wake = b.hub.add(sub.Names)
	s.r = b.reads.NewReader(b.ctx, s.read, eventstore.GiveBack(b.ctx, b, "pgstore", sub, b.cfg.Logger))
	context.AfterFunc(s.r.Context(), func() { b.hub.remove(sub.Names, s.wake) })
	return s, nil
}

// Close implements eventstore.Subscriber. Pending acknowledged-mode
// deliveries Next returned stay pending; those read ahead are released.
func (s *subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.r.Close()
		s.b.groups.Track(s.refs, -1)
	})
	return nil
}

// Next implements eventstore.Subscriber. Reads run on a goroutine of their
// own, so when ctx ends first the read goes on and its result waits for
// the next call: nothing claimed is dropped.
func (s *subscriber) Next(ctx context.Context) (events.Envelope, error) {
	return s.r.Next(ctx)
}

// read queries once and, when a following subscription found nothing,
// waits for a notification, the poll interval or (Ack) the next pending
// deadline, then queries once more.
func (s *subscriber) read(ctx context.Context) eventstore.ReadResult {
	for waited := false; ; waited = true {
		// A wake-up from before this query is covered by it.
		select {
		case <-s.wake:
		default:
		}
		var (
			r     eventstore.ReadResult
			delay = s.b.cfg.PollInterval
		)
		if s.sub.Delivery == events.Broadcast {
			r = s.readBroadcast(ctx)
		} else {
			r, delay = s.readUnicast(ctx, delay)
		}
		if r.Err != nil || r.End || len(r.Envs) > 0 || waited {
			return r
		}
		timer := time.NewTimer(delay)
		select {
		case <-s.wake:
		case <-timer.C:
		case <-ctx.Done():
		}
		timer.Stop()
		if ctx.Err() != nil {
			return eventstore.ReadResult{}
		}
	}
}

func (s *subscriber) readBroadcast(ctx context.Context) eventstore.ReadResult {
	rows, err := s.b.pool.Query(ctx, broadcastSQL, s.sub.Names, s.cursors, s.ends, broadcastBatch, eventstore.ReadBudget)
	if err != nil {
		return eventstore.ReadResult{Err: fmt.Errorf("pgstore: read: %w", err)}
	}
	envs, err := pgx.CollectRows(rows, scanEvent)
	if err != nil {
		return eventstore.ReadResult{Err: fmt.Errorf("pgstore: read: %w", err)}
	}
	for _, env := range envs {
		id, _ := parseID(env.ID)
		if i, ok := slices.BinarySearch(s.sub.Names, env.Name); ok && id > s.cursors[i] {
			s.cursors[i] = id
		}
	}
	if len(envs) == 0 && !s.sub.Follow {
		return eventstore.ReadResult{End: true}
	}
	return eventstore.ReadResult{Envs: envs}
}

// readUnicast hands out an expired pending delivery (Ack), else claims the
// group's next event. With nothing to hand out it returns how long to wait
// at most: delay, or less when a pending delivery expires sooner.
func (s *subscriber) readUnicast(ctx context.Context, delay time.Duration) (eventstore.ReadResult, time.Duration) {
	if ctx.Err() != nil {
		return eventstore.ReadResult{}, 0
	}
	// The claims run to completion even when the subscription closes
	// meanwhile: what they take is released, not lost.
	cctx, cancel := eventstore.ClaimContext(ctx)
	defer cancel()
	vis := s.sub.EffectiveVisibility().Microseconds()
	if s.sub.Ack {
		env, found, err := s.queryOne(cctx, redeliverSQL, s.sub.Group, s.sub.Names, s.sub.Consumer, vis)
		if err != nil {
			return eventstore.ReadResult{Err: fmt.Errorf("pgstore: redeliver: %w", err)}, 0
		}
		if found {
			return eventstore.ReadResult{Envs: []events.Envelope{env}}, 0
		}
	}
	env, found, err := s.queryOne(cctx, claimSQL, s.sub.Group, s.sub.Names, s.ends, s.sub.Consumer, vis, s.sub.Ack)
	if err != nil {
		return eventstore.ReadResult{Err: fmt.Errorf("pgstore: claim: %w", err)}, 0
	}
	if found {
		return eventstore.ReadResult{Envs: []events.Envelope{env}}, 0
	}
	if !s.sub.Follow {
		return eventstore.ReadResult{End: true}, 0
	}
	if s.sub.Ack {
		var secs *float64
		err := s.b.pool.QueryRow(ctx, `
			SELECT EXTRACT(EPOCH FROM min(deadline) - clock_timestamp())::float8
			FROM bus_event_pending WHERE group_name = $1 AND name = ANY($2::text[])`,
			s.sub.Group, s.sub.Names).Scan(&secs)
		if err != nil {
			return eventstore.ReadResult{Err: fmt.Errorf("pgstore: pending deadline: %w", err)}, 0
		}
		if secs != nil {
			d := time.Duration(*secs*float64(time.Second)) + time.Millisecond
			delay = min(delay, max(d, time.Millisecond))
		}
	}
	return eventstore.ReadResult{}, delay
}

// queryOne runs a query returning at most one event with its delivery
// count.
func (s *subscriber) queryOne(ctx context.Context, sql string, args ...any) (events.Envelope, bool, error) {
	rows, err := s.b.pool.Query(ctx, sql, args...)
	if err != nil {
		return events.Envelope{}, false, err
	}
	env, err := pgx.CollectOneRow(rows, scanDelivery)
	if errors.Is(err, pgx.ErrNoRows) {
		return events.Envelope{}, false, nil
	}
	if err != nil {
		return events.Envelope{}, false, err
	}
	return env, true, nil
}

// scanEvent reads the eventColumns of a row.
func scanEvent(row pgx.CollectableRow) (events.Envelope, error) {
	return scan(row)
}

// scanDelivery reads the eventColumns and the delivery count of a row.
func scanDelivery(row pgx.CollectableRow) (events.Envelope, error) {
	var deliveries int32
	env, err := scan(row, &deliveries)
	env.Deliveries = int(deliveries)
	return env, err
}

func scan(row pgx.CollectableRow, extra ...any) (events.Envelope, error) {
	var (
		env     events.Envelope
		id      int64
		payload []byte
	)
	dest := append([]any{&id, &env.Name, &env.CorrelationID, &env.IdentityID, &env.IdentityType, &payload, &env.CreatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return events.Envelope{}, err
	}
	env.ID = formatID(id)
	env.CreatedAt = env.CreatedAt.UTC()
	if payload != nil {
		env.Payload = json.RawMessage(payload)
	}
	return env, nil
}
