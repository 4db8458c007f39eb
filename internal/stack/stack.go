// Package stack assembles the whole BusDK LLM path inside one process: the
// Events API (package localbus, on any eventstore backend), workers
// (package worker) running requests through an executor, and the
// OpenAI-compatible REST front door (package frontdoor). It is the one
// builder of that path: the local stack command (bus-local-stack), the
// self-test, the benchmarks and the tests all use it.
//
// One signing secret serves the whole stack: the Events API verifies the
// service tokens of the workers and the front door with it, and the front
// door verifies its callers with it. Service tokens carry the scope
// bus:service and the Events API lists no service subjects, so the caller
// token [Stack.Token] (llm:proxy only) is good at the front door only: on
// the Events API it is refused bus.llm.* like any caller's.
//
// Observability is off unless asked for: each component can be given a
// metrics registry and a tracer (Telemetry), so tests can scrape /metrics
// and read the spans.
//
// It may import the server, worker, front door and executor packages; no
// command package imports it except through this API.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/entitlement"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/frontdoor"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Defaults of Config and WorkerConfig.
const (
	DefaultTimeout         = 60 * time.Second
	DefaultConcurrency     = 8
	DefaultConnectTimeout  = 10 * time.Second
	DefaultShutdownTimeout = 5 * time.Second
	// DefaultGroup is the workers' unicast group.
	DefaultGroup = "bus-integration-codex"
	// DefaultConsumer is the first worker's consumer name.
	DefaultConsumer = "stack"
	// CallerSubject is the subject of Stack.Token.
	CallerSubject = "stack-caller"
	// WorkerVersion is the version the stack's workers declare.
	WorkerVersion = "stack"
)

// Config configures a Stack.
type Config struct {
	// Backend stores the events (a fresh memory backend when nil). The
	// stack closes it.
	Backend eventstore.Backend
	// EventsAddr and FrontAddr are the listen addresses of the Events API
	// and the front door (127.0.0.1:0 when empty).
	EventsAddr, FrontAddr string
	// Secret signs and verifies every token of the stack (32 random bytes
	// when nil).
	Secret []byte
	// Catalog lists the front door's models (catalog.Default() when nil).
	Catalog *catalog.Catalog
	// Worker, when set, is started before the front door; Start returns
	// once it is subscribed. More workers can be added with AddWorker.
	Worker *WorkerConfig
	// Timeout bounds each request at the front door, and in workers that
	// set none (DefaultTimeout when 0).
	Timeout time.Duration
	// ConnectTimeout bounds the first connection of every listener
	// (DefaultConnectTimeout when 0).
	ConnectTimeout time.Duration
	// ShutdownTimeout bounds the front door's drain on Close
	// (DefaultShutdownTimeout when 0).
	ShutdownTimeout time.Duration
	// MaxBodyBytes bounds request bodies at the front door (its default
	// when 0).
	MaxBodyBytes int64
	// Usage and Entitlements are the front door's usage writer and
	// entitlement enforcer (none when nil); the caller closes Usage after
	// the stack.
	Usage        *usage.Writer
	Entitlements *entitlement.Enforcer
	// Logger receives the logs of every component (discarded when nil).
	Logger *slog.Logger
	// EventsTelemetry and FrontDoorTelemetry observe the Events API and
	// the first front door (off when zero).
	EventsTelemetry, FrontDoorTelemetry Telemetry
}

// Telemetry observes one component: its metrics are registered on
// Metrics (and served on its GET /metrics where it has an HTTP server: the
// Events API and the front door), and its spans are started by Tracer.
// Either may be nil: off.
type Telemetry struct {
	Metrics *prometheus.Registry
	Tracer  trace.Tracer
}

// WorkerConfig configures one worker of a Stack.
type WorkerConfig struct {
	// Executor runs the requests. Required.
	Executor *executor.Executor
	// Release, when set, is called once the worker has stopped (e.g. to
	// close the provider and the response store).
	Release func() error
	// Group and Consumer place the worker (DefaultGroup and
	// DefaultConsumer when empty).
	Group, Consumer string
	// Concurrency caps the requests it runs at once (DefaultConcurrency
	// when 0).
	Concurrency int
	// Timeout bounds each request (the stack's Timeout when 0).
	Timeout time.Duration
	// Telemetry observes the worker (off when zero).
	Telemetry Telemetry
}

