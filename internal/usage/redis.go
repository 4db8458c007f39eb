package usage

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Ledger on Redis, shared by every front door that uses it.
// Records live in one sorted set per UTC day, <prefix>usage:<day>, scored
// by their time in microseconds; each day's set expires Retention after
// the day ends. A query reads the days of its range and groups in the
// front door.
type Redis struct {
	client    *redis.Client
	prefix    string
	retention time.Duration
}

// RedisConfig configures a Redis ledger.
type RedisConfig struct {
	Addr     string
	Password string
	// Prefix starts every key (e.g. "bus:events:").
	Prefix string
	// Retention bounds the records' age (DefaultRetention when 0).
	Retention time.Duration
}

// redisPage is how many records one read fetches.
const redisPage = 1000

// OpenRedis connects to Redis and checks it answers.
func OpenRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	c := redis.NewClient(&redis.Options{Addr: cfg.Addr, Password: cfg.Password})
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("usage: redis at %s: %w", cfg.Addr, err)
	}
	return &Redis{client: c, prefix: cfg.Prefix, retention: cfg.Retention}, nil
}

func (s *Redis) key(day string) string { return s.prefix + "usage:" + day }

// Append implements Ledger: one pipelined round trip per batch.
func (s *Redis) Append(ctx context.Context, records []Record) error {
	if len(records) == 0 {
		return nil
	}
	pipe := s.client.Pipeline()
	expire := map[string]time.Time{}
	for _, r := range records {
		r = r.Normalize()
		b, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("usage: encode: %w", err)
		}
		day := Day(r.Time)
		pipe.ZAdd(ctx, s.key(day), redis.Z{Score: float64(r.Time.UnixMicro()), Member: b})
		dayStart, _ := time.Parse(time.DateOnly, day)
		expire[day] = dayStart.Add(24*time.Hour + s.retention)
	}
	for day, at := range expire {
		pipe.ExpireAt(ctx, s.key(day), at)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("usage: redis append: %w", err)
	}
	return nil
}

// Query implements Ledger.
func (s *Redis) Query(ctx context.Context, q Query) (Report, error) {
	a := newAggregator(q)
	start, end := q.Start, q.End
	if oldest := time.Now().Add(-s.retention - 24*time.Hour); start.Before(oldest) {
		start = oldest
	}
	if newest := time.Now().Add(24 * time.Hour); end.After(newest) {
		end = newest
	}
	lo := strconv.FormatInt(q.Start.UnixMicro(), 10)
	hi := "(" + strconv.FormatInt(q.End.UnixMicro(), 10)
	for day := start.UTC().Truncate(24 * time.Hour); day.Before(end); day = day.Add(24 * time.Hour) {
		key := s.key(Day(day))
		for offset := int64(0); ; offset += redisPage {
			members, err := s.client.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, Start: lo, Stop: hi, ByScore: true, Offset: offset, Count: redisPage}).Result()
			if err != nil {
				return Report{}, fmt.Errorf("usage: redis read: %w", err)
			}
			for _, m := range members {
				var r Record
				if err := json.Unmarshal([]byte(m), &r); err != nil {
					return Report{}, fmt.Errorf("usage: decode a record of %s: %w", key, err)
				}
				a.add(r)
			}
			if len(members) < redisPage {
				break
			}
		}
	}
	return a.report(), nil
}

// Close implements Ledger.
func (s *Redis) Close() error { return s.client.Close() }
