package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// claimSource is the Lua script that hands a unicast subscription its
// group's next entry. KEYS are the subscription's streams; ARGV are group,
// consumer, "1" for NOACK, the visibility in milliseconds, then the last
// entry ID each stream may hand out ("+" when following). In acknowledged
// mode the delivery's deadline (now + the holder's visibility) is recorded
// in the stream's deadline hash, so only that deadline — not another
// consumer's visibility — decides when it may be handed out again.
//
// For every stream it looks up the group's last-delivered-id and the entry
// after it, picks the earliest of those (by entry time, then CreatedAt) and
// XREADGROUPs that one stream, so exactly one entry is claimed. Replies:
// {1, streamIndex, entryID, fields} for a claimed entry; {0, lastID...}
// with every stream's last entry ID when nothing is available (to block
// on); {-1, streamIndex} when a stream has lost the group.
const claimSource = `
local group, consumer, noack = ARGV[1], ARGV[2], ARGV[3]
local best, bestMs, bestT, bestSeq
for i = 1, #KEYS do
  local last
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[i])
  if ok then
    for _, g in ipairs(groups) do
      local name, ldi
      for j = 1, #g, 2 do
        if g[j] == 'name' then name = g[j + 1]
        elseif g[j] == 'last-delivered-id' then ldi = g[j + 1] end
      end
      if name == group then last = ldi break end
    end
  end
  if not last then return {-1, i} end
  local r = redis.call('XRANGE', KEYS[i], '(' .. last, ARGV[4 + i], 'COUNT', 1)
  if #r > 0 then
    local id = r[1][1]
    local dash = string.find(id, '-', 1, true)
    local ms = tonumber(string.sub(id, 1, dash - 1))
    local seq = tonumber(string.sub(id, dash + 1))
    local t = ''
    local f = r[1][2]
    for j = 1, #f, 2 do
      if f[j] == 't' then t = f[j + 1] break end
    end
    local earlier
    if not best then earlier = true
    elseif ms ~= bestMs then earlier = ms < bestMs
    elseif #t ~= #bestT then earlier = #t < #bestT
    elseif t ~= bestT then earlier = t < bestT
    else earlier = seq < bestSeq end
    if earlier then best, bestMs, bestT, bestSeq = i, ms, t, seq end
  end
end
if best then
  local r
  if noack == '1' then
    r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'NOACK', 'STREAMS', KEYS[best], '>')
  else
    r = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', 1, 'STREAMS', KEYS[best], '>')
  end
  local m = r[1][2][1]
  if noack ~= '1' then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    redis.call('HSET', KEYS[best] .. ':deadlines:' .. group, m[1], now + tonumber(ARGV[4]))
  end
  return {1, best, m[1], m[2]}
end
local out = {0}
for i = 1, #KEYS do
  local r = redis.call('XREVRANGE', KEYS[i], '+', '-', 'COUNT', 1)
  if #r > 0 then out[#out + 1] = r[1][1] else out[#out + 1] = '0-0' end
end
return out
`

// reclaimSource is the Lua script that takes over one expired delivery of
// a group on one stream. KEYS[1] is the stream; ARGV are group, consumer,
// the new holder's visibility in milliseconds and how many of the oldest
// pending deliveries to look at. A delivery is expired when the deadline its
// holder recorded has passed (deliveries without a recorded deadline fall
// back to having been idle for the visibility). Replies {1, entryID,
// fields, deliveries} or {0}; deliveries counts this one.
const reclaimSource = `
local group, consumer, vis = ARGV[1], ARGV[2], tonumber(ARGV[3])
local dkey = KEYS[1] .. ':deadlines:' .. group
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pending = redis.call('XPENDING', KEYS[1], group, '-', '+', tonumber(ARGV[4]))
for _, p in ipairs(pending) do
  local id, idle, count = p[1], tonumber(p[3]), tonumber(p[4])
  local dl = redis.call('HGET', dkey, id)
  local expired
  if dl then expired = tonumber(dl) <= now else expired = idle >= vis end
  if expired then
    local c = redis.call('XCLAIM', KEYS[1], group, consumer, 0, id)
    if #c > 0 and c[1] and c[1][2] then
      redis.call('HSET', dkey, id, now + vis)
      return {1, c[1][1], c[1][2], count + 1}
    end
    -- trimmed away while pending: nothing to hand out any more
    redis.call('XACK', KEYS[1], group, id)
    redis.call('HDEL', dkey, id)
  end
end
return {0}
`

