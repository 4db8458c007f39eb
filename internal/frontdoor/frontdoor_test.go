package frontdoor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/eventsapi"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// echo answers every request with a success body describing it.
func echo(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
	body, _ := json.Marshal(map[string]any{"id": "x-" + req.RequestID, "object": string(req.Operation), "model": req.Model})
	w.respond(ctx, req, http.StatusOK, string(body))
}

func TestNonStreamingRoundTrip(t *testing.T) {
	e := newEnv(t, Config{Timeout: 30 * time.Second}, echo)
	for _, op := range llmapi.Operations() {
		t.Run(string(op), func(t *testing.T) {
			sent := opBody(op, false)
			before := time.Now()
			status, hdr, body := e.fd.post(t, op.RESTPath(), userToken(t, llmapi.Scope), sent)
			if status != http.StatusOK {
				t.Fatalf("status = %d, body %s", status, body)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			id := hdr.Get("X-Request-Id")
			want := fmt.Sprintf(`{"id":"x-%s","model":"codex-chatgpt","object":"%s"}`, id, op)
			if string(body) != want {
				t.Fatalf("body = %s, want %s", body, want)
			}
			reqs := e.worker.requests()
			req := reqs[len(reqs)-1]
			if req.RequestID != id || !strings.HasPrefix(id, "req_") {
				t.Errorf("request id %q, header %q", req.RequestID, id)
			}
			if req.Operation != op || req.Model != "codex-chatgpt" || req.Stream || req.IdentityID != "user-1" {
				t.Errorf("request event = %+v", req)
			}
			if req.Deadline == nil || req.Deadline.Before(before.Add(29*time.Second)) {
				t.Errorf("deadline = %v, want about now+30s", req.Deadline)
			}
			var got, wantBody any
			_ = json.Unmarshal(req.Body, &got)
			_ = json.Unmarshal([]byte(sent), &wantBody)
			if !reflect.DeepEqual(got, wantBody) {
				t.Errorf("body = %s, want the client's %s", req.Body, sent)
			}
		})
	}
}

func TestWorkerErrorPassesThrough(t *testing.T) {
	const errBody = `{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`
	e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		w.respond(ctx, req, http.StatusTooManyRequests, errBody)
	})
	status, _, body := e.fd.post(t, "/v1/chat/completions", userToken(t, llmapi.Scope), chatBody("codex-chatgpt", false))
	wantError(t, status, body, http.StatusTooManyRequests, "rate_limit_exceeded")
}

// streamCase is one operation's scripted stream and its exact wire form.
type streamCase struct {
	op     llmapi.Operation
	body   string
	frames []string
	want   []string // the expected SSE frames, terminator included
}

func streamCases() []streamCase {
	chat := []string{
		`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"codex-chatgpt","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"codex-chatgpt","choices":[{"index":0,"delta":{"content":"O\nK"},"finish_reason":null}]}`,
		`{"id":"c1","object":"chat.completion.chunk","created":1,"model":"codex-chatgpt","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
	}
	usage := `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"codex-chatgpt","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`
	text := []string{
		`{"id":"t1","object":"text_completion","created":1,"model":"codex-chatgpt","choices":[{"index":0,"text":"O","logprobs":null,"finish_reason":null}]}`,
		`{"id":"t1","object":"text_completion","created":1,"model":"codex-chatgpt","choices":[{"index":0,"text":"K","logprobs":null,"finish_reason":"stop"}]}`,
	}
	resp := []string{
		`{"type":"response.created","sequence_number":0,"response":{"id":"r1","object":"response","status":"in_progress"}}`,
		`{"type":"response.output_text.delta","sequence_number":1,"item_id":"m1","output_index":0,"content_index":0,"delta":"OK"}`,
		`{"type":"response.completed","sequence_number":2,"response":{"id":"r1","object":"response","status":"completed"}}`,
	}
	data := func(fs ...string) []string {
		out := []string{}
		for _, f := range fs {
			out = append(out, "data: "+f+"\n\n")
		}
		return out
	}
	return []streamCase{
		{op: llmapi.OpChatCompletions, body: chatBody("codex-chatgpt", true), frames: chat,
			want: append(data(chat...), "data: [DONE]\n\n")},
		{op: llmapi.OpChatCompletions, body: `{"model":"codex-chatgpt","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`,
			frames: append(append([]string{}, chat...), usage),
			want:   append(data(append(append([]string{}, chat...), usage)...), "data: [DONE]\n\n")},
		{op: llmapi.OpCompletions, body: opBody(llmapi.OpCompletions, true), frames: text,
			want: append(data(text...), "data: [DONE]\n\n")},
		{op: llmapi.OpResponses, body: opBody(llmapi.OpResponses, true), frames: resp, want: []string{
			"event: response.created\ndata: " + resp[0] + "\n\n",
			"event: response.output_text.delta\ndata: " + resp[1] + "\n\n",
			"event: response.completed\ndata: " + resp[2] + "\n\n",
		}},
	}
}

// TestStreamingFrames checks the exact SSE wire format of each operation,
// and that the first frame reaches the client before the worker publishes
// the rest (the front door flushes per frame).
func TestStreamingFrames(t *testing.T) {
	for i, tc := range streamCases() {
		t.Run(fmt.Sprintf("%s-%d", tc.op, i), func(t *testing.T) {
			gate := make(chan struct{})
			e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
				if !req.Stream {
					t.Errorf("request event has stream=false")
				}
				w.chunk(ctx, req, 0, tc.frames[0])
				select {
				case <-gate: // the client has read frame 0
				case <-ctx.Done():
					return
				}
				for seq, f := range tc.frames[1:] {
					w.chunk(ctx, req, int64(seq+1), f)
				}
				w.respond(ctx, req, http.StatusOK, `{"id":"final"}`)
			})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			resp := e.fd.call(t, ctx, http.MethodPost, tc.op.RESTPath(), userToken(t, llmapi.Scope), strings.NewReader(tc.body))
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status = %d: %s", resp.StatusCode, b)
			}
			for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			sr := &sseReader{r: bufio.NewReader(resp.Body)}
			var got []string
			got = append(got, sr.next(t))
			close(gate)
			for f := sr.next(t); f != ""; f = sr.next(t) {
				got = append(got, f)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("frames:\n%q\nwant:\n%q", got, tc.want)
			}
		})
	}
}

