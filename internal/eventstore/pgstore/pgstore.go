// Package pgstore is the PostgreSQL eventstore backend: durable, shared by
// every Events API replica that points at the same database, with SQL
// transactions as the source of truth.
//
// Tables (created at startup when missing; columns added since are added
// to existing tables):
//
//   - bus_events: the log. id is a bigserial; the event ID is "evt_<id>".
//     Publishers of one name serialise on a transaction-scoped advisory lock,
//     so within a name ids commit in increasing order and a reader's cursor
//     never skips an event that commits late.
//   - bus_event_group_cursors: per (name, group), the id of the last event
//     handed to the group, and when the group last had an open
//     subscription (last_seen). Every backend refreshes last_seen of the
//     groups of its open subscriptions and deletes the groups (with their
//     pending rows) not seen for GroupIdleTTL, every
//     eventstore.GroupSweepInterval. A claim locks the group's cursor rows
//     (SELECT ... FOR UPDATE, in name order), takes the earliest next event
//     of the subscribed names and advances that cursor in the same statement,
//     so consumers on different replicas never get the same event.
//   - bus_event_pending: acknowledged-mode deliveries not acknowledged yet,
//     with their holder (consumer), deadline and delivery count. Expired rows
//     are handed out again (FOR UPDATE SKIP LOCKED), counting the delivery;
//     Ack deletes the rows its consumer holds; Release gives them up (no
//     holder, deadline now, one delivery less) and notifies. Rows go with
//     their event (ON DELETE CASCADE).
//
// Publish counts the name's groups in the same round trip as the insert.
// Broadcast reads stop at about eventstore.ReadBudget payload bytes (at
// least one event), so a reader holds little of a large history at a time.
//
// Every publish sends one NOTIFY (in its transaction) on channel
// bus_events with the event name; each backend keeps one LISTEN connection
// and wakes its subscriptions of that name. Subscriptions also poll every
// PollInterval, so a lost notification only delays delivery.
//
// Reads run on a goroutine owned by the subscription, so a cancelled Next
// never drops an event a claim already took: it is kept for the next call.
// Without Ack, an event claimed by a read that completes only after its
// subscription was closed is lost (at most once); with Ack it is released
// when the subscription closes (or, when that fails, redelivered after its
// visibility timeout). Waiting subscriptions hold no connection.
//
// It imports internal/eventstore, internal/busconfig, pkg/events and the pgx driver.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// Defaults for Config fields left zero.
const (
	DefaultPollInterval = time.Second
	DefaultRetention    = 10000
)

// EnvDSN is the environment variable FromEnv reads.
const EnvDSN = "BUS_EVENTS_POSTGRES_DSN"

// notifyChannel is the LISTEN/NOTIFY channel; the payload is the event name.
const notifyChannel = "bus_events"

// lockClass is the first key of the two-key advisory locks this backend
// takes ("bus" in ASCII), so they do not collide with other users' locks.
const lockClass = 0x627573

// schemaLockKey is the second key of the advisory lock taken while creating
// the tables (publish locks use hashtext(name)).
const schemaLockKey = 0

// pruneEvery makes a publish prune its name when its id is a multiple of it.
const pruneEvery = 64

// Config configures a Backend.
type Config struct {
	// DSN is the PostgreSQL connection string (URL or key=value). Its
	// password never appears in errors or logs.
	DSN string
	// PollInterval is how often a waiting subscription queries even without
	// a notification (DefaultPollInterval when 0).
	PollInterval time.Duration
	// Retention is about how many events are kept per name
	// (DefaultRetention when 0, every event when negative). Older events
	// drop out of replay and out of groups that have not read them yet.
	Retention int64
	// MaxConns bounds the connection pool (pgxpool's default when 0).
	MaxConns int32
	// GroupIdleTTL is how long a unicast group without an open
	// subscription on any replica is kept (eventstore.DefaultGroupIdleTTL
	// when 0).
	GroupIdleTTL time.Duration
	// Logger receives background problems (slog.Default() when nil).
	Logger *slog.Logger
}

// FromEnv reads BUS_EVENTS_POSTGRES_DSN (required).
func FromEnv(env busconfig.Env) (Config, error) {
	dsn := strings.TrimSpace(env.Getenv(EnvDSN))
	if dsn == "" {
		return Config{}, fmt.Errorf("pgstore: %s is required", EnvDSN)
	}
	return Config{DSN: dsn}.withDefaults(), nil
}

