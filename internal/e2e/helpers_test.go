package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// waitLimit bounds every wait; reaching it is a failure (something never
// happened), not a speed assertion.
const waitLimit = 60 * time.Second

// model is the public model id every request asks for.
const model = "codex-chatgpt"

// prompt is what every request asks.
const prompt = "Reply OK"

// usage is the token usage a request must report.
type usage struct {
	prompt, completion, total, cached, reasoning int64
}

// env is a running stack with an SDK client pointed at its front door.
type env struct {
	st     *stack.Stack
	fake   *fakemodel.Server // nil on the static provider
	client openai.Client
	http   *http.Client
	// want is the answer text to prompt; usage its usage.
	want  string
	usage usage
}

// codexReply is what the fake model answers in the codex stacks, and
// codexUsage the usage it reports.
const codexReply = "OK from the fake model"

func codexUsage() fakemodel.Usage {
	return fakemodel.Usage{InputTokens: 321, CachedTokens: 100, OutputTokens: 12, ReasoningTokens: 5}
}

// startStatic runs a stack on the static provider.
func startStatic(t *testing.T) *env {
	t.Helper()
	e := newEnv(t, static.New())
	// The static provider echoes the prompt and counts words.
	e.want = "Echo: " + prompt
	e.usage = usage{prompt: 2, completion: 3, total: 5}
	return e
}

// startCodex runs a stack on the real codex binary talking to a fake
// model that answers codexReply with codexUsage.
func startCodex(t *testing.T) *env {
	t.Helper()
	cmd := fakemodel.CodexCommand(t)
	fake := fakemodel.New(t)
	fake.SetReply(fakemodel.Reply{Text: codexReply, Usage: codexUsage()})
	home := fake.WriteCodexHome(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	p, err := codex.New(ctx, codex.Config{
		Command: cmd, Workdir: t.TempDir(), Processes: 1,
		Env: []string{"CODEX_HOME=" + home}, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatalf("codex provider: %v", err)
	}
	e := newEnv(t, p)
	e.fake = fake
	e.want = codexReply
	u := codexUsage()
	e.usage = usage{prompt: u.InputTokens, completion: u.OutputTokens, total: u.InputTokens + u.OutputTokens, cached: u.CachedTokens, reasoning: u.ReasoningTokens}
	return e
}

func newEnv(t *testing.T, p turn.Provider) *env { return newEnvWith(t, p, stack.Config{}) }

// newEnvWith is newEnv with a stack configuration (its worker, timeout and
// logger are newEnv's).
func newEnvWith(t *testing.T, p turn.Provider, cfg stack.Config) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cfg.Worker, cfg.Timeout, cfg.Logger = stack.On(p), waitLimit, testLogger(t)
	st, err := stack.Start(ctx, cfg)
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
	hc := &http.Client{Transport: transport}
	e := &env{st: st, http: hc}
	e.client = e.sdk(st.Token)
	return e
}

// sdk returns an SDK client for the front door with token as the API key.
func (e *env) sdk(token string) openai.Client {
	return openai.NewClient(option.WithBaseURL(e.st.URL), option.WithAPIKey(token),
		option.WithMaxRetries(0), option.WithHTTPClient(e.http))
}

// testLogger logs warnings and errors into the test log until the cleanups
// registered after it (the stack's) have run; later lines are dropped.
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.closed = true
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct {
	t      *testing.T
	mu     sync.Mutex
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// reqCtx is the context of one request.
func reqCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// apiError returns err as an *openai.Error, failing the test otherwise.
func apiError(t *testing.T, err error) *openai.Error {
	t.Helper()
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("error %v (%T) is not an *openai.Error", err, err)
	}
	return apiErr
}

// post sends body to path on the front door with the caller token and
// returns the response (the caller closes its body).
func (e *env) post(t *testing.T, ctx context.Context, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.st.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+e.st.Token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	return resp
}

// sseEvent is one Server-Sent Events frame.
type sseEvent struct {
	// event is the "event:" field ("" when absent).
	event string
	// data is the "data:" field.
	data string
}

// readSSE reads a whole SSE body, checking that every frame is made only of
// "event:" and "data:" lines and ends with a blank line.
func readSSE(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	var out []sseEvent
	br := bufio.NewReader(r)
	var cur sseEvent
	inFrame := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			if line != "" || inFrame {
				t.Fatalf("stream ended inside a frame (%q, %v)", line, err)
			}
			if !errors.Is(err, io.EOF) {
				t.Fatalf("reading the stream: %v", err)
			}
			return out
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if !inFrame {
				t.Fatalf("empty frame after %d frames", len(out))
			}
			out = append(out, cur)
			cur, inFrame = sseEvent{}, false
		case strings.HasPrefix(line, "event: "):
			if inFrame {
				t.Fatalf("event line %q is not the first line of its frame", line)
			}
			cur.event, inFrame = strings.TrimPrefix(line, "event: "), true
		case strings.HasPrefix(line, "data: "):
			if cur.data != "" {
				t.Fatalf("frame with two data lines: %q", line)
			}
			cur.data, inFrame = strings.TrimPrefix(line, "data: "), true
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
}

// decode unmarshals a frame's data into a generic map.
func decode(t *testing.T, data string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(data), &m); err != nil {
		t.Fatalf("frame data is not a JSON object: %q", data)
	}
	return m
}