// TestStreamReordersChunks publishes chunks out of order and the response
// before the last chunks; the client still gets the whole ordered stream.
func TestStreamReordersChunks(t *testing.T) {
	frames := []string{
		`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}`,
		`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"A"},"finish_reason":null}]}`,
		`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"B"},"finish_reason":null}]}`,
		`{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
	}
	e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		w.chunk(ctx, req, 1, frames[1])
		w.chunk(ctx, req, 1, frames[1]) // duplicate: dropped
		w.chunk(ctx, req, 0, frames[0])
		w.respond(ctx, req, http.StatusOK, `{"id":"c","object":"chat.completion"}`)
		w.chunk(ctx, req, 3, frames[3])
		w.chunk(ctx, req, 2, frames[2])
	})
	status, hdr, body := e.fd.post(t, "/v1/chat/completions", userToken(t, llmapi.Scope), chatBody("codex-chatgpt", true))
	if status != http.StatusOK || hdr.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, %s: %s", status, hdr.Get("Content-Type"), body)
	}
	want := ""
	for _, f := range frames {
		want += "data: " + f + "\n\n"
	}
	want += "data: [DONE]\n\n"
	if string(body) != want {
		t.Fatalf("stream:\n%s\nwant:\n%s", body, want)
	}
}

func TestStreamErrorBeforeChunks(t *testing.T) {
	const errBody = `{"error":{"message":"bad messages","type":"invalid_request_error","param":"messages","code":"invalid_value"}}`
	e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		w.respond(ctx, req, http.StatusBadRequest, errBody)
	})
	status, hdr, body := e.fd.post(t, "/v1/chat/completions", userToken(t, llmapi.Scope), chatBody("codex-chatgpt", true))
	wantError(t, status, body, http.StatusBadRequest, "invalid_value")
	if hdr.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type = %q", hdr.Get("Content-Type"))
	}
}

// An error response that beats its first chunk (they travel on different
// event names) still lets that stream through when the chunk follows.
func TestStreamErrorResponseThenWorkerErrorFrame(t *testing.T) {
	frame0 := `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant"},"finish_reason":null}]}`
	errFrame := `{"error":{"message":"model crashed","type":"server_error","param":null,"code":"worker_failed"}}`
	e := newEnv(t, Config{ErrorGrace: waitLimit}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		w.respond(ctx, req, http.StatusInternalServerError, errFrame)
		w.chunk(ctx, req, 1, errFrame)
		w.chunk(ctx, req, 0, frame0)
	})
	status, _, body := e.fd.post(t, "/v1/chat/completions", userToken(t, llmapi.Scope), chatBody("codex-chatgpt", true))
	want := "data: " + frame0 + "\n\n" + "data: " + errFrame + "\n\n"
	if status != http.StatusOK || string(body) != want {
		t.Fatalf("status %d, stream:\n%s\nwant:\n%s", status, body, want)
	}
}