// On is a WorkerConfig running requests on p with a plain executor; the
// worker closes p when it stops.
func On(p turn.Provider) *WorkerConfig {
	return &WorkerConfig{Executor: &executor.Executor{Provider: p}, Release: p.Close}
}

// Stack is a running in-process stack. Create it with Start; stop it with
// Close.
type Stack struct {
	// URL is the front door's OpenAI base URL, http://HOST:PORT/v1.
	URL string
	// BaseURL is the front door's root (for /readyz and /healthz).
	BaseURL string
	// Token is a one-hour caller token of CallerSubject with scope
	// llm:proxy: good at the front door, refused bus.llm.* on the Events
	// API.
	Token string
	// Bus is the Events API.
	Bus *localbus.Bus
	// FrontDoor is the running front door (more can be added with
	// AddFrontDoor).
	FrontDoor *frontdoor.Server
	// Worker is the worker of Config.Worker (nil without one).
	Worker *Worker

	cfg     Config
	failed  chan error
	clients []*events.Client

	mu         sync.Mutex
	workers    []*Worker
	frontDoors []*FrontDoor

	closeOnce sync.Once
	closeErr  error
}

// Worker is a running worker of a Stack.
type Worker struct {
	*worker.Worker
	stop     context.CancelFunc
	done     chan error
	release  func() error
	stopOnce sync.Once
	stopErr  error
}

// Stop stops taking requests, waits for the ones in flight to be answered,
// and releases the worker's executor. It may be called more than once.
func (w *Worker) Stop() error {
	w.stopOnce.Do(func() {
		w.stop()
		err := <-w.done
		if w.release != nil {
			err = errors.Join(err, w.release())
		}
		w.stopErr = err
	})
	return w.stopErr
}

