package eventscmd_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/eventscmd"
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

// The server verifies tokens with the configured secret and stops cleanly.
func TestServe(t *testing.T) {
	addr, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	secret := "events-secret"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr testproc.SyncBuffer
	go func() {
		env := busconfig.MapEnv(map[string]string{"BUS_API_JWT_SECRET": secret, "BUS_CONFIG_DIR": t.TempDir()})
		done <- eventscmd.Run(ctx, []string{"--addr", addr}, cliutil.IO{Env: env, Stdout: &testproc.SyncBuffer{}, Stderr: &stderr})
	}()
	base := "http://" + addr
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			cancel()
			<-done
			t.Fatalf("not listening: %v (%s)", err, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	now := time.Now()
	good, _ := auth.Issue([]byte(secret), auth.Claims{Subject: "s", Audience: []string{auth.Audience}, Scopes: []string{"llm:proxy"}, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	bad, _ := auth.Issue([]byte("other"), auth.Claims{Subject: "s", Audience: []string{auth.Audience}, Scopes: []string{"llm:proxy"}, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	for tok, want := range map[string]int{good: http.StatusAccepted, bad: http.StatusUnauthorized, "": http.StatusUnauthorized} {
		req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/events", strings.NewReader(`{"name":"bus.llm.responses.cancel","correlationId":"r1","payload":{"requestId":"r1","operation":"responses"}}`))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Error(err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != want && !(want == http.StatusAccepted && resp.StatusCode == http.StatusOK) {
			t.Errorf("publish with token %.10q: %d, want %d", tok, resp.StatusCode, want)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "jwt_secret_from=BUS_API_JWT_SECRET") {
		t.Errorf("log does not name the secret's source: %s", stderr.String())
	}
	if strings.Contains(stderr.String(), secret) {
		t.Error("the secret is logged")
	}
}
