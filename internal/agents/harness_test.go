package agents_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/respstore"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

const model = "codex-chatgpt"

// bridge is the whole path (package stack): an in-process Events API, the
// front door on loopback, and any number of workers started and stopped by
// the test.
type bridge struct {
	t     *testing.T
	st    *stack.Stack
	fake  *fakemodel.Server
	home  string
	cmd   string
	store func(t *testing.T) respstore.Store
	cat   *catalog.Catalog
}

func newBridge(t *testing.T, store func(t *testing.T) respstore.Store) *bridge {
	t.Helper()
	b := &bridge{t: t, cmd: fakemodel.CodexCommand(t), fake: fakemodel.New(t), store: store, cat: catalog.Default()}
	b.home = b.fake.WriteCodexHome(t)
	st, err := stack.Start(ctxT(t), stack.Config{Catalog: b.cat, Timeout: 60 * time.Second, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	b.st = st
	return b
}

// startWorker runs a worker (its own codex pool and store connection)
// until stop is called or the test ends.
func (b *bridge) startWorker(consumer string) (stop func()) {
	t := b.t
	t.Helper()
	p, err := codex.New(context.Background(), codex.Config{
		Command: b.cmd, Workdir: t.TempDir(), Env: []string{"CODEX_HOME=" + b.home},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	store := b.store(t)
	w, err := b.st.AddWorker(ctxT(t), stack.WorkerConfig{
		Executor: &executor.Executor{Provider: p, Catalog: b.cat, Store: store, Logger: slog.New(slog.DiscardHandler)},
		Release:  func() error { return errors.Join(p.Close(), store.Close()) },
		Group:    "g", Consumer: consumer, Concurrency: 4, Timeout: 60 * time.Second,
	})
	if err != nil {
		t.Fatalf("worker %s: %v", consumer, err)
	}
	stop = func() {
		if err := w.Stop(); err != nil {
			t.Errorf("worker %s: %v", consumer, err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// client is the official SDK acting as identity sub.
func (b *bridge) client(sub string) openai.Client {
	b.t.Helper()
	tok, err := b.st.IssueToken(sub, llmapi.Scope)
	if err != nil {
		b.t.Fatal(err)
	}
	return openai.NewClient(option.WithBaseURL(b.st.URL), option.WithAPIKey(tok), option.WithMaxRetries(0),
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
