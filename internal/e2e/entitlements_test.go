package e2e_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/entitlement"
	"github.com/busdk/bus-integration-codex/internal/provider/static"
	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	ledger "github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Entitlements, end to end through the official SDK: limits answered
// with OpenAI's 429 and its headers, a model not allowed with 403, and a
// daily token budget that holds across two front-door replicas on Redis.

// noon is the enforcers' clock in these tests: today at 12:00 UTC, so no
// window ends while a test runs.
func noon() time.Time {
	return time.Now().UTC().Truncate(24 * time.Hour).Add(12 * time.Hour)
}

func enforcer(t *testing.T, policy string, s entitlement.Store) *entitlement.Enforcer {
	t.Helper()
	p, err := entitlement.Parse([]byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	return entitlement.New(p, s, entitlement.Options{Now: noon, Logger: testLogger(t)})
}

// sdkAt is an SDK client for the front door at base with token.
func sdkAt(e *env, base, token string) openai.Client {
	return openai.NewClient(option.WithBaseURL(base), option.WithAPIKey(token), option.WithMaxRetries(0), option.WithHTTPClient(e.http))
}

// chat runs one chat request and returns its HTTP answer and error.
func chat(t *testing.T, c openai.Client, modelID string) (*http.Response, error) {
	t.Helper()
	p := chatParams()
	p.Model = modelID
	var raw *http.Response
	_, err := c.Chat.Completions.New(reqCtx(t), p, option.WithResponseInto(&raw))
	return raw, err
}

// headers checks header values ("" for absent).
func headers(t *testing.T, what string, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %s is %q, want %q", what, k, got, v)
		}
	}
}

