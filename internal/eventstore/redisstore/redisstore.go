// Package redisstore is the Redis Streams eventstore backend: durable,
// shared by every Events API replica that points at the same Redis.
//
// Layout: one stream per event name, key Prefix+"stream:"+name. Publish is
// one XADD (approximate MAXLEN trimming keeps about MaxLen entries per name);
// the event ID is "evt_" + the stream entry ID, so Ack and redelivery find
// the entry from the ID and the name. Entry fields: c (correlation id),
// i (identity id), t (CreatedAt, Unix nanoseconds), p (payload).
//
// Broadcast subscriptions XREAD from their own cursors. Unicast groups are
// Redis consumer groups on each name's stream (created at "$", or "0" with
// Replay). A small Lua script claims the group's next entry: it compares the
// next undelivered entry of every subscribed name and XREADGROUPs only the
// earliest one, so a multi-name subscription keeps publish order and never
// holds more than the entry it hands out. Without Ack the read uses NOACK
// (at most once); with Ack the entry stays in the group's pending list until
// XACK, and entries idle for longer than the subscription's Visibility are
// taken over with XAUTOCLAIM.
//
// Reads run on a goroutine owned by the subscription, with a bounded BLOCK,
// so a cancelled Next never drops a reply: what arrives after Next gave up
// is kept for the next call. Without Ack, an entry claimed by a read that
// completes only after its subscription was closed is lost (at most once);
// with Ack it stays pending and is redelivered.
//
// The claim script touches all streams of a subscription, so on Redis
// Cluster every key must hash to one slot: use a Prefix with a hash tag,
// such as "{bus}:events:".
//
// It imports internal/eventstore, internal/busconfig, pkg/events and the go-redis client.
package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// Defaults for Config fields left zero.
const (
	DefaultPrefix   = "bus:events:"
	DefaultMaxLen   = 10000
	DefaultPoolSize = 256
	DefaultBlock    = 250 * time.Millisecond
)

// Environment variables read by FromEnv.
const (
	EnvAddr     = "BUS_EVENTS_REDIS_ADDR"
	EnvPassword = "BUS_EVENTS_REDIS_PASSWORD"
	EnvPrefix   = "BUS_EVENTS_REDIS_PREFIX"
	EnvMaxLen   = "BUS_EVENTS_REDIS_MAXLEN"
)

// broadcastBatch is how many entries per name one broadcast read fetches.
const broadcastBatch = 128

// Config configures a Backend.
type Config struct {
	// Addr is the Redis address, host:port (required).
	Addr string
	// Password authenticates to Redis (optional). It never appears in
	// errors or String.
	Password string
	// Prefix starts every key the backend uses (DefaultPrefix when empty).
	Prefix string
	// MaxLen is the approximate number of entries kept per event name
	// (DefaultMaxLen when 0). Older entries drop out of replay and out of
	// groups that have not read them yet.
	MaxLen int64
	// PoolSize is the Redis connection pool size (DefaultPoolSize when 0).
	// Every subscription waiting for events holds a connection for up to
	// Block at a time.
	PoolSize int
	// Block bounds one blocking read (DefaultBlock when 0). A closed
	// subscription releases its connection within about this long, and an
	// acknowledged-mode subscription looks for expired deliveries at least
	// this often.
	Block time.Duration
}

// FromEnv reads BUS_EVENTS_REDIS_ADDR (required), BUS_EVENTS_REDIS_PASSWORD,
// BUS_EVENTS_REDIS_PREFIX and BUS_EVENTS_REDIS_MAXLEN.
func FromEnv(env busconfig.Env) (Config, error) {
	cfg := Config{
		Addr:     strings.TrimSpace(env.Getenv(EnvAddr)),
		Password: env.Getenv(EnvPassword),
		Prefix:   env.Getenv(EnvPrefix),
	}
	if cfg.Addr == "" {
		return Config{}, fmt.Errorf("redisstore: %s is required", EnvAddr)
	}
	if v := strings.TrimSpace(env.Getenv(EnvMaxLen)); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return Config{}, fmt.Errorf("redisstore: %s=%q: want a positive integer", EnvMaxLen, v)
		}
		cfg.MaxLen = n
	}
	return cfg.withDefaults(), nil
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.MaxLen <= 0 {
		c.MaxLen = DefaultMaxLen
	}
	if c.PoolSize <= 0 {
		c.PoolSize = DefaultPoolSize
	}
	if c.Block <= 0 {
		c.Block = DefaultBlock
	}
	return c
}

