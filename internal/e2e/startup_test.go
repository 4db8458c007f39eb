package e2e_test

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// startBare runs a stack without a worker.
func startBare(t *testing.T) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	st, err := stack.Start(ctx, stack.Config{Timeout: waitLimit, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("stack close: %v", err)
		}
	})
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	e := &env{st: st, http: &http.Client{Transport: transport}}
	e.client = e.sdk(st.Token)
	return e
}

// TestRequestWaitsForAStartingWorker: a request sent the moment the front
// door is ready, while the worker has subscribed but its provider is
// still starting, waits in the worker's group and is answered once the
// provider is ready.
func TestRequestWaitsForAStartingWorker(t *testing.T) {
	e := startBare(t)
	c, err := e.st.ServiceClient("late-worker")
	if err != nil {
		t.Fatal(err)
	}
	svc := contract.Worker(stack.WorkerVersion, stack.DefaultGroup)
	ready := make(chan struct{})
	var once sync.Once
	w, err := worker.New(worker.Config{Client: c, // no executor yet: the provider is starting
		RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
		Group: stack.DefaultGroup, Consumer: "late", Concurrency: 2, Timeout: waitLimit, ConnectTimeout: waitLimit,
		Logger: slog.New(slog.DiscardHandler), OnReady: func() { once.Do(func() { close(ready) }) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	select {
	case <-ready:
	case <-time.After(waitLimit):
		t.Fatal("worker never subscribed")
	}
	// See the request reach the bus before the provider is there.
	published := make(chan struct{}, 1)
	obs, err := e.st.ServiceClient("e2e-request-observer")
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopObs := context.WithCancel(context.Background())
	connected, obsDone := make(chan struct{}), make(chan struct{})
	var connOnce sync.Once
	go func() {
		defer close(obsDone)
		_ = obs.Listen(lctx, events.ListenOptions{Names: []string{llmapi.OpChatCompletions.RequestEvent()},
			OnConnect: func() { connOnce.Do(func() { close(connected) }) }},
			func(context.Context, events.Envelope) error {
				select {
				case published <- struct{}{}:
				default:
				}
				return nil
			})
	}()
	t.Cleanup(func() { stopObs(); <-obsDone })
	<-connected

	answer := make(chan error, 1)
	var got *openai.ChatCompletion
	go func() {
		var err error
		got, err = e.client.Chat.Completions.New(reqCtx(t), openai.ChatCompletionNewParams{
			Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}})
		answer <- err
	}()
	select {
	case <-published:
	case <-time.After(waitLimit):
		t.Fatal("the request was never published")
	}
	w.SetExecutor(&executor.Executor{Provider: static.New()})
	select {
	case err := <-answer:
		if err != nil {
			t.Fatalf("the request sent while the worker was starting: %v", err)
		}
		if len(got.Choices) != 1 || got.Choices[0].Message.Content != "Echo: "+prompt {
			t.Fatalf("answer %+v", got)
		}
	case <-time.After(waitLimit):
		t.Fatal("no answer")
	}
}

// TestNoWorkerIs503AtOnce: with no worker at all, a request is answered
// 503 no_worker_available at once instead of waiting for the timeout.
func TestNoWorkerIs503AtOnce(t *testing.T) {
	e := startBare(t)
	start := time.Now()
	_, err := e.client.Chat.Completions.New(reqCtx(t), openai.ChatCompletionNewParams{
		Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}})
	apiErr := apiError(t, err)
	if apiErr.StatusCode != http.StatusServiceUnavailable || apiErr.Code != "no_worker_available" {
		t.Fatalf("error %d %q: %s", apiErr.StatusCode, apiErr.Code, apiErr.Message)
	}
	// The stack's timeout is a minute: the point is not to wait for it.
	if d := time.Since(start); d > waitLimit/3 {
		t.Fatalf("503 after %s", d)
	}
}
