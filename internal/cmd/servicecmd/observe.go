package servicecmd

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/tracing"
)

// Observability is a service's tracing and metrics registry.
type Observability struct {
	*tracing.Tracing
	// Registry holds the service's metrics (and the Go runtime's and the
	// process's).
	Registry *prometheus.Registry
	// Handler serves Registry on the service's own port; nil when the
	// metrics have a listener of their own (metricsAddr), so that the
	// service's port does not serve them.
	Handler   http.Handler
	stopServe func()
}

// Observe sets up the tracing of service (name) from env and its metrics
// registry, served on a listener of its own when metricsAddr (the
// --metrics-addr flag) is set. Close stops both.
func Observe(ctx context.Context, env busconfig.Env, name, metricsAddr string, log *slog.Logger) (*Observability, error) {
	tr, err := tracing.Setup(ctx, env.Getenv, name)
	if err != nil {
		return nil, err
	}
	o := &Observability{Tracing: tr, Registry: metrics.NewRegistry(), stopServe: func() {}}
	o.Handler = metrics.Handler(o.Registry)
	if metricsAddr != "" {
		stop, err := metrics.Listen(metricsAddr, o.Handler, log)
		if err != nil {
			tr.Close(log)
			return nil, fmt.Errorf("--metrics-addr: %w", err)
		}
		o.Handler, o.stopServe = nil, stop
	}
	return o, nil
}

// Close stops the metrics listener and flushes the spans not exported yet.
func (o *Observability) Close(log *slog.Logger) {
	o.stopServe()
	o.Tracing.Close(log)
}

// Logger is a service's logger: cliutil.Logger on w at level lvl, whose
// records carry the trace_id and span_id of their context's span.
func Logger(w io.Writer, lvl string) (*slog.Logger, error) {
	log, err := cliutil.Logger(w, lvl)
	if err != nil {
		return nil, err
	}
	return slog.New(tracing.LogHandler(log.Handler())), nil
}