// Start starts a Stack and returns once its worker (if any) and its front
// door are connected to the Events API, or ctx ends, or a part fails. On
// failure everything started is stopped, Config.Worker's Release included.
func Start(ctx context.Context, cfg Config) (st *Stack, err error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.FrontAddr == "" {
		cfg.FrontAddr = "127.0.0.1:0"
	}
	s := &Stack{cfg: cfg, failed: make(chan error, 1)}
	defer func() {
		if err != nil {
			if cfg.Worker != nil && s.Worker == nil && cfg.Worker.Release != nil {
				_ = cfg.Worker.Release()
			}
			_ = s.Close()
			st = nil
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}
	bo := localbus.Options{Backend: cfg.Backend, Addr: cfg.EventsAddr, Secret: cfg.Secret, Logger: cfg.Logger, Tracer: cfg.EventsTelemetry.Tracer}
	if reg := cfg.EventsTelemetry.Metrics; reg != nil {
		bo.Metrics, bo.MetricsHandler = metrics.NewEvents(reg), metrics.Handler(reg)
	}
	if s.Bus, err = localbus.Start(bo); err != nil {
		return nil, err
	}
	if s.Token, err = s.Bus.Token(CallerSubject, llmapi.Scope); err != nil {
		return nil, err
	}
	if cfg.Worker != nil {
		if s.Worker, err = s.AddWorker(ctx, *cfg.Worker); err != nil {
			return nil, err
		}
	}
	fd, err := s.AddFrontDoor(ctx, FrontDoorConfig{Addr: cfg.FrontAddr, Usage: cfg.Usage, Entitlements: cfg.Entitlements, Telemetry: cfg.FrontDoorTelemetry})
	if err != nil {
		return nil, err
	}
	s.FrontDoor, s.URL, s.BaseURL = fd.Server, fd.URL, fd.BaseURL
	return s, nil
}

// FrontDoorConfig configures one front door of a Stack; the rest of its
// configuration is the stack's.
type FrontDoorConfig struct {
	// Addr is the listen address (127.0.0.1:0 when empty).
	Addr string
	// Usage and Entitlements as in frontdoor.Config (none when nil).
	Usage        *usage.Writer
	Entitlements *entitlement.Enforcer
	// Telemetry observes the front door (off when zero).
	Telemetry Telemetry
}

// FrontDoor is a running front door of a Stack.
type FrontDoor struct {
	*frontdoor.Server
	// URL is its OpenAI base URL, http://HOST:PORT/v1; BaseURL its root.
	URL, BaseURL string

	stop     context.CancelFunc
	done     chan error
	stopOnce sync.Once
	stopErr  error
}

// Stop drains the front door's in-flight requests and stops it. It may be
// called more than once.
func (f *FrontDoor) Stop() error {
	f.stopOnce.Do(func() {
		f.stop()
		f.stopErr = <-f.done
	})
	return f.stopErr
}

// AddFrontDoor starts another front door (a replica) on the stack's
// Events API and returns once its listeners are connected. Stack.Close
// stops it.
func (s *Stack) AddFrontDoor(ctx context.Context, fc FrontDoorConfig) (*FrontDoor, error) {
	cfg := s.cfg
	if fc.Addr == "" {
		fc.Addr = "127.0.0.1:0"
	}
	s.mu.Lock()
	n := len(s.frontDoors)
	s.mu.Unlock()
	subject := "stack-frontdoor"
	if n > 0 {
		subject = fmt.Sprintf("stack-frontdoor-%d", n+1)
	}
	client, err := s.ServiceClient(subject)
	if err != nil {
		return nil, err
	}
	fcfg := frontdoor.Config{
		Events: client, Verifier: auth.NewVerifier(s.Bus.Secret(), auth.Audience), Catalog: cfg.Catalog,
		Timeout: cfg.Timeout, ConnectTimeout: cfg.ConnectTimeout, ShutdownTimeout: cfg.ShutdownTimeout,
		MaxBodyBytes: cfg.MaxBodyBytes, ListenerRequired: true, Logger: cfg.Logger,
		Usage: fc.Usage, Entitlements: fc.Entitlements, Tracer: fc.Telemetry.Tracer,
	}
	if reg := fc.Telemetry.Metrics; reg != nil {
		fcfg.Metrics, fcfg.MetricsHandler = metrics.NewFrontDoor(reg), metrics.Handler(reg)
	}
	srv, err := frontdoor.New(fcfg)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", fc.Addr)
	if err != nil {
		return nil, fmt.Errorf("stack: front door: listen on %s: %w", fc.Addr, err)
	}
	fctx, stop := context.WithCancel(context.Background())
	fd := &FrontDoor{Server: srv, BaseURL: "http://" + l.Addr().String(), stop: stop, done: make(chan error, 1)}
	fd.URL = fd.BaseURL + "/v1"
	s.mu.Lock()
	s.frontDoors = append(s.frontDoors, fd)
	s.mu.Unlock()
	go func() {
		err := srv.Serve(fctx, l)
		if fctx.Err() == nil {
			s.fail(fmt.Errorf("front door stopped: %w", err))
		}
		fd.done <- err
	}()
	select {
	case <-srv.Ready():
		return fd, nil
	case err := <-s.failed:
		return nil, err
	case <-ctx.Done():
		return nil, fmt.Errorf("stack: waiting for the front door: %w", ctx.Err())
	}
}

// AddWorker starts another worker on the stack's Events API and returns
// once it is subscribed to its requests.
func (s *Stack) AddWorker(ctx context.Context, cfg WorkerConfig) (*Worker, error) {
	if cfg.Executor == nil {
		return nil, errors.New("stack: WorkerConfig.Executor is required")
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.Consumer == "" {
		cfg.Consumer = DefaultConsumer
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = s.cfg.Timeout
	}
	wc, err := s.ServiceClient("stack-worker-" + cfg.Consumer)
	if err != nil {
		return nil, err
	}
	svc := contract.Worker(WorkerVersion, cfg.Group)
	ready := make(chan struct{})
	var readyOnce sync.Once
	wcfg := worker.Config{
		Client: wc, Executor: cfg.Executor,
		RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
		Group: cfg.Group, Consumer: cfg.Consumer, Concurrency: cfg.Concurrency, Timeout: cfg.Timeout,
		ConnectTimeout: s.cfg.ConnectTimeout, Logger: s.cfg.Logger, Tracer: cfg.Telemetry.Tracer,
		OnReady: func() { readyOnce.Do(func() { close(ready) }) },
	}
	if reg := cfg.Telemetry.Metrics; reg != nil {
		wcfg.Metrics = metrics.NewWorker(reg)
	}
	w, err := worker.New(wcfg)
	if err != nil {
		return nil, err
	}
	wctx, stop := context.WithCancel(context.Background())
	rw := &Worker{Worker: w, stop: stop, done: make(chan error, 1), release: cfg.Release}
	go func() {
		err := w.Run(wctx)
		if wctx.Err() == nil {
			s.fail(fmt.Errorf("worker %s stopped: %w", cfg.Consumer, err))
		}
		rw.done <- err
	}()
	s.mu.Lock()
	s.workers = append(s.workers, rw)
	s.mu.Unlock()
	select {
	case <-ready:
		return rw, nil
	case err := <-rw.done:
		rw.done <- err // for Stop
		return nil, fmt.Errorf("stack: worker %s stopped before it was ready: %w", cfg.Consumer, rw.Stop())
	case <-ctx.Done():
		return nil, fmt.Errorf("stack: waiting for worker %s: %w", cfg.Consumer, ctx.Err())
	}
}

// fail reports the first part that stopped on its own.
func (s *Stack) fail(err error) {
	select {
	case s.failed <- err:
	default:
	}
}

// Failed receives the error of the first part (front door or worker) that
// stopped by itself, e.g. because the Events API refused it.
func (s *Stack) Failed() <-chan error { return s.failed }

// IssueToken returns a one-hour token for subject with scopes (e.g. none,
// to provoke a 403).
func (s *Stack) IssueToken(subject string, scopes ...string) (string, error) {
	return s.Bus.Token(subject, scopes...)
}

// ServiceScopes are the scopes of the stack's service tokens: llm:proxy
// and bus:service.
func ServiceScopes() []string { return []string{llmapi.Scope, auth.ScopeService} }

// ServiceClient returns an Events API client for a service of the stack
// (subject), with a service token (ServiceScopes) and a fast reconnect
// policy. The stack closes its idle connections on Close.
func (s *Stack) ServiceClient(subject string, opts ...events.Option) (*events.Client, error) {
	base := []events.Option{events.WithLogger(s.cfg.Logger),
		events.WithRetry(events.RetryPolicy{Enabled: true, Min: 50 * time.Millisecond, Max: time.Second})}
	c, err := s.Bus.Client(subject, ServiceScopes(), append(base, opts...)...)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.clients = append(s.clients, c)
	s.mu.Unlock()
	return c, nil
}

// Close stops the front doors (draining in-flight requests), the workers
// (which finish the requests they hold), and the Events API, in that order.
// It returns the first error of any of them and may be called more than
// once.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		s.mu.Lock()
		workers, frontDoors := s.workers, s.frontDoors
		s.mu.Unlock()
		for i := len(frontDoors) - 1; i >= 0; i-- {
			if err := frontDoors[i].Stop(); err != nil {
				errs = append(errs, fmt.Errorf("front door: %w", err))
			}
		}
		for i := len(workers) - 1; i >= 0; i-- {
			if err := workers[i].Stop(); err != nil {
				errs = append(errs, fmt.Errorf("worker: %w", err))
			}
		}
		s.mu.Lock()
		for _, c := range s.clients {
			c.CloseIdleConnections()
		}
		s.mu.Unlock()
		if s.Bus != nil {
			if err := s.Bus.Close(); err != nil {
				errs = append(errs, fmt.Errorf("events api: %w", err))
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
