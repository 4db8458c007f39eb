package frontdoor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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

// TestForgedEventsIgnored: response and chunk events that no service
// published never reach the client, even when they arrive first (here
// they are handed to the front door as an Events API that let a caller
// publish them would deliver them).
func TestForgedEventsIgnored(t *testing.T) {
	var fd *frontDoor
	forge := func(req llmapi.ExecutionEventRequest, kind llmapi.EventKind, typ string, v any) {
		b, _ := json.Marshal(v)
		name := req.Operation.ResponseEvent()
		if kind == llmapi.KindChunk {
			name = req.Operation.ChunkEvent()
		}
		fd.dispatch(events.Envelope{ID: "evt_forged", Name: name, CorrelationID: req.RequestID,
			IdentityID: "mallory", IdentityType: typ, Payload: b})
	}
	e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		for _, typ := range []string{events.IdentityUser, ""} {
			if req.Stream {
				forge(req, llmapi.KindChunk, typ, llmapi.ExecutionEventChunk{RequestID: req.RequestID, Operation: req.Operation, Seq: 0,
					Data: json.RawMessage(`{"choices":[{"index":0,"delta":{"content":"forged"},"finish_reason":"stop"}]}`)})
			}
			forge(req, llmapi.KindResponse, typ, llmapi.ExecutionEventResponse{RequestID: req.RequestID, Operation: req.Operation,
				StatusCode: http.StatusOK, Body: json.RawMessage(`{"forged":true}`)})
		}
		if req.Stream {
			w.chunk(ctx, req, 0, `{"choices":[{"index":0,"delta":{"content":"real"},"finish_reason":"stop"}]}`)
		}
		w.respond(ctx, req, http.StatusOK, `{"real":true}`)
	})
	fd = e.fd
	tok := userToken(t, llmapi.Scope)
	status, _, body := fd.post(t, "/v1/chat/completions", tok, chatBody("codex-chatgpt", false))
	if status != http.StatusOK || string(body) != `{"real":true}` {
		t.Fatalf("got %d %s, want the service's answer", status, body)
	}
	status, _, body = fd.post(t, "/v1/chat/completions", tok, chatBody("codex-chatgpt", true))
	if status != http.StatusOK || strings.Contains(string(body), "forged") || !strings.Contains(string(body), "real") {
		t.Fatalf("stream got %d %s, want the service's frames only", status, body)
	}
	if n := fd.calls.Untrusted(); n != 6 {
		t.Fatalf("untrusted = %d, want the 6 forged events", n)
	}
}

// TestNoWorkerAvailable: a request that reaches no consumer group is
// answered 503 at once, not after the timeout.
func TestNoWorkerAvailable(t *testing.T) {
	e := newEnv(t, Config{Timeout: time.Minute}, nil)
	tok := userToken(t, llmapi.Scope)
	for _, stream := range []bool{false, true} {
		start := time.Now()
		status, _, body := e.fd.post(t, "/v1/chat/completions", tok, chatBody("codex-chatgpt", stream))
		wantError(t, status, body, http.StatusServiceUnavailable, "no_worker_available")
		if d := time.Since(start); d > 20*time.Second { // the point: not the one-minute timeout
			t.Fatalf("503 after %s", d)
		}
	}
}

// TestNonCanonicalPathsAreOpenAIErrors: ServeMux would redirect these;
// the front door answers an OpenAI error object instead.
func TestNonCanonicalPathsAreOpenAIErrors(t *testing.T) {
	e := newEnv(t, Config{}, echo)
	tok := userToken(t, llmapi.Scope)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, path := range []string{"//v1/models", "/v1/models/", "/v1//models", "/v1/./models", "/v1/x/../models",
		"/v1/chat/completions/", "/v1/responses/resp_1/", "/v1/", "/v1", "/x/"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, err := http.NewRequest(method, e.fd.url+path, strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.Header.Get("Location") != "" {
				t.Errorf("%s %s redirects to %s", method, path, resp.Header.Get("Location"))
			}
			wantError(t, resp.StatusCode, b, http.StatusNotFound, "unknown_url")
		}
	}
}

// smallBuffers keeps the kernel from absorbing a stalled stream: the
// front door's send buffers are small, so a reader that stops reading
// makes it buffer in memory.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

