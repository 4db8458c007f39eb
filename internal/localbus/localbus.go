// Package localbus runs a complete Events API inside the current process, on
// a loopback port with its own random signing secret, and issues tokens for
// it. The self-test, the benchmarks and the tests use it to exercise the
// real HTTP path without any set-up.
//
// It imports internal/eventsapi, internal/eventstore (memory by default), internal/auth, internal/metrics, internal/tracing, pkg/events and the OpenTelemetry API.
package localbus

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/eventsapi"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/tracing"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// Options configure a Bus.
type Options struct {
	// Backend stores events (a fresh memory backend when nil). The Bus
	// closes it.
	Backend eventstore.Backend
	// Addr to listen on (127.0.0.1:0 when empty).
	Addr string
	// Secret signs tokens (32 random bytes when nil).
	Secret []byte
	// Logger for the server (discarded when nil).
	Logger *slog.Logger
	// Services tells service principals from callers (zero: only tokens
	// with the scope bus:service are services, so issue service tokens
	// with auth.ScopeService besides llm:proxy).
	Services auth.ServicePolicy
	// Metrics, MetricsHandler and Tracer are the server's observability,
	// as in eventsapi.Config (none when nil).
	Metrics        *metrics.Events
	MetricsHandler http.Handler
	Tracer         trace.Tracer
}

// Bus is a running in-process Events API.
type Bus struct {
	// URL is the API's base URL.
	URL string

	secret  []byte
	backend eventstore.Backend
	cancel  context.CancelFunc
	done    chan error

	closeOnce sync.Once
	closeErr  error
}

// Start starts a Bus; Close stops it.
func Start(opts Options) (*Bus, error) {
	if opts.Backend == nil {
		opts.Backend = memory.New(memory.Options{})
	}
	if opts.Secret == nil {
		opts.Secret = make([]byte, 32)
		_, _ = rand.Read(opts.Secret) // never fails on supported platforms
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	l, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		_ = opts.Backend.Close()
		return nil, fmt.Errorf("localbus: listen: %w", err)
	}
	srv := eventsapi.New(eventsapi.Config{Backend: opts.Backend, Verifier: auth.NewVerifier(opts.Secret, auth.Audience), Services: opts.Services, Logger: opts.Logger,
		Metrics: opts.Metrics, MetricsHandler: opts.MetricsHandler, Tracer: opts.Tracer})
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{URL: "http://" + l.Addr().String(), secret: opts.Secret, backend: opts.Backend, cancel: cancel, done: make(chan error, 1)}
	go func() { b.done <- srv.Serve(ctx, l) }()
	return b, nil
}

// Secret returns the signing secret (for components that verify tokens).
func (b *Bus) Secret() []byte { return b.secret }

// Token issues a one-hour token for subject with scopes.
func (b *Bus) Token(subject string, scopes ...string) (string, error) {
	now := time.Now()
	return auth.Issue(b.secret, auth.Claims{
		Subject: subject, Audience: []string{auth.Audience}, Scopes: scopes,
		IssuedAt: now, ExpiresAt: now.Add(time.Hour),
	})
}

// Client returns an events client for subject with scopes, whose one-hour
// token is renewed before it expires; its requests carry the traceparent
// of their context.
func (b *Bus) Client(subject string, scopes []string, opts ...events.Option) (*events.Client, error) {
	r := auth.NewRenewer(b.secret, subject, scopes, time.Hour)
	if _, err := r.Token(); err != nil {
		return nil, err
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 256, 256
	base := []events.Option{events.WithTokenSource(r.Token), events.WithHTTPClient(&http.Client{Transport: tracing.Transport(t)})}
	return events.NewClient(b.URL, append(base, opts...)...)
}

// Close stops the server (ending open streams) and closes the backend. It
// may be called more than once.
func (b *Bus) Close() error {
	b.closeOnce.Do(func() {
		b.cancel()
		err := <-b.done
		b.closeErr = errors.Join(err, b.backend.Close())
	})
	return b.closeErr
}
