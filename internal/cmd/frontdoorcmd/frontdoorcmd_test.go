package frontdoorcmd_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/frontdoorcmd"
	"github.com/busdk/bus-integration-codex/internal/eventsapi"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/internal/testutil/scrape"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

const (
	secret    = "app-frontdoor-test-secret"
	waitLimit = 15 * time.Second
)

func token(t *testing.T, key string, scopes ...string) string {
	t.Helper()
	tok, err := auth.Issue([]byte(key), auth.Claims{Subject: "svc", Audience: []string{auth.Audience}, Scopes: scopes, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// eventsAPI serves an in-process Events API until the test ends.
func eventsAPI(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := eventsapi.New(eventsapi.Config{Backend: memory.New(memory.Options{}), Verifier: auth.NewVerifier([]byte(secret), auth.Audience), Logger: slog.New(slog.DiscardHandler)})
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + l.Addr().String()
}

func baseEnv(t *testing.T, eventsURL string) map[string]string {
	return map[string]string{
		"BUS_CONFIG_DIR":                t.TempDir(),
		"BUS_LLM_JWT_SECRET":            secret,
		"BUS_EVENTS_API_URL":            eventsURL,
		"BUS_LLM_EXECUTION_BACKEND":     "events",
		"BUS_EVENTS_LISTENER_RETRY":     "true",
		"BUS_EVENTS_LISTENER_RETRY_MIN": "20ms",
		"BUS_EVENTS_LISTENER_RETRY_MAX": "50ms",
	}
}

func run(ctx context.Context, env map[string]string, args ...string) (int, string) {
	var stderr testproc.SyncBuffer
	code := frontdoorcmd.Run(ctx, args, cliutil.IO{Env: busconfig.MapEnv(env), Stdout: io.Discard, Stderr: &stderr})
	return code, stderr.String()
}

// lastLine returns the final line of out, checking it is the command's
// one-line error.
func lastLine(t *testing.T, out string) string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, frontdoorcmd.Name+": ") {
		t.Fatalf("last stderr line is not the command's error: %q (all: %q)", last, out)
	}
	return last
}

func TestUsageErrors(t *testing.T) {
	env := baseEnv(t, "http://127.0.0.1:1")
	env["BUS_API_TOKEN"] = "x"
	noToken := baseEnv(t, "http://127.0.0.1:1")
	defaultBackend := baseEnv(t, "http://127.0.0.1:1")
	delete(defaultBackend, "BUS_LLM_EXECUTION_BACKEND")
	badTimeout := baseEnv(t, "http://127.0.0.1:1")
	badTimeout["BUS_LLM_TIMEOUT"] = "soon"
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"missing token", noToken, nil, []string{"BUS_API_TOKEN is not set", "llm:proxy"}},
		{"missing token with none backends", noToken, []string{"--usage-backend", "none", "--billing-backend", "", "--backend-url", "http://x"}, []string{"BUS_API_TOKEN is not set"}},
		{"default http backend", defaultBackend, nil, []string{"--execution-backend http", "not implemented", "--execution-backend events"}},
		{"http backend flag", env, []string{"--execution-backend", "http"}, []string{"not implemented", "--execution-backend events"}},
		{"unknown backend", env, []string{"--execution-backend", "grpc"}, []string{"must be http or events"}},
		{"models proxy", env, []string{"--models-backend", "proxy"}, []string{"--models-backend proxy is not implemented"}},
		{"usage backend", env, []string{"--usage-backend", "mongo"}, []string{"--usage-backend must be memory, redis, postgres or none"}},
		{"usage retention", env, []string{"--usage-retention", "0s"}, []string{"--usage-retention must be positive"}},
		{"usage on redis without its address", env, []string{"--usage-backend", "redis"}, []string{"BUS_EVENTS_REDIS_ADDR is required"}},
		{"usage on postgres without its DSN", env, []string{"--usage-backend", "postgres"}, []string{"--usage-backend postgres needs BUS_EVENTS_POSTGRES_DSN"}},
		{"billing backend", env, []string{"--billing-backend", "stripe"}, []string{"--billing-backend must be none or policy"}},
		{"policy without a policy", env, []string{"--billing-backend", "policy"}, []string{"--billing-backend policy needs a policy", "--entitlements"}},
		{"entitlements with billing none", env, []string{"--billing-backend", "none", "--entitlements", "x.json"}, []string{"--entitlements needs --billing-backend policy"}},
		{"entitlements store", env, []string{"--entitlements-store", "etcd", "--entitlements", "x.json"}, []string{"--entitlements-store must be memory, redis or postgres"}},
		{"limits on redis without its address", withEnv(env, "BUS_LLM_DEFAULT_REQUESTS_PER_MINUTE", "5"), []string{"--entitlements-store", "redis"}, []string{"BUS_EVENTS_REDIS_ADDR is required"}},
		{"bad default limit", withEnv(env, "BUS_LLM_DEFAULT_TOKENS_PER_DAY", "many"), nil, []string{"BUS_LLM_DEFAULT_TOKENS_PER_DAY", "positive number"}},
		{"runtime backend", env, []string{"--runtime-backend", "k8s"}, []string{"--runtime-backend k8s is not implemented"}},
		{"token flag refused", env, []string{"--token", "abc"}, []string{"flag provided but not defined: -token"}},
		{"bad timeout env", badTimeout, nil, []string{"BUS_LLM_TIMEOUT"}},
		{"zero timeout", env, []string{"--timeout", "0s"}, []string{"--timeout must be positive"}},
		{"stray argument", env, []string{"serve"}, []string{`unexpected argument "serve"`}},
		{"bad events url", env, []string{"--events-url", "ftp://x"}, []string{"--events-url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := run(context.Background(), tt.env, tt.args...)
			if code != cliutil.ExitUsage {
				t.Fatalf("exit %d, want 2; stderr %q", code, out)
			}
			if strings.Count(out, "\n") != 1 {
				t.Fatalf("stderr is not one line: %q", out)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("stderr %q lacks %q", out, w)
				}
			}
		})
	}
}

