// Package stack assembles the whole BusDK LLM path inside one process, for
// end-to-end tests and benchmarks: an in-process Events API
// ([localbus.Bus]), the worker (internal/worker) running requests on a
// given provider, and the OpenAI-compatible REST front door
// (internal/frontdoor) on a loopback port.
//
// A client talks to [Stack.URL] (http://127.0.0.1:PORT/v1) with
// [Stack.Token], an llm:proxy JWT the front door accepts: the front door
// verifies caller tokens with the Events API's own signing secret, so one
// secret serves the service tokens and the callers.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/frontdoor"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Defaults of Config.
const (
	DefaultTimeout         = 60 * time.Second
	DefaultConcurrency     = 8
	DefaultConnectTimeout  = 10 * time.Second
	DefaultShutdownTimeout = 5 * time.Second
	// Group is the worker's unicast group.
	Group = "bus-integration-codex"
	// Consumer is the worker's consumer name.
	Consumer = "stack"
	// CallerSubject is the subject of Stack.Token.
	CallerSubject = "stack-caller"
)

// Config configures a Stack.
type Config struct {
	// Provider runs the turns. Required. The Stack owns it: Close closes
	// it, and so does Start when it fails.
	Provider turn.Provider
	// Timeout bounds each request at the front door and in the worker
	// (DefaultTimeout when 0).
	Timeout time.Duration
	// Concurrency caps the requests the worker runs at once
	// (DefaultConcurrency when 0).
	Concurrency int
	// ConnectTimeout bounds the first connection of the worker and front
	// door listeners (DefaultConnectTimeout when 0).
	ConnectTimeout time.Duration
	// ShutdownTimeout bounds the front door's drain on Close
	// (DefaultShutdownTimeout when 0).
	ShutdownTimeout time.Duration
	// MaxBodyBytes bounds request bodies at the front door (the front
	// door's default when 0).
	MaxBodyBytes int64
	// Logger receives the logs of the worker and front door (discarded
	// when nil).
	Logger *slog.Logger
}

// Stack is a running in-process stack. Create it with Start; stop it with
// Close.
type Stack struct {
	// URL is the front door's OpenAI base URL, http://127.0.0.1:PORT/v1.
	URL string
	// BaseURL is the front door's root, http://127.0.0.1:PORT (for
	// /readyz and /healthz).
	BaseURL string
	// Token is a one-hour caller token with scope llm:proxy.
	Token string
	// Bus is the in-process Events API.
	Bus *localbus.Bus
	// FrontDoor is the running front door.
	FrontDoor *frontdoor.Server
	// Worker is the running worker.
	Worker *worker.Worker

	provider turn.Provider

	stopFront  context.CancelFunc
	frontDone  chan error
	stopWorker context.CancelFunc
	workerDone chan error

	closeOnce sync.Once
	closeErr  error
}

// Start starts a Stack and returns once the worker and the front door are
// connected to the Events API, or ctx ends, or either fails.
func Start(ctx context.Context, cfg Config) (st *Stack, err error) {
	if cfg.Provider == nil {
		return nil, errors.New("stack: Config.Provider is required")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
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
	s := &Stack{provider: cfg.Provider}
	defer func() {
		if err != nil {
			_ = s.Close()
			st = nil
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("stack: %w", err)
	}

	if s.Bus, err = localbus.Start(localbus.Options{}); err != nil {
		return nil, err
	}
	if s.Token, err = s.Bus.Token(CallerSubject, llmapi.Scope); err != nil {
		return nil, err
	}

	// The worker.
	wc, err := s.Bus.Client("stack-worker", []string{llmapi.Scope}, events.WithLogger(cfg.Logger))
	if err != nil {
		return nil, err
	}
	svc := contract.Worker("stack", Group)
	workerReady := make(chan struct{})
	var readyOnce sync.Once
	s.Worker, err = worker.New(worker.Config{
		Client: wc, Executor: &executor.Executor{Provider: cfg.Provider},
		RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
		Group: Group, Consumer: Consumer, Concurrency: cfg.Concurrency, Timeout: cfg.Timeout,
		ConnectTimeout: cfg.ConnectTimeout, Logger: cfg.Logger,
		OnReady: func() { readyOnce.Do(func() { close(workerReady) }) },
	})
	if err != nil {
		return nil, err
	}
	wctx, stopWorker := context.WithCancel(context.Background())
	s.stopWorker, s.workerDone = stopWorker, make(chan error, 1)
	go func() { s.workerDone <- s.Worker.Run(wctx) }()
	select {
	case <-workerReady:
	case err := <-s.workerDone:
		s.workerDone <- err // for Close
		return nil, fmt.Errorf("stack: worker stopped before it was ready: %w", err)
	case <-ctx.Done():
		return nil, fmt.Errorf("stack: waiting for the worker: %w", ctx.Err())
	}

	// The front door, verifying callers with the bus's secret.
	fc, err := s.Bus.Client("stack-frontdoor", []string{llmapi.Scope}, events.WithLogger(cfg.Logger))
	if err != nil {
		return nil, err
	}
	s.FrontDoor, err = frontdoor.New(frontdoor.Config{
		Events: fc, Verifier: auth.NewVerifier(s.Bus.Secret(), auth.Audience),
		Timeout: cfg.Timeout, ConnectTimeout: cfg.ConnectTimeout, ShutdownTimeout: cfg.ShutdownTimeout,
		MaxBodyBytes: cfg.MaxBodyBytes, ListenerRequired: true, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("stack: listen: %w", err)
	}
	s.BaseURL = "http://" + l.Addr().String()
	s.URL = s.BaseURL + "/v1"
	fctx, stopFront := context.WithCancel(context.Background())
	s.stopFront, s.frontDone = stopFront, make(chan error, 1)
	go func() { s.frontDone <- s.FrontDoor.Serve(fctx, l) }()
	select {
	case <-s.FrontDoor.Ready():
	case err := <-s.frontDone:
		s.frontDone <- err // for Close
		return nil, fmt.Errorf("stack: front door stopped before it was ready: %w", err)
	case <-ctx.Done():
		return nil, fmt.Errorf("stack: waiting for the front door: %w", ctx.Err())
	}
	return s, nil
}

// IssueToken returns a one-hour caller token for subject with scopes
// (e.g. none, to provoke a 403).
func (s *Stack) IssueToken(subject string, scopes ...string) (string, error) {
	return s.Bus.Token(subject, scopes...)
}

// EventsClient returns an Events API client with an llm:proxy token, e.g.
// to observe the bus.llm.* traffic with a broadcast listener.
func (s *Stack) EventsClient(subject string, opts ...events.Option) (*events.Client, error) {
	return s.Bus.Client(subject, []string{llmapi.Scope}, opts...)
}

// Close stops the front door (draining in-flight requests), the worker
// (which finishes the requests it holds), the provider and the Events API,
// in that order. It returns the first error of any of them and may be
// called more than once.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.stopFront != nil {
			s.stopFront()
			if err := <-s.frontDone; err != nil {
				errs = append(errs, fmt.Errorf("front door: %w", err))
			}
		}
		if s.stopWorker != nil {
			s.stopWorker()
			if err := <-s.workerDone; err != nil {
				errs = append(errs, fmt.Errorf("worker: %w", err))
			}
		}
		if s.provider != nil {
			if err := s.provider.Close(); err != nil {
				errs = append(errs, fmt.Errorf("provider: %w", err))
			}
		}
		if s.Bus != nil {
			if err := s.Bus.Close(); err != nil {
				errs = append(errs, fmt.Errorf("events api: %w", err))
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}
