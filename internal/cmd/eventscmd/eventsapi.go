// Package eventscmd is the bus-api-provider-events command: the Events API
// server on a chosen backend.
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
	"github.com/busdk/bus-integration-codex/internal/eventsapi"
	"github.com/busdk/bus-integration-codex/internal/eventstore/backends"
)

// Name is the command name.
const Name = "bus-api-provider-events"

// SecretVars returns the variables the Events API reads its JWT secret from,
// in order, before falling back to the generated local secret.
func SecretVars() []string { return []string{"BUS_API_JWT_SECRET", "BUS_AUTH_HS256_SECRET"} }

// Run runs the command.
func Run(ctx context.Context, args []string, io cliutil.IO) int {
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	addr := fs.String("addr", cliutil.String(io.Env, "BUS_EVENTS_API_ADDR", "127.0.0.1:8081"), "listen address (env BUS_EVENTS_API_ADDR)")
	backend := fs.String("events-backend", cliutil.String(io.Env, "BUS_EVENTS_BACKEND", "memory"), "event store: memory, redis or postgres (env BUS_EVENTS_BACKEND)")
	logLevel := fs.String("log-level", cliutil.String(io.Env, "BUS_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env BUS_LOG_LEVEL)")
	if err := cliutil.Parse(fs, args, io.Stdout); err != nil {
		if err == cliutil.ErrHelp {
			return cliutil.ExitOK
		}
		return cliutil.Report(io.Stderr, Name, err)
	}
	if fs.NArg() > 0 {
		return cliutil.Report(io.Stderr, Name, cliutil.Usagef("unexpected argument %q", fs.Arg(0)))
	}
	if !slices.Contains(backends.Names(), *backend) {
		return cliutil.Report(io.Stderr, Name, cliutil.Usagef("--events-backend must be one of %s, not %q", strings.Join(backends.Names(), ", "), *backend))
	}
	log, err := cliutil.Logger(io.Stderr, *logLevel)
	if err != nil {
		return cliutil.Report(io.Stderr, Name, err)
	}
	key, source, err := auth.ResolveSecret(io.Env, SecretVars()...)
	if err != nil {
		return cliutil.Report(io.Stderr, Name, fmt.Errorf("jwt secret: %w", err))
	}
	store, err := backends.Open(ctx, *backend, io.Env)
	if err != nil {
		return cliutil.Report(io.Stderr, Name, err)
	}
	defer store.Close()
	l, err := net.Listen("tcp", *addr)
	if err != nil {
		return cliutil.Report(io.Stderr, Name, fmt.Errorf("listen on %s: %w", *addr, err))
	}
	log.Info("events api listening", "addr", l.Addr().String(), "backend", *backend, "jwt_secret_from", source)
	srv := eventsapi.New(eventsapi.Config{Backend: store, Verifier: auth.NewVerifier(key, auth.Audience), Logger: log})
	if err := srv.Serve(ctx, l); err != nil {
		return cliutil.Report(io.Stderr, Name, err)
	}
	log.Info("events api stopped")
	return cliutil.ExitOK
}