func (c Config) withDefaults() Config {
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	c.GroupIdleTTL = eventstore.EffectiveGroupIdleTTL(c.GroupIdleTTL)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Backend is the PostgreSQL backend. Create it with Open.
type Backend struct {
	cfg  Config
	pool *pgxpool.Pool
	desc string // host and database, for logs
	hub  *hub

	ctx    context.Context // ends when the backend closes
	cancel context.CancelFunc

	reads eventstore.ReadGroup // the subscriptions' reads in flight
	wg    sync.WaitGroup       // the listener and the group loop

	groups eventstore.OpenGroups[groupRef] // the groups of open subscriptions
}

// groupRef names a unicast group of one event name.
type groupRef struct{ name, group string }

// Open connects, creates the tables when missing and starts listening for
// notifications.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	cfg = cfg.withDefaults()
	pcfg, err := pgxpool.ParseConfig(cfg.DSN)
	if err != nil {
		// pgx redacts passwords only on a best-effort basis: say nothing
		// about the DSN's content.
		return nil, errors.New("pgstore: cannot parse the PostgreSQL DSN")
	}
	if cfg.MaxConns > 0 {
		pcfg.MaxConns = cfg.MaxConns
	}
	desc := fmt.Sprintf("%s:%d/%s", pcfg.ConnConfig.Host, pcfg.ConnConfig.Port, pcfg.ConnConfig.Database)
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: pool for %s: %w", desc, err)
	}
	if err := createSchema(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: %s: %w", desc, err)
	}
	listenConn, err := listen(ctx, pcfg.ConnConfig)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgstore: %s: %w", desc, err)
	}
	bctx, cancel := context.WithCancel(context.Background())
	b := &Backend{cfg: cfg, pool: pool, desc: desc, hub: newHub(), ctx: bctx, cancel: cancel}
	b.wg.Add(2)
	go b.listenLoop(listenConn, pcfg.ConnConfig)
	go func() {
		defer b.wg.Done()
		b.groups.Loop(b.ctx, b.cfg.GroupIdleTTL, b.cfg.Logger, "pgstore", b.sweepGroups)
	}()
	return b, nil
}

// String describes the backend for logs (no credentials).
func (b *Backend) String() string { return "postgres(" + b.desc + ")" }

const schemaSQL = `
CREATE TABLE IF NOT EXISTS bus_events (
	id             bigserial PRIMARY KEY,
	name           text        NOT NULL,
	correlation_id text        NOT NULL DEFAULT '',
	identity_id    text        NOT NULL DEFAULT '',
	payload        bytea,
	created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
ALTER TABLE bus_events ADD COLUMN IF NOT EXISTS identity_type text NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS bus_events_name_id ON bus_events (name, id);
CREATE TABLE IF NOT EXISTS bus_event_group_cursors (
	name       text   NOT NULL,
	group_name text   NOT NULL,
	last_id    bigint NOT NULL,
	PRIMARY KEY (name, group_name)
);
ALTER TABLE bus_event_group_cursors ADD COLUMN IF NOT EXISTS last_seen timestamptz NOT NULL DEFAULT clock_timestamp();
CREATE TABLE IF NOT EXISTS bus_event_pending (
	group_name  text        NOT NULL,
	event_id    bigint      NOT NULL REFERENCES bus_events (id) ON DELETE CASCADE,
	name        text        NOT NULL,
	consumer    text        NOT NULL,
	deadline    timestamptz NOT NULL,
	deliveries  integer     NOT NULL DEFAULT 1,
	PRIMARY KEY (group_name, event_id)
);
CREATE INDEX IF NOT EXISTS bus_event_pending_event ON bus_event_pending (event_id);
`

// createSchema creates the tables when missing. Replicas starting together
// serialise on an advisory lock (concurrent CREATE ... IF NOT EXISTS can
// still collide in the catalog).
func createSchema(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1, $2)", lockClass, schemaLockKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, schemaSQL)
		return err
	})
	if err != nil {
		return fmt.Errorf("create tables: %w", err)
	}
	return nil
}

