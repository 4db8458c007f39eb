package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/testutil/scrape"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
	"github.com/busdk/bus-integration-codex/internal/tracing"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Metrics and traces end to end: each service's /metrics scraped and
// parsed with the Prometheus text parser before and after requests, and
// one request's spans and log lines followed across the bus.

// observedEnv is a stack whose Events API, front door and worker each
// report metrics on a registry of their own (the worker's served the way
// bus-integration-codex serves it on --metrics-addr) and spans to spans.
type observedEnv struct {
	*env
	// events, front and worker are the services' /metrics URLs.
	events, front, worker string
	spans                 *spanLog
	logs                  *testproc.SyncBuffer
}

// startObserved runs a stack on p; reg, when set, is the worker's
// registry (the codex provider's metrics go there too).
func startObserved(t *testing.T, p turn.Provider, reg *prometheus.Registry) *observedEnv {
	t.Helper()
	if reg == nil {
		reg = metrics.NewRegistry()
	}
	spans := newSpanLog()
	tracer := func(service string) trace.Tracer {
		tr := tracing.WithSyncExporter(service, spans)
		t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
		return tr.Tracer
	}
	logs := &testproc.SyncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	worker := stack.On(p)
	worker.Telemetry = stack.Telemetry{Metrics: reg, Tracer: tracer("bus-integration-codex")}
	st, err := stack.Start(ctx, stack.Config{
		Worker: worker, Timeout: waitLimit,
		Logger:             slog.New(tracing.LogHandler(slog.NewJSONHandler(logs, nil))),
		EventsTelemetry:    stack.Telemetry{Metrics: metrics.NewRegistry(), Tracer: tracer("bus-api-provider-events")},
		FrontDoorTelemetry: stack.Telemetry{Metrics: metrics.NewRegistry(), Tracer: tracer("bus-api-provider-llm")},
	})
	if err != nil {
		t.Fatalf("stack: %v", err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Errorf("stack close: %v", err)
		}
		if t.Failed() {
			t.Logf("logs:\n%s", logs.String())
		}
	})
	workerMetrics := httptest.NewServer(metrics.Handler(reg))
	t.Cleanup(workerMetrics.Close)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	e := &env{st: st, http: &http.Client{Transport: transport}}
	e.client = e.sdk(st.Token)
	return &observedEnv{env: e, events: st.Bus.URL + "/metrics", front: st.BaseURL + "/metrics", worker: workerMetrics.URL,
		spans: spans, logs: logs}
}

// scrapeAll scrapes the three services.
func (o *observedEnv) scrapeAll(t *testing.T) (events, front, worker scrape.Samples) {
	t.Helper()
	return scrape.Get(t, o.http, o.events), scrape.Get(t, o.http, o.front), scrape.Get(t, o.http, o.worker)
}

// settled waits until nothing is in flight anywhere: every request left
// the front door and the worker, every delivery is acknowledged. Then the
// counters hold their final values.
func (o *observedEnv) settled(t *testing.T) {
	t.Helper()
	until(t, "nothing in flight", func() bool {
		ev, fr, wk := o.scrapeAll(t)
		return fr.Sum("bus_llm_requests_in_flight") == 0 && wk.Sum("bus_worker_requests_in_flight") == 0 &&
			ev.Sum("bus_events_pending_deliveries") == 0
	})
}

// until polls cond until it holds; waitLimit passing is a failure.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// moved asserts after[key] - before[key] == want for each key.
func moved(t *testing.T, service string, before, after scrape.Samples, want map[string]float64) {
	t.Helper()
	for key, w := range want {
		if got := after[key] - before[key]; got != w {
			t.Errorf("%s: %s moved by %v, want %v", service, key, got, w)
		}
	}
}

