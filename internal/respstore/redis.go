package respstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a Store on Redis, shared by every worker that uses it.
type Redis struct {
	client *redis.Client
	prefix string
}

// RedisConfig configures a Redis store.
type RedisConfig struct {
	Addr     string
	Password string
	// Prefix of every key (e.g. "bus:events:"); records live under
	// <prefix>responses:<identity hash>:<id>.
	Prefix string
}

// OpenRedis connects to Redis and checks it answers.
func OpenRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	c := redis.NewClient(&redis.Options{Addr: cfg.Addr, Password: cfg.Password})
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("respstore: redis at %s: %w", cfg.Addr, err)
	}
	return &Redis{client: c, prefix: cfg.Prefix}, nil
}

func (s *Redis) key(identity, id string) string {
	sum := sha256.Sum256([]byte(identity))
	return s.prefix + "responses:" + hex.EncodeToString(sum[:16]) + ":" + id
}

// Put implements Store.
func (s *Redis) Put(ctx context.Context, r Record, ttl time.Duration) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("respstore: encode: %w", err)
	}
	if err := s.client.Set(ctx, s.key(r.Identity, r.ID), b, ttl).Err(); err != nil {
		return fmt.Errorf("respstore: redis set: %w", err)
	}
	return nil
}

// Get implements Store.
func (s *Redis) Get(ctx context.Context, identity, id string) (Record, error) {
	b, err := s.client.Get(ctx, s.key(identity, id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return Record{}, ErrNotFound
	}
	if err != nil {
		return Record{}, fmt.Errorf("respstore: redis get: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, fmt.Errorf("respstore: decode: %w", err)
	}
	if r.Identity != identity {
		return Record{}, ErrNotFound
	}
	return r, nil
}

// Delete implements Store.
func (s *Redis) Delete(ctx context.Context, identity, id string) error {
	n, err := s.client.Del(ctx, s.key(identity, id)).Result()
	if err != nil {
		return fmt.Errorf("respstore: redis del: %w", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Close implements Store.
func (s *Redis) Close() error { return s.client.Close() }