// Publish implements eventstore.Backend: lock the name, insert, notify and
// count the name's groups, in one implicit transaction (one round trip).
func (b *Backend) Publish(ctx context.Context, ev events.Envelope) (events.Envelope, int, error) {
	if err := events.ValidateName(ev.Name); err != nil {
		return events.Envelope{}, 0, fmt.Errorf("pgstore: %w", err)
	}
	if b.ctx.Err() != nil {
		return events.Envelope{}, 0, eventstore.ErrClosed
	}
	var payload []byte
	if ev.Payload != nil {
		payload = ev.Payload
	}
	batch := &pgx.Batch{}
	batch.Queue("SELECT pg_advisory_xact_lock($1, hashtext($2))", lockClass, ev.Name)
	batch.Queue(`INSERT INTO bus_events (name, correlation_id, identity_id, identity_type, payload)
		VALUES ($1, $2, $3, $4, $5) RETURNING id, created_at`, ev.Name, ev.CorrelationID, ev.IdentityID, ev.IdentityType, payload)
	batch.Queue("SELECT pg_notify($1, $2)", notifyChannel, ev.Name)
	batch.Queue("SELECT count(*) FROM bus_event_group_cursors WHERE name = $1", ev.Name)
	var (
		id      int64
		created time.Time
		groups  int64
	)
	err := func() error {
		br := b.pool.SendBatch(ctx, batch)
		defer func() { _ = br.Close() }()
		if _, err := br.Exec(); err != nil {
			return err
		}
		if err := br.QueryRow().Scan(&id, &created); err != nil {
			return err
		}
		if _, err := br.Exec(); err != nil {
			return err
		}
		if err := br.QueryRow().Scan(&groups); err != nil {
			return err
		}
		return br.Close()
	}()
	if err != nil {
		return events.Envelope{}, 0, fmt.Errorf("pgstore: publish %s: %w", ev.Name, err)
	}
	b.hub.wake(ev.Name)
	if b.cfg.Retention > 0 && id%pruneEvery == 0 {
		b.prune(ctx, ev.Name)
	}
	ev.ID = formatID(id)
	ev.CreatedAt = created.UTC()
	ev.Deliveries = 0
	return ev, int(groups), nil
}

// prune deletes the events of name beyond Retention. Failures only delay
// pruning, so they are logged, not returned.
func (b *Backend) prune(ctx context.Context, name string) {
	_, err := b.pool.Exec(ctx, `DELETE FROM bus_events WHERE name = $1 AND id < (
		SELECT id FROM bus_events WHERE name = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)`,
		name, b.cfg.Retention-1)
	if err != nil && ctx.Err() == nil {
		b.cfg.Logger.Warn("pgstore: prune failed", "name", name, "err", err)
	}
}

// Ack implements eventstore.Backend: it deletes the pending rows consumer
// holds.
func (b *Backend) Ack(ctx context.Context, name, group, consumer string, ids []string) (int, error) {
	nums, err := b.settling(ids)
	if err != nil || len(nums) == 0 {
		return 0, err
	}
	tag, err := b.pool.Exec(ctx,
		"DELETE FROM bus_event_pending WHERE group_name = $1 AND name = $2 AND consumer = $3 AND event_id = ANY($4)",
		group, name, consumer, nums)
	if err != nil {
		return 0, fmt.Errorf("pgstore: ack %s/%s: %w", name, group, err)
	}
	return int(tag.RowsAffected()), nil
}

// settling returns the row numbers of the event ids an Ack or Release
// names (ids that are not this backend's match nothing), or ErrClosed.
func (b *Backend) settling(ids []string) ([]int64, error) {
	if b.ctx.Err() != nil {
		return nil, eventstore.ErrClosed
	}
	var nums []int64
	for _, id := range ids {
		if n, ok := parseID(id); ok {
			nums = append(nums, n)
		}
	}
	return nums, nil
}

// releaseSQL gives back the pending rows consumer holds: no holder
// (eventstore.Unheld), deadline now, one delivery less.
const releaseSQL = `
WITH r AS (
	UPDATE bus_event_pending SET consumer = $5, deadline = clock_timestamp(), deliveries = greatest(deliveries - 1, 0)
	WHERE group_name = $1 AND name = $2 AND consumer = $3 AND event_id = ANY($4)
	RETURNING 1
)
SELECT count(*) FROM r`

// Release implements eventstore.Backend: the pending rows consumer holds
// expire now, without counting; a notification wakes the name's
// subscriptions on every replica.
func (b *Backend) Release(ctx context.Context, name, group, consumer string, ids []string) (int, error) {
	nums, err := b.settling(ids)
	if err != nil || len(nums) == 0 {
		return 0, err
	}
	var n int64
	if err := b.pool.QueryRow(ctx, releaseSQL, group, name, consumer, nums, eventstore.Unheld).Scan(&n); err != nil {
		return 0, fmt.Errorf("pgstore: release %s/%s: %w", name, group, err)
	}
	if n > 0 {
		b.hub.wake(name)
		// Other replicas poll at least every PollInterval: a lost
		// notification only delays the redelivery there.
		if _, err := b.pool.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, name); err != nil && ctx.Err() == nil {
			b.cfg.Logger.Warn("pgstore: release notification failed", "name", name, "err", err)
		}
	}
	return int(n), nil
}

