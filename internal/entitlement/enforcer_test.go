package entitlement_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/entitlement"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// clock is a settable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

func enforcer(t *testing.T, doc string, s entitlement.Store) (*entitlement.Enforcer, *clock) {
	t.Helper()
	p, err := entitlement.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Date(2025, 3, 31, 23, 59, 30, 0, time.UTC)}
	return entitlement.New(p, s, entitlement.Options{Now: c.now, Logger: slog.New(slog.DiscardHandler)}), c
}

func admitted(t *testing.T, d entitlement.Decision) {
	t.Helper()
	if d.Err != nil {
		t.Fatalf("refused: %v", d.Err)
	}
}

func refused(t *testing.T, d entitlement.Decision, status int, code string) {
	t.Helper()
	if d.Err == nil || d.Err.Status != status || d.Err.Code != code {
		t.Fatalf("decision %+v, want %d %s", d.Err, status, code)
	}
}

func TestModelNotAllowedIs403(t *testing.T) {
	e, _ := enforcer(t, `{"defaults": {"allowed_models": ["codex-chatgpt"]}, "identities": {"ops": {"allowed_models": ["*"]}}}`, failingStore{})
	ctx := context.Background()
	d := e.Admit(ctx, "alice", "codex-agent")
	refused(t, d, http.StatusForbidden, "model_not_allowed")
	if d.Err.Type != llmapi.TypePermission || d.Err.Param != "model" || !strings.Contains(d.Err.Message, "codex-agent") {
		t.Fatalf("%+v", d.Err)
	}
	// No counted limit: no store round trip (the store here always fails).
	admitted(t, e.Admit(ctx, "alice", "codex-chatgpt"))
	admitted(t, e.Admit(ctx, "ops", "codex-agent"))
	if err := e.Charge(ctx, "alice", 100); err != nil {
		t.Fatalf("charge without budgets: %v", err)
	}
}

