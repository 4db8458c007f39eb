package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/contract"
	"github.com/busdk/bus-integration-codex/internal/correlator"
	"github.com/busdk/bus-integration-codex/internal/eventstore/backends"
	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/internal/worker"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// waitLimit bounds every wait below; reaching it is a failure (something
// never happened), not a speed assertion.
const waitLimit = 20 * time.Second

// eventually polls cond until it holds or waitLimit passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// running is a worker started by run.
type running struct {
	*worker.Worker
	done chan error
	stop func() error
}

// run starts a worker on client with cfg's zero fields defaulted, and
// waits until it is subscribed. Its error is checked at cleanup unless
// the test took it from done.
func run(t *testing.T, client *events.Client, cfg worker.Config) *running {
	t.Helper()
	svc := contract.Worker("test", "workers")
	cfg.Client = client
	cfg.RequestNames = svc.Names(contract.Receive, events.Unicast)
	cfg.CancelNames = svc.Names(contract.Receive, events.Broadcast)
	cfg.Group = "workers"
	if cfg.Consumer == "" {
		cfg.Consumer = "w1"
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 2
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	cfg.ConnectTimeout = 5 * time.Second
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ready := make(chan struct{})
	var once sync.Once
	cfg.OnReady = func() { once.Do(func() { close(ready) }) }
	w, err := worker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Worker: w, done: make(chan error, 1)}
	go func() { r.done <- w.Run(ctx) }()
	var stopOnce sync.Once
	var stopErr error
	r.stop = func() error {
		stopOnce.Do(func() {
			cancel()
			select {
			case stopErr = <-r.done:
			case <-time.After(waitLimit):
				stopErr = errors.New("Run did not return")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-r.done:
		r.done <- err
		t.Fatalf("worker stopped: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("worker not ready")
	}
	return r
}

func serviceClient(t *testing.T, b *localbus.Bus, subject string) *events.Client {
	t.Helper()
	c, err := b.Client(subject, serviceScopes, events.WithRetry(fastRetry), events.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// counting is a provider that counts its model calls and answers "ok";
// hook, when set, runs first in every call.
type counting struct {
	calls atomic.Int64
	hook  func(n int64, ctx context.Context, sink turn.Sink) error
}

func (p *counting) Capabilities() turn.Capabilities { return turn.Capabilities{} }
func (p *counting) Close() error                    { return nil }
func (p *counting) Run(ctx context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error) {
	n := p.calls.Add(1)
	if p.hook != nil {
		if err := p.hook(n, ctx, sink); err != nil {
			return nil, err
		}
	}
	return &turn.Result{Text: "ok", Finish: turn.FinishStop}, nil
}

// responses collects the response events of chat completions.
func responses(t *testing.T, c *events.Client) <-chan events.Envelope {
	t.Helper()
	out := make(chan events.Envelope, 16)
	ctx, cancel := context.WithCancel(context.Background())
	connected := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Listen(ctx, events.ListenOptions{Names: []string{llmapi.OpChatCompletions.ResponseEvent()},
			OnConnect: func() { once.Do(func() { close(connected) }) }},
			func(ctx context.Context, env events.Envelope) error {
				select {
				case out <- env:
				case <-ctx.Done():
				}
				return nil
			})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-connected:
	case <-time.After(waitLimit):
		t.Fatal("response listener not connected")
	}
	return out
}

// TestRequestFromNonServiceIsRefused: a caller's token cannot make the
// worker act: its request is refused (by the Events API, or by the worker
// with a 403), and it never reaches the provider.
func TestRequestFromNonServiceIsRefused(t *testing.T) {
	b := startBus(t, localbus.Options{})
	p := &counting{}
	run(t, serviceClient(t, b, "worker"), worker.Config{Executor: &executor.Executor{Provider: p}})
	got := responses(t, serviceClient(t, b, "observer"))
	caller, err := b.Client("mallory", []string{llmapi.Scope}) // a caller's token: no service scope
	if err != nil {
		t.Fatal(err)
	}
	req := chatRequest("act for alice")
	req.RequestID, req.IdentityID = correlator.NewRequestID(), "alice"
	_, err = caller.PublishJSON(context.Background(), llmapi.OpChatCompletions.RequestEvent(), req.RequestID, req)
	if apiErr, ok := errors.AsType[*events.APIError](err); ok && apiErr.Status == http.StatusForbidden {
		t.Log("the Events API refused the caller's publish")
	} else {
		if err != nil {
			t.Fatal(err)
		}
		select {
		case env := <-got:
			var resp llmapi.ExecutionEventResponse
			_ = json.Unmarshal(env.Payload, &resp)
			e, _ := llmapi.ParseErrorBody(resp.Body)
			if env.CorrelationID != req.RequestID || resp.StatusCode != http.StatusForbidden || e.Code == nil || *e.Code != "untrusted_publisher" {
				t.Fatalf("response %s: %+v", env.CorrelationID, resp)
			}
		case <-time.After(waitLimit):
			t.Fatal("no response to the caller's request")
		}
	}
	// A service's request still runs; by then the caller's was handled.
	res := do(t, startRequester(t, b), chatRequest("hi"))
	if res.Response.StatusCode != http.StatusOK {
		t.Fatalf("service request: %+v", res.Response)
	}
	if n := p.calls.Load(); n != 1 {
		t.Fatalf("%d model calls, want only the service's request", n)
	}
}

// TestPanicAnswers500AndTheWorkerKeepsServing: a provider that panics
// answers that request 500; the next request succeeds.
func TestPanicAnswers500AndTheWorkerKeepsServing(t *testing.T) {
	b := startBus(t, localbus.Options{})
	p := &counting{hook: func(n int64, _ context.Context, sink turn.Sink) error {
		if n == 1 {
			if sink != nil {
				sink(turn.Delta{Kind: turn.DeltaText, Text: "partial"})
			}
			panic("provider bug")
		}
		return nil
	}}
	run(t, serviceClient(t, b, "worker"), worker.Config{Executor: &executor.Executor{Provider: p}, Concurrency: 1})
	r := startRequester(t, b)
	req := chatRequest("boom")
	req.Stream = true
	req.Body = json.RawMessage(`{"model":"codex-chatgpt","stream":true,"messages":[{"role":"user","content":"boom"}]}`)
	res := do(t, r, req)
	e, ok := llmapi.ParseErrorBody(res.Response.Body)
	if res.Response.StatusCode != http.StatusInternalServerError || !ok || e.Code == nil || *e.Code != "internal_error" {
		t.Fatalf("panicking request: %d %s", res.Response.StatusCode, res.Response.Body)
	}
	if strings.Contains(string(res.Response.Body), "provider bug") {
		t.Fatalf("the panic value leaked to the client: %s", res.Response.Body)
	}
	if res := do(t, r, chatRequest("next")); res.Response.StatusCode != http.StatusOK {
		t.Fatalf("next request: %d %s", res.Response.StatusCode, res.Response.Body)
	}
}

// TestQueuedRequestCancelledBeforeStartMakesNoModelCall: with concurrency
// 1, a request waiting in the group behind a running one whose cancel
// arrives is answered 499 without a model call.
func TestQueuedRequestCancelledBeforeStartMakesNoModelCall(t *testing.T) {
	b := startBus(t, localbus.Options{})
	p := newBlocking()
	run(t, serviceClient(t, b, "worker"), worker.Config{Executor: &executor.Executor{Provider: p}, Concurrency: 1})
	r := startRequester(t, b)
	pub := serviceClient(t, b, "frontdoor")
	cancelReq := func(id string) {
		t.Helper()
		if _, err := pub.PublishJSON(context.Background(), llmapi.OpChatCompletions.CancelEvent(), id,
			llmapi.ExecutionEventCancel{RequestID: id, Operation: llmapi.OpChatCompletions, Reason: llmapi.ReasonClientDisconnected}); err != nil {
			t.Fatal(err)
		}
	}
	first, queued := chatRequest("first"), chatRequest("queued")
	first.RequestID, queued.RequestID = correlator.NewRequestID(), correlator.NewRequestID()
	results := make(chan *correlator.Result, 2)
	go func() { results <- do(t, r, first) }()
	<-p.started
	go func() { results <- do(t, r, queued) }()
	// The queued request cannot have been taken: the worker runs one at a
	// time and has not acknowledged the first. Cancel it, then the first;
	// cancels arrive in order, so once the first is answered the worker
	// has seen the queued one's cancel too.
	cancelReq(queued.RequestID)
	cancelReq(first.RequestID)
	for range 2 {
		select {
		case res := <-results:
			if res.Response.StatusCode != executor.StatusClientClosed {
				t.Fatalf("%s: %d %s", res.Response.RequestID, res.Response.StatusCode, res.Response.Body)
			}
		case <-time.After(waitLimit):
			t.Fatal("a cancelled request was not answered")
		}
	}
	if n := p.running.Load() + int64(len(p.started)); n != 0 || p.peak.Load() != 1 {
		t.Fatalf("the queued request reached the provider (started %d, peak %d)", len(p.started), p.peak.Load())
	}
}

// TestExpiredRequestMakesNoModelCall: a request whose deadline passed
// while it waited in the group is answered 504 without a model call.
func TestExpiredRequestMakesNoModelCall(t *testing.T) {
	b := startBus(t, localbus.Options{})
	p := &counting{}
	run(t, serviceClient(t, b, "worker"), worker.Config{Executor: &executor.Executor{Provider: p}})
	req := chatRequest("too late")
	past := time.Now().Add(-time.Second)
	req.Deadline = &past
	res := do(t, startRequester(t, b), req)
	if res.Response.StatusCode != http.StatusGatewayTimeout || p.calls.Load() != 0 {
		t.Fatalf("status %d, %d model calls", res.Response.StatusCode, p.calls.Load())
	}
}

// TestLostChunkEndsTheStreamWithAnError: a frame the Events API refuses
// (larger than it accepts) ends the stream: the frames before it arrive
// without a gap, then an error response; the request is stopped.
func TestLostChunkEndsTheStreamWithAnError(t *testing.T) {
	b := startBus(t, localbus.Options{})
	stopped := make(chan struct{})
	p := &counting{hook: func(_ int64, ctx context.Context, sink turn.Sink) error {
		sink(turn.Delta{Kind: turn.DeltaText, Text: "small"})
		sink(turn.Delta{Kind: turn.DeltaText, Text: strings.Repeat("x", 9<<20)}) // over the Events API's 8 MiB
		sink(turn.Delta{Kind: turn.DeltaText, Text: "after"})
		select {
		case <-ctx.Done():
			close(stopped)
			return ctx.Err()
		case <-time.After(waitLimit):
			return errors.New("not stopped")
		}
	}}
	run(t, serviceClient(t, b, "worker"), worker.Config{Executor: &executor.Executor{Provider: p}})
	req := chatRequest("big")
	req.Stream = true
	req.Body = json.RawMessage(`{"model":"codex-chatgpt","stream":true,"messages":[{"role":"user","content":"big"}]}`)
	res := do(t, startRequester(t, b), req)
	e, ok := llmapi.ParseErrorBody(res.Response.Body)
	if res.Response.StatusCode != http.StatusBadGateway || !ok || e.Code == nil || *e.Code != "stream_interrupted" {
		t.Fatalf("response %d %s, want 502 stream_interrupted", res.Response.StatusCode, res.Response.Body)
	}
	for _, c := range res.Chunks {
		if strings.Contains(string(c.Data), "after") || strings.Contains(string(c.Data), "xxxx") {
			t.Fatalf("a frame after the lost one was published: %.100s", c.Data)
		}
	}
	if len(res.Chunks) == 0 {
		t.Fatal("the frames before the lost one are missing")
	}
	select {
	case <-stopped:
	case <-time.After(waitLimit):
		t.Fatal("the request was not stopped")
	}
}

// switchable is a token source a test can rotate.
type switchable struct{ tok atomic.Pointer[string] }

func (s *switchable) set(tok string)          { s.tok.Store(&tok) }
func (s *switchable) token() (string, error)  { return *s.tok.Load(), nil }
func (s *switchable) expiry() (exp time.Time) { return tokenExpiry(*s.tok.Load()) }
func tokenFor(t *testing.T, key []byte, ttl time.Duration) string {
	t.Helper()
	now := time.Now()
	tok, err := auth.Issue(key, auth.Claims{Subject: "worker", Audience: []string{auth.Audience}, Scopes: serviceScopes,
		IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(ttl)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// tokenExpiry reads the exp claim the test put in (verified with the key).
func tokenExpiry(tok string) time.Time {
	c, err := auth.NewVerifier(testKey, auth.Audience).Verify(tok)
	if err != nil {
		return time.Unix(1, 0) // a token that does not verify counts as expired
	}
	return c.ExpiresAt
}

var testKey = []byte("worker-test-secret-0123456789abcdef")

func switchableClient(t *testing.T, b *localbus.Bus, ts *switchable) *events.Client {
	t.Helper()
	c, err := events.NewClient(b.URL, events.WithTokenSource(ts.token), events.WithRetry(fastRetry), events.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestExpiredTokenMakesTheWorkerUnready: once its token has expired the
// worker reports unready (and takes nothing) until a rotated token is in.
func TestExpiredTokenMakesTheWorkerUnready(t *testing.T) {
	b := startBus(t, localbus.Options{Secret: testKey})
	ts := &switchable{}
	ts.set(tokenFor(t, testKey, 2*time.Second)) // the Events API allows 30 s of leeway
	w := run(t, switchableClient(t, b, ts), worker.Config{Executor: &executor.Executor{Provider: static.New()}, TokenExpiry: ts.expiry})
	eventually(t, "unready after the token expired", func() bool {
		ready, reason := w.Readiness()
		return !ready && reason == "token_refused"
	})
	ts.set(tokenFor(t, testKey, time.Hour))
	eventually(t, "ready after rotation", func() bool { ready, _ := w.Readiness(); return ready })
	if res := do(t, startRequester(t, b), chatRequest("after rotation")); res.Response.StatusCode != http.StatusOK {
		t.Fatalf("after rotation: %+v", res.Response)
	}
}

// TestRefusedTokenPausesTheWorker: when the Events API refuses the
// worker's token it stops taking requests and reports unready; the answer
// it holds is published once a good token is back, and it takes requests
// again.
func TestRefusedTokenPausesTheWorker(t *testing.T) {
	b := startBus(t, localbus.Options{Secret: testKey})
	ts := &switchable{}
	good := tokenFor(t, testKey, time.Hour)
	ts.set(good)
	p := newBlocking()
	w := run(t, switchableClient(t, b, ts), worker.Config{Executor: &executor.Executor{Provider: p}, Concurrency: 1})
	r := startRequester(t, b)
	results := make(chan *correlator.Result, 2)
	go func() { results <- do(t, r, chatRequest("held")) }()
	<-p.started
	ts.set(tokenFor(t, []byte("some-other-key-0123456789abcdef"), time.Hour)) // refused: 401
	close(p.release)
	eventually(t, "unready while the token is refused", func() bool {
		ready, reason := w.Readiness()
		return !ready && reason == "token_refused"
	})
	ts.set(good)
	for i := range 2 {
		if i == 1 {
			go func() { results <- do(t, r, chatRequest("next")) }()
		}
		select {
		case res := <-results:
			if res.Response.StatusCode != http.StatusOK {
				t.Fatalf("answer %d: %+v", i, res.Response)
			}
		case <-time.After(waitLimit):
			t.Fatalf("answer %d never came", i)
		}
	}
	if ready, reason := w.Readiness(); !ready {
		t.Fatalf("unready (%s) after the token was accepted again", reason)
	}
}

// TestTokenRefusedTooLongEndsRun: a refusal that outlasts the recovery
// bound ends Run with ErrTokenRefused.
func TestTokenRefusedTooLongEndsRun(t *testing.T) {
	b := startBus(t, localbus.Options{Secret: testKey})
	ts := &switchable{}
	ts.set(tokenFor(t, testKey, time.Hour))
	w := run(t, switchableClient(t, b, ts), worker.Config{Executor: &executor.Executor{Provider: static.New()}, AuthRecoveryTimeout: time.Second})
	r := startRequester(t, b)
	ts.set(tokenFor(t, []byte("some-other-key-0123456789abcdef"), time.Hour))
	// A request makes the worker publish, which the Events API refuses.
	reqCtx, cancelReq := context.WithTimeout(context.Background(), waitLimit)
	defer cancelReq()
	go func() { _, _ = r.Do(reqCtx, chatRequest("x"), correlator.DoOptions{}) }()
	select {
	case err := <-w.done:
		w.done <- nil // for cleanup
		if !errors.Is(err, worker.ErrTokenRefused) || !strings.Contains(err.Error(), "401") {
			t.Fatalf("Run = %v, want ErrTokenRefused with the 401", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Run did not end")
	}
}

// TestRefusedAtStartEndsRunAtOnce: a token refused at the first
// connection is a configuration error: Run returns the Events API's error.
func TestRefusedAtStartEndsRunAtOnce(t *testing.T) {
	b := startBus(t, localbus.Options{Secret: testKey})
	bad, err := events.NewClient(b.URL, events.WithToken(tokenFor(t, []byte("some-other-key-0123456789abcdef"), time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	svc := contract.Worker("test", "workers")
	w, err := worker.New(worker.Config{Client: bad, Executor: &executor.Executor{Provider: static.New()},
		RequestNames: svc.Names(contract.Receive, events.Unicast), CancelNames: svc.Names(contract.Receive, events.Broadcast),
		Group: "workers", Consumer: "w1", Concurrency: 1, Timeout: time.Second, ConnectTimeout: 5 * time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	err = w.Run(ctx)
	if apiErr, ok := errors.AsType[*events.APIError](err); !ok || apiErr.Status != http.StatusUnauthorized {
		t.Fatalf("Run = %v, want the 401", err)
	}
}

// TestWorkerSubscribesBeforeItsExecutor: a worker without an executor yet
// is subscribed (its requests wait in the group) and unready; requests run
// once the executor is provided.
func TestWorkerSubscribesBeforeItsExecutor(t *testing.T) {
	b := startBus(t, localbus.Options{})
	w := run(t, serviceClient(t, b, "worker"), worker.Config{})
	if ready, reason := w.Readiness(); ready || reason != "starting" {
		t.Fatalf("readiness %v %q before the executor, want starting", ready, reason)
	}
	got := responses(t, serviceClient(t, b, "observer"))
	req := chatRequest("early")
	req.RequestID = correlator.NewRequestID()
	acc, err := serviceClient(t, b, "frontdoor").PublishJSON(context.Background(), llmapi.OpChatCompletions.RequestEvent(), req.RequestID, req)
	if err != nil || (acc.Groups != nil && *acc.Groups != 1) {
		t.Fatalf("publish: %+v %v", acc, err)
	}
	// The request waits in the group until the executor is there.
	w.SetExecutor(&executor.Executor{Provider: static.New()})
	select {
	case env := <-got:
		var resp llmapi.ExecutionEventResponse
		_ = json.Unmarshal(env.Payload, &resp)
		if env.CorrelationID != req.RequestID || resp.StatusCode != http.StatusOK || !strings.Contains(string(resp.Body), "Echo: early") {
			t.Fatalf("early request: %s %d %s", env.CorrelationID, resp.StatusCode, resp.Body)
		}
	case <-time.After(waitLimit):
		t.Fatal("the early request was never answered")
	}
	if ready, reason := w.Readiness(); !ready {
		t.Fatalf("unready (%s) with an executor", reason)
	}
}

// TestReadinessFollowsTheStreams: the worker is unready while the Events
// API is gone and ready again once it has resubscribed.
func TestReadinessFollowsTheStreams(t *testing.T) {
	b := startBus(t, localbus.Options{})
	addr := strings.TrimPrefix(b.URL, "http://")
	w := run(t, serviceClient(t, b, "worker"), worker.Config{Executor: &executor.Executor{Provider: static.New()}})
	if ready, reason := w.Readiness(); !ready {
		t.Fatalf("unready (%s) after start", reason)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "unready while the Events API is down", func() bool {
		ready, reason := w.Readiness()
		return !ready && reason == "not_subscribed"
	})
	startBus(t, localbus.Options{Addr: addr, Secret: b.Secret()})
	eventually(t, "ready again", func() bool { ready, _ := w.Readiness(); return ready })
}

// TestPoisonRequestIsDeadLettered: a request delivered more than
// MaxDeliveries times (its consumers die holding it) is answered with an
// error and moved to its dead-letter name, on every backend; it never
// reaches the provider.
func TestPoisonRequestIsDeadLettered(t *testing.T) {
	for _, name := range backends.Names() {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{}
			switch name {
			case "redis":
				env["BUS_EVENTS_REDIS_ADDR"] = redistest.Start(t)
			case "postgres":
				env["BUS_EVENTS_POSTGRES_DSN"] = pgtest.Start(t)
			}
			backend, err := backends.Open(context.Background(), name, busconfig.MapEnv(env))
			if err != nil {
				t.Fatal(err)
			}
			b := startBus(t, localbus.Options{Backend: backend})
			const maxDeliveries = 2
			svc := contract.Worker("test", "workers")
			reqName := llmapi.OpChatCompletions.RequestEvent()
			deadName := events.DeadLetterName(reqName)
			dead := make(chan events.Envelope, 1)
			observer := serviceClient(t, b, "observer")
			listen(t, observer, events.ListenOptions{Names: []string{deadName}}, func(env events.Envelope) { dead <- env })

			// A consumer that takes the request and dies holding it, again
			// and again, until it has had it maxDeliveries times.
			crasher := serviceClient(t, b, "crasher")
			r := startRequester(t, b)
			req := chatRequest("poison")
			req.RequestID = correlator.NewRequestID()
			results := make(chan *correlator.Result, 1)
			for delivery := 1; delivery <= maxDeliveries; delivery++ {
				ctx, cancel := context.WithCancel(context.Background())
				connected, got, done := make(chan struct{}), make(chan int, 1), make(chan struct{})
				var once sync.Once
				go func() {
					defer close(done)
					_ = crasher.Listen(ctx, events.ListenOptions{Names: svc.Names(contract.Receive, events.Unicast), Delivery: events.Unicast,
						Group: "workers", Consumer: "crasher", Ack: true, Visibility: 200 * time.Millisecond,
						OnConnect: func() { once.Do(func() { close(connected) }) }},
						func(_ context.Context, env events.Envelope) error {
							if env.CorrelationID != req.RequestID {
								return nil
							}
							got <- env.Deliveries
							return errors.New("die holding it")
						})
				}()
				select {
				case <-connected:
				case <-time.After(waitLimit):
					t.Fatal("the crashing consumer did not connect")
				}
				if delivery == 1 { // the group exists now
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), 3*waitLimit)
						defer cancel()
						res, err := r.Do(ctx, req, correlator.DoOptions{})
						if err != nil {
							t.Error(err)
						}
						results <- res
					}()
				}
				select {
				case n := <-got:
					if n != delivery {
						t.Errorf("delivery %d is stamped deliveries=%d", delivery, n)
					}
				case <-time.After(waitLimit):
					t.Fatalf("the crashing consumer did not get delivery %d", delivery)
				}
				cancel()
				<-done
			}
			p := &counting{}
			// Its short timeout makes a short visibility: a backend may wait
			// that long before it hands the crasher's delivery on.
			run(t, serviceClient(t, b, "worker"), worker.Config{Executor: &executor.Executor{Provider: p}, MaxDeliveries: maxDeliveries,
				Consumer: "w2", Timeout: time.Second})
			select {
			case res := <-results:
				if res == nil {
					t.Fatal("no answer to the poison request")
				}
				e, ok := llmapi.ParseErrorBody(res.Response.Body)
				if res.Response.StatusCode != http.StatusInternalServerError || !ok || e.Code == nil || *e.Code != "max_deliveries_exceeded" {
					t.Fatalf("poison answer %d %s", res.Response.StatusCode, res.Response.Body)
				}
			case <-time.After(3 * waitLimit):
				t.Fatal("the poison request was never answered")
			}
			select {
			case env := <-dead:
				var orig events.Envelope
				if err := json.Unmarshal(env.Payload, &orig); err != nil || orig.CorrelationID != req.RequestID || orig.Name != reqName {
					t.Fatalf("dead letter %s: %v", env.Payload, err)
				}
			case <-time.After(waitLimit):
				t.Fatalf("nothing on %s", deadName)
			}
			if n := p.calls.Load(); n != 0 {
				t.Fatalf("the poison request reached the provider %d times", n)
			}
		})
	}
}

// listen runs a listener until the test ends and waits for it to connect.
func listen(t *testing.T, c *events.Client, o events.ListenOptions, h func(events.Envelope)) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	connected := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	o.OnConnect = func() { once.Do(func() { close(connected) }) }
	go func() {
		defer close(done)
		_ = c.Listen(ctx, o, func(_ context.Context, env events.Envelope) error { h(env); return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-connected:
	case <-time.After(waitLimit):
		t.Fatal(fmt.Sprint("listener on ", o.Names, " not connected"))
	}
}
