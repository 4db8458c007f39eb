// Package backends opens an eventstore backend by name from configuration.
//
// It imports internal/eventstore, its three backends and internal/busconfig.
package backends

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/internal/eventstore/pgstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/redisstore"
)

// Environment variables every backend reads, besides its own.
const (
	// EnvGroupIdleTTL is how long a unicast group without subscriptions
	// is kept (a Go duration; eventstore.DefaultGroupIdleTTL when unset).
	EnvGroupIdleTTL = "BUS_EVENTS_GROUP_IDLE_TTL"
	// EnvMemoryRetention is how many events per name the memory backend
	// keeps (memory.DefaultRetention when unset).
	EnvMemoryRetention = "BUS_EVENTS_MEMORY_RETENTION"
	// EnvMemoryMaxBytes is how many bytes of events the memory backend
	// keeps in all (memory.DefaultRetentionBytes when unset).
	EnvMemoryMaxBytes = "BUS_EVENTS_MEMORY_MAX_BYTES"
)

// Names lists the backends Open knows.
func Names() []string { return []string{"memory", "redis", "postgres"} }

// Open returns the backend called name, configured from env
// (BUS_EVENTS_GROUP_IDLE_TTL; BUS_EVENTS_MEMORY_* for memory,
// BUS_EVENTS_REDIS_* for redis, BUS_EVENTS_POSTGRES_DSN for postgres).
func Open(ctx context.Context, name string, env busconfig.Env) (eventstore.Backend, error) {
	ttl, err := positive(env, EnvGroupIdleTTL, time.ParseDuration)
	if err != nil {
		return nil, err
	}
	switch name {
	case "", "memory":
		retention, err := positive(env, EnvMemoryRetention, strconv.Atoi)
		if err != nil {
			return nil, err
		}
		maxBytes, err := positive(env, EnvMemoryMaxBytes, func(v string) (int64, error) { return strconv.ParseInt(v, 10, 64) })
		if err != nil {
			return nil, err
		}
		return memory.New(memory.Options{Retention: retention, RetentionBytes: maxBytes, GroupIdleTTL: ttl}), nil
	case "redis":
		cfg, err := redisstore.FromEnv(env)
		if err != nil {
			return nil, err
		}
		cfg.GroupIdleTTL = ttl
		b, err := redisstore.Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return b, nil
	case "postgres":
		cfg, err := pgstore.FromEnv(env)
		if err != nil {
			return nil, err
		}
		cfg.GroupIdleTTL = ttl
		b, err := pgstore.Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return b, nil
	default:
		return nil, fmt.Errorf("unknown events backend %q (want memory, redis or postgres)", name)
	}
}

// positive parses the variable key with parse; unset or empty gives the
// zero value (the backend's default), anything but a positive value an
// error.
func positive[T int | int64 | time.Duration](env busconfig.Env, key string, parse func(string) (T, error)) (T, error) {
	v := strings.TrimSpace(env.Getenv(key))
	if v == "" {
		return 0, nil
	}
	n, err := parse(v)
	if err != nil || n <= 0 {
		var zero T
		return zero, fmt.Errorf("%s=%q: want a positive %s", key, v, kind(zero))
	}
	return n, nil
}

func kind(v any) string {
	if _, ok := v.(time.Duration); ok {
		return "duration such as 24h"
	}
	return "integer"
}
