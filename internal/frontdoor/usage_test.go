package frontdoor

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/entitlement"
	"github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// recorded is a ledger that hands every appended record to the test.
type recorded struct {
	usage.Ledger
	records chan usage.Record
}

func (r *recorded) Append(ctx context.Context, recs []usage.Record) error {
	for _, rec := range recs {
		r.records <- rec
	}
	return r.Ledger.Append(ctx, recs)
}

func newRecorded(t *testing.T) (*recorded, *usage.Writer) {
	r := &recorded{Ledger: usage.NewMemory(usage.MemoryOptions{}), records: make(chan usage.Record, 16)}
	w := usage.NewWriter(r, usage.WriterOptions{FlushInterval: time.Millisecond, Logger: testLogger(t)})
	t.Cleanup(func() { _ = w.Close(context.Background()) })
	return r, w
}

func (r *recorded) next(t *testing.T) usage.Record {
	t.Helper()
	select {
	case rec := <-r.records:
		return rec
	case <-time.After(waitLimit):
		t.Fatal("no usage record")
		return usage.Record{}
	}
}

// A stream whose response event comes after its last frame, and after
// the client has closed the connection, is recorded with the response's
// exact usage.
func TestStreamUsageFromALateResponse(t *testing.T) {
	rec, w := newRecorded(t)
	release := make(chan struct{})
	var once sync.Once
	u := &llmapi.Usage{PromptTokens: 321, CachedTokens: 100, CompletionTokens: 12, ReasoningTokens: 5, TotalTokens: 333}
	e := newEnv(t, Config{Usage: w}, func(ctx context.Context, wk *worker, req llmapi.ExecutionEventRequest) {
		wk.chunk(ctx, req, 0, `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"OK"}}]}`)
		wk.chunk(ctx, req, 1, `{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`)
		select {
		case <-release:
		case <-ctx.Done():
			return
		}
		wk.publish(ctx, req.Operation.ResponseEvent(), req.RequestID, llmapi.ExecutionEventResponse{
			RequestID: req.RequestID, Operation: req.Operation, StatusCode: 200, Body: json.RawMessage(`{}`), Usage: u})
	})
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	resp := e.fd.call(t, ctx, http.MethodPost, "/v1/chat/completions", userToken(t, llmapi.Scope), strings.NewReader(chatBody("codex-chatgpt", true)))
	id := resp.Header.Get("X-Request-Id")
	br := bufio.NewReader(resp.Body)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before [DONE]: %v", err)
		}
		if line == "data: [DONE]\n" {
			break
		}
	}
	resp.Body.Close() // the client has everything and goes away
	once.Do(func() { close(release) })
	got := rec.next(t)
	want := usage.Tokens{Input: 321, Cached: 100, Output: 12, Reasoning: 5, Total: 333}
	if got.RequestID != id || got.Identity != "user-1" || got.Model != "codex-chatgpt" || got.Operation != "chat.completions" ||
		got.Status != http.StatusOK || got.Tokens != want {
		t.Fatalf("record %+v, want request %s with %+v", got, id, want)
	}
	if n := len(e.worker.requests()); n != 1 {
		t.Fatalf("%d requests published", n)
	}
}

// A refused request is answered before anything is published.
func TestRefusedRequestsAreNotPublished(t *testing.T) {
	p, err := entitlement.Parse([]byte(`{"defaults": {"allowed_models": ["codex-chatgpt"], "requests_per_minute": 1}}`))
	if err != nil {
		t.Fatal(err)
	}
	enf := entitlement.New(p, entitlement.NewMemory(), entitlement.Options{Logger: testLogger(t)})
	rec, w := newRecorded(t)
	e := newEnv(t, Config{Usage: w, Entitlements: enf}, func(ctx context.Context, wk *worker, req llmapi.ExecutionEventRequest) {
		wk.respond(ctx, req, 200, `{"id":"c","object":"chat.completion","choices":[]}`)
	})
	tok := userToken(t, llmapi.Scope)
	status, h, body := e.fd.post(t, "/v1/chat/completions", tok, chatBody("codex-agent", false))
	wantError(t, status, body, http.StatusForbidden, "model_not_allowed")
	if h.Get("X-Request-Id") != "" {
		t.Fatal("a refused request got a request id")
	}
	status, h, body = e.fd.post(t, "/v1/chat/completions", tok, chatBody("codex-chatgpt", false))
	if status != http.StatusOK || h.Get("x-ratelimit-remaining-requests") != "0" {
		t.Fatalf("%d %v %s", status, h, body)
	}
	admitted := h.Get("X-Request-Id")
	status, h, body = e.fd.post(t, "/v1/chat/completions", tok, chatBody("codex-chatgpt", true))
	wantError(t, status, body, http.StatusTooManyRequests, "rate_limit_exceeded")
	if h.Get("retry-after") == "" || h.Get("x-ratelimit-limit-requests") != "1" {
		t.Fatalf("headers %v", h)
	}
	if got := rec.next(t); got.RequestID != admitted {
		t.Fatalf("record %+v, want the admitted request only", got)
	}
	if reqs := e.worker.requests(); len(reqs) != 1 || reqs[0].RequestID != admitted {
		t.Fatalf("published %+v", reqs)
	}
}

func TestUsageRoute(t *testing.T) {
	e := newEnv(t, Config{}, nil)
	status, body := e.fd.get(t, "/v1/usage", userToken(t, llmapi.Scope))
	wantError(t, status, body, http.StatusNotFound, "usage_not_recorded")

	_, w := newRecorded(t)
	e = newEnv(t, Config{Usage: w}, nil)
	status, body = e.fd.get(t, "/v1/usage", userToken(t))
	wantError(t, status, body, http.StatusForbidden, "insufficient_scope")
	status, body = e.fd.get(t, "/v1/usage", "")
	wantError(t, status, body, http.StatusUnauthorized, "missing_token")
	status, _, body = e.fd.post(t, "/v1/usage", userToken(t, llmapi.Scope), "{}")
	wantError(t, status, body, http.StatusMethodNotAllowed, "method_not_allowed")
	for _, scope := range []string{llmapi.Scope, auth.ScopeLLMAdmin} {
		status, body = e.fd.get(t, "/v1/usage?group_by=identity", userToken(t, scope))
		var doc usage.Document
		if status != http.StatusOK || json.Unmarshal(body, &doc) != nil || doc.Object != "usage.report" {
			t.Fatalf("%s: %d %s", scope, status, body)
		}
		if wantID := map[string]string{llmapi.Scope: "user-1", auth.ScopeLLMAdmin: ""}[scope]; doc.Identity != wantID {
			t.Fatalf("%s: report restricted to %q", scope, doc.Identity)
		}
	}
}