// Close ends every subscription, waits for their reads, stops listening
// and closes the pool.
func (b *Backend) Close() error {
	b.cancel()
	if !b.reads.Close() {
		return nil
	}
	b.wg.Wait()
	b.pool.Close()
	return nil
}

// refreshSQL marks groups as used now.
const refreshSQL = `
UPDATE bus_event_group_cursors c SET last_seen = clock_timestamp()
FROM unnest($1::text[], $2::text[]) AS g(name, group_name)
WHERE c.name = g.name AND c.group_name = g.group_name`

// sweepSQL deletes the groups not seen for $1 microseconds, with their
// pending deliveries.
const sweepSQL = `
WITH gone AS (
	DELETE FROM bus_event_group_cursors
	WHERE last_seen < clock_timestamp() - $1::bigint * interval '1 microsecond'
	RETURNING name, group_name
)
DELETE FROM bus_event_pending p USING gone
WHERE p.name = gone.name AND p.group_name = gone.group_name`

// sweepGroups marks the groups of refs as used now and deletes the groups
// idle for longer than GroupIdleTTL, with their pending deliveries.
func (b *Backend) sweepGroups(ctx context.Context, refs []groupRef) error {
	if len(refs) > 0 {
		names, groups := make([]string, len(refs)), make([]string, len(refs))
		for i, r := range refs {
			names[i], groups[i] = r.name, r.group
		}
		if _, err := b.pool.Exec(ctx, refreshSQL, names, groups); err != nil {
			return fmt.Errorf("refresh groups on %s: %w", b.desc, err)
		}
	}
	if _, err := b.pool.Exec(ctx, sweepSQL, b.cfg.GroupIdleTTL.Microseconds()); err != nil {
		return fmt.Errorf("expire groups on %s: %w", b.desc, err)
	}
	return nil
}

// listen opens the dedicated notification connection.
func listen(ctx context.Context, cfg *pgx.ConnConfig) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, cfg.Copy())
	if err != nil {
		return nil, fmt.Errorf("listen connection: %w", err)
	}
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		_ = conn.Close(context.Background())
		return nil, fmt.Errorf("listen: %w", err)
	}
	return conn, nil
}

// listenLoop wakes subscriptions on notifications until the backend closes,
// reconnecting with back-off when the connection breaks. After a reconnect
// every subscription is woken, since notifications may have been missed.
func (b *Backend) listenLoop(conn *pgx.Conn, cfg *pgx.ConnConfig) {
	defer b.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		if conn != nil {
			for {
				n, err := conn.WaitForNotification(b.ctx)
				if err != nil {
					break
				}
				backoff = 100 * time.Millisecond
				b.hub.wake(n.Payload)
			}
			closeCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = conn.Close(closeCtx)
			cancel()
			conn = nil
			if b.ctx.Err() != nil {
				return
			}
			b.cfg.Logger.Warn("pgstore: notification connection lost; reconnecting", "db", b.desc)
		}
		select {
		case <-b.ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
		c, err := listen(b.ctx, cfg)
		if err != nil {
			if b.ctx.Err() == nil {
				b.cfg.Logger.Warn("pgstore: cannot listen for notifications", "db", b.desc, "err", err)
			}
			continue
		}
		conn = c
		b.hub.wakeAll()
	}
}

const idPrefix = "evt_"

func formatID(id int64) string { return fmt.Sprintf("%s%d", idPrefix, id) }

// parseID turns an event ID back into its bus_events id.
func parseID(id string) (int64, bool) {
	rest, ok := strings.CutPrefix(id, idPrefix)
	if !ok || rest == "" || len(rest) > 19 {
		return 0, false
	}
	var n int64
	for _, c := range rest {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, n > 0
}

// hub wakes the waiting subscriptions of an event name.
type hub struct {
	mu      sync.Mutex
	waiters map[string]map[chan struct{}]struct{}
}

func newHub() *hub { return &hub{waiters: map[string]map[chan struct{}]struct{}{}} }

// add registers a wake-up channel for names; it receives a value (without
// blocking the sender) whenever one of them may have new events.
func (h *hub) add(names []string) chan struct{} {
	ch := make(chan struct{}, 1)
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range names {
		if h.waiters[n] == nil {
			h.waiters[n] = map[chan struct{}]struct{}{}
		}
		h.waiters[n][ch] = struct{}{}
	}
	return ch
}

func (h *hub) remove(names []string, ch chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, n := range names {
		delete(h.waiters[n], ch)
		if len(h.waiters[n]) == 0 {
			delete(h.waiters, n)
		}
	}
}

func (h *hub) wake(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.waiters[name] {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (h *hub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.waiters {
		for ch := range set {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

var _ eventstore.Backend = (*Backend)(nil)
