// Package redisstore is the Redis Streams eventstore backend: durable,
// shared by every Events API replica that points at the same Redis.
//
// Layout: one stream per event name, key Prefix+"stream:"+name. Publish is
// one script: XADD (approximate MAXLEN trimming keeps about MaxLen entries
// per name) and the number of the stream's consumer groups, in one round
// trip. The event ID is "evt_" + the stream entry ID, so Ack and
// redelivery find the entry from the ID and the name. Entry fields: c
// (correlation id), i (identity id), k (identity type), t (CreatedAt, Unix
// nanoseconds), p (payload).
//
// Broadcast subscriptions read from their own cursors with a script that
// stops at about eventstore.ReadBudget bytes (at least one entry per name),
// and wait for new entries with a blocking XREAD of one entry per name, so
// a reader holds little of a large history at a time. Unicast groups are
// Redis consumer groups on each name's stream (created at "$", or "0" with
// Replay). A small Lua script claims the group's next entry: it compares the
// next undelivered entry of every subscribed name and XREADGROUPs only the
// earliest one, so a multi-name subscription keeps publish order and never
// holds more than the entry it hands out. Without Ack the read uses NOACK
// (at most once); with Ack the entry stays in the group's pending list until
// XACK, and entries idle for longer than the subscription's Visibility are
// taken over (XCLAIM, which counts the delivery). An acknowledgement
// XACKs only the entries the group's pending list assigns to the
// acknowledging consumer. A release moves the entries the releasing
// consumer holds to a placeholder consumer (eventstore.Unheld) with the
// delivery count one less and the recorded deadline 0, so the next reclaim
// takes them and counts that delivery again.
//
// Group expiry: the hash Prefix+"groups" maps "<name> <group>" to when the
// group last had an open subscription (Redis time, milliseconds). Every
// backend refreshes the groups of its open subscriptions and deletes the
// groups (XGROUP DESTROY, with their pending lists) that nobody refreshed
// for GroupIdleTTL, every eventstore.GroupSweepInterval.
//
// Reads run on a goroutine owned by the subscription, with a bounded BLOCK,
// so a cancelled Next never drops a reply: what arrives after Next gave up
// is kept for the next call. Without Ack, an entry claimed by a read that
// completes only after its subscription was closed is lost (at most once);
// with Ack it is released when the subscription closes (or, when that
// fails, redelivered after its visibility timeout).
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
	"log/slog"
	"strconv"
	"strings"
	"sync"
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

// broadcastBatch is how many entries per name one broadcast read fetches
// at most.
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
	// GroupIdleTTL is how long a unicast group without an open
	// subscription on any replica is kept (eventstore.DefaultGroupIdleTTL
	// when 0).
	GroupIdleTTL time.Duration
	// Logger receives background problems (slog.Default() when nil).
	Logger *slog.Logger
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
	c.GroupIdleTTL = eventstore.EffectiveGroupIdleTTL(c.GroupIdleTTL)
	if c.Logger == nil {
		c.Logger = slog.Default()
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
	cfg     Config
	rdb     *redis.Client
	scripts scripts

	ctx    context.Context // ends when the backend closes
	cancel context.CancelFunc

	reads   eventstore.ReadGroup // the subscriptions' reads in flight
	janitor sync.WaitGroup       // the group refresh and expiry loop

	groups eventstore.OpenGroups[string] // registry fields of the open subscriptions' groups
}

// scripts are the backend's Lua scripts.
type scripts struct {
	publish, ack, release, claim, reclaim, rangeRead, refresh, sweep *redis.Script
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
	b := &Backend{cfg: cfg, rdb: rdb, ctx: bctx, cancel: cancel, scripts: scripts{
		publish: redis.NewScript(publishSource), ack: redis.NewScript(ackSource), release: redis.NewScript(releaseSource),
		claim: redis.NewScript(claimSource), reclaim: redis.NewScript(reclaimSource),
		rangeRead: redis.NewScript(rangeSource), refresh: redis.NewScript(refreshSource), sweep: redis.NewScript(sweepSource),
	}}
	b.janitor.Go(func() { b.groups.Loop(b.ctx, b.cfg.GroupIdleTTL, b.cfg.Logger, "redisstore", b.sweepGroups) })
	return b, nil
}

// String describes the backend for logs.
func (b *Backend) String() string { return b.cfg.String() }