func TestDailyTokenLimitAcrossReplicasOnRedis(t *testing.T) {
	addr := redistest.Start(t)
	// Every chat request of "Reply OK" costs 5 tokens on the static provider.
	const policy = `{"defaults": {"tokens_per_day": 12}}`
	replica := func() *entitlement.Enforcer {
		s, err := entitlement.OpenRedis(context.Background(), entitlement.RedisConfig{Addr: addr, Prefix: "e2e:"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return enforcer(t, policy, s)
	}
	e := newEnvWith(t, static.New(), stack.Config{Entitlements: replica()})
	b, err := e.st.AddFrontDoor(reqCtx(t), stack.FrontDoorConfig{Entitlements: replica()})
	if err != nil {
		t.Fatal(err)
	}
	aliceTok := token(t, e, "alice", llmapi.Scope)
	atA, atB := sdkAt(e, e.st.URL, aliceTok), sdkAt(e, b.URL, aliceTok)
	untilMidnight := strconv.Itoa(12 * 3600)

	// 1. Replica A: 12 left before, 5 spent.
	raw, err := chat(t, atA, model)
	if err != nil {
		t.Fatal(err)
	}
	headers(t, "first request", raw.Header, map[string]string{
		"x-ratelimit-limit-tokens": "12", "x-ratelimit-remaining-tokens": "12", "x-ratelimit-reset-tokens": "12h0m0s", "retry-after": "",
	})
	// 2. Replica B, streaming (read to its end: the charge is then made): 7 left before, 10 spent.
	resp := postTo(t, e, b.URL, aliceTok, `{"model":"codex-chatgpt","stream":true,"messages":[{"role":"user","content":"Reply OK"}]}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "data: [DONE]") {
		t.Fatalf("stream: %d %s", resp.StatusCode, body)
	}
	headers(t, "stream", resp.Header, map[string]string{"x-ratelimit-remaining-tokens": "7"})
	// 3. Replica A: 2 left, so it runs, and crosses the budget (15 spent).
	raw, err = chat(t, atA, model)
	if err != nil {
		t.Fatalf("the request that crosses the budget: %v", err)
	}
	headers(t, "crossing request", raw.Header, map[string]string{"x-ratelimit-remaining-tokens": "2"})
	// 4. The next request is refused, on either replica.
	for name, c := range map[string]openai.Client{"B": atB, "A": atA} {
		_, err := chat(t, c, model)
		apiErr := apiError(t, err)
		if apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "rate_limit_exceeded" || apiErr.Type != llmapi.TypeRateLimit ||
			!strings.Contains(apiErr.Message, "tokens per day: Limit 12, Used 15") {
			t.Fatalf("replica %s: %d %s", name, apiErr.StatusCode, apiErr.RawJSON())
		}
		headers(t, "refusal at "+name, apiErr.Response.Header, map[string]string{
			"x-ratelimit-limit-tokens": "12", "x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "12h0m0s",
			"retry-after": untilMidnight, "retry-after-ms": untilMidnight + "000", "x-should-retry": "false",
			"x-request-id": "", // nothing was published
		})
	}
	// Bob has a budget of his own.
	if _, err := chat(t, sdkAt(e, b.URL, token(t, e, "bob", llmapi.Scope)), model); err != nil {
		t.Fatalf("bob: %v", err)
	}
}

func TestModelNotAllowedIs403(t *testing.T) {
	const policy = `{"defaults": {"allowed_models": ["codex-chatgpt"]}, "identities": {"ops": {"allowed_models": ["codex-*"]}}}`
	l := watch(ledger.NewMemory(ledger.MemoryOptions{}))
	e := startWithLedger(t, l, stack.Config{Entitlements: enforcer(t, policy, entitlement.NewMemory())})
	alice := e.sdk(token(t, e, "alice", llmapi.Scope))
	_, err := chat(t, alice, catalog.AgentModelID)
	apiErr := apiError(t, err)
	if apiErr.StatusCode != http.StatusForbidden || apiErr.Code != "model_not_allowed" || apiErr.Type != llmapi.TypePermission || apiErr.Param != "model" {
		t.Fatalf("%d %s", apiErr.StatusCode, apiErr.RawJSON())
	}
	// An unknown model is still a 404, a known allowed one runs.
	if _, err := chat(t, alice, "no-such-model"); apiError(t, err).StatusCode != http.StatusNotFound {
		t.Fatalf("unknown model: %v", err)
	}
	raw, err := chat(t, alice, model)
	if err != nil {
		t.Fatal(err)
	}
	allowed := requestID(t, raw)
	raw, err = chat(t, e.sdk(token(t, e, "ops", llmapi.Scope)), catalog.AgentModelID)
	if err != nil {
		t.Fatalf("ops may use %s: %v", catalog.AgentModelID, err)
	}
	l.waitFor(t, allowed, requestID(t, raw))
	// The refused request never ran: alice's usage is the allowed one only.
	code, doc, body := getUsage(t, e, e.st.URL, token(t, e, "alice", llmapi.Scope), "group_by=request")
	if code != http.StatusOK || len(doc.Data) != 1 || doc.Data[0].RequestID != allowed {
		t.Fatalf("%d %s", code, body)
	}
}

func TestRequestsPerMinute429(t *testing.T) {
	e := newEnvWith(t, static.New(), stack.Config{Entitlements: enforcer(t, `{"defaults": {"requests_per_minute": 2}}`, entitlement.NewMemory())})
	alice := e.sdk(token(t, e, "alice", llmapi.Scope))
	for i, remaining := range []string{"1", "0"} {
		raw, err := chat(t, alice, model)
		if err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		headers(t, "admitted", raw.Header, map[string]string{"x-ratelimit-limit-requests": "2", "x-ratelimit-remaining-requests": remaining,
			"x-ratelimit-reset-requests": "1m0s", "x-ratelimit-limit-tokens": ""})
	}
	_, err := chat(t, alice, model)
	apiErr := apiError(t, err)
	if apiErr.StatusCode != http.StatusTooManyRequests || apiErr.Code != "rate_limit_exceeded" || !strings.Contains(apiErr.Message, "requests per minute") {
		t.Fatalf("%d %s", apiErr.StatusCode, apiErr.RawJSON())
	}
	// A minute's wait is one an SDK may take by itself: no x-should-retry.
	headers(t, "refusal", apiErr.Response.Header, map[string]string{"x-ratelimit-remaining-requests": "0", "retry-after": "60", "x-should-retry": ""})
	// Streaming requests are admitted the same way.
	resp := postTo(t, e, e.st.URL, token(t, e, "alice", llmapi.Scope), `{"model":"codex-chatgpt","stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), "rate_limit_exceeded") {
		t.Fatalf("stream over the limit: %d %s", resp.StatusCode, body)
	}
	if _, err := chat(t, e.sdk(token(t, e, "bob", llmapi.Scope)), model); err != nil {
		t.Fatalf("bob: %v", err)
	}
}

// postTo sends a chat request body to base with token and returns the
// answer (the caller closes its body).
func postTo(t *testing.T, e *env, base, token, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(reqCtx(t), http.MethodPost, base+"/chat/completions", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
