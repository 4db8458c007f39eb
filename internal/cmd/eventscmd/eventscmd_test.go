package eventscmd_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/eventscmd"
	"github.com/busdk/bus-integration-codex/internal/testutil/scrape"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

func run(t *testing.T, ctx context.Context, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["BUS_CONFIG_DIR"]; !ok {
		env["BUS_CONFIG_DIR"] = t.TempDir()
	}
	var stdout, stderr testproc.SyncBuffer
	code := eventscmd.Run(ctx, args, cliutil.IO{Env: busconfig.MapEnv(env), Stdout: &stdout, Stderr: &stderr})
	return code, stdout.String(), stderr.String()
}

func TestStartupErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		code  int
		wants []string
	}{
		{"unknown backend", nil, []string{"--events-backend", "nope", "--addr", "127.0.0.1:0"}, 2, []string{`--events-backend must be one of memory, redis, postgres, not "nope"`}},
		{"unknown backend from env", map[string]string{"BUS_EVENTS_BACKEND": "nope"}, []string{"--addr", "127.0.0.1:0"}, 2, []string{`"nope"`}},
		{"unknown flag", nil, []string{"--nope"}, 2, []string{"nope"}},
		{"extra argument", nil, []string{"serve"}, 2, []string{`unexpected argument "serve"`}},
		{"bad log level", nil, []string{"--log-level", "loud"}, 2, []string{"log level"}},
		{"bad base64 secret", map[string]string{"BUS_API_JWT_SECRET": "base64:%%%"}, []string{"--addr", "127.0.0.1:0"}, 1, []string{"BUS_API_JWT_SECRET", "base64"}},
		{"address in use", nil, []string{"--addr", busy.Addr().String()}, 1, []string{"listen on " + busy.Addr().String()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, context.Background(), tc.env, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d: %q", code, tc.code, stderr)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, eventscmd.Name+": ") {
				t.Errorf("stderr is not one line: %q", stderr)
			}
			for _, w := range tc.wants {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
		})
	}
}