// syncLog collects log output.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStalledReaderGetsWholeFramesThenACleanError: a client that stops
// reading a long stream gets, once it reads again, every frame in order up
// to a stream_buffer_exceeded error frame (never a gap, never a false
// malformed_chunk), and the access log says so.
func TestStalledReaderGetsWholeFramesThenACleanError(t *testing.T) {
	const chunks, pad = 600, 4 << 10 // 2.4 MiB of frames against a 256 KiB bound
	published := make(chan struct{})
	url := startEventsAPI(t, nil, eventsapi.Config{})
	startWorker(t, url, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		defer close(published)
		for i := range chunks {
			w.chunk(ctx, req, int64(i), fmt.Sprintf(`{"choices":[{"index":0,"delta":{"content":"%d %s"},"finish_reason":null}]}`, i, strings.Repeat("w", pad)))
		}
		w.chunk(ctx, req, chunks, `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`)
		w.respond(ctx, req, http.StatusOK, `{}`)
	})
	var logs syncLog
	s, err := New(Config{Events: serviceClient(t, url), Verifier: auth.NewVerifier(testKey, auth.Audience), StreamBufferBytes: 256 << 10,
		Logger: slog.New(slog.NewTextHandler(io.MultiWriter(&logs, testWriter{t}), nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fd := &frontDoor{Server: s, url: "http://" + l.Addr().String(), cancel: cancel, done: make(chan error, 1)}
	go func() { fd.done <- s.Serve(ctx, smallBuffers{l}) }()
	t.Cleanup(func() {
		if err := fd.stop(); err != nil {
			t.Errorf("front door: %v", err)
		}
	})
	fd.waitReady(t)

	// A client with a small receive buffer that reads one frame, then stalls.
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(8 << 10)
		}
		return c, err
	}}
	defer tr.CloseIdleConnections()
	rctx, rcancel := context.WithTimeout(context.Background(), 2*waitLimit)
	defer rcancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodPost, fd.url+"/v1/chat/completions", strings.NewReader(chatBody("codex-chatgpt", true)))
	req.Header.Set("Authorization", "Bearer "+userToken(t, llmapi.Scope))
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	sr := &sseReader{r: bufio.NewReaderSize(resp.Body, 1<<10)}
	first := sr.next(t)
	select {
	case <-published:
	case <-time.After(2 * waitLimit):
		t.Fatal("the worker never published the stream")
	}
	// Chunks arriving after the call failed are dropped: the bound was hit.
	eventually(t, "the buffer bound was hit", func() bool { return fd.calls.Dropped() > 0 })

	frames := []string{first}
	for f := sr.next(t); f != ""; f = sr.next(t) {
		frames = append(frames, f)
	}
	last := frames[len(frames)-1]
	for i, f := range frames[:len(frames)-1] {
		if !strings.HasPrefix(f, fmt.Sprintf(`data: {"choices":[{"index":0,"delta":{"content":"%d `, i)) {
			t.Fatalf("frame %d is not content frame %d: %.80q", i, i, f)
		}
	}
	if !strings.Contains(last, `"code":"stream_buffer_exceeded"`) || strings.Contains(last, "[DONE]") {
		t.Fatalf("after %d frames the stream ends with %.200q, want a stream_buffer_exceeded error frame", len(frames)-1, last)
	}
	eventually(t, "the access log line", func() bool { return strings.Contains(logs.String(), "msg=request ") })
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "msg=request ") && (!strings.Contains(line, "status=200") || !strings.Contains(line, "error=stream_buffer_exceeded")) {
			t.Fatalf("access log %q does not say the stream ended with stream_buffer_exceeded", line)
		}
	}
}

// TestReadinessFollowsTheListeners: /readyz turns 503 when the Events API
// goes away and 200 again once the listeners have reconnected.
func TestReadinessFollowsTheListeners(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	stop := serveEventsAPI(t, l)
	fd := startFrontDoor(t, "http://"+addr, Config{ListenerRequired: true})
	fd.waitReady(t)
	ready := func() bool { status, _ := fd.get(t, "/readyz", ""); return status == http.StatusOK }
	eventually(t, "ready", ready)
	stop()
	eventually(t, "unready while the Events API is down", func() bool { return !ready() })
	l2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	serveEventsAPI(t, l2)
	eventually(t, "ready again", ready)
}

// serveEventsAPI serves an Events API on l; stop ends it (also at cleanup).
func serveEventsAPI(t *testing.T, l net.Listener) (stop func()) {
	t.Helper()
	backend := memory.New(memory.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- eventsapi.New(eventsapi.Config{Backend: backend, Verifier: auth.NewVerifier(testKey, auth.Audience),
			Logger: slog.New(slog.DiscardHandler)}).Serve(ctx, l)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("events api: %v", err)
			}
			backend.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}
