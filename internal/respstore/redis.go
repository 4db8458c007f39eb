package respstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Store on Redis, shared by every worker that uses it. A record
// is a hash under <prefix>responses2:<identity hash>:<id> with the fields
// rec (the record without its response object), resp (the response
// object), prev (the previous response's id), exp (its expiry in Unix
// milliseconds by the store's clock) and del ("1" once deleted); the key
// expires with it. Chains are walked and extended by server-side scripts,
// one round trip each.
type Redis struct {
	client *redis.Client
	prefix string
	o      options
}

// RedisConfig configures a Redis store.
type RedisConfig struct {
	Addr     string
	Password string
	// Prefix of every key (e.g. "bus:events:").
	Prefix string
}

// OpenRedis connects to Redis and checks it answers.
func OpenRedis(ctx context.Context, cfg RedisConfig, opts ...Option) (*Redis, error) {
	c := redis.NewClient(&redis.Options{Addr: cfg.Addr, Password: cfg.Password})
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("respstore: redis at %s: %w", cfg.Addr, err)
	}
	return &Redis{client: c, prefix: cfg.Prefix, o: newOptions(opts)}, nil
}

// base is the key prefix of identity's records.
func (s *Redis) base(identity string) string {
	sum := sha256.Sum256([]byte(identity))
	return s.prefix + "responses2:" + hex.EncodeToString(sum[:16]) + ":"
}

// putScript stores a record and extends its chain's expiry to its own.
// ARGV: base, id, rec, resp, prev, exp (ms), ttl (ms), max depth.
var putScript = redis.NewScript(`
local base, exp, ttl, maxdepth = ARGV[1], tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local key = base .. ARGV[2]
redis.call('DEL', key)
redis.call('HSET', key, 'rec', ARGV[3], 'resp', ARGV[4], 'prev', ARGV[5], 'exp', ARGV[6], 'del', '0')
redis.call('PEXPIRE', key, ttl)
local p, n = ARGV[5], 0
while p ~= '' and n < maxdepth do
  local k = base .. p
  local f = redis.call('HMGET', k, 'prev', 'exp')
  if not f[2] then break end
  if tonumber(f[2]) < exp then
    redis.call('HSET', k, 'exp', ARGV[6])
    if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
  end
  p = f[1] or ''
  n = n + 1
end
return 1`)

// chainScript returns {"ok", rec...} newest first, {"notfound"},
// {"broken", id} or {"toolong"}. ARGV: base, id, now (ms), max depth,
// max bytes.
var chainScript = redis.NewScript(`
local base, now, maxdepth, maxbytes = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local out, p, bytes = {'ok'}, ARGV[2], 0
while p ~= '' do
  if #out > maxdepth then return {'toolong'} end
  local f = redis.call('HMGET', base .. p, 'rec', 'prev', 'exp', 'del')
  if not f[1] or not f[3] or tonumber(f[3]) <= now or (#out == 1 and f[4] == '1') then
    if #out == 1 then return {'notfound'} end
    return {'broken', p}
  end
  bytes = bytes + #f[1]
  if bytes > maxbytes then return {'toolong'} end
  out[#out + 1] = f[1]
  p = f[2]
end
return out`)

// deleteScript marks a live record deleted and drops its response object.
// ARGV: key, now (ms). Returns 1 when it was deleted.
var deleteScript = redis.NewScript(`
local f = redis.call('HMGET', ARGV[1], 'exp', 'del')
if not f[1] or tonumber(f[1]) <= tonumber(ARGV[2]) or f[2] == '1' then return 0 end
redis.call('HSET', ARGV[1], 'del', '1', 'resp', '')
return 1`)

// Put implements Store.
func (s *Redis) Put(ctx context.Context, r Record, ttl time.Duration) error {
	resp := r.Response
	r.Response = nil
	b, err := encode(r)
	if err != nil {
		return err
	}
	if len(b)+len(resp) > MaxRecordBytes {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(b)+len(resp), MaxRecordBytes)
	}
	exp := s.o.now().Add(ttl).UnixMilli()
	err = putScript.Run(ctx, s.client, nil, s.base(r.Identity), r.ID, b, resp, r.Previous, exp, ttl.Milliseconds(), s.o.maxDepth).Err()
	if err != nil {
		return fmt.Errorf("respstore: redis put: %w", err)
	}
	return nil
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, identity, id string) (Record, error) {
	f, err := s.client.HMGet(ctx, s.base(identity)+id, "rec", "resp", "exp", "del").Result()
	if err != nil {
		return Record{}, fmt.Errorf("respstore: redis get: %w", err)
	}
	rec, _ := f[0].(string)
	resp, _ := f[1].(string)
	expStr, _ := f[2].(string)
	exp, _ := strconv.ParseInt(expStr, 10, 64)
	if rec == "" || exp <= s.o.now().UnixMilli() || f[3] == "1" {
		return Record{}, ErrNotFound
	}
	r, err := s.decode(identity, rec)
	if err != nil {
		return Record{}, err
	}
	r.Response = []byte(resp)
	return r, nil
}

// decode reads a record and checks its owner.
func (s *Redis) decode(identity, rec string) (Record, error) {
	var r Record
	if err := json.Unmarshal([]byte(rec), &r); err != nil {
		return Record{}, fmt.Errorf("respstore: decode: %w", err)
	}
	if r.Identity != identity {
		return Record{}, ErrNotFound
	}
	return r, nil
}

// Chain implements Store.
func (s *Redis) Chain(ctx context.Context, identity, id string) ([]Record, error) {
	out, err := chainScript.Run(ctx, s.client, nil, s.base(identity), id, s.o.now().UnixMilli(), s.o.maxDepth, s.o.maxHistoryBytes).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("respstore: redis chain: %w", err)
	}
	switch {
	case len(out) == 0:
		return nil, errors.New("respstore: redis chain: empty answer")
	case out[0] == "notfound":
		return nil, ErrNotFound
	case out[0] == "broken" && len(out) == 2:
		return nil, broken(id, out[1])
	case out[0] == "toolong":
		return nil, tooLong(s.o)
	case out[0] != "ok":
		return nil, fmt.Errorf("respstore: redis chain: unexpected answer %q", out[0])
	}
	chain := make([]Record, 0, len(out)-1)
	for i, rec := range out[1:] {
		r, err := s.decode(identity, rec)
		if err != nil {
			return nil, err
		}
		if want := id; i > 0 {
			want = chain[i-1].Previous
			if r.ID != want {
				return nil, broken(id, want)
			}
		} else if r.ID != want {
			return nil, ErrNotFound
		}
		chain = append(chain, r)
	}
	return chain, nil
}

// Delete implements Store.
func (s *Redis) Delete(ctx context.Context, identity, id string) error {
	n, err := deleteScript.Run(ctx, s.client, nil, s.base(identity)+id, s.o.now().UnixMilli()).Int()
	if err != nil {
		return fmt.Errorf("respstore: redis delete: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Close implements Store.
func (s *Redis) Close() error { return s.client.Close() }