// String describes the configuration without the password.
func (c Config) String() string {
	pw := ""
	if c.Password != "" {
		pw = " password=***"
	}
	return fmt.Sprintf("redis(addr=%s prefix=%q maxlen=%d%s)", c.Addr, c.Prefix, c.MaxLen, pw)
}

// Backend is the Redis Streams backend. Create it with Open.
type Backend struct {
	cfg           Config
	rdb           *redis.Client
	claimScript   *redis.Script
	reclaimScript *redis.Script

	ctx    context.Context // ends when the backend closes
	cancel context.CancelFunc

	reads eventstore.ReadGroup // the subscriptions' reads in flight
}

// Open connects to Redis and checks that it answers.
func Open(ctx context.Context, cfg Config) (*Backend, error) {
	cfg = cfg.withDefaults()
	if cfg.Addr == "" {
		return nil, errors.New("redisstore: address is required")
	}
	rdb := redis.NewClient(&redis.Options{
		Addr:     cfg.Addr,
		Password: cfg.Password,
		PoolSize: cfg.PoolSize,
		// No blind retries: a retried XADD could store an event twice and
		// a retried claim could take a second entry. Errors reach the
		// caller, who may try again.
		MaxRetries: -1,
	})
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redisstore: connect to %s: %w", cfg.Addr, err)
	}
	bctx, cancel := context.WithCancel(context.Background())
	return &Backend{cfg: cfg, rdb: rdb, claimScript: redis.NewScript(claimSource), reclaimScript: redis.NewScript(reclaimSource), ctx: bctx, cancel: cancel}, nil
}

// String describes the backend for logs.
func (b *Backend) String() string { return b.cfg.String() }

func (b *Backend) streamKey(name string) string { return b.cfg.Prefix + "stream:" + name }

// Publish implements eventstore.Backend with one XADD.
func (b *Backend) Publish(ctx context.Context, ev events.Envelope) (events.Envelope, error) {
	if err := events.ValidateName(ev.Name); err != nil {
		return events.Envelope{}, fmt.Errorf("redisstore: %w", err)
	}
	if b.ctx.Err() != nil {
		return events.Envelope{}, eventstore.ErrClosed
	}
	created := time.Unix(0, time.Now().UnixNano()).UTC()
	id, err := b.rdb.XAdd(ctx, &redis.XAddArgs{
		Stream: b.streamKey(ev.Name),
		MaxLen: b.cfg.MaxLen,
		Approx: true,
		Values: []any{
			"c", ev.CorrelationID,
			"i", ev.IdentityID,
			"t", strconv.FormatInt(created.UnixNano(), 10),
			"p", string(ev.Payload),
		},
	}).Result()
	if err != nil {
		return events.Envelope{}, fmt.Errorf("redisstore: publish %s: %w", ev.Name, err)
	}
	ev.ID = idPrefix + id
	ev.CreatedAt = created
	return ev, nil
}

// Ack implements eventstore.Backend with XACK.
func (b *Backend) Ack(ctx context.Context, name, group string, ids []string) (int, error) {
	if err := events.ValidateName(name); err != nil {
		return 0, fmt.Errorf("redisstore: %w", err)
	}
	if b.ctx.Err() != nil {
		return 0, eventstore.ErrClosed
	}
	var entryIDs []string
	for _, id := range ids {
		if e, ok := entryID(id); ok {
			entryIDs = append(entryIDs, e)
		}
	}
	if len(entryIDs) == 0 {
		return 0, nil
	}
	key := b.streamKey(name)
	pipe := b.rdb.TxPipeline()
	acked := pipe.XAck(ctx, key, group, entryIDs...)
	pipe.HDel(ctx, key+":deadlines:"+group, entryIDs...)
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, fmt.Errorf("redisstore: ack %s/%s: %w", name, group, err)
	}
	return int(acked.Val()), nil
}

