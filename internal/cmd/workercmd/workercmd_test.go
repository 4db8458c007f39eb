package workercmd_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/workercmd"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

type result struct {
	code           int
	stdout, stderr string
}

func runWorker(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	if env == nil {
		env = map[string]string{}
	}
	if _, ok := env["BUS_CONFIG_DIR"]; !ok {
		env["BUS_CONFIG_DIR"] = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr testproc.SyncBuffer
	code := workercmd.Run(ctx, args, cliutil.IO{Env: busconfig.MapEnv(env), Stdout: &stdout, Stderr: &stderr})
	return result{code, stdout.String(), stderr.String()}
}

// oneLine asserts that stderr is exactly one line starting with the command name.
func oneLine(t *testing.T, r result, code int, wants ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit %d, want %d (stderr %q)", r.code, code, r.stderr)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") || !strings.HasPrefix(r.stderr, workercmd.Name+": ") {
		t.Errorf("stderr is not one line: %q", r.stderr)
	}
	for _, w := range wants {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr %q lacks %q", r.stderr, w)
		}
	}
}

func TestEvents(t *testing.T) {
	for _, format := range []string{"text", "json", "asyncapi"} {
		t.Run(format, func(t *testing.T) {
			r := runWorker(t, nil, "--events", "--format", format)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d stderr %q", r.code, r.stderr)
			}
			for _, op := range llmapi.Operations() {
				for _, name := range []string{op.RequestEvent(), op.ResponseEvent(), op.ChunkEvent(), op.CancelEvent()} {
					if !strings.Contains(r.stdout, name) {
						t.Errorf("output lacks %s", name)
					}
				}
			}
			for _, op := range llmapi.StateOperations() {
				for _, name := range []string{op.RequestEvent(), op.ResponseEvent()} {
					if !strings.Contains(r.stdout, name) {
						t.Errorf("output lacks %s", name)
					}
				}
			}
			if format == "text" {
				if !strings.Contains(r.stdout, "unicast (group "+workercmd.DefaultGroup+")") {
					t.Errorf("text lacks the default group:\n%s", r.stdout)
				}
				return
			}
			var doc map[string]any
			if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, r.stdout)
			}
			if format == "asyncapi" && doc["asyncapi"] != "3.0.0" {
				t.Errorf("asyncapi = %v", doc["asyncapi"])
			}
			if format == "json" && (doc["name"] != workercmd.Name || doc["version"] != workercmd.Version) {
				t.Errorf("json name/version %v %v", doc["name"], doc["version"])
			}
		})
	}
	t.Run("group flag", func(t *testing.T) {
		r := runWorker(t, nil, "--events", "--group", "my-workers")
		if r.code != 0 || !strings.Contains(r.stdout, "(group my-workers)") {
			t.Errorf("exit %d:\n%s", r.code, r.stdout)
		}
	})
	t.Run("bad format", func(t *testing.T) {
		oneLine(t, runWorker(t, nil, "--events", "--format", "yaml"), 2, "--format", "yaml")
	})
}

func TestEventHelp(t *testing.T) {
	r := runWorker(t, nil, "--event-help", "codex.chat_completions.receive")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("exit %d stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"codex.chat_completions.receive", "bus.llm.chat.completions.request", "unicast", workercmd.DefaultGroup, "llm:proxy", "llmapi.ExecutionEventRequest"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("help lacks %q:\n%s", want, r.stdout)
		}
	}
	r = runWorker(t, nil, "--event-help", "codex.nope.receive")
	oneLine(t, r, 2, `unknown capability "codex.nope.receive"`, "codex.responses.cancel")
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unknown flag", nil, []string{"--bogus"}, "bogus"},
		{"extra argument", nil, []string{"serve"}, `unexpected argument "serve"`},
		{"bad provider", nil, []string{"--provider", "gpt"}, "--provider"},
		{"bad timeout", nil, []string{"--timeout", "0s"}, "--timeout"},
		{"bad concurrency", nil, []string{"--concurrency", "-1"}, "--concurrency"},
		{"bad sandbox", nil, []string{"--sandbox", "none"}, "--sandbox"},
		{"bad approvals", nil, []string{"--approvals", "maybe"}, "--approvals"},
		{"bad response store", nil, []string{"--response-store", "disk"}, "--response-store"},
		{"bad group", nil, []string{"--group", "a b"}, "--group"},
		{"bad env duration", map[string]string{"BUS_CODEX_TIMEOUT": "soon"}, nil, "BUS_CODEX_TIMEOUT"},
		{"bad env number", map[string]string{"BUS_CODEX_CONCURRENCY": "many"}, nil, "BUS_CODEX_CONCURRENCY"},
		{"bad env web search", map[string]string{"BUS_CODEX_WEB_SEARCH": "sometimes"}, nil, "BUS_CODEX_WEB_SEARCH"},
		{"missing token", nil, []string{"--provider", "static"}, "BUS_API_TOKEN"},
		{"bad retry", map[string]string{"BUS_API_TOKEN": "x", "BUS_EVENTS_LISTENER_RETRY_MIN": "-1s"}, []string{"--provider", "static"}, "BUS_EVENTS_LISTENER_RETRY_MIN"},
		{"bad log level", map[string]string{"BUS_API_TOKEN": "x"}, []string{"--provider", "static", "--log-level", "loud"}, "log level"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oneLine(t, runWorker(t, tc.env, tc.args...), 2, tc.want)
		})
	}
}