// withEnv returns a copy of env with key set to value.
func withEnv(env map[string]string, key, value string) map[string]string {
	out := map[string]string{key: value}
	for k, v := range env {
		if k != key {
			out[k] = v
		}
	}
	return out
}

func TestBadPolicyFile(t *testing.T) {
	env := baseEnv(t, "http://127.0.0.1:1")
	env["BUS_API_TOKEN"] = "x"
	path := filepath.Join(t.TempDir(), "entitlements.json")
	if err := os.WriteFile(path, []byte(`{"defaults": {"tokens_per_day": -5}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := run(context.Background(), env, "--entitlements", path)
	if code != cliutil.ExitFailure || !strings.Contains(lastLine(t, out), path) || !strings.Contains(out, "tokens_per_day") {
		t.Fatalf("exit %d, stderr %q", code, out)
	}
}

func TestBadCatalog(t *testing.T) {
	env := baseEnv(t, "http://127.0.0.1:1")
	env["BUS_API_TOKEN"] = "x"
	path := filepath.Join(t.TempDir(), "models.json")
	if err := os.WriteFile(path, []byte(`[{"id":"a","reasoning_effort":"max"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := run(context.Background(), env, "--model-catalog", path)
	if code != cliutil.ExitFailure || !strings.Contains(lastLine(t, out), path) || !strings.Contains(out, "reasoning_effort") {
		t.Fatalf("exit %d, stderr %q", code, out)
	}
}

func TestTokenRejected(t *testing.T) {
	url := eventsAPI(t)
	env := baseEnv(t, url)
	env["BUS_API_TOKEN"] = token(t, "some-other-secret", llmapi.Scope)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	code, out := run(ctx, env, "--addr", "127.0.0.1:0")
	if code != cliutil.ExitFailure {
		t.Fatalf("exit %d; stderr %q", code, out)
	}
	line := lastLine(t, out)
	for _, w := range []string{"refused the service token", "BUS_API_TOKEN", "401", "invalid_auth", "token signature is invalid"} {
		if !strings.Contains(line, w) {
			t.Errorf("error line %q lacks %q", line, w)
		}
	}
	if strings.Contains(out, env["BUS_API_TOKEN"]) {
		t.Error("stderr shows the token")
	}
}

func TestTokenLacksScope(t *testing.T) {
	url := eventsAPI(t)
	env := baseEnv(t, url)
	env["BUS_API_TOKEN"] = token(t, secret, "events:listen")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	code, out := run(ctx, env, "--addr", "127.0.0.1:0")
	if code != cliutil.ExitFailure || !strings.Contains(lastLine(t, out), "403") || !strings.Contains(out, "llm:proxy") {
		t.Fatalf("exit %d; stderr %q", code, out)
	}
}

func TestEventsUnreachable(t *testing.T) {
	addr, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr // nothing listens there
	env := baseEnv(t, url)
	env["BUS_API_TOKEN"] = token(t, secret, llmapi.Scope)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	code, out := run(ctx, env, "--addr", "127.0.0.1:0", "--connect-timeout", "200ms")
	if code != cliutil.ExitFailure {
		t.Fatalf("exit %d; stderr %q", code, out)
	}
	if line := lastLine(t, out); !strings.Contains(line, "could not be reached") || !strings.Contains(line, url) {
		t.Fatalf("error line %q", line)
	}
}

// TestServesAndStops runs the command for real: it serves the catalog to a
// valid token and exits 0 when its context ends.
func TestServesAndStops(t *testing.T) {
	url := eventsAPI(t)
	env := baseEnv(t, url)
	env["BUS_API_TOKEN"] = token(t, secret, llmapi.Scope, auth.ScopeService)
	env["BUS_EVENTS_LISTENER_REQUIRED"] = "1"
	addr, done, cancel, stderr := start(t, env, "--backend-url", "http://unused")
	defer cancel()
	for path, want := range map[string]int{"/readyz": 200, "/v1/models": 200, "/v1/usage": 200} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+token(t, secret, llmapi.Scope))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		if path == "/v1/models" && !strings.Contains(string(b), `"id":"codex-chatgpt"`) {
			t.Fatalf("models: %s", b)
		}
		if path == "/v1/usage" && (!strings.Contains(string(b), `"object":"usage.report"`) || !strings.Contains(string(b), `"identity":"svc"`)) {
			t.Fatalf("usage (the memory ledger by default): %s", b)
		}
	}
	cancel()
	select {
	case code := <-done:
		if code != cliutil.ExitOK {
			t.Fatalf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(waitLimit):
		t.Fatal("did not stop")
	}
	if strings.Contains(stderr.String(), env["BUS_API_TOKEN"]) {
		t.Error("logs show the token")
	}
	if !strings.Contains(stderr.String(), `msg="usage and limits" usage_backend=memory billing_backend=none`) {
		t.Errorf("the start-up log does not say how usage and limits are kept: %s", stderr.String())
	}
}

// start runs the front door with env and args (on 127.0.0.1:0) until
// cancel, and returns its address once it is ready.
func start(t *testing.T, env map[string]string, args ...string) (addr string, done <-chan int, cancel func(), stderr *testproc.SyncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stderr = &testproc.SyncBuffer{}
	exited := make(chan int, 1)
	go func() {
		exited <- frontdoorcmd.Run(ctx, append([]string{"--addr", "127.0.0.1:0"}, args...), cliutil.IO{Env: busconfig.MapEnv(env), Stdout: io.Discard, Stderr: stderr})
	}()
	addrRE := regexp.MustCompile(`msg="front door listening" addr=(\S+)`)
	deadline := time.Now().Add(waitLimit)
	for {
		if m := addrRE.FindStringSubmatch(stderr.String()); m != nil && strings.Contains(stderr.String(), "front door ready") {
			return m[1], exited, cancel, stderr
		}
		select {
		case code := <-exited:
			t.Fatalf("exited early with %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMetricsEndpoint: GET /metrics in the Prometheus text format, without
// a token, on the front door's port, or only on --metrics-addr when set;
// a refused request moves its counters.
func TestMetricsEndpoint(t *testing.T) {
	url := eventsAPI(t)
	env := baseEnv(t, url)
	env["BUS_API_TOKEN"] = token(t, secret, llmapi.Scope, auth.ScopeService)
	own, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{{"on the API port", nil}, {"on its own port", []string{"--metrics-addr", own}}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _, _, _ := start(t, env, tc.args...)
			metricsURL := "http://" + addr + "/metrics"
			if tc.args != nil {
				resp, err := http.Get(metricsURL)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Fatalf("/metrics on the API port with --metrics-addr: %d", resp.StatusCode)
				}
				metricsURL = "http://" + own + "/metrics"
			}
			before := scrape.Get(t, http.DefaultClient, metricsURL)
			resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			after := scrape.Get(t, http.DefaultClient, metricsURL)
			for key, want := range map[string]float64{
				scrape.Key("bus_llm_requests_total", "operation=chat.completions", "status=401"): 1,
				scrape.Key("bus_llm_requests_refused_total", "reason=unauthenticated"):           1,
			} {
				if got := after[key] - before[key]; got != want {
					t.Errorf("%s moved by %v, want %v", key, got, want)
				}
			}
			if _, ok := after["go_goroutines"]; !ok {
				t.Error("no Go runtime metrics")
			}
		})
	}
}
