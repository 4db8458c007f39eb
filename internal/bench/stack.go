package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/frontdoor"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
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
	// concurrency is the worker's Concurrency (and so its prefetch).
	concurrency int
	// timeout bounds each request.
	timeout time.Duration
	log     *slog.Logger
}

// stack is the whole bus path in this process: the Events API on a
// loopback port, optionally a worker, and the REST front door.
type stack struct {
	bus *localbus.Bus
	// url is the front door's OpenAI base, http://127.0.0.1:PORT/v1.
	url string
	// token is a caller token with scope llm:proxy.
	token string

	clients    []*events.Client
	stopWorker context.CancelFunc
	workerDone chan error
	stopFront  context.CancelFunc
	frontDone  chan error
}

// startStack starts a stack and returns once its worker (when it has one)
// and front door are connected.
func startStack(ctx context.Context, cfg stackConfig) (st *stack, err error) {
	if cfg.concurrency <= 0 {
		cfg.concurrency = 8
	}
	if cfg.timeout <= 0 {
		cfg.timeout = 60 * time.Second
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	s := &stack{}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.bus, err = localbus.Start(localbus.Options{Backend: cfg.backend, Logger: cfg.log}); err != nil {
		return nil, err
	}
	if s.token, err = s.bus.Token("bench-caller", llmapi.Scope); err != nil {
		return nil, err
	}
	if cfg.provider != nil {
		wc, err := s.client("bench-worker", cfg.log)
		if err != nil {
			return nil, err
		}
		svc := contract.Worker("bench", workerGroup)
		ready := make(chan struct{})
		w, err := worker.New(worker.Config{
			Client: wc, Executor: &executor.Executor{Provider: cfg.provider},
			RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
			Group: workerGroup, Consumer: "bench", Concurrency: cfg.concurrency, Timeout: cfg.timeout,
			ConnectTimeout: 10 * time.Second, Logger: cfg.log, OnReady: func() { close(ready) },
		})
		if err != nil {
			return nil, err
		}
		wctx, stop := context.WithCancel(context.Background())
		s.stopWorker, s.workerDone = stop, make(chan error, 1)
		go func() { s.workerDone <- w.Run(wctx) }()
		select {
		case <-ready:
		case err := <-s.workerDone:
			s.workerDone <- err
			return nil, fmt.Errorf("bench: worker stopped before it was ready: %w", err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	fc, err := s.client("bench-frontdoor", cfg.log)
	if err != nil {
		return nil, err
	}
	front, err := frontdoor.New(frontdoor.Config{
		Events: fc, Verifier: auth.NewVerifier(s.bus.Secret(), auth.Audience), Timeout: cfg.timeout,
		ListenerRequired: true, ConnectTimeout: 10 * time.Second, ShutdownTimeout: 5 * time.Second, Logger: cfg.log,
	})
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: listen: %w", err)
	}
	s.url = "http://" + l.Addr().String() + "/v1"
	fctx, stop := context.WithCancel(context.Background())
	s.stopFront, s.frontDone = stop, make(chan error, 1)
	go func() { s.frontDone <- front.Serve(fctx, l) }()
	select {
	case <-front.Ready():
	case err := <-s.frontDone:
		s.frontDone <- err
		return nil, fmt.Errorf("bench: front door stopped before it was ready: %w", err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s, nil
}

func (s *stack) client(subject string, log *slog.Logger) (*events.Client, error) {
	c, err := s.bus.Client(subject, []string{llmapi.Scope}, events.WithLogger(log),
		events.WithRetry(events.RetryPolicy{Enabled: true, Min: 50 * time.Millisecond, Max: time.Second}))
	if err == nil {
		s.clients = append(s.clients, c)
	}
	return c, err
}

// close stops the front door, the worker and the Events API, in that order.
func (s *stack) close() error {
	var errs []error
	if s.stopFront != nil {
		s.stopFront()
		errs = append(errs, <-s.frontDone)
	}
	if s.stopWorker != nil {
		s.stopWorker()
		errs = append(errs, <-s.workerDone)
	}
	for _, c := range s.clients {
		c.CloseIdleConnections()
	}
	if s.bus != nil {
		errs = append(errs, s.bus.Close())
	}
	return errors.Join(errs...)
}

// newHTTPClient returns a client for load generation with enough idle
// connections for conc concurrent requests.
func newHTTPClient(conc int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = max(100, conc*2)
	t.MaxIdleConnsPerHost = max(100, conc*2)
	return &http.Client{Transport: t}
}