func TestHelp(t *testing.T) {
	code, stdout, stderr := run(t, context.Background(), nil, "--help")
	if code != 0 || stderr != "" || !strings.Contains(stdout, "-events-backend") || !strings.Contains(stdout, "-addr") {
		t.Errorf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
}

// server is a running bus-api-provider-events.
type server struct {
	base   string
	stop   func() int // stops it and returns its exit code
	stderr *testproc.SyncBuffer
}

// serve runs the command with env until stop or the end of the test.
func serve(t *testing.T, env map[string]string) *server {
	t.Helper()
	addr, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	stderr := &testproc.SyncBuffer{}
	go func() {
		done <- eventscmd.Run(ctx, []string{"--addr", addr}, cliutil.IO{Env: busconfig.MapEnv(env), Stdout: &testproc.SyncBuffer{}, Stderr: stderr})
	}()
	var once sync.Once
	code := 0
	stop := func() int {
		once.Do(func() {
			http.DefaultClient.CloseIdleConnections()
			cancel()
			code = <-done
		})
		return code
	}
	t.Cleanup(func() { stop() })
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("not listening: %v (%s)", err, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &server{base: base, stop: stop, stderr: stderr}
}

// publishStatus publishes a bus.llm.* event with tok and returns the status.
func (s *server) publishStatus(t *testing.T, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.base+"/api/v1/events", strings.NewReader(`{"name":"bus.llm.responses.cancel","correlationId":"r1","payload":{"requestId":"r1","operation":"responses"}}`))
	req.Header.Set("Content-Type", "application/json")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func issue(t *testing.T, secret, subject string, scopes ...string) string {
	t.Helper()
	now := time.Now()
	tok, err := auth.Issue([]byte(secret), auth.Claims{Subject: subject, Audience: []string{auth.Audience}, Scopes: scopes, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// The server verifies tokens with the configured secret and stops cleanly.
func TestServe(t *testing.T) {
	secret := "events-secret"
	srv := serve(t, map[string]string{"BUS_API_JWT_SECRET": secret, "BUS_CONFIG_DIR": t.TempDir()})
	good := issue(t, secret, "s", "llm:proxy", auth.ScopeService)
	bad := issue(t, "other", "s", "llm:proxy", auth.ScopeService)
	for tok, want := range map[string]int{good: http.StatusAccepted, bad: http.StatusUnauthorized, "": http.StatusUnauthorized} {
		if got := srv.publishStatus(t, tok); got != want {
			t.Errorf("publish with token %.10q: %d, want %d", tok, got, want)
		}
	}
	if code := srv.stop(); code != 0 {
		t.Errorf("exit %d: %s", code, srv.stderr.String())
	}
	if !strings.Contains(srv.stderr.String(), "jwt_secret_from=BUS_API_JWT_SECRET") {
		t.Errorf("log does not name the secret's source: %s", srv.stderr.String())
	}
	if strings.Contains(srv.stderr.String(), secret) {
		t.Error("the secret is logged")
	}
}

// TestServiceSubjects: who is a service on bus.llm.*. With
// BUS_EVENTS_SERVICE_SUBJECTS unset, the local identity is (the seed's
// one-machine commands issue every token for it with only llm:proxy);
// set to empty, only tokens with bus:service are; set to a list, its
// subjects are too. Any other llm:proxy token is a caller: 403.
func TestServiceSubjects(t *testing.T) {
	secret := "events-secret"
	dir := t.TempDir()
	local, err := busconfig.LocalIdentity(busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": dir}))
	if err != nil {
		t.Fatal(err)
	}
	localCaller := issue(t, secret, local, "llm:proxy")
	alice := issue(t, secret, "alice", "llm:proxy")
	service := issue(t, secret, "bus-codex-worker", "llm:proxy", auth.ScopeService)
	worker := issue(t, secret, "w1", "llm:proxy")
	tests := []struct {
		name     string
		subjects *string
		want     map[string]int
	}{
		{"unset: the local identity", nil, map[string]int{localCaller: 202, alice: 403, service: 202, worker: 403}},
		{"empty: the scope only", new(""), map[string]int{localCaller: 403, alice: 403, service: 202, worker: 403}},
		{"a list", new("w1, fd"), map[string]int{localCaller: 403, alice: 403, service: 202, worker: 202}},
	}
	names := map[string]string{localCaller: "local identity", alice: "alice", service: "bus:service", worker: "w1"}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"BUS_API_JWT_SECRET": secret, "BUS_CONFIG_DIR": dir}
			if tc.subjects != nil {
				env[auth.EnvServiceSubjects] = *tc.subjects
			}
			srv := serve(t, env)
			for tok, want := range tc.want {
				if got := srv.publishStatus(t, tok); got != want {
					t.Errorf("%s publishing bus.llm.*: %d, want %d", names[tok], got, want)
				}
			}
		})
	}
}

// TestMetricsAndTraces: GET /metrics without a token counts the publish;
// with OTEL_EXPORTER_OTLP_ENDPOINT the span of a traced publish reaches
// the collector by the time the server has stopped; with
// BUS_EVENTS_METRICS_ADDR the metrics move to that port.
func TestMetricsAndTraces(t *testing.T) {
	secret := "events-secret"
	exported := make(chan []byte, 10)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" {
			exported <- b
		}
	}))
	defer collector.Close()
	own, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, metricsAddr string }{{"on the API port", ""}, {"on its own port", own}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serve(t, map[string]string{"BUS_API_JWT_SECRET": secret, "BUS_CONFIG_DIR": t.TempDir(),
				"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL, "BUS_EVENTS_METRICS_ADDR": tc.metricsAddr})
			metricsURL := srv.base + "/metrics"
			if tc.metricsAddr != "" {
				resp, err := http.Get(metricsURL)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Fatalf("/metrics on the API port with BUS_EVENTS_METRICS_ADDR: %d", resp.StatusCode)
				}
				metricsURL = "http://" + tc.metricsAddr + "/metrics"
			}
			before := scrape.Get(t, http.DefaultClient, metricsURL)
			req, _ := http.NewRequest(http.MethodPost, srv.base+"/api/v1/events", strings.NewReader(`{"name":"bus.llm.responses.cancel","correlationId":"r1","payload":{}}`))
			req.Header.Set("Authorization", "Bearer "+issue(t, secret, "s", "llm:proxy", auth.ScopeService))
			req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			resp, err := http.DefaultClient.Do(req)
			if err != nil || resp.StatusCode != http.StatusAccepted {
				t.Fatalf("publish: %v %v", resp, err)
			}
			resp.Body.Close()
			key := scrape.Key("bus_events_published_total", "name=bus.llm.responses.cancel")
			if got := scrape.Get(t, http.DefaultClient, metricsURL)[key] - before[key]; got != 1 {
				t.Errorf("%s moved by %v, want 1", key, got)
			}
			if code := srv.stop(); code != 0 {
				t.Fatalf("exit %d: %s", code, srv.stderr.String())
			}
			select {
			case b := <-exported:
				for _, want := range []string{"bus-api-provider-events", "events.publish"} {
					if !bytes.Contains(b, []byte(want)) {
						t.Errorf("the exported spans lack %q", want)
					}
				}
			default:
				t.Fatal("no span reached the OTLP collector")
			}
		})
	}
}
