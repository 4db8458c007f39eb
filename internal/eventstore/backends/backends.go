// Package backends opens an eventstore backend by name from configuration.
//
// It imports internal/eventstore, its three backends and internal/busconfig.
package backends

import (
	"context"
	"fmt"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/internal/eventstore/pgstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/redisstore"
)

// Names lists the backends Open knows.
func Names() []string { return []string{"memory", "redis", "postgres"} }

// Open returns the backend called name, configured from env
// (BUS_EVENTS_REDIS_* for redis, BUS_EVENTS_POSTGRES_DSN for postgres).
func Open(ctx context.Context, name string, env busconfig.Env) (eventstore.Backend, error) {
	switch name {
	case "", "memory":
		return memory.New(memory.Options{}), nil
	case "redis":
		cfg, err := redisstore.FromEnv(env)
		if err != nil {
			return nil, err
		}
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
		b, err := pgstore.Open(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return b, nil
	default:
		return nil, fmt.Errorf("unknown events backend %q (want memory, redis or postgres)", name)
	}
}
