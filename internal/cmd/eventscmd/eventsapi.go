// Package eventscmd is the bus-api-provider-events command: the Events API
// server on a chosen backend. Service principals are tokens with the scope
// bus:service and the subjects of BUS_EVENTS_SERVICE_SUBJECTS (the local
// identity when unset; see auth.ServicePolicyFromEnv). Its metrics are
// served on GET /metrics, on its own port or on --metrics-addr; its
// publish spans go out by OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
//
// It may import any non-command package; only cmd/bus-api-provider-events imports it.
package eventscmd

import (
	"context"
	"flag"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/servicecmd"
	"github.com/busdk/bus-integration-codex/internal/eventsapi"
	"github.com/busdk/bus-integration-codex/internal/eventstore/backends"
	"github.com/busdk/bus-integration-codex/internal/metrics"
)

// Name is the command name.
const Name = "bus-api-provider-events"

// SecretVars returns the variables the Events API reads its JWT secret from,
// in order, before falling back to the generated local secret.
func SecretVars() []string { return []string{"BUS_API_JWT_SECRET", "BUS_AUTH_HS256_SECRET"} }

// options are the parsed flags.
type options struct {
	addr, backend, logLevel, metricsAddr string
}

func parse(args []string, io cliutil.IO) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.StringVar(&o.addr, "addr", cliutil.String(io.Env, "BUS_EVENTS_API_ADDR", "127.0.0.1:8081"), "listen address (env BUS_EVENTS_API_ADDR)")
	fs.StringVar(&o.backend, "events-backend", cliutil.String(io.Env, "BUS_EVENTS_BACKEND", "memory"), "event store: memory, redis or postgres (env BUS_EVENTS_BACKEND)")
	fs.StringVar(&o.metricsAddr, "metrics-addr", cliutil.String(io.Env, "BUS_EVENTS_METRICS_ADDR", ""),
		"serve GET /metrics (Prometheus) on this address of its own instead of on --addr (env BUS_EVENTS_METRICS_ADDR)")
	fs.StringVar(&o.logLevel, "log-level", cliutil.String(io.Env, "BUS_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env BUS_LOG_LEVEL)")
	if err := cliutil.ParseFlags(fs, args, io.Stdout); err != nil {
		return nil, err
	}
	if !slices.Contains(backends.Names(), o.backend) {
		return nil, cliutil.Usagef("--events-backend must be one of %s, not %q", strings.Join(backends.Names(), ", "), o.backend)
	}
	return o, nil
}

// Run runs the command.
func Run(ctx context.Context, args []string, io cliutil.IO) int {
	return cliutil.Run(ctx, args, io, Name, parse, run)
}

func run(ctx context.Context, o *options, io cliutil.IO) error {
	log, err := servicecmd.Logger(io.Stderr, o.logLevel)
	if err != nil {
		return err
	}
	key, source, err := auth.ResolveSecret(io.Env, SecretVars()...)
	if err != nil {
		return fmt.Errorf("jwt secret: %w", err)
	}
	services, err := auth.ServicePolicyFromEnv(io.Env)
	if err != nil {
		return err
	}
	store, err := backends.Open(ctx, o.backend, io.Env)
	if err != nil {
		return err
	}
	defer store.Close()
	obs, err := servicecmd.Observe(ctx, io.Env, Name, o.metricsAddr, log)
	if err != nil {
		return err
	}
	defer obs.Close(log)
	tr, reg, metricsHandler := obs.Tracing, obs.Registry, obs.Handler
	l, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", o.addr, err)
	}
	log.Info("events api listening", "addr", l.Addr().String(), "backend", o.backend, "jwt_secret_from", source,
		"services", "tokens with scope "+auth.ScopeService, "service_subjects", services.Subjects)
	srv := eventsapi.New(eventsapi.Config{Backend: store, Verifier: auth.NewVerifier(key, auth.Audience), Services: services, Logger: log,
		Metrics: metrics.NewEvents(reg), MetricsHandler: metricsHandler, Tracer: tr.Tracer})
	if err := srv.Serve(ctx, l); err != nil {
		return err
	}
	log.Info("events api stopped")
	return nil
}