// An error response after chunks went out, with no terminal frame, ends
// the stream with an error frame built from the response.
func TestStreamErrorAfterChunks(t *testing.T) {
	const errBody = `{"error":{"message":"turn failed","type":"server_error","param":null,"code":"turn_failed"}}`
	for _, op := range []llmapi.Operation{llmapi.OpChatCompletions, llmapi.OpResponses} {
		t.Run(string(op), func(t *testing.T) {
			frame0 := `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"A"},"finish_reason":null}]}`
			if op == llmapi.OpResponses {
				frame0 = `{"type":"response.created","sequence_number":0,"response":{"id":"r"}}`
			}
			gate := make(chan struct{})
			e := newEnv(t, Config{ErrorGrace: 20 * time.Millisecond}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
				w.chunk(ctx, req, 0, frame0)
				select {
				case <-gate: // frame 0 is out
				case <-ctx.Done():
					return
				}
				w.respond(ctx, req, http.StatusInternalServerError, errBody)
			})
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			resp := e.fd.call(t, ctx, http.MethodPost, op.RESTPath(), userToken(t, llmapi.Scope), strings.NewReader(opBody(op, true)))
			defer resp.Body.Close()
			sr := &sseReader{r: bufio.NewReader(resp.Body)}
			first := sr.next(t)
			close(gate)
			rest, _ := io.ReadAll(sr.r)
			status, body := resp.StatusCode, first+string(rest)
			want := "data: " + frame0 + "\n\n" + `data: {"error":{"message":"turn failed","type":"server_error","code":"turn_failed","param":null}}` + "\n\n"
			if op == llmapi.OpResponses {
				want = "event: response.created\ndata: " + frame0 + "\n\n" +
					`event: error` + "\n" + `data: {"type":"error","code":"turn_failed","message":"turn failed","param":null,"error":{"message":"turn failed","type":"server_error","code":"turn_failed","param":null}}` + "\n\n"
			}
			if status != http.StatusOK || string(body) != want {
				t.Fatalf("status %d, stream:\n%s\nwant:\n%s", status, body, want)
			}
		})
	}
}

func TestAuthMatrix(t *testing.T) {
	e := newEnv(t, Config{}, echo)
	hour := time.Now().Add(time.Hour)
	tests := []struct {
		name   string
		token  string
		status int
		code   string
	}{
		{"no token", "", http.StatusUnauthorized, "missing_token"},
		{"bad signature", issue(t, []byte("another-key"), auth.Audience, hour, llmapi.Scope), http.StatusUnauthorized, "invalid_token"},
		{"wrong audience", issue(t, testKey, "ai.hg.fi/other", hour, llmapi.Scope), http.StatusUnauthorized, "invalid_token"},
		{"no audience", issue(t, testKey, "", hour, llmapi.Scope), http.StatusUnauthorized, "invalid_token"},
		{"expired", issue(t, testKey, auth.Audience, time.Now().Add(-time.Hour), llmapi.Scope), http.StatusUnauthorized, "invalid_token"},
		{"garbage", "not.a.jwt", http.StatusUnauthorized, "invalid_token"},
		{"missing scope", userToken(t, "events:send"), http.StatusForbidden, "insufficient_scope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, op := range llmapi.Operations() {
				status, hdr, body := e.fd.post(t, op.RESTPath(), tt.token, opBody(op, false))
				obj := wantError(t, status, body, tt.status, tt.code)
				if tt.status == http.StatusUnauthorized && (obj.Type != llmapi.TypeAuthentication || hdr.Get("WWW-Authenticate") == "") {
					t.Errorf("401 type %q, WWW-Authenticate %q", obj.Type, hdr.Get("WWW-Authenticate"))
				}
				if tt.token != "" && strings.Contains(string(body), tt.token) {
					t.Error("error echoes the token")
				}
			}
		})
	}
	if n := len(e.worker.requests()); n != 0 {
		t.Fatalf("%d requests reached the worker", n)
	}
}

// lastRequestIs sends a valid request and checks that it is the only one
// the worker has seen: nothing from earlier rejected calls was published
// (the unicast stream delivers in publish order).
func lastRequestIs(t *testing.T, e *env) {
	t.Helper()
	status, hdr, body := e.fd.post(t, "/v1/chat/completions", userToken(t, llmapi.Scope), chatBody("codex-chatgpt", false))
	if status != http.StatusOK {
		t.Fatalf("valid request: %d %s", status, body)
	}
	reqs := e.worker.requests()
	if len(reqs) != 1 || reqs[0].RequestID != hdr.Get("X-Request-Id") {
		t.Fatalf("worker saw %d requests (%+v); rejected calls were published", len(reqs), reqs)
	}
}

