package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/correlator"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/selftest"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

func startBus(t *testing.T, opts localbus.Options) *localbus.Bus {
	t.Helper()
	b, err := localbus.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// serviceScopes are the scopes of a service token (workers, front doors).
var serviceScopes = []string{llmapi.Scope, auth.ScopeService}

var fastRetry = events.RetryPolicy{Enabled: true, Min: 20 * time.Millisecond, Max: 100 * time.Millisecond}

// startWorker runs a worker until the test ends and waits until it is ready.
func startWorker(t *testing.T, b *localbus.Bus, consumer string, p turn.Provider, concurrency int) {
	t.Helper()
	c, err := b.Client("worker", serviceScopes, events.WithRetry(fastRetry))
	if err != nil {
		t.Fatal(err)
	}
	svc := contract.Worker("test", "workers")
	ready := make(chan struct{})
	var once sync.Once
	w, err := worker.New(worker.Config{
		Client: c, Executor: &executor.Executor{Provider: p},
		RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
		Group: "workers", Consumer: consumer, Concurrency: concurrency, Timeout: 10 * time.Second, ConnectTimeout: 5 * time.Second,
		Logger: slog.New(slog.DiscardHandler), OnReady: func() { once.Do(func() { close(ready) }) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker %s: %v", consumer, err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("worker stopped: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("worker not ready")
	}
}

func startRequester(t *testing.T, b *localbus.Bus) *correlator.Requester {
	t.Helper()
	c, err := b.Client("frontdoor", serviceScopes)
	if err != nil {
		t.Fatal(err)
	}
	r := correlator.StartRequester(c, correlator.Options{})
	t.Cleanup(func() { _ = r.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

func chatRequest(text string) llmapi.ExecutionEventRequest {
	body, _ := json.Marshal(map[string]any{"model": "codex-chatgpt", "messages": []any{map[string]string{"role": "user", "content": text}}})
	return llmapi.ExecutionEventRequest{Operation: llmapi.OpChatCompletions, Model: "codex-chatgpt", Body: body}
}

func do(t *testing.T, r *correlator.Requester, req llmapi.ExecutionEventRequest) *correlator.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	res, err := r.Do(ctx, req, correlator.DoOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestAllOperationsRoundTrip(t *testing.T) {
	b := startBus(t, localbus.Options{})
	startWorker(t, b, "w1", static.New(), 4)
	r := startRequester(t, b)
	for _, c := range selftest.Cases() {
		t.Run(fmt.Sprintf("%s/stream=%v", c.Op, c.Stream), func(t *testing.T) {
			res := do(t, r, llmapi.ExecutionEventRequest{Operation: c.Op, Model: "codex-chatgpt", Stream: c.Stream, Body: json.RawMessage(c.Body)})
			if res.Response.StatusCode != 200 || res.Response.Operation != c.Op {
				t.Fatalf("response %+v", res.Response)
			}
			text, err := selftest.AnswerText(c.Op, res.Response.Body)
			if err != nil || text != c.Want {
				t.Fatalf("answer %q (%v), want %q", text, err, c.Want)
			}
			if !strings.HasPrefix(res.Response.Worker, "bus-integration-codex/w1") {
				t.Fatalf("worker %q", res.Response.Worker)
			}
			if c.Stream {
				streamed, err := selftest.StreamedText(c.Op, res.Chunks)
				if err != nil || streamed != c.Want {
					t.Fatalf("streamed %q (%v)", streamed, err)
				}
			} else if len(res.Chunks) != 0 {
				t.Fatalf("%d chunks for a non-streaming request", len(res.Chunks))
			}
		})
	}
}

func TestUnicastGroupAnswersEachRequestOnce(t *testing.T) {
	b := startBus(t, localbus.Options{})
	startWorker(t, b, "w1", static.New(), 8)
	startWorker(t, b, "w2", static.New(), 8)
	r := startRequester(t, b)
	const n = 100
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		workers = map[string]int{}
		errs    = make(chan error, n)
	)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			req := chatRequest(fmt.Sprintf("request %d", i))
			res, err := r.Do(ctx, req, correlator.DoOptions{Settle: 200 * time.Millisecond})
			if err != nil {
				errs <- err
				return
			}
			text, _ := selftest.AnswerText(llmapi.OpChatCompletions, res.Response.Body)
			switch {
			case res.Duplicates != 0:
				errs <- fmt.Errorf("request %d answered %d extra times", i, res.Duplicates)
			case text != fmt.Sprintf("Echo: request %d", i):
				errs <- fmt.Errorf("request %d got %q", i, text)
			}
			mu.Lock()
			workers[res.Response.Worker]++
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total := 0
	for _, k := range workers {
		total += k
	}
	if total != n {
		t.Fatalf("%d answers, want %d", total, n)
	}
	t.Logf("answers per worker: %v", workers)
}

func TestMalformedRequestsGetErrorResponses(t *testing.T) {
	b := startBus(t, localbus.Options{})
	startWorker(t, b, "w1", static.New(), 2)
	r := startRequester(t, b)
	pub, err := b.Client("frontdoor", serviceScopes)
	if err != nil {
		t.Fatal(err)
	}
	// Raw payloads that are not ExecutionEventRequests still get one
	// correlated error response.
	responses := make(chan events.Envelope, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	connected := make(chan struct{})
	go func() {
		_ = pub.Listen(ctx, events.ListenOptions{Names: []string{llmapi.OpChatCompletions.ResponseEvent()}, OnConnect: func() { close(connected) }},
			func(_ context.Context, env events.Envelope) error { responses <- env; return nil })
	}()
	<-connected
	for _, payload := range []string{`"not an object"`, `{"requestId":"req_bad2","operation":"chat.completions"}`, `{"requestId":"req_bad3","operation":"responses","body":{}}`} {
		corr := "req_bad1"
		if strings.Contains(payload, "req_bad") {
			corr = payload[strings.Index(payload, "req_bad") : strings.Index(payload, "req_bad")+8]
		}
		if _, err := pub.Publish(context.Background(), events.Event{Name: llmapi.OpChatCompletions.RequestEvent(), CorrelationID: corr, Payload: json.RawMessage(payload)}); err != nil {
			t.Fatal(err)
		}
		select {
		case env := <-responses:
			var resp llmapi.ExecutionEventResponse
			if err := json.Unmarshal(env.Payload, &resp); err != nil {
				t.Fatal(err)
			}
			if env.CorrelationID != corr || resp.RequestID != corr || resp.StatusCode != 400 {
				t.Fatalf("payload %s: response %s %+v", payload, env.CorrelationID, resp)
			}
			if e, ok := llmapi.ParseErrorBody(resp.Body); !ok || e.Message == "" || e.Type != llmapi.TypeInvalidRequest {
				t.Fatalf("error body %s", resp.Body)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no response to %s", payload)
		}
	}
	// An OpenAI-level mistake is a 400 naming the parameter.
	req := chatRequest("hi")
	req.Body = json.RawMessage(`{"model":"codex-chatgpt","messages":[{"role":"user","content":"hi"}],"n":3}`)
	res := do(t, r, req)
	e, ok := llmapi.ParseErrorBody(res.Response.Body)
	if res.Response.StatusCode != 400 || !ok || e.Param == nil || *e.Param != "n" {
		t.Fatalf("n=3: %d %s", res.Response.StatusCode, res.Response.Body)
	}
}

// blocking is a provider that holds every turn until its context ends or
// it is released, counting turns running at once.
type blocking struct {
	running, peak atomic.Int64
	release       chan struct{}
	started       chan struct{}
}

func newBlocking() *blocking {
	return &blocking{release: make(chan struct{}), started: make(chan struct{}, 100)}
}

func (p *blocking) Capabilities() turn.Capabilities { return turn.Capabilities{} }
func (p *blocking) Close() error                    { return nil }
func (p *blocking) Run(ctx context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error) {
	n := p.running.Add(1)
	defer p.running.Add(-1)
	for {
		peak := p.peak.Load()
		if n <= peak || p.peak.CompareAndSwap(peak, n) {
			break
		}
	}
	p.started <- struct{}{}
	if sink != nil {
		sink(turn.Delta{Kind: turn.DeltaText, Text: "partial"})
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-p.release:
		return &turn.Result{Text: "released", Finish: turn.FinishStop}, nil
	}
}

func TestCancelEventInterruptsTheRequest(t *testing.T) {
	b := startBus(t, localbus.Options{})
	p := newBlocking()
	startWorker(t, b, "w1", p, 2)
	r := startRequester(t, b)
	pub, _ := b.Client("frontdoor", serviceScopes)
	req := chatRequest("slow")
	req.RequestID = correlator.NewRequestID()
	req.Stream = true
	req.Body = json.RawMessage(`{"model":"codex-chatgpt","stream":true,"messages":[{"role":"user","content":"slow"}]}`)
	go func() {
		<-p.started
		_, _ = pub.PublishJSON(context.Background(), llmapi.OpChatCompletions.CancelEvent(), req.RequestID,
			llmapi.ExecutionEventCancel{RequestID: req.RequestID, Operation: llmapi.OpChatCompletions, Reason: llmapi.ReasonClientDisconnected})
	}()
	res := do(t, r, req)
	if res.Response.StatusCode != executor.StatusClientClosed {
		t.Fatalf("status %d, want %d: %s", res.Response.StatusCode, executor.StatusClientClosed, res.Response.Body)
	}
	// The stream that had begun ends with a terminal error frame.
	if len(res.Chunks) < 2 || !llmapi.IsTerminalFrame(llmapi.OpChatCompletions, res.Chunks[len(res.Chunks)-1].Data, false) {
		t.Fatalf("chunks %v: want the partial delta then a terminal error frame", res.Chunks)
	}
}

func TestDeadlineGivesTimeout(t *testing.T) {
	b := startBus(t, localbus.Options{})
	startWorker(t, b, "w1", newBlocking(), 2)
	r := startRequester(t, b)
	req := chatRequest("slow")
	deadline := time.Now().Add(300 * time.Millisecond)
	req.Deadline = &deadline
	res := do(t, r, req)
	if res.Response.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("status %d: %s", res.Response.StatusCode, res.Response.Body)
	}
}

func TestBackpressureLeavesWorkForOtherWorkers(t *testing.T) {
	b := startBus(t, localbus.Options{})
	busy := newBlocking()
	startWorker(t, b, "busy", busy, 2)
	r := startRequester(t, b)
	results := make(chan *correlator.Result, 3)
	for i := range 3 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			res, err := r.Do(ctx, chatRequest(fmt.Sprintf("job %d", i)), correlator.DoOptions{})
			if err != nil {
				t.Error(err)
			}
			results <- res
		}()
	}
	<-busy.started
	<-busy.started
	// The busy worker runs two and must not take the third: a worker that
	// joins later gets it.
	startWorker(t, b, "idle", static.New(), 2)
	select {
	case res := <-results:
		if !strings.HasSuffix(res.Response.Worker, "/idle") {
			t.Fatalf("third request answered by %s, want the idle worker", res.Response.Worker)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("third request was held by the busy worker")
	}
	if peak := busy.peak.Load(); peak != 2 {
		t.Fatalf("busy worker ran %d at once, want its concurrency 2", peak)
	}
	close(busy.release)
	for range 2 {
		if res := <-results; res == nil || res.Response.StatusCode != 200 {
			t.Fatalf("released request: %+v", res)
		}
	}
}

func TestWorkerSurvivesEventsAPIRestart(t *testing.T) {
	b := startBus(t, localbus.Options{})
	addr := strings.TrimPrefix(b.URL, "http://")
	secret := b.Secret()
	startWorker(t, b, "w1", static.New(), 2)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2 := startBus(t, localbus.Options{Addr: addr, Secret: secret})
	r := startRequester(t, b2)
	// The worker reconnects on its own; its group is recreated on the new
	// server when it does, so retry until it answers.
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		res, err := r.Do(ctx, chatRequest("after restart"), correlator.DoOptions{})
		cancel()
		if err == nil {
			if text, _ := selftest.AnswerText(llmapi.OpChatCompletions, res.Response.Body); text != "Echo: after restart" {
				t.Fatalf("answer %q", text)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("worker did not serve after the Events API restarted: %v", err)
		}
	}
}