func TestRequestsPerMinute(t *testing.T) {
	e, c := enforcer(t, `{"defaults": {"requests_per_minute": 2}}`, entitlement.NewMemory())
	ctx := context.Background()
	d := e.Admit(ctx, "alice", "m")
	admitted(t, d)
	if d.Requests == nil || *d.Requests != (entitlement.Window{Limit: 2, Remaining: 1, Reset: 30 * time.Second}) || d.Tokens != nil {
		t.Fatalf("first: %+v %+v", d.Requests, d.Tokens)
	}
	admitted(t, e.Admit(ctx, "alice", "m"))
	d = e.Admit(ctx, "alice", "m")
	refused(t, d, http.StatusTooManyRequests, "rate_limit_exceeded")
	if d.RetryAfter != 30*time.Second || d.Requests.Remaining != 0 || !strings.Contains(d.Err.Message, "requests per minute") {
		t.Fatalf("%+v %+v", d.Err, d.Requests)
	}
	h := http.Header{}
	d.SetHeaders(h)
	for k, want := range map[string]string{
		"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "30s",
		"retry-after": "30", "retry-after-ms": "30000", "x-should-retry": "",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	// Bob has his own counter.
	admitted(t, e.Admit(ctx, "bob", "m"))
	// The next minute starts afresh.
	c.set(c.now().Add(30 * time.Second))
	admitted(t, e.Admit(ctx, "alice", "m"))
}

func TestTokensPerDayAndMonth(t *testing.T) {
	e, c := enforcer(t, `{"defaults": {"tokens_per_day": 100, "tokens_per_month": 150}}`, entitlement.NewMemory())
	ctx := context.Background()
	d := e.Admit(ctx, "alice", "m")
	admitted(t, d)
	if d.Tokens == nil || *d.Tokens != (entitlement.Window{Limit: 100, Remaining: 100, Reset: 30 * time.Second}) || d.Requests != nil {
		t.Fatalf("%+v", d.Tokens)
	}
	if err := e.Charge(ctx, "alice", 99); err != nil {
		t.Fatal(err)
	}
	admitted(t, e.Admit(ctx, "alice", "m"))            // one token left: the request runs
	if err := e.Charge(ctx, "alice", 20); err != nil { // and crosses the budget
		t.Fatal(err)
	}
	d = e.Admit(ctx, "alice", "m")
	refused(t, d, http.StatusTooManyRequests, "rate_limit_exceeded")
	if d.RetryAfter != 30*time.Second || !strings.Contains(d.Err.Message, "tokens per day: Limit 100, Used 119") {
		t.Fatalf("%+v", d.Err)
	}
	// Tokens reports the budget with the least left: the day (0 of 100,
	// the month has 31 of 150).
	if *d.Tokens != (entitlement.Window{Limit: 100, Remaining: 0, Reset: 30 * time.Second}) {
		t.Fatalf("%+v", d.Tokens)
	}

	// April 1st: a new day and a new month.
	c.set(time.Date(2025, 4, 1, 12, 0, 0, 0, time.UTC))
	admitted(t, e.Admit(ctx, "alice", "m"))
	if err := e.Charge(ctx, "alice", 90); err != nil {
		t.Fatal(err)
	}
	// April 2nd: a new day, but the month has 60 left of 150.
	c.set(time.Date(2025, 4, 2, 0, 0, 0, 0, time.UTC))
	d = e.Admit(ctx, "alice", "m")
	admitted(t, d)
	if d.Tokens.Remaining != 60 || d.Tokens.Limit != 150 || d.Tokens.Reset != 29*24*time.Hour {
		t.Fatalf("%+v", d.Tokens)
	}
	if err := e.Charge(ctx, "alice", 60); err != nil {
		t.Fatal(err)
	}
	d = e.Admit(ctx, "alice", "m")
	refused(t, d, http.StatusTooManyRequests, "rate_limit_exceeded")
	if d.RetryAfter != 29*24*time.Hour || !strings.Contains(d.Err.Message, "tokens per month") {
		t.Fatalf("%+v", d.Err)
	}
	h := http.Header{}
	d.SetHeaders(h)
	for k, want := range map[string]string{
		"x-ratelimit-limit-tokens": "150", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "696h0m0s",
		"retry-after": "2505600", "x-should-retry": "false", "x-ratelimit-limit-requests": "",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}

func TestAdmittedHeaders(t *testing.T) {
	e, c := enforcer(t, `{"defaults": {"tokens_per_day": 1000, "requests_per_minute": 60}}`, entitlement.NewMemory())
	c.set(time.Date(2025, 3, 31, 23, 59, 30, 250*int(time.Millisecond)+1, time.UTC))
	d := e.Admit(context.Background(), "alice", "m")
	admitted(t, d)
	h := http.Header{}
	d.SetHeaders(h)
	for k, want := range map[string]string{
		"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "59", "x-ratelimit-reset-requests": "29.75s",
		"x-ratelimit-limit-tokens": "1000", "x-ratelimit-remaining-tokens": "1000", "x-ratelimit-reset-tokens": "29.75s",
		"retry-after": "",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
}

// failingStore fails every call.
type failingStore struct{}

func (failingStore) Admit(context.Context, []entitlement.Counter) ([]int64, int, error) {
	return nil, 0, errors.New("store down")
}
func (failingStore) Add(context.Context, []entitlement.Counter) error {
	return errors.New("store down")
}
func (failingStore) Close() error { return nil }

func TestStoreDownRefusesWith503(t *testing.T) {
	e, _ := enforcer(t, `{"defaults": {"tokens_per_day": 10}}`, failingStore{})
	d := e.Admit(context.Background(), "alice", "m")
	refused(t, d, http.StatusServiceUnavailable, "entitlements_unavailable")
	if strings.Contains(d.Err.Message, "store down") {
		t.Fatalf("the store's error reaches the caller: %s", d.Err.Message)
	}
	if err := e.Charge(context.Background(), "alice", 5); err == nil {
		t.Fatal("a failed charge returned no error")
	}
}