// rangeSource reads the next entries of several streams without
// blocking, stopping at a byte budget. KEYS are the streams; ARGV are the
// most entries per stream, the budget in bytes, then for every stream the
// ID after which to read and the last ID to read ("+" for no limit).
// Every stream with entries left gives at least one, so a merged order can
// always make progress; after that, entries are taken while the field
// bytes read stay within the budget. Replies, per stream, {more, entries}:
// more is 1 when entries may be left up to the limit.
const rangeSource = `
local count, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
local used = 0
local out = {}
for i = 1, #KEYS do
  local cursor, upto = '(' .. ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  local got, more = {}, false
  while true do
    local want = math.min(16, count - #got)
    local r = redis.call('XRANGE', KEYS[i], cursor, upto, 'COUNT', want)
    for _, m in ipairs(r) do
      local size = 0
      for j = 2, #m[2], 2 do size = size + #m[2][j] end
      if #got > 0 and used + size > budget then more = true break end
      used = used + size
      got[#got + 1] = m
      cursor = '(' .. m[1]
    end
    if more or #r < want then break end
    if #got >= count then more = true break end
  end
  out[i] = {more and 1 or 0, got}
end
return out
`

// reclaimScan is how many of the oldest pending deliveries of a stream one
// reclaim looks at.
const reclaimScan = 128

// entry is one decoded stream entry of the subscription's name index name.
type entry struct {
	name    int
	ms, seq uint64
	created int64 // CreatedAt in Unix nanoseconds
	env     events.Envelope
}

// before orders entries of different names: by entry time, then by
// CreatedAt (same millisecond), then by sequence and name.
func (e entry) before(o entry) bool {
	switch {
	case e.ms != o.ms:
		return e.ms < o.ms
	case e.created != o.created:
		return e.created < o.created
	case e.seq != o.seq:
		return e.seq < o.seq
	}
	return e.name < o.name
}

type subscriber struct {
	b    *Backend
	sub  eventstore.Subscription
	keys []string
	r    *eventstore.Reader

	fields []string // unicast: the registry fields of its groups

	// Owned by the running read (one at a time; the next one starts after
	// Next received the previous result).
	cursors  []string  // broadcast: last entry read per name
	ends     []string  // last entry of the snapshot per name, "+" when following
	queues   [][]entry // broadcast: entries read but not released yet
	more     []bool    // broadcast: the name may have entries after its queue
	finished []bool    // broadcast snapshot: nothing left to read of the name
	nextScan time.Time // ack: when to look for expired deliveries again

	closeOnce sync.Once
}

// Close implements eventstore.Subscriber. A read in flight ends within the
// backend's Block; pending acknowledged-mode deliveries Next returned stay
// pending, those read ahead are released.
func (s *subscriber) Close() error {
	s.closeOnce.Do(func() {
		s.r.Close()
		s.b.groups.Track(s.fields, -1)
	})
	return nil
}

// Next implements eventstore.Subscriber. Reads run on a goroutine of their
// own, so when ctx ends first the read goes on and its result waits for
// the next call: nothing read is dropped.
func (s *subscriber) Next(ctx context.Context) (events.Envelope, error) {
	return s.r.Next(ctx)
}

func (s *subscriber) read(ctx context.Context) eventstore.ReadResult {
	if s.sub.Delivery == events.Broadcast {
		return s.readBroadcast(ctx)
	}
	return s.readUnicast(ctx)
}

