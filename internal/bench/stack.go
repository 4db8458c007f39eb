package bench

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/turn"
)

// workerGroup is the unicast group of the benchmark's workers.
const workerGroup = "bus-bench"

// stackConfig configures an in-process stack.
type stackConfig struct {
	// backend stores the events (a fresh memory backend when nil); the
	// stack closes it.
	backend eventstore.Backend
	// provider runs the turns in an in-process worker; nil starts no
	// worker (one runs in another process). The stack does not close it.
	provider turn.Provider
	// catalog, when set, is the worker's model catalog (the catalog ids
	// pick the codex provider's mode); without it every request runs in
	// the provider's default mode.
	catalog *catalog.Catalog
	// concurrency is the worker's Concurrency (and so its prefetch).
	concurrency int
	// timeout bounds each request.
	timeout time.Duration
	log     *slog.Logger
}

// startStack starts the whole bus path in this process (package stack):
// the Events API on a loopback port, optionally a worker, and the REST
// front door.
func startStack(ctx context.Context, cfg stackConfig) (*stack.Stack, error) {
	sc := stack.Config{Backend: cfg.backend, Timeout: cfg.timeout, Logger: cfg.log}
	if cfg.provider != nil {
		sc.Worker = &stack.WorkerConfig{
			Executor: &executor.Executor{Provider: cfg.provider, Catalog: cfg.catalog},
			Group:    workerGroup, Consumer: "bench", Concurrency: cfg.concurrency,
		}
	}
	return stack.Start(ctx, sc)
}

// newHTTPClient returns a client for load generation with enough idle
// connections for conc concurrent requests.
func newHTTPClient(conc int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = max(100, conc*2)
	t.MaxIdleConnsPerHost = max(100, conc*2)
	return &http.Client{Transport: t}
}