func TestBodyTooLarge(t *testing.T) {
	e := newEnv(t, Config{}, echo)
	big := `{"model":"codex-chatgpt","messages":[{"role":"user","content":"` // padded below
	big += strings.Repeat("x", DefaultMaxBodyBytes+1-len(big)-len(`"}]}`)) + `"}]}`
	if len(big) != DefaultMaxBodyBytes+1 {
		t.Fatalf("body is %d bytes", len(big))
	}
	// With Content-Length, and chunked (no length known up front); without
	// a token the body is not even read: 401.
	for _, c := range []struct {
		tok    string
		status int
		code   string
	}{{userToken(t, llmapi.Scope), http.StatusRequestEntityTooLarge, "request_body_too_large"}, {"", http.StatusUnauthorized, "missing_token"}} {
		status, _, body := e.fd.post(t, "/v1/chat/completions", c.tok, big)
		wantError(t, status, body, c.status, c.code)
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		resp := e.fd.call(t, ctx, http.MethodPost, "/v1/chat/completions", c.tok, io.MultiReader(strings.NewReader(big)))
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		wantError(t, resp.StatusCode, b, c.status, c.code)
	}
	lastRequestIs(t, e)
}

// TestTokenCheckedBeforeBody: a request without a valid token is answered
// 401 while its body is still being sent; nothing of it is read or
// published.
func TestTokenCheckedBeforeBody(t *testing.T) {
	e := newEnv(t, Config{}, echo)
	for _, path := range []string{"/v1/chat/completions", "/v1/responses", "/v1/completions", "/v1/embeddings"} {
		for _, tok := range []string{"", "not.a.jwt"} {
			pr, pw := io.Pipe()
			go func() { _, _ = pw.Write([]byte(`{"model":"codex-chatgpt","messages":[`)) }() // and never more
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			resp := e.fd.call(t, ctx, http.MethodPost, path, tok, pr)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cancel()
			pw.Close()
			wantError(t, resp.StatusCode, b, http.StatusUnauthorized, map[bool]string{true: "missing_token", false: "invalid_token"}[tok == ""])
		}
	}
	lastRequestIs(t, e)
}

func TestBadRequests(t *testing.T) {
	e := newEnv(t, Config{}, echo)
	tok := userToken(t, llmapi.Scope)
	tests := []struct {
		name, path, body string
		status           int
		code, param      string
	}{
		{"not json", "/v1/chat/completions", `model=x`, 400, "invalid_json", ""},
		{"array", "/v1/chat/completions", `[{"model":"codex-chatgpt"}]`, 400, "invalid_json", ""},
		{"null", "/v1/chat/completions", `null`, 400, "invalid_json", ""},
		{"truncated", "/v1/chat/completions", `{"model":"codex-chatgpt"`, 400, "invalid_json", ""},
		{"missing model", "/v1/chat/completions", `{"messages":[]}`, 400, "missing_required_parameter", "model"},
		{"model not string", "/v1/chat/completions", `{"model":7,"messages":[]}`, 400, "invalid_type", "model"},
		{"missing messages", "/v1/chat/completions", `{"model":"codex-chatgpt"}`, 400, "missing_required_parameter", "messages"},
		{"missing input", "/v1/responses", `{"model":"codex-chatgpt","messages":[]}`, 400, "missing_required_parameter", "input"},
		{"missing prompt", "/v1/completions", `{"model":"codex-chatgpt","input":"x"}`, 400, "missing_required_parameter", "prompt"},
		{"stream not bool", "/v1/chat/completions", `{"model":"codex-chatgpt","messages":[],"stream":"yes"}`, 400, "invalid_type", "stream"},
		{"unknown model", "/v1/chat/completions", `{"model":"gpt-9","messages":[]}`, 404, "model_not_found", "model"},
		{"unknown model streaming", "/v1/responses", `{"model":"gpt-9","input":"x","stream":true}`, 404, "model_not_found", "model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := e.fd.post(t, tt.path, tok, tt.body)
			obj := wantError(t, status, body, tt.status, tt.code)
			if got := ""; obj.Param != nil || tt.param != "" {
				if obj.Param != nil {
					got = *obj.Param
				}
				if got != tt.param {
					t.Errorf("param = %q, want %q", got, tt.param)
				}
			}
		})
	}
	lastRequestIs(t, e)
}

func TestTimeout(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			e := newEnv(t, Config{Timeout: 300 * time.Millisecond}, func(context.Context, *worker, llmapi.ExecutionEventRequest) {})
			cancels := observeCancels(t, e.eventsURL)
			status, hdr, body := e.fd.post(t, "/v1/completions", userToken(t, llmapi.Scope), opBody(llmapi.OpCompletions, stream))
			obj := wantError(t, status, body, http.StatusGatewayTimeout, "timeout")
			if obj.Type != llmapi.TypeTimeout {
				t.Errorf("type = %q", obj.Type)
			}
			ev := nextCancel(t, cancels)
			want := llmapi.ExecutionEventCancel{RequestID: hdr.Get("X-Request-Id"), Operation: llmapi.OpCompletions, Reason: llmapi.ReasonTimeout}
			if ev != want {
				t.Fatalf("cancel = %+v, want %+v", ev, want)
			}
		})
	}
}