// readBroadcast reads, within a byte budget, the unfinished names whose
// queue is empty, and releases the entries whose place in the merged order
// is certain: a name that may have more entries (more) must have one
// queued before other names' entries can be compared with it. When
// nothing is left, a following subscription waits for one new entry per
// name with a blocking XREAD.
func (s *subscriber) readBroadcast(ctx context.Context) eventstore.ReadResult {
	waited := false
	for {
		if out := s.release(); len(out) > 0 {
			return eventstore.ReadResult{Envs: out}
		}
		var idx []int
		queued := false
		for i := range s.keys {
			switch {
			case len(s.queues[i]) > 0:
				queued = true
			case !s.finished[i]:
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			if queued { // cannot happen: release would have released
				return eventstore.ReadResult{Err: errors.New("redisstore: read: merge is stuck")}
			}
			return eventstore.ReadResult{End: true}
		}
		n, err := s.rangeRead(ctx, idx)
		if err != nil {
			return eventstore.ReadResult{Err: err}
		}
		if n > 0 || queued || !s.sub.Follow {
			continue
		}
		if waited {
			return eventstore.ReadResult{} // Next calls again
		}
		waited = true
		if err := s.waitBroadcast(ctx, idx); err != nil {
			return eventstore.ReadResult{Err: err}
		}
	}
}

// rangeRead reads the names idx with the range script and queues what it
// returns; it reports how many entries it queued.
func (s *subscriber) rangeRead(ctx context.Context, idx []int) (int, error) {
	keys := make([]string, len(idx))
	args := make([]any, 0, 2+2*len(idx))
	args = append(args, broadcastBatch, eventstore.ReadBudget)
	for j, i := range idx {
		keys[j] = s.keys[i]
		args = append(args, s.cursors[i], s.ends[i])
	}
	res, err := s.b.scripts.rangeRead.Run(ctx, s.b.rdb, keys, args...).Slice()
	if err != nil {
		return 0, fmt.Errorf("redisstore: read: %w", err)
	}
	if len(res) != len(idx) {
		return 0, fmt.Errorf("redisstore: read: unexpected reply of %d streams for %d", len(res), len(idx))
	}
	total := 0
	for j, i := range idx {
		part, _ := res[j].([]any)
		if len(part) != 2 {
			return 0, fmt.Errorf("redisstore: read: unexpected reply %v", res[j])
		}
		more, _ := part[0].(int64)
		msgs, _ := part[1].([]any)
		for _, m := range msgs {
			pair, _ := m.([]any)
			if len(pair) != 2 {
				return 0, fmt.Errorf("redisstore: read: unexpected entry %v", m)
			}
			id, _ := pair[0].(string)
			e, err := s.decode(i, id, flatFields(pair[1]))
			if err != nil {
				return 0, err
			}
			s.cursors[i] = id
			s.queues[i] = append(s.queues[i], e)
			total++
		}
		s.more[i] = more == 1
		if !s.sub.Follow && !s.more[i] {
			s.finished[i] = true
		}
	}
	return total, nil
}

// waitBroadcast blocks up to Block for a new entry of the names idx and
// queues at most one entry per name.
func (s *subscriber) waitBroadcast(ctx context.Context, idx []int) error {
	streams := make([]string, 0, 2*len(idx))
	for _, i := range idx {
		streams = append(streams, s.keys[i])
	}
	for _, i := range idx {
		streams = append(streams, s.cursors[i])
	}
	got, err := s.b.rdb.XRead(ctx, &redis.XReadArgs{Streams: streams, Count: 1, Block: s.b.cfg.Block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("redisstore: wait: %w", err)
	}
	byKey := make(map[string]int, len(idx))
	for _, i := range idx {
		byKey[s.keys[i]] = i
	}
	for _, st := range got {
		i, ok := byKey[st.Stream]
		if !ok {
			continue
		}
		for _, m := range st.Messages {
			e, err := s.decode(i, m.ID, m.Values)
			if err != nil {
				return err
			}
			s.cursors[i] = m.ID
			s.queues[i] = append(s.queues[i], e)
			s.more[i] = true // COUNT 1: there may be more
		}
	}
	return nil
}

// release takes queued entries in merged order while that order is certain.
func (s *subscriber) release() []events.Envelope {
	var out []events.Envelope
	for {
		best := -1
		for i, q := range s.queues {
			if len(q) == 0 {
				if s.more[i] {
					return out
				}
				continue
			}
			if best < 0 || q[0].before(s.queues[best][0]) {
				best = i
			}
		}
		if best < 0 {
			return out
		}
		out = append(out, s.queues[best][0].env)
		s.queues[best][0] = entry{} // do not keep its payload alive
		s.queues[best] = s.queues[best][1:]
		if len(s.queues[best]) == 0 {
			s.queues[best] = nil
		}
	}
}

// readUnicast hands out an expired pending delivery (Ack), else claims the
// group's next entry, else waits up to Block for a new entry.
func (s *subscriber) readUnicast(ctx context.Context) eventstore.ReadResult {
	waited := false
	for {
		if ctx.Err() != nil {
			return eventstore.ReadResult{}
		}
		e, lastIDs, err := s.claimOnce(ctx)
		if err != nil {
			return eventstore.ReadResult{Err: err}
		}
		if e != nil {
			return eventstore.ReadResult{Envs: []events.Envelope{e.env}}
		}
		if !s.sub.Follow {
			return eventstore.ReadResult{End: true}
		}
		if waited {
			return eventstore.ReadResult{}
		}
		block := s.b.cfg.Block
		if s.sub.Ack {
			block = min(block, max(time.Until(s.nextScan), time.Millisecond))
		}
		// Wait without claiming: XREAD returns once any stream grows.
		err = s.b.rdb.XRead(ctx, &redis.XReadArgs{
			Streams: append(append([]string(nil), s.keys...), lastIDs...), Count: 1, Block: block,
		}).Err()
		if errors.Is(err, redis.Nil) {
			return eventstore.ReadResult{}
		}
		if err != nil {
			return eventstore.ReadResult{Err: fmt.Errorf("redisstore: wait: %w", err)}
		}
		waited = true
	}
}

// claimOnce takes an expired pending delivery (Ack), else the group's next
// entry. Its scripts run to completion even when ctx ends meanwhile (the
// subscription closing): what they take is released, not lost. Without an
// entry it returns the last entry ID of every stream.
func (s *subscriber) claimOnce(ctx context.Context) (*entry, []string, error) {
	cctx, cancel := eventstore.ClaimContext(ctx)
	defer cancel()
	if s.sub.Ack && !time.Now().Before(s.nextScan) {
		e, err := s.autoclaim(cctx)
		if e != nil || err != nil {
			return e, nil, err
		}
	}
	return s.claim(cctx)
}

// claim runs the claim script. It returns the claimed entry, or the last
// entry ID of every stream when nothing was available.
func (s *subscriber) claim(ctx context.Context) (*entry, []string, error) {
	noack := "0"
	if !s.sub.Ack {
		noack = "1"
	}
	args := make([]any, 0, 4+len(s.keys))
	args = append(args, s.sub.Group, s.sub.Consumer, noack, s.sub.EffectiveVisibility().Milliseconds())
	for _, e := range s.ends {
		args = append(args, e)
	}
	for attempt := 0; ; attempt++ {
		res, err := s.b.scripts.claim.Run(ctx, s.b.rdb, s.keys, args...).Slice()
		if err != nil {
			return nil, nil, fmt.Errorf("redisstore: claim: %w", err)
		}
		status, _ := res[0].(int64)
		switch {
		case status == 1 && len(res) == 4:
			i, _ := res[1].(int64)
			id, _ := res[2].(string)
			e, err := s.decode(int(i)-1, id, flatFields(res[3]))
			if err != nil {
				return nil, nil, err
			}
			if s.sub.Ack {
				e.env.Deliveries = 1
			}
			return &e, nil, nil
		case status == 0 && len(res) == len(s.keys)+1:
			ids := make([]string, len(s.keys))
			for j := range ids {
				ids[j], _ = res[j+1].(string)
			}
			return nil, ids, nil
		case status == -1 && len(res) == 2 && attempt == 0:
			// The stream lost the group (deleted or flushed): recreate it
			// at the start of whatever the stream holds now.
			i, _ := res[1].(int64)
			if i < 1 || int(i) > len(s.keys) {
				return nil, nil, fmt.Errorf("redisstore: claim: bad stream index %d", i)
			}
			err := s.b.rdb.XGroupCreateMkStream(ctx, s.keys[i-1], s.sub.Group, "0").Err()
			if err != nil && !strings.HasPrefix(err.Error(), "BUSYGROUP") {
				return nil, nil, fmt.Errorf("redisstore: recreate group %s: %w", s.sub.Group, err)
			}
		default:
			return nil, nil, fmt.Errorf("redisstore: claim: unexpected reply %v", res)
		}
	}
}

// autoclaim takes over one delivery of the group whose holder's deadline
// has passed.
func (s *subscriber) autoclaim(ctx context.Context) (*entry, error) {
	vis := s.sub.EffectiveVisibility()
	for i, k := range s.keys {
		res, err := s.b.scripts.reclaim.Run(ctx, s.b.rdb, []string{k}, s.sub.Group, s.sub.Consumer, vis.Milliseconds(), reclaimScan).Slice()
		if err != nil {
			return nil, fmt.Errorf("redisstore: claim expired deliveries: %w", err)
		}
		if status, _ := res[0].(int64); status != 1 || len(res) != 4 {
			continue
		}
		id, _ := res[1].(string)
		e, err := s.decode(i, id, flatFields(res[2]))
		if err != nil {
			return nil, err
		}
		deliveries, _ := res[3].(int64)
		e.env.Deliveries = int(deliveries)
		s.nextScan = time.Time{} // there may be more: look again next time
		return &e, nil
	}
	s.nextScan = time.Now().Add(min(max(vis/4, 5*time.Millisecond), s.b.cfg.Block))
	return nil, nil
}

// flatFields turns a Lua reply's [k1, v1, k2, v2, ...] into a map.
func flatFields(v any) map[string]any {
	flat, _ := v.([]any)
	fields := make(map[string]any, len(flat)/2)
	for j := 0; j+1 < len(flat); j += 2 {
		k, _ := flat[j].(string)
		fields[k] = flat[j+1]
	}
	return fields
}

// decode turns a stream entry of name index i into an entry.
func (s *subscriber) decode(i int, id string, values map[string]any) (entry, error) {
	ms, seq, ok := parseEntryID(id)
	if !ok {
		return entry{}, fmt.Errorf("redisstore: malformed entry id %q", id)
	}
	str := func(k string) string { v, _ := values[k].(string); return v }
	created, err := strconv.ParseInt(str("t"), 10, 64)
	if err != nil {
		created = time.UnixMilli(int64(ms)).UnixNano()
	}
	env := events.Envelope{
		ID:            idPrefix + id,
		Name:          s.sub.Names[i],
		CorrelationID: str("c"),
		IdentityID:    str("i"),
		IdentityType:  str("k"),
		CreatedAt:     time.Unix(0, created).UTC(),
	}
	if p := str("p"); p != "" {
		env.Payload = json.RawMessage(p)
	}
	return entry{name: i, ms: ms, seq: seq, created: created, env: env}, nil
}

// idLess reports whether stream entry ID a is before b.
func idLess(a, b string) bool {
	am, as, _ := parseEntryID(a)
	bm, bs, _ := parseEntryID(b)
	return am < bm || (am == bm && as < bs)
}
