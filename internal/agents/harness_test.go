package agents_test

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/frontdoor"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

const model = "codex-chatgpt"

// bridge is the whole path: an in-process Events API, the front door on
// loopback, and any number of workers started and stopped by the test.
type bridge struct {
	t     *testing.T
	bus   *localbus.Bus
	fake  *fakemodel.Server
	home  string
	cmd   string
	url   string
	store func(t *testing.T) respstore.Store
	cat   *catalog.Catalog
}

func newBridge(t *testing.T, store func(t *testing.T) respstore.Store) *bridge {
	t.Helper()
	b := &bridge{t: t, cmd: fakemodel.CodexCommand(t), fake: fakemodel.New(t), store: store, cat: catalog.Default()}
	b.home = b.fake.WriteCodexHome(t)
	bus, err := localbus.Start(localbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	b.bus = bus
	fc, err := bus.Client("frontdoor", []string{llmapi.Scope})
	if err != nil {
		t.Fatal(err)
	}
	fd, err := frontdoor.New(frontdoor.Config{
		Events: fc, Verifier: auth.NewVerifier(bus.Secret(), auth.Audience), Catalog: b.cat,
		Timeout: 60 * time.Second, ConnectTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fd.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done; fc.CloseIdleConnections() })
	select {
	case <-fd.Ready():
	case err := <-done:
		t.Fatalf("front door stopped: %v", err)
	}
	b.url = "http://" + l.Addr().String()
	return b
}

// startWorker runs a worker (its own codex pool and store connection)
// until stop is called or the test ends.
func (b *bridge) startWorker(consumer string) (stop func()) {
	t := b.t
	t.Helper()
	p, err := codex.New(context.Background(), codex.Config{
		Command: b.cmd, Workdir: t.TempDir(), Env: []string{"CODEX_HOME=" + b.home},
		ToolSettle: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	store := b.store(t)
	wc, err := b.bus.Client("worker-"+consumer, []string{llmapi.Scope})
	if err != nil {
		t.Fatal(err)
	}
	svc := contract.Worker("test", "g")
	ready := make(chan struct{})
	w, err := worker.New(worker.Config{
		Client:       wc,
		Executor:     &executor.Executor{Provider: p, Catalog: b.cat, Store: store, Logger: slog.New(slog.DiscardHandler)},
		RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
		Group: "g", Consumer: consumer, Concurrency: 4, Timeout: 60 * time.Second, ConnectTimeout: 5 * time.Second,
		Logger: slog.New(slog.DiscardHandler), OnReady: func() { close(ready) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker %s: %v", consumer, err)
		}
		_ = p.Close()
		_ = store.Close()
		wc.CloseIdleConnections()
	}
	t.Cleanup(stop)
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("worker %s stopped: %v", consumer, err)
	}
	return stop
}

// client is the official SDK acting as identity sub.
func (b *bridge) client(sub string) openai.Client {
	b.t.Helper()
	tok, err := b.bus.Token(sub, llmapi.Scope)
	if err != nil {
		b.t.Fatal(err)
	}
	return openai.NewClient(option.WithBaseURL(b.url+"/v1"), option.WithAPIKey(tok), option.WithMaxRetries(0),
		option.WithHTTPClient(&http.Client{Timeout: 90 * time.Second}))
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func memoryStore() func(*testing.T) respstore.Store {
	shared := respstore.NewMemory()
	return func(*testing.T) respstore.Store { return nopClose{shared} }
}

// nopClose shares one in-process store between workers of a test.
type nopClose struct{ respstore.Store }

func (nopClose) Close() error { return nil }