func TestClientDisconnectCancels(t *testing.T) {
	for _, stream := range []bool{false, true} {
		t.Run(fmt.Sprint("stream=", stream), func(t *testing.T) {
			started := make(chan string, 1)
			e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
				if req.Stream {
					w.chunk(ctx, req, 0, `{"type":"response.created","sequence_number":0}`)
				}
				started <- req.RequestID
				<-ctx.Done() // never finishes
			})
			cancels := observeCancels(t, e.eventsURL)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			type result struct {
				resp *http.Response
				err  error
			}
			got := make(chan result, 1)
			tok := userToken(t, llmapi.Scope)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.fd.url+"/v1/responses", strings.NewReader(opBody(llmapi.OpResponses, stream)))
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				got <- result{resp, err}
			}()
			var id string
			select {
			case id = <-started:
			case <-time.After(waitLimit):
				t.Fatal("request never reached the worker")
			}
			if stream {
				r := <-got
				if r.err != nil {
					t.Fatal(r.err)
				}
				sr := &sseReader{r: bufio.NewReader(r.resp.Body)}
				if f := sr.next(t); !strings.HasPrefix(f, "event: response.created\n") {
					t.Fatalf("first frame %q", f)
				}
				cancel()
				r.resp.Body.Close()
			} else {
				cancel()
				<-got
			}
			ev := nextCancel(t, cancels)
			want := llmapi.ExecutionEventCancel{RequestID: id, Operation: llmapi.OpResponses, Reason: llmapi.ReasonClientDisconnected}
			if ev != want {
				t.Fatalf("cancel = %+v, want %+v", ev, want)
			}
			eventually(t, "waiter removed", func() bool { return e.fd.calls.Len() == 0 })
		})
	}
}