func TestHelp(t *testing.T) {
	r := runWorker(t, nil, "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "-events-url") || r.stderr != "" {
		t.Errorf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func startBus(t *testing.T) *localbus.Bus {
	t.Helper()
	b, err := localbus.Start(localbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestTokenRejected(t *testing.T) {
	b := startBus(t)
	now := time.Now()
	foreign, err := auth.Issue([]byte("another secret entirely"), auth.Claims{
		Subject: "w", Audience: []string{auth.Audience}, Scopes: []string{llmapi.Scope}, IssuedAt: now, ExpiresAt: now.Add(time.Hour),
	})
	if err != nil {
		t.Fatal(err)
	}
	noScope, err := b.Token("w", "events:listen")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		token string
		wants []string
	}{
		{"wrong secret", foreign, []string{"401", "refused the service token in BUS_API_TOKEN", "signature is invalid", b.URL}},
		{"no llm:proxy", noScope, []string{"403", "refused the service token in BUS_API_TOKEN", "llm:proxy", b.URL}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"BUS_API_TOKEN": tc.token}
			r := runWorker(t, env, "--provider", "static", "--events-url", b.URL, "--connect-timeout", "5s")
			oneLine(t, r, 1, tc.wants...)
			if strings.Contains(r.stderr, tc.token) {
				t.Error("the token is echoed")
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	addr, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr // nothing listens there
	env := map[string]string{
		"BUS_API_TOKEN":                 "x.y.z",
		"BUS_EVENTS_LISTENER_RETRY_MIN": "10ms",
		"BUS_EVENTS_LISTENER_RETRY_MAX": "20ms",
	}
	r := runWorker(t, env, "--provider", "static", "--events-url", url, "--connect-timeout", "300ms")
	oneLine(t, r, 1, "unreachable", url)
}

func TestCodexNotFound(t *testing.T) {
	env := map[string]string{"BUS_API_TOKEN": "x.y.z"}
	r := runWorker(t, env, "--provider", "codex", "--codex-command", "/nonexistent", "--workdir", t.TempDir())
	oneLine(t, r, 1, `codex command "/nonexistent" was not found`, "--provider static")
}

func TestBadWorkdir(t *testing.T) {
	env := map[string]string{"BUS_API_TOKEN": "x.y.z"}
	oneLine(t, runWorker(t, env, "--provider", "codex", "--workdir", "/nonexistent/dir"), 2, "--workdir")
}

// The worker serves until its context ends, then exits 0.
func TestServesUntilCancelled(t *testing.T) {
	b := startBus(t)
	tok, err := b.Token("worker", llmapi.Scope, auth.ScopeService)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testproc.SyncBuffer
	env := busconfig.MapEnv(map[string]string{"BUS_API_TOKEN": tok, "BUS_CONFIG_DIR": t.TempDir()})
	done := make(chan int, 1)
	go func() {
		done <- workercmd.Run(ctx, []string{"--provider", "static", "--events-url", b.URL, "--consumer", "w1"}, cliutil.IO{Env: env, Stdout: &stdout, Stderr: &stderr})
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "worker connected") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if code := <-done; code != 0 || !strings.Contains(stderr.String(), "worker connected") || !strings.Contains(stderr.String(), "worker stopped") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestSelfTest(t *testing.T) {
	r := runWorker(t, nil, "--self-test")
	if r.code != 0 || !strings.Contains(r.stdout, "8 passed, 0 failed") {
		t.Errorf("exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestWebSearchSwitch(t *testing.T) {
	for _, on := range []bool{true, false} {
		x, closeAll, err := workercmd.NewExecutor(context.Background(), &workercmd.Options{Provider: "static", WebSearch: on}, slog.New(slog.DiscardHandler), busconfig.MapEnv(nil))
		if err != nil {
			t.Fatal(err)
		}
		closeAll()
		if x.DisableWebSearch == on {
			t.Errorf("--web-search=%v: DisableWebSearch %v", on, x.DisableWebSearch)
		}
	}
}
