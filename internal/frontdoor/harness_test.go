package frontdoor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/eventsapi"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// waitLimit bounds every wait in these tests; reaching it is a failure
// (something never happened), not a speed assertion.
const waitLimit = 15 * time.Second

var testKey = []byte("frontdoor-test-secret")

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// issue returns a token for sub with scopes, signed with key.
func issue(t *testing.T, key []byte, audience string, exp time.Time, scopes ...string) string {
	t.Helper()
	c := auth.Claims{Subject: "user-1", Scopes: scopes, ExpiresAt: exp}
	if audience != "" {
		c.Audience = []string{audience}
	}
	if !exp.After(time.Now()) {
		c.IssuedAt = exp.Add(-time.Hour)
	}
	tok, err := auth.Issue(key, c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func userToken(t *testing.T, scopes ...string) string {
	return issue(t, testKey, auth.Audience, time.Now().Add(time.Hour), scopes...)
}

// startEventsAPI serves an in-process Events API (memory backend) on l,
// or on a fresh loopback listener when l is nil, until the test ends.
func startEventsAPI(t *testing.T, l net.Listener, cfg eventsapi.Config) string {
	t.Helper()
	if l == nil {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	backend := memory.New(memory.Options{})
	cfg.Backend = backend
	if cfg.Verifier == nil {
		cfg.Verifier = auth.NewVerifier(testKey, auth.Audience)
	}
	cfg.Logger = slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- eventsapi.New(cfg).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("events api: %v", err)
		}
		backend.Close()
	})
	return "http://" + l.Addr().String()
}

func serviceClient(t *testing.T, url string) *events.Client {
	t.Helper()
	transport := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(transport.CloseIdleConnections)
	c, err := events.NewClient(url, events.WithToken(userToken(t, llmapi.Scope, auth.ScopeService)), events.WithHTTPClient(&http.Client{Transport: transport}),
		events.WithRetry(events.RetryPolicy{Enabled: true, Min: 20 * time.Millisecond, Max: 100 * time.Millisecond}),
		events.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// frontDoor is a running front door.
type frontDoor struct {
	*Server
	url    string
	cancel context.CancelFunc
	done   chan error
}

// startFrontDoor serves a front door against eventsURL until the test ends
// (or stop is called). It does not wait for the listeners.
func startFrontDoor(t *testing.T, eventsURL string, cfg Config) *frontDoor {
	t.Helper()
	if cfg.Events == nil {
		cfg.Events = serviceClient(t, eventsURL)
	}
	if cfg.Verifier == nil {
		cfg.Verifier = auth.NewVerifier(testKey, auth.Audience)
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fd := &frontDoor{Server: s, url: "http://" + l.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { fd.done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		if err := fd.stop(); err != nil {
			t.Errorf("front door: %v", err)
		}
	})
	return fd
}

// stop shuts the front door down and returns Serve's result (once).
func (fd *frontDoor) stop() error {
	fd.cancel()
	select {
	case err, ok := <-fd.done:
		if ok {
			close(fd.done)
			return err
		}
		return nil
	case <-time.After(waitLimit):
		return errors.New("Serve did not return")
	}
}

func (fd *frontDoor) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-fd.Ready():
	case err := <-fd.done:
		t.Fatalf("front door stopped before ready: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("front door listeners never connected")
	}
}

// env is a complete test set-up: Events API, front door and test worker.
type env struct {
	t         *testing.T
	eventsURL string
	fd        *frontDoor
	worker    *worker
}

// script runs one request in the test worker.
type script func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest)

func newEnv(t *testing.T, cfg Config, run script) *env {
	t.Helper()
	url := startEventsAPI(t, nil, eventsapi.Config{})
	e := &env{t: t, eventsURL: url}
	if run != nil {
		e.worker = startWorker(t, url, run)
	}
	e.fd = startFrontDoor(t, url, cfg)
	e.fd.waitReady(t)
	return e
}

// worker is a scripted execution worker built on pkg/events.
type worker struct {
	t      *testing.T
	client *events.Client
	mu     sync.Mutex
	seen   []llmapi.ExecutionEventRequest
}

func startWorker(t *testing.T, url string, run script) *worker {
	t.Helper()
	w := &worker{t: t, client: serviceClient(t, url)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	connected := make(chan struct{})
	var once sync.Once
	names := []string{}
	for _, op := range llmapi.Operations() {
		names = append(names, op.RequestEvent())
	}
	wg.Go(func() {
		err := w.client.Listen(ctx, events.ListenOptions{
			Names: names, Delivery: events.Unicast, Group: "test-worker", Consumer: "w1",
			OnConnect: func() { once.Do(func() { close(connected) }) },
		}, func(ctx context.Context, env events.Envelope) error {
			var req llmapi.ExecutionEventRequest
			if err := json.Unmarshal(env.Payload, &req); err != nil {
				t.Errorf("worker: bad request payload: %v", err)
				return nil
			}
			if env.CorrelationID != req.RequestID {
				t.Errorf("worker: correlationId %q != requestId %q", env.CorrelationID, req.RequestID)
			}
			w.mu.Lock()
			w.seen = append(w.seen, req)
			w.mu.Unlock()
			wg.Go(func() { run(ctx, w, req) })
			return nil
		})
		if err != nil {
			t.Errorf("worker listen: %v", err)
		}
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-connected:
	case <-time.After(waitLimit):
		t.Fatal("worker never connected")
	}
	return w
}

func (w *worker) requests() []llmapi.ExecutionEventRequest {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]llmapi.ExecutionEventRequest(nil), w.seen...)
}

func (w *worker) chunk(ctx context.Context, req llmapi.ExecutionEventRequest, seq int64, data string) {
	w.t.Helper()
	w.publish(ctx, req.Operation.ChunkEvent(), req.RequestID, llmapi.ExecutionEventChunk{
		RequestID: req.RequestID, Operation: req.Operation, Seq: seq, Data: json.RawMessage(data)})
}

func (w *worker) respond(ctx context.Context, req llmapi.ExecutionEventRequest, status int, body string) {
	w.t.Helper()
	w.publish(ctx, req.Operation.ResponseEvent(), req.RequestID, llmapi.ExecutionEventResponse{
		RequestID: req.RequestID, Operation: req.Operation, StatusCode: status, Body: json.RawMessage(body)})
}

func (w *worker) publish(ctx context.Context, name, corr string, v any) {
	w.t.Helper()
	if _, err := w.client.PublishJSON(ctx, name, corr, v); err != nil && ctx.Err() == nil {
		w.t.Errorf("worker publish %s: %v", name, err)
	}
}

// observe collects the cancel events of every operation.
func observeCancels(t *testing.T, url string) <-chan llmapi.ExecutionEventCancel {
	t.Helper()
	c := serviceClient(t, url)
	out := make(chan llmapi.ExecutionEventCancel, 16)
	ctx, cancel := context.WithCancel(context.Background())
	connected := make(chan struct{})
	var once sync.Once
	names := []string{}
	for _, op := range llmapi.Operations() {
		names = append(names, op.CancelEvent())
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = c.Listen(ctx, events.ListenOptions{Names: names, OnConnect: func() { once.Do(func() { close(connected) }) }},
			func(ctx context.Context, env events.Envelope) error {
				var ev llmapi.ExecutionEventCancel
				if err := json.Unmarshal(env.Payload, &ev); err != nil {
					t.Errorf("bad cancel payload: %v", err)
				}
				if env.CorrelationID != ev.RequestID {
					t.Errorf("cancel correlationId %q != requestId %q", env.CorrelationID, ev.RequestID)
				}
				select {
				case out <- ev:
				case <-ctx.Done():
				}
				return nil
			})
	})
	t.Cleanup(func() { cancel(); wg.Wait() })
	select {
	case <-connected:
	case <-time.After(waitLimit):
		t.Fatal("cancel observer never connected")
	}
	return out
}