// str decodes a JSON string field ("" when absent or not a string).
func str(m map[string]json.RawMessage, key string) string {
	var s string
	_ = json.Unmarshal(m[key], &s)
	return s
}

func isJSONNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// observer records the bus.llm.* cancel and response events on the bus.
type observer struct {
	mu        sync.Mutex
	cancels   []llmapi.ExecutionEventCancel
	responses []llmapi.ExecutionEventResponse
	changed   chan struct{} // closed and replaced on every event
}

// observe starts a broadcast listener for every cancel and response event
// and returns once it is connected.
func observe(t *testing.T, st *stack.Stack) *observer {
	t.Helper()
	c, err := st.ServiceClient("e2e-observer", events.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	o := &observer{changed: make(chan struct{})}
	var names []string
	for _, op := range llmapi.Operations() {
		names = append(names, op.CancelEvent(), op.ResponseEvent())
	}
	ctx, cancel := context.WithCancel(context.Background())
	connected := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- c.Listen(ctx, events.ListenOptions{Names: names, Delivery: events.Broadcast,
			ConnectTimeout: waitLimit, OnConnect: func() { once.Do(func() { close(connected) }) }},
			func(_ context.Context, ev events.Envelope) error {
				_, kind, err := llmapi.ParseEventName(ev.Name)
				if err != nil {
					t.Errorf("observer: %v", err)
					return nil
				}
				o.mu.Lock()
				defer o.mu.Unlock()
				switch kind {
				case llmapi.KindCancel:
					var c llmapi.ExecutionEventCancel
					if err := json.Unmarshal(ev.Payload, &c); err != nil {
						t.Errorf("observer: bad cancel payload %s", ev.Payload)
					}
					o.cancels = append(o.cancels, c)
				case llmapi.KindResponse:
					var r llmapi.ExecutionEventResponse
					if err := json.Unmarshal(ev.Payload, &r); err != nil {
						t.Errorf("observer: bad response payload %s", ev.Payload)
					}
					o.responses = append(o.responses, r)
				}
				close(o.changed)
				o.changed = make(chan struct{})
				return nil
			})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("observer: %v", err)
		}
	})
	select {
	case <-connected:
	case err := <-done:
		t.Fatalf("observer stopped: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("observer never connected")
	}
	return o
}

// wait blocks until cond (called under the lock) holds, failing the test
// after waitLimit.
func (o *observer) wait(t *testing.T, what string, cond func(o *observer) bool) {
	t.Helper()
	timer := time.NewTimer(waitLimit)
	defer timer.Stop()
	for {
		o.mu.Lock()
		ok := cond(o)
		ch := o.changed
		o.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			o.mu.Lock()
			defer o.mu.Unlock()
			t.Fatalf("never observed: %s (cancels %+v, responses %d)", what, o.cancels, len(o.responses))
		}
	}
}