// usageOf returns the usage object of a chat completion or of a usage
// stream frame.
func usageOf(t *testing.T, body string) llmapi.Usage {
	t.Helper()
	var v struct {
		Usage *struct {
			Prompt     int64 `json:"prompt_tokens"`
			Completion int64 `json:"completion_tokens"`
			Prompt2    struct {
				Cached int64 `json:"cached_tokens"`
			} `json:"prompt_tokens_details"`
			Completion2 struct {
				Reasoning int64 `json:"reasoning_tokens"`
			} `json:"completion_tokens_details"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(body), &v); err != nil || v.Usage == nil {
		t.Fatalf("no usage in %s", body)
	}
	u := v.Usage
	return llmapi.Usage{PromptTokens: u.Prompt, CompletionTokens: u.Completion, CachedTokens: u.Prompt2.Cached, ReasoningTokens: u.Completion2.Reasoning}
}

// chatRequests sends a plain and a streaming chat completion, one for an
// unknown model and one without a token, and returns the usage of the two
// answered ones and the number of stream frames (chunk events).
func chatRequests(t *testing.T, o *observedEnv) (usage llmapi.Usage, frames int) {
	t.Helper()
	add := func(u llmapi.Usage) {
		usage.PromptTokens += u.PromptTokens
		usage.CompletionTokens += u.CompletionTokens
		usage.CachedTokens += u.CachedTokens
		usage.ReasoningTokens += u.ReasoningTokens
	}
	resp := o.post(t, reqCtx(t), "/chat/completions", fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, model, prompt))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	add(usageOf(t, string(body)))

	resp = o.post(t, reqCtx(t), "/chat/completions", fmt.Sprintf(
		`{"model":%q,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":%q}]}`, model, prompt))
	evs := readSSE(t, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(evs) < 2 || evs[len(evs)-1].data != "[DONE]" {
		t.Fatalf("stream: %d %+v", resp.StatusCode, evs)
	}
	frames = len(evs) - 1 // [DONE] is the front door's own
	add(usageOf(t, evs[len(evs)-2].data))

	resp = o.post(t, reqCtx(t), "/chat/completions", `{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}`)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown model: %d", resp.StatusCode)
	}
	req, _ := http.NewRequestWithContext(reqCtx(t), http.MethodPost, o.st.URL+"/chat/completions", strings.NewReader(`{}`))
	if resp, err := o.http.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("without a token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	return usage, frames
}

// TestMetricsMove scrapes the Events API, the front door and the worker
// before and after requests: each counter moves by exactly what the
// requests did.
func TestMetricsMove(t *testing.T) {
	o := startObserved(t, static.New(), nil)
	ev0, fr0, wk0 := o.scrapeAll(t)
	usage, frames := chatRequests(t, o)
	o.settled(t)
	ev1, fr1, wk1 := o.scrapeAll(t)

	op, m := "operation=chat.completions", "model="+model
	k := scrape.Key
	moved(t, "front door", fr0, fr1, map[string]float64{
		k("bus_llm_requests_total", op, m, "status=200"):                 2,
		k("bus_llm_request_duration_seconds_count", op, m, "status=200"): 2,
		k("bus_llm_requests_total", op, "status=404"):                    1, // no model label: not a catalog id
		k("bus_llm_requests_total", op, "status=401"):                    1,
		k("bus_llm_tokens_total", m, "kind=input"):                       float64(usage.PromptTokens),
		k("bus_llm_tokens_total", m, "kind=cached"):                      float64(usage.CachedTokens),
		k("bus_llm_tokens_total", m, "kind=output"):                      float64(usage.CompletionTokens),
		k("bus_llm_tokens_total", m, "kind=reasoning"):                   float64(usage.ReasoningTokens),
		k("bus_llm_time_to_first_chunk_seconds_count", op, m):            1,
		k("bus_llm_requests_refused_total", "reason=not_found"):          1,
		k("bus_llm_requests_refused_total", "reason=unauthenticated"):    1,
	})
	if usage.PromptTokens == 0 || usage.CompletionTokens == 0 {
		t.Fatalf("the answers report no usage: %+v", usage)
	}
	moved(t, "worker", wk0, wk1, map[string]float64{
		k("bus_worker_requests_total", op, m, "status=200"):                 2,
		k("bus_worker_request_duration_seconds_count", op, m, "status=200"): 2,
		k("bus_worker_tokens_total", m, "kind=input"):                       float64(usage.PromptTokens),
		k("bus_worker_tokens_total", m, "kind=output"):                      float64(usage.CompletionTokens),
	})
	req, resp, chunk := "name=bus.llm.chat.completions.request", "name=bus.llm.chat.completions.response", "name=bus.llm.chat.completions.chunk"
	moved(t, "events api", ev0, ev1, map[string]float64{
		k("bus_events_published_total", req):                          2,
		k("bus_events_published_total", resp):                         2,
		k("bus_events_published_total", chunk):                        float64(frames),
		k("bus_events_delivered_total", req, "delivery=unicast"):      2,
		k("bus_events_delivered_total", resp, "delivery=broadcast"):   2, // one front door listens
		k("bus_events_delivered_total", chunk, "delivery=broadcast"):  float64(frames),
		k("bus_events_delivery_lag_seconds_count", req):               2,
		k("bus_events_acknowledged_total"):                            2,
		k("bus_events_redelivered_total", req):                        0,
		k("bus_events_pending_deliveries"):                            0,
		k("bus_events_delivery_lag_seconds_count", "name=other"):      0,
		k("bus_events_published_total", "name=bus.llm.other.request"): 0,
	})
	// Open streams: the front door's listeners and the worker's two.
	if n := ev1.Sum("bus_events_streams_open"); n < 3 {
		t.Errorf("bus_events_streams_open = %v", n)
	}
	if _, ok := fr1["go_goroutines"]; !ok {
		t.Error("the front door has no Go runtime metrics")
	}
}

// TestCodexMetrics follows the Codex pool and login through the worker's
// /metrics: size, a busy process while a turn runs, the turn latency by
// outcome, a restart after a process dies, and the login's rate-limit
// state and exhaustion as Codex reports them.
func TestCodexMetrics(t *testing.T) {
	cmd := fakemodel.CodexCommand(t) // skips without the codex binary
	fake := fakemodel.New(t)
	reg := metrics.NewRegistry()
	p := newCodex(t, cmd, fake, reg)
	o := startObserved(t, p, reg)
	k := scrape.Key
	worker := func() scrape.Samples { return scrape.Get(t, o.http, o.worker) }
	s0 := worker()
	for key, want := range map[string]float64{
		k("bus_codex_pool_processes"): 1, k("bus_codex_pool_processes_live"): 1, k("bus_codex_pool_processes_busy"): 0,
		k("bus_codex_process_starts_total"): 1, k("bus_codex_process_restarts_total"): 0, k("bus_codex_login_exhausted"): 0,
	} {
		if s0[key] != want {
			t.Errorf("at start %s = %v, want %v", key, s0[key], want)
		}
	}

	// A turn held by the model: its process is busy until it ends.
	reset := time.Now().Add(2 * time.Hour).Unix()
	hold := make(chan struct{})
	fake.Enqueue(fakemodel.Reply{Text: codexReply, Usage: codexUsage(), Hold: hold, Headers: map[string]string{
		"x-codex-primary-used-percent": "40", "x-codex-primary-window-minutes": "300", "x-codex-primary-reset-at": fmt.Sprint(reset)}})
	done := make(chan error, 1)
	go func() {
		_, err := o.client.Chat.Completions.New(reqCtx(t), chatParams())
		done <- err
	}()
	until(t, "a busy process while the turn runs", func() bool { return worker()[k("bus_codex_pool_processes_busy")] == 1 })
	close(hold)
	if err := <-done; err != nil {
		t.Fatalf("held request: %v", err)
	}
	s1 := worker()
	ok := k("bus_codex_turn_duration_seconds_count", "mode=model", "outcome=ok")
	moved(t, "worker", s0, s1, map[string]float64{ok: 1})
	for key, want := range map[string]float64{
		k("bus_codex_pool_processes_busy"):                            0,
		k("bus_codex_rate_limit_used_percent", "window=primary"):      40,
		k("bus_codex_rate_limit_resets_at_seconds", "window=primary"): float64(reset),
		k("bus_codex_live_threads"):                                   1,
	} {
		if s1[key] != want {
			t.Errorf("after the turn %s = %v, want %v", key, s1[key], want)
		}
	}

	// A process that dies is replaced on the next request.
	proc := p.Pool().Processes()[0]
	if err := syscall.Kill(-proc.PID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-proc.Done()
	fake.Enqueue(fakemodel.Reply{Text: codexReply, Usage: codexUsage()})
	if _, err := o.client.Chat.Completions.New(reqCtx(t), chatAsking("after the crash")); err != nil {
		t.Fatalf("after the crash: %v", err)
	}
	s2 := worker()
	moved(t, "worker", s1, s2, map[string]float64{
		k("bus_codex_process_starts_total"):   1,
		k("bus_codex_process_restarts_total"): 1,
		ok:                                    1,
	})

	// The login's usage limit: a 429 with the reset, and the login
	// reported exhausted until then.
	fake.Enqueue(fakemodel.Reply{Status: http.StatusTooManyRequests, ErrorType: "usage_limit_reached", ErrorMessage: "The usage limit has been reached",
		ErrorFields: map[string]any{"resets_at": reset, "plan_type": "plus"},
		Headers:     map[string]string{"x-codex-primary-used-percent": "100", "x-codex-primary-window-minutes": "300", "x-codex-primary-reset-at": fmt.Sprint(reset)}})
	_, err := o.client.Chat.Completions.New(reqCtx(t), chatAsking("one too many"))
	if apiErr := apiError(t, err); apiErr.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("usage limit: %v", err)
	}
	s3 := worker()
	moved(t, "worker", s2, s3, map[string]float64{
		k("bus_codex_turn_duration_seconds_count", "mode=model", "outcome=error"):                  1,
		k("bus_worker_requests_total", "operation=chat.completions", "model="+model, "status=429"): 1,
	})
	until(t, "the worker paused", func() bool { return worker()[k("bus_worker_paused", "reason=usage_limit")] == 1 })
	for key, want := range map[string]float64{
		k("bus_codex_login_exhausted"):                           1,
		k("bus_codex_login_exhausted_until_seconds"):             float64(reset),
		k("bus_codex_rate_limit_used_percent", "window=primary"): 100,
	} {
		if s3[key] != want {
			t.Errorf("exhausted: %s = %v, want %v", key, s3[key], want)
		}
	}
}

// TestTraceAcrossTheBus: one client request with a traceparent header is
// one trace — the front door's request and publish spans, the Events
// API's publish, the worker's execution (and on Codex its turn) — with
// the right parents; the response event carries the worker span's
// traceparent, and the front door's and the worker's log lines the trace
// id. A request without the header gets a trace of its own.
func TestTraceAcrossTheBus(t *testing.T) {
	t.Run("static", func(t *testing.T) { runTrace(t, startObserved(t, static.New(), nil), false) })
	t.Run("codex", func(t *testing.T) {
		cmd := fakemodel.CodexCommand(t) // skips without the codex binary
		fake := fakemodel.New(t)
		fake.SetReply(fakemodel.Reply{Text: codexReply, Usage: codexUsage()})
		runTrace(t, startObserved(t, newCodex(t, cmd, fake, nil), nil), true)
	})
}

// newCodex starts the codex provider on fake, its metrics on reg (none
// when nil).
func newCodex(t *testing.T, cmd string, fake *fakemodel.Server, reg prometheus.Registerer) *codex.Provider {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	p, err := codex.New(ctx, codex.Config{Command: cmd, Workdir: t.TempDir(), Processes: 1,
		Env: []string{"CODEX_HOME=" + fake.WriteCodexHome(t)}, Logger: testLogger(t), Metrics: reg})
	if err != nil {
		t.Fatalf("codex provider: %v", err)
	}
	return p
}

// chatAsking is a chat request asking text.
func chatAsking(text string) openai.ChatCompletionNewParams {
	p := chatParams()
	p.Messages = []openai.ChatCompletionMessageParamUnion{openai.UserMessage(text)}
	return p
}

func runTrace(t *testing.T, o *observedEnv, onCodex bool) {
	responses := observe(t, o.st)
	const traceID, clientSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequestWithContext(reqCtx(t), http.MethodPost, o.st.URL+"/chat/completions",
		strings.NewReader(fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}]}`, model, prompt)))
	req.Header.Set("Authorization", "Bearer "+o.st.Token)
	req.Header.Set("traceparent", "00-"+traceID+"-"+clientSpan+"-01")
	resp, err := o.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	requestID := resp.Header.Get("X-Request-Id")

	names := []string{"frontdoor.request", "frontdoor.publish", "events.publish", "worker.execute"}
	if onCodex {
		names = append(names, "codex.turn")
	}
	spans := o.spans.await(t, traceID, names...)
	fr, pub, evs, we := spans["frontdoor.request"], spans["frontdoor.publish"], spans["events.publish"], spans["worker.execute"]
	parent := func(child, parent sdktrace.ReadOnlySpan) {
		t.Helper()
		if child.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("%s: parent %s, want %s (%s)", child.Name(), child.Parent().SpanID(), parent.SpanContext().SpanID(), parent.Name())
		}
	}
	if fr.Parent().SpanID().String() != clientSpan || !fr.Parent().IsRemote() {
		t.Errorf("the front door's span does not continue the client's: parent %v", fr.Parent())
	}
	parent(pub, fr)
	parent(evs, pub) // the Events API continues the publish's traceparent header
	parent(we, pub)  // the worker continues the request event's traceparent
	if onCodex {
		parent(spans["codex.turn"], we)
	}
	for name, service := range map[string]string{"frontdoor.request": "bus-api-provider-llm", "events.publish": "bus-api-provider-events",
		"worker.execute": "bus-integration-codex"} {
		if got := serviceOf(spans[name]); got != service {
			t.Errorf("%s comes from service %q, want %q", name, got, service)
		}
	}
	if got := attr(fr, "llm.request_id"); got != requestID {
		t.Errorf("frontdoor.request llm.request_id %q, want the X-Request-Id %q", got, requestID)
	}
	if got := attr(fr, "http.response.status_code"); got != "200" {
		t.Errorf("frontdoor.request status %q", got)
	}

	// The response event carries the worker span's traceparent.
	wantTP := "00-" + traceID + "-" + we.SpanContext().SpanID().String() + "-01"
	responses.wait(t, "the response event", func(ob *observer) bool {
		for _, r := range ob.responses {
			if r.RequestID == requestID {
				if r.TraceParent != wantTP {
					t.Errorf("response traceparent %q, want %q", r.TraceParent, wantTP)
				}
				return true
			}
		}
		return false
	})

	// The log lines of the request carry its trace id, with the span of
	// the component that wrote them.
	for msg, span := range map[string]sdktrace.ReadOnlySpan{"request": fr, "request done": we} {
		line := logLine(t, o.logs.String(), msg, requestID)
		if line["trace_id"] != traceID || line["span_id"] != span.SpanContext().SpanID().String() {
			t.Errorf("log line %q: trace_id %v span_id %v, want %s %s", msg, line["trace_id"], line["span_id"], traceID, span.SpanContext().SpanID())
		}
	}

	// Without a traceparent header the front door starts a trace, and the
	// worker continues it.
	var raw *http.Response
	if _, err := o.client.Chat.Completions.New(reqCtx(t), chatAsking("a new trace"), option.WithResponseInto(&raw)); err != nil {
		t.Fatal(err)
	}
	id := requestID
	requestID = raw.Header.Get("X-Request-Id")
	root := o.spans.awaitSpan(t, func(s sdktrace.ReadOnlySpan) bool {
		return s.Name() == "frontdoor.request" && attr(s, "llm.request_id") == requestID
	})
	if root.Parent().IsValid() || root.SpanContext().TraceID().String() == traceID {
		t.Fatalf("the untraced request's span: parent %v, trace %s (the first request was %s)", root.Parent(), root.SpanContext().TraceID(), id)
	}
	o.spans.await(t, root.SpanContext().TraceID().String(), "frontdoor.publish", "worker.execute")
}

// serviceOf is the service.name of the span's resource.
func serviceOf(s sdktrace.ReadOnlySpan) string {
	for _, kv := range s.Resource().Attributes() {
		if kv.Key == "service.name" {
			return kv.Value.AsString()
		}
	}
	return ""
}

// attr is a span attribute as a string ("" when absent).
func attr(s sdktrace.ReadOnlySpan, key attribute.Key) string {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value.String()
		}
	}
	return ""
}

// logLine returns the JSON log line with msg about requestID (under the
// key request_id or request).
func logLine(t *testing.T, logs, msg, requestID string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line map[string]any
		if json.Unmarshal(sc.Bytes(), &line) != nil || line["msg"] != msg {
			continue
		}
		if line["request_id"] == requestID || line["request"] == requestID {
			return line
		}
	}
	t.Fatalf("no log line %q for request %s", msg, requestID)
	return nil
}

// spanLog is a span exporter that keeps every span and tells waiters.
type spanLog struct {
	mu      sync.Mutex
	spans   []sdktrace.ReadOnlySpan
	changed chan struct{} // closed and replaced on every export
}

func newSpanLog() *spanLog { return &spanLog{changed: make(chan struct{})} }

// ExportSpans implements sdktrace.SpanExporter.
func (l *spanLog) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.spans = append(l.spans, spans...)
	close(l.changed)
	l.changed = make(chan struct{})
	return nil
}

// Shutdown implements sdktrace.SpanExporter.
func (l *spanLog) Shutdown(context.Context) error { return nil }

// awaitSpan waits for a span that match accepts.
func (l *spanLog) awaitSpan(t *testing.T, match func(sdktrace.ReadOnlySpan) bool) sdktrace.ReadOnlySpan {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		l.mu.Lock()
		for _, s := range l.spans {
			if match(s) {
				l.mu.Unlock()
				return s
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-changed:
		case <-timeout:
			t.Fatal("the span never ended")
		}
	}
}

// await waits until trace traceID has exactly one span of each name and
// returns them by name.
func (l *spanLog) await(t *testing.T, traceID string, names ...string) map[string]sdktrace.ReadOnlySpan {
	t.Helper()
	timeout := time.After(waitLimit)
	for {
		l.mu.Lock()
		got := map[string][]sdktrace.ReadOnlySpan{}
		for _, s := range l.spans {
			if s.SpanContext().TraceID().String() == traceID {
				got[s.Name()] = append(got[s.Name()], s)
			}
		}
		changed := l.changed
		l.mu.Unlock()
		out := map[string]sdktrace.ReadOnlySpan{}
		for _, n := range names {
			if len(got[n]) == 1 {
				out[n] = got[n][0]
			}
		}
		if len(out) == len(names) {
			return out
		}
		select {
		case <-changed:
		case <-timeout:
			have := map[string]int{}
			for n, ss := range got {
				have[n] = len(ss)
			}
			t.Fatalf("trace %s: spans %v, want one each of %v", traceID, have, names)
		}
	}
}