func (b *Backend) streamKey(name string) string { return b.cfg.Prefix + "stream:" + name }

func (b *Backend) registryKey() string { return b.cfg.Prefix + "groups" }

// registryField names a group in the registry hash. Neither part can
// contain a space.
func registryField(name, group string) string { return name + " " + group }

// publishSource appends an entry and counts the stream's groups. KEYS[1]
// is the stream; ARGV are MaxLen, then the entry's fields and values.
const publishSource = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 2))
return {id, #redis.call('XINFO', 'GROUPS', KEYS[1])}
`

// Publish implements eventstore.Backend with one script: XADD, and the
// number of groups of the stream.
func (b *Backend) Publish(ctx context.Context, ev events.Envelope) (events.Envelope, int, error) {
	if err := events.ValidateName(ev.Name); err != nil {
		return events.Envelope{}, 0, fmt.Errorf("redisstore: %w", err)
	}
	if b.ctx.Err() != nil {
		return events.Envelope{}, 0, eventstore.ErrClosed
	}
	created := time.Unix(0, time.Now().UnixNano()).UTC()
	res, err := b.scripts.publish.Run(ctx, b.rdb, []string{b.streamKey(ev.Name)},
		b.cfg.MaxLen,
		"c", ev.CorrelationID,
		"i", ev.IdentityID,
		"k", ev.IdentityType,
		"t", strconv.FormatInt(created.UnixNano(), 10),
		"p", string(ev.Payload),
	).Slice()
	if err != nil {
		return events.Envelope{}, 0, fmt.Errorf("redisstore: publish %s: %w", ev.Name, err)
	}
	id, _ := res[0].(string)
	groups, _ := res[1].(int64)
	if id == "" {
		return events.Envelope{}, 0, fmt.Errorf("redisstore: publish %s: unexpected reply %v", ev.Name, res)
	}
	ev.ID = idPrefix + id
	ev.CreatedAt = created
	ev.Deliveries = 0
	return ev, int(groups), nil
}

// ackSource acknowledges the entries of ARGV[3:] that the group's pending
// list assigns to consumer ARGV[2]; KEYS[1] is the stream, ARGV[1] the
// group. Replies how many were acknowledged.
const ackSource = `
local group, consumer = ARGV[1], ARGV[2]
local dkey = KEYS[1] .. ':deadlines:' .. group
local n = 0
for i = 3, #ARGV do
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], group, ARGV[i], ARGV[i], 1, consumer)
  if not ok then return 0 end
  if #p > 0 then
    n = n + redis.call('XACK', KEYS[1], group, ARGV[i])
    redis.call('HDEL', dkey, ARGV[i])
  end
end
return n
`

// Ack implements eventstore.Backend: XACK of the entries consumer holds.
func (b *Backend) Ack(ctx context.Context, name, group, consumer string, ids []string) (int, error) {
	if err := events.ValidateName(name); err != nil {
		return 0, fmt.Errorf("redisstore: %w", err)
	}
	if b.ctx.Err() != nil {
		return 0, eventstore.ErrClosed
	}
	args := []any{group, consumer}
	for _, id := range ids {
		if e, ok := entryID(id); ok {
			args = append(args, e)
		}
	}
	if len(args) == 2 {
		return 0, nil
	}
	n, err := b.scripts.ack.Run(ctx, b.rdb, []string{b.streamKey(name)}, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("redisstore: ack %s/%s: %w", name, group, err)
	}
	return n, nil
}

// releaseSource gives back the entries of ARGV[4:] that the group's pending
// list assigns to consumer ARGV[2]: each is moved to the placeholder holder
// ARGV[3] (XCLAIM ... JUSTID, with RETRYCOUNT one less, so the release does
// not count and the next holder's XCLAIM counts the same delivery again)
// and its deadline set to 0, so the next reclaim of any consumer takes it.
// KEYS[1] is the stream, ARGV[1] the group. Replies how many were released.
const releaseSource = `
local group, consumer, unheld = ARGV[1], ARGV[2], ARGV[3]
local dkey = KEYS[1] .. ':deadlines:' .. group
local n = 0
for i = 4, #ARGV do
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[1], group, ARGV[i], ARGV[i], 1, consumer)
  if not ok then return 0 end
  if #p > 0 then
    local count = tonumber(p[1][4])
    redis.call('XCLAIM', KEYS[1], group, unheld, 0, ARGV[i], 'RETRYCOUNT', math.max(count - 1, 0), 'JUSTID')
    redis.call('HSET', dkey, ARGV[i], 0)
    n = n + 1
  end