func TestDuplicateAndLateEventsDropped(t *testing.T) {
	firstDone := make(chan struct{})
	e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		var b struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		_ = json.Unmarshal(req.Body, &b)
		if b.Messages[0].Content == "first" {
			w.respond(ctx, req, http.StatusOK, `{"n":1}`)
			w.respond(ctx, req, http.StatusOK, `{"n":2}`)                                       // duplicate
			w.chunk(ctx, req, 0, `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`) // chunk of a non-streaming request
			close(firstDone)
			return
		}
		<-firstDone // publish after the duplicate
		w.respond(ctx, req, http.StatusOK, `{"n":3}`)
	})
	tok := userToken(t, llmapi.Scope)
	status, _, body := e.fd.post(t, "/v1/chat/completions", tok, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"first"}]}`)
	if status != http.StatusOK || string(body) != `{"n":1}` {
		t.Fatalf("first: %d %s", status, body)
	}
	// The second request's response follows the duplicate on the same
	// stream, so by the time it is answered the duplicate was handled.
	status, _, body = e.fd.post(t, "/v1/chat/completions", tok, `{"model":"codex-chatgpt","messages":[{"role":"user","content":"second"}]}`)
	if status != http.StatusOK || string(body) != `{"n":3}` {
		t.Fatalf("second: %d %s", status, body)
	}
	if n := e.fd.calls.Dropped(); n < 1 {
		t.Fatalf("dropped = %d, want the duplicate response dropped", n)
	}
	eventually(t, "waiters removed", func() bool { return e.fd.calls.Len() == 0 })
}

func TestMalformedResponse(t *testing.T) {
	e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		w.publish(ctx, req.Operation.ResponseEvent(), req.RequestID, map[string]any{"requestId": req.RequestID, "statusCode": 0, "body": "x"})
	})
	status, _, body := e.fd.post(t, "/v1/chat/completions", userToken(t, llmapi.Scope), chatBody("codex-chatgpt", false))
	wantError(t, status, body, http.StatusBadGateway, "malformed_response")
}

func TestPublishRejected(t *testing.T) {
	url := startEventsAPI(t, nil, eventsapi.Config{MaxEventBytes: 4096})
	fd := startFrontDoor(t, url, Config{})
	fd.waitReady(t)
	big := `{"model":"codex-chatgpt","messages":[{"role":"user","content":"` + strings.Repeat("y", 8192) + `"}]}`
	status, _, body := fd.post(t, "/v1/chat/completions", userToken(t, llmapi.Scope), big)
	wantError(t, status, body, http.StatusBadGateway, "events_publish_rejected")
}

func TestPublishErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
	}{
		{&events.APIError{Status: 403, Code: "forbidden"}, http.StatusBadGateway},
		{&events.APIError{Status: 401, Code: "invalid_auth"}, http.StatusBadGateway},
		{fmt.Errorf("wrapped: %w", &events.APIError{Status: 400}), http.StatusBadGateway},
		{&events.APIError{Status: 503, Code: "unavailable"}, http.StatusServiceUnavailable},
		{&net.OpError{Op: "dial", Err: fmt.Errorf("connection refused")}, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		if got := publishError(tt.err); got.Status != tt.status {
			t.Errorf("publishError(%v) = %d, want %d", tt.err, got.Status, tt.status)
		}
	}
}

func TestModels(t *testing.T) {
	cat, err := catalog.Parse("test", []byte(`[{"id":"codex-chatgpt","owned_by":"bus-codex"},{"id":"codex-fast","codex_model":"gpt-5-codex-mini","reasoning_effort":"low"}]`))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Config{Catalog: cat}, echo)
	anyScope := userToken(t) // a valid token without llm:proxy
	status, body := e.fd.get(t, "/v1/models", anyScope)
	want := `{"object":"list","data":[{"id":"codex-chatgpt","object":"model","created":0,"owned_by":"bus-codex"},{"id":"codex-fast","object":"model","created":0,"owned_by":"bus-codex"}]}`
	if status != http.StatusOK || string(body) != want {
		t.Fatalf("models: %d %s", status, body)
	}
	status, body = e.fd.get(t, "/v1/models/codex-fast", anyScope)
	if status != http.StatusOK || string(body) != `{"id":"codex-fast","object":"model","created":0,"owned_by":"bus-codex"}` {
		t.Fatalf("model: %d %s", status, body)
	}
	status, body = e.fd.get(t, "/v1/models/nope", anyScope)
	wantError(t, status, body, http.StatusNotFound, "model_not_found")
	status, body = e.fd.get(t, "/v1/models", "")
	wantError(t, status, body, http.StatusUnauthorized, "missing_token")
	status, body = e.fd.get(t, "/v1/models/codex-fast", issue(t, []byte("other"), auth.Audience, time.Now().Add(time.Hour)))
	wantError(t, status, body, http.StatusUnauthorized, "invalid_token")
	// The catalog alias model executes like any other.
	status, _, body = e.fd.post(t, "/v1/chat/completions", userToken(t, llmapi.Scope), chatBody("codex-fast", false))
	if status != http.StatusOK {
		t.Fatalf("alias model: %d %s", status, body)
	}
	if n := len(e.worker.requests()); n != 1 {
		t.Fatalf("model listing reached the worker: %d requests", n)
	}
}

func TestOtherRoutes(t *testing.T) {
	e := newEnv(t, Config{}, echo)
	tok := userToken(t, llmapi.Scope)
	status, _, body := e.fd.post(t, "/v1/embeddings", tok, `{"model":"codex-chatgpt","input":"x"}`)
	obj := wantError(t, status, body, http.StatusBadRequest, "unsupported_endpoint")
	if !strings.Contains(obj.Message, "HTTP proxy mode") {
		t.Errorf("embeddings message %q", obj.Message)
	}
	status, _, body = e.fd.post(t, "/v1/embeddings", "", `{}`)
	wantError(t, status, body, http.StatusUnauthorized, "missing_token")
	status, body = e.fd.get(t, "/v1/chat/completions", tok)
	wantError(t, status, body, http.StatusMethodNotAllowed, "method_not_allowed")
	status, body = e.fd.get(t, "/v1/nothing", tok)
	wantError(t, status, body, http.StatusNotFound, "unknown_url")
	status, body = e.fd.get(t, "/healthz", "")
	if status != http.StatusOK || string(body) != `{"status":"ok"}` {
		t.Fatalf("healthz: %d %s", status, body)
	}
}

func TestReadiness(t *testing.T) {
	// The Events API's port accepts connections but answers nothing until
	// it starts serving, so the listeners cannot connect yet.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	required := startFrontDoor(t, url, Config{ListenerRequired: true})
	optional := startFrontDoor(t, url, Config{})
	status, body := required.get(t, "/readyz", "")
	wantError(t, status, body, http.StatusServiceUnavailable, "listeners_not_connected")
	if status, body := optional.get(t, "/readyz", ""); status != http.StatusOK {
		t.Fatalf("readyz without ListenerRequired: %d %s", status, body)
	}
	status, _, body = optional.post(t, "/v1/chat/completions", userToken(t, llmapi.Scope), chatBody("codex-chatgpt", false))
	wantError(t, status, body, http.StatusServiceUnavailable, "events_unavailable")

	startEventsAPI(t, l, eventsapi.Config{})
	required.waitReady(t)
	optional.waitReady(t)
	if status, body := required.get(t, "/readyz", ""); status != http.StatusOK || !strings.Contains(string(body), `"status":"ready"`) {
		t.Fatalf("readyz after connect: %d %s", status, body)
	}
}

func TestServeFailsWhenTokenRejected(t *testing.T) {
	url := startEventsAPI(t, nil, eventsapi.Config{})
	bad, err := events.NewClient(url, events.WithToken(issue(t, []byte("wrong-key"), auth.Audience, time.Now().Add(time.Hour), llmapi.Scope)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Events: bad, Verifier: auth.NewVerifier(testKey, ""), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = s.Serve(context.Background(), l)
	e, ok := errors.AsType[*events.APIError](err)
	if !ok || e.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("Serve = %v, want the Events API's 401", err)
	}
}

func TestServeFailsWhenUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	s, err := New(Config{Events: serviceClient(t, url), Verifier: auth.NewVerifier(testKey, ""), ConnectTimeout: 200 * time.Millisecond, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	fl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(context.Background(), fl); !errors.Is(err, events.ErrUnreachable) {
		t.Fatalf("Serve = %v, want ErrUnreachable", err)
	}
}

// TestShutdownDrains: a request in flight when shutdown starts still gets
// its answer; Serve returns after it.
func TestShutdownDrains(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		select {
		case <-release:
		case <-ctx.Done():
			return
		}
		w.respond(ctx, req, http.StatusOK, `{"drained":true}`)
	})
	type answer struct {
		status int
		body   []byte
	}
	got := make(chan answer, 1)
	tok := userToken(t, llmapi.Scope)
	go func() {
		status, _, body, err := e.fd.tryPost("/v1/chat/completions", tok, chatBody("codex-chatgpt", false))
		if err != nil {
			t.Error(err)
		}
		got <- answer{status, body}
	}()
	eventually(t, "request in flight", func() bool { return len(e.worker.requests()) == 1 })
	stopped := make(chan error, 1)
	go func() { stopped <- e.fd.stop() }()
	eventually(t, "draining", func() bool { return e.fd.draining.Load() })
	close(release)
	a := <-got
	if a.status != http.StatusOK || string(a.body) != `{"drained":true}` {
		t.Fatalf("in-flight request: %d %s", a.status, a.body)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("Serve = %v", err)
	}
}

// TestShutdownCancelsAfterDrainTimeout: requests still waiting when the
// drain time is up get a 503 and their work is cancelled.
func TestShutdownCancelsAfterDrainTimeout(t *testing.T) {
	e := newEnv(t, Config{ShutdownTimeout: 100 * time.Millisecond}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {})
	cancels := observeCancels(t, e.eventsURL)
	type answer struct {
		status int
		body   []byte
	}
	got := make(chan answer, 1)
	tok := userToken(t, llmapi.Scope)
	go func() {
		status, _, body, err := e.fd.tryPost("/v1/chat/completions", tok, chatBody("codex-chatgpt", false))
		if err != nil {
			t.Error(err)
		}
		got <- answer{status, body}
	}()
	eventually(t, "request in flight", func() bool { return len(e.worker.requests()) == 1 })
	if err := e.fd.stop(); err != nil {
		t.Fatalf("Serve = %v", err)
	}
	a := <-got
	wantError(t, a.status, a.body, http.StatusServiceUnavailable, "shutting_down")
	if ev := nextCancel(t, cancels); ev.Reason != llmapi.ReasonTimeout {
		t.Fatalf("cancel = %+v", ev)
	}
}

func TestInspect(t *testing.T) {
	chat, resp, text := llmapi.OpChatCompletions, llmapi.OpResponses, llmapi.OpCompletions
	tests := []struct {
		op           llmapi.Operation
		includeUsage bool
		frame        string
		typ          string
		terminal     bool
		isErr        bool
	}{
		{chat, false, `{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":null}]}`, "", false, false},
		{chat, false, `{"choices":[{"index":0,"delta":{"content":"x"}}]}`, "", false, false},
		{chat, false, `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`, "", true, false},
		{chat, false, `{"choices":[{"index":0,"finish_reason":null},{"index":1,"finish_reason":"length"}]}`, "", true, false},
		{chat, true, `{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`, "", false, false},
		{chat, true, `{"choices":[],"usage":{"total_tokens":3}}`, "", true, false},
		{chat, true, `{"choices":[],"usage":null}`, "", false, false},
		{chat, false, `{"usage":{"total_tokens":3}}`, "", false, false},
		{text, false, `{"choices":[{"text":"K","finish_reason":"stop"}]}`, "", true, false},
		{chat, false, `{"error":{"message":"x","type":"server_error"}}`, "", true, true},
		{chat, false, `{"error":null,"choices":[]}`, "", false, false},
		{resp, false, `{"type":"response.created"}`, "response.created", false, false},
		{resp, false, `{"type":"response.output_text.delta","delta":"finish_reason"}`, "response.output_text.delta", false, false},
		{resp, false, `{"type":"response.completed"}`, "response.completed", true, false},
		{resp, false, `{"type":"response.failed"}`, "response.failed", true, false},
		{resp, false, `{"type":"response.incomplete"}`, "response.incomplete", true, false},
		{resp, false, `{"type":"error","code":"x","message":"y"}`, "error", true, true},
		{resp, false, `{"error":{"message":"x"}}`, "error", true, true},
		{resp, false, `{"type":"bad\ntype"}`, "", false, false},
	}
	for _, tt := range tests {
		typ, terminal, isErr := inspect(tt.op, tt.includeUsage, json.RawMessage(tt.frame))
		if typ != tt.typ || terminal != tt.terminal || isErr != tt.isErr {
			t.Errorf("inspect(%s, usage=%v, %s) = %q, %v, %v; want %q, %v, %v", tt.op, tt.includeUsage, tt.frame, typ, terminal, isErr, tt.typ, tt.terminal, tt.isErr)
		}
	}
}

