package entitlement

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Redis is a Store on Redis, shared by every front door that uses it. A
// counter is a string key, <prefix>limits:<key>, changed with INCRBY and
// expiring at its window's end; an admission is one Lua script, so it is
// atomic across replicas. The keys of one identity share a hash tag, so
// an admission touches one slot on Redis Cluster.
type Redis struct {
	client *redis.Client
	prefix string
}

// RedisConfig configures a Redis store.
type RedisConfig struct {
	Addr     string
	Password string
	// Prefix starts every key (e.g. "bus:events:").
	Prefix string
}

// OpenRedis connects to Redis and checks it answers.
func OpenRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	c := redis.NewClient(&redis.Options{Addr: cfg.Addr, Password: cfg.Password})
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("entitlement: redis at %s: %w", cfg.Addr, err)
	}
	return &Redis{client: c, prefix: cfg.Prefix + "limits:"}, nil
}

// admitScript: KEYS are the counters; ARGV holds limit, cost and expiry
// (Unix seconds) per counter. It returns {refused index (1-based, 0 when
// admitted), value...}.
var admitScript = redis.NewScript(`
local n = #KEYS
local vals = {}
local refused = 0
for i = 1, n do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  vals[i] = v
  local need = tonumber(ARGV[3*i-1])
  if need < 1 then need = 1 end
  if refused == 0 and v + need > tonumber(ARGV[3*i-2]) then refused = i end
end
if refused == 0 then
  for i = 1, n do
    local cost = tonumber(ARGV[3*i-1])
    if cost > 0 then
      vals[i] = redis.call('INCRBY', KEYS[i], cost)
      redis.call('EXPIREAT', KEYS[i], ARGV[3*i])
    end
  end
end
local out = {refused}
for i = 1, n do out[i+1] = vals[i] end
return out
`)

// Admit implements Store.
func (s *Redis) Admit(ctx context.Context, cs []Counter) ([]int64, int, error) {
	keys := make([]string, len(cs))
	args := make([]any, 0, 3*len(cs))
	for i, c := range cs {
		keys[i] = s.prefix + c.Key
		args = append(args, c.Limit, c.Cost, c.Expires.Unix())
	}
	out, err := admitScript.Run(ctx, s.client, keys, args...).Int64Slice()
	if err != nil {
		return nil, 0, fmt.Errorf("entitlement: redis admit: %w", err)
	}
	if len(out) != len(cs)+1 {
		return nil, 0, fmt.Errorf("entitlement: redis admit: %d values for %d counters", len(out)-1, len(cs))
	}
	return out[1:], int(out[0]) - 1, nil
}

// Add implements Store: one pipelined round trip.
func (s *Redis) Add(ctx context.Context, cs []Counter) error {
	pipe := s.client.Pipeline()
	for _, c := range cs {
		pipe.IncrBy(ctx, s.prefix+c.Key, c.Cost)
		pipe.ExpireAt(ctx, s.prefix+c.Key, c.Expires)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("entitlement: redis add: %w", err)
	}
	return nil
}

// Close implements Store.
func (s *Redis) Close() error { return s.client.Close() }