end
return n
`

// Release implements eventstore.Backend with one script: the entries
// consumer holds pass to a placeholder holder with their deadline passed.
// Waiting subscriptions of the group take them at their next look for
// expired deliveries (within Block).
func (b *Backend) Release(ctx context.Context, name, group, consumer string, ids []string) (int, error) {
	if err := events.ValidateName(name); err != nil {
		return 0, fmt.Errorf("redisstore: %w", err)
	}
	if b.ctx.Err() != nil {
		return 0, eventstore.ErrClosed
	}
	args := []any{group, consumer, eventstore.Unheld}
	for _, id := range ids {
		if e, ok := entryID(id); ok {
			args = append(args, e)
		}
	}
	if len(args) == 3 {
		return 0, nil
	}
	n, err := b.scripts.release.Run(ctx, b.rdb, []string{b.streamKey(name)}, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("redisstore: release %s/%s: %w", name, group, err)
	}
	return n, nil
}

// Close ends every subscription, waits for their reads and disconnects.
func (b *Backend) Close() error {
	b.cancel()
	if !b.reads.Close() {
		return nil
	}
	b.janitor.Wait()
	if err := b.rdb.Close(); err != nil {
		return fmt.Errorf("redisstore: close: %w", err)
	}
	return nil
}

// refreshSource records, in the registry hash KEYS[1], that the groups
// named by ARGV have an open subscription now (Redis time).
const refreshSource = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], now) end
return #ARGV
`

// sweepSource deletes the groups of the registry hash KEYS[1] not
// refreshed for ARGV[1] milliseconds; ARGV[2] is the stream key prefix.
// Replies how many were deleted.
const sweepSource = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < cutoff then
    local sp = string.find(all[i], ' ', 1, true)
    local stream = ARGV[2] .. string.sub(all[i], 1, sp - 1)
    local group = string.sub(all[i], sp + 1)
    pcall(redis.call, 'XGROUP', 'DESTROY', stream, group)
    redis.call('DEL', stream .. ':deadlines:' .. group)
    redis.call('HDEL', KEYS[1], all[i])
    n = n + 1
  end
end
return n
`

// refresh marks the groups of fields as used now.
func (b *Backend) refresh(ctx context.Context, fields []string) error {
	if len(fields) == 0 {
		return nil
	}
	args := make([]any, len(fields))
	for i, f := range fields {
		args[i] = f
	}
	if err := b.scripts.refresh.Run(ctx, b.rdb, []string{b.registryKey()}, args...).Err(); err != nil {
		return fmt.Errorf("redisstore: refresh groups: %w", err)
	}
	return nil
}

// sweepGroups marks the groups of fields as used now and deletes the
// groups idle for longer than GroupIdleTTL.
func (b *Backend) sweepGroups(ctx context.Context, fields []string) error {
	if err := b.refresh(ctx, fields); err != nil {
		return err
	}
	if err := b.scripts.sweep.Run(ctx, b.rdb, []string{b.registryKey()}, b.cfg.GroupIdleTTL.Milliseconds(), b.cfg.Prefix+"stream:").Err(); err != nil {
		return fmt.Errorf("redisstore: expire groups: %w", err)
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
		// Registered (and refreshed) before the groups are created, so an
		// expiry sweep never deletes a group being subscribed to.
		for _, n := range names {
			s.fields = append(s.fields, registryField(n, sub.Group))
		}
		b.groups.Track(s.fields, 1)
		if err := b.refresh(ctx, s.fields); err != nil {
			b.groups.Track(s.fields, -1)
			return nil, err
		}
		start := "$"
		if sub.Replay {
			start = "0"
		}
		for _, k := range keys {
			err := b.rdb.XGroupCreateMkStream(ctx, k, sub.Group, start).Err()
			if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
				b.groups.Track(s.fields, -1)
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
			b.groups.Track(s.fields, -1)
			return nil, err
		}
	}
	s.cursors = make([]string, len(keys))
	s.ends = make([]string, len(keys))
	s.queues = make([][]entry, len(keys))
	s.more = make([]bool, len(keys))
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
	s.r = b.reads.NewReader(b.ctx, s.read, eventstore.GiveBack(b.ctx, b, "redisstore", sub, b.cfg.Logger))
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