// A malformed chunk leaves a gap that can never close: the stream ends
// with an error frame (or a 502 before any frame).
func TestMalformedChunk(t *testing.T) {
	frame0 := `{"choices":[{"index":0,"delta":{"content":"A"},"finish_reason":null}]}`
	e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		if strings.Contains(string(req.Body), "after") {
			w.chunk(ctx, req, 0, frame0)
		}
		w.publish(ctx, req.Operation.ChunkEvent(), req.RequestID, map[string]any{"requestId": req.RequestID, "seq": 1, "data": "not an object"})
	})
	tok := userToken(t, llmapi.Scope)
	status, _, body := e.fd.post(t, "/v1/chat/completions", tok, `{"model":"codex-chatgpt","stream":true,"messages":[{"role":"user","content":"before"}]}`)
	wantError(t, status, body, http.StatusBadGateway, "malformed_chunk")
	status, _, body = e.fd.post(t, "/v1/chat/completions", tok, `{"model":"codex-chatgpt","stream":true,"messages":[{"role":"user","content":"after"}]}`)
	want := "data: " + frame0 + "\n\n" + `data: {"error":{"message":"The execution worker sent a malformed stream chunk.","type":"server_error","code":"malformed_chunk","param":null}}` + "\n\n"
	if status != http.StatusOK || string(body) != want {
		t.Fatalf("status %d, stream:\n%s\nwant:\n%s", status, body, want)
	}
}