// Close ends every subscription, waits for their reads and disconnects.
func (b *Backend) Close() error {
	b.cancel()
	if !b.reads.Close() {
		return nil
	}
	if err := b.rdb.Close(); err != nil {
		return fmt.Errorf("redisstore: close: %w", err)
	}
	return nil
}

const idPrefix = "evt_"

// entryID turns an event ID back into its stream entry ID.
func entryID(id string) (string, bool) {
	rest, ok := strings.CutPrefix(id, idPrefix)
	if !ok {
		return "", false
	}
	if _, _, ok := parseEntryID(rest); !ok {
		return "", false
	}
	return rest, true
}

// parseEntryID splits a stream entry ID "ms-seq".
func parseEntryID(id string) (ms, seq uint64, ok bool) {
	a, c, found := strings.Cut(id, "-")
	if !found {
		return 0, 0, false
	}
	ms, err1 := strconv.ParseUint(a, 10, 64)
	seq, err2 := strconv.ParseUint(c, 10, 64)
	return ms, seq, err1 == nil && err2 == nil
}

// Subscribe implements eventstore.Backend.
func (b *Backend) Subscribe(ctx context.Context, sub eventstore.Subscription) (eventstore.Subscriber, error) {
	if err := sub.Validate(); err != nil {
		return nil, err
	}
	if b.ctx.Err() != nil {
		return nil, eventstore.ErrClosed
	}
	names := dedupe(sub.Names)
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = b.streamKey(n)
	}
	sub.Names = names
	s := &subscriber{b: b, sub: sub, keys: keys}

	if sub.Delivery == events.Unicast {
		start := "$"
		if sub.Replay {
			start = "0"
		}
		for _, k := range keys {
			err := b.rdb.XGroupCreateMkStream(ctx, k, sub.Group, start).Err()
			if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
				return nil, fmt.Errorf("redisstore: create group %s: %w", sub.Group, err)
			}
		}
	}
	// The last entry of every name, read in one MULTI: the start of a
	// broadcast without Replay, the end of a snapshot without Follow.
	var last []string
	if sub.Delivery == events.Broadcast || !sub.Follow {
		var err error
		if last, err = b.lastIDs(ctx, keys); err != nil {
			return nil, err
		}
	}
	s.cursors = make([]string, len(keys))
	s.ends = make([]string, len(keys))
	s.queues = make([][]entry, len(keys))
	s.full = make([]bool, len(keys))
	s.finished = make([]bool, len(keys))
	for i := range keys {
		s.cursors[i] = "0-0"
		if sub.Delivery == events.Broadcast && !sub.Replay {
			s.cursors[i] = last[i]
		}
		s.ends[i] = "+"
		if !sub.Follow {
			s.ends[i] = last[i]
			s.finished[i] = last[i] == "0-0" || !idLess(s.cursors[i], last[i])
		}
	}
	s.r = b.reads.NewReader(b.ctx, s.read)
	return s, nil
}

// lastIDs returns the ID of the last entry of every key ("0-0" when empty),
// read atomically.
func (b *Backend) lastIDs(ctx context.Context, keys []string) ([]string, error) {
	cmds := make([]*redis.XMessageSliceCmd, len(keys))
	_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.XRevRangeN(ctx, k, "+", "-", 1)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redisstore: read stream ends: %w", err)
	}
	out := make([]string, len(keys))
	for i, c := range cmds {
		out[i] = "0-0"
		if msgs := c.Val(); len(msgs) > 0 {
			out[i] = msgs[0].ID
		}
	}
	return out, nil
}

func dedupe(names []string) []string {
	out := make([]string, 0, len(names))
	seen := map[string]bool{}
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

var _ eventstore.Backend = (*Backend)(nil)