func nextCancel(t *testing.T, c <-chan llmapi.ExecutionEventCancel) llmapi.ExecutionEventCancel {
	t.Helper()
	select {
	case ev := <-c:
		return ev
	case <-time.After(waitLimit):
		t.Fatal("no cancel event published")
		return llmapi.ExecutionEventCancel{}
	}
}

// call sends a request to the front door.
func (fd *frontDoor) call(t *testing.T, ctx context.Context, method, path, token string, body io.Reader) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, fd.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// post sends body and returns the status, headers and whole answer.
func (fd *frontDoor) post(t *testing.T, path, token, body string) (int, http.Header, []byte) {
	t.Helper()
	status, hdr, b, err := fd.tryPost(path, token, body)
	if err != nil {
		t.Fatal(err)
	}
	return status, hdr, b
}

// tryPost is post for goroutines other than the test's.
func (fd *frontDoor) tryPost(path, token, body string) (int, http.Header, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fd.url+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("POST %s: %w", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("POST %s: read: %w", path, err)
	}
	return resp.StatusCode, resp.Header, b, nil
}

func (fd *frontDoor) get(t *testing.T, path, token string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	resp := fd.call(t, ctx, http.MethodGet, path, token, nil)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// wantError checks an OpenAI error document with status and code.
func wantError(t *testing.T, gotStatus int, body []byte, status int, code string) llmapi.ErrorObject {
	t.Helper()
	if gotStatus != status {
		t.Fatalf("status = %d, want %d (body %s)", gotStatus, status, body)
	}
	var doc map[string]map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("body is not an OpenAI error object: %s", body)
	}
	for _, k := range []string{"message", "type", "param", "code"} {
		if _, ok := doc["error"][k]; !ok {
			t.Fatalf("error object lacks %q: %s", k, body)
		}
	}
	obj, ok := llmapi.ParseErrorBody(body)
	if !ok || obj.Message == "" || obj.Type == "" {
		t.Fatalf("body is not an OpenAI error object: %s", body)
	}
	if got := ""; obj.Code != nil {
		got = *obj.Code
		if got != code {
			t.Fatalf("code = %q, want %q (body %s)", got, code, body)
		}
	} else if code != "" {
		t.Fatalf("code = null, want %q", code)
	}
	return obj
}

// sseReader reads Server-Sent Events frames one at a time.
type sseReader struct {
	r *bufio.Reader
}

// next returns the next frame including its blank-line terminator, or ""
// at the end of the stream.
func (s *sseReader) next(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	for {
		line, err := s.r.ReadString('\n')
		b.WriteString(line)
		if line == "\n" {
			return b.String()
		}
		if err != nil {
			if b.Len() > 0 {
				t.Fatalf("stream ended inside a frame: %q (%v)", b.String(), err)
			}
			return ""
		}
	}
}

func chatBody(model string, stream bool) string {
	b, _ := json.Marshal(map[string]any{"model": model, "stream": stream,
		"messages": []map[string]string{{"role": "user", "content": "Reply OK <&>"}}})
	return string(b)
}

func opBody(op llmapi.Operation, stream bool) string {
	switch op {
	case llmapi.OpResponses:
		b, _ := json.Marshal(map[string]any{"model": "codex-chatgpt", "stream": stream, "input": "Reply OK"})
		return string(b)
	case llmapi.OpCompletions:
		b, _ := json.Marshal(map[string]any{"model": "codex-chatgpt", "stream": stream, "prompt": "Reply OK"})
		return string(b)
	}
	return chatBody("codex-chatgpt", stream)
}

// eventually polls cond until it holds or waitLimit passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