// TestConcurrentRequests runs many streaming and non-streaming requests at
// once through the shared listeners; each gets exactly its own answer.
func TestConcurrentRequests(t *testing.T) {
	e := newEnv(t, Config{}, func(ctx context.Context, w *worker, req llmapi.ExecutionEventRequest) {
		var b struct {
			Prompt string `json:"prompt"`
		}
		_ = json.Unmarshal(req.Body, &b)
		if req.Stream {
			// last chunk first, to exercise reordering under load
			w.chunk(ctx, req, 1, `{"choices":[{"index":0,"text":"`+b.Prompt+`","finish_reason":"stop"}]}`)
			w.chunk(ctx, req, 0, `{"choices":[{"index":0,"text":"`+b.Prompt+`","finish_reason":null}]}`)
		}
		w.respond(ctx, req, http.StatusOK, `{"prompt":"`+b.Prompt+`"}`)
	})
	tok := userToken(t, llmapi.Scope)
	const n = 24
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			prompt := fmt.Sprint("p", i)
			stream := i%2 == 0
			b, _ := json.Marshal(map[string]any{"model": "codex-chatgpt", "prompt": prompt, "stream": stream})
			status, _, body, err := e.fd.tryPost("/v1/completions", tok, string(b))
			if err != nil {
				errs <- err
				return
			}
			want := `{"prompt":"` + prompt + `"}`
			if stream {
				want = `data: {"choices":[{"index":0,"text":"` + prompt + `","finish_reason":null}]}` + "\n\n" +
					`data: {"choices":[{"index":0,"text":"` + prompt + `","finish_reason":"stop"}]}` + "\n\n" + "data: [DONE]\n\n"
			}
			if status != http.StatusOK || string(body) != want {
				errs <- fmt.Errorf("request %d: %d %s", i, status, body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	eventually(t, "waiters removed", func() bool { return e.fd.calls.Len() == 0 })
}
