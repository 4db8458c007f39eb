package workercmd_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/workercmd"
	"github.com/busdk/bus-integration-codex/internal/correlator"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// waitLimit bounds every wait below; reaching it is a failure, not a
// speed assertion.
const waitLimit = 30 * time.Second

var serviceScopes = []string{llmapi.Scope, auth.ScopeService}

// writeToken writes a service token for subject, valid for ttl, to path
// (atomically, as an operator's rotation should).
func writeToken(t *testing.T, b *localbus.Bus, path, subject string, ttl time.Duration) {
	t.Helper()
	now := time.Now()
	tok, err := auth.Issue(b.Secret(), auth.Claims{Subject: subject, Audience: []string{auth.Audience}, Scopes: serviceScopes,
		IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(ttl)})
	if err != nil {
		t.Fatal(err)
	}
	if err := busconfig.WriteSecretFile(path, []byte(tok+"\n")); err != nil {
		t.Fatal(err)
	}
}

// startCommand runs the worker command in the background until the test
// ends; it returns its stderr.
func startCommand(t *testing.T, env map[string]string, args ...string) *testproc.SyncBuffer {
	t.Helper()
	env["BUS_CONFIG_DIR"] = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testproc.SyncBuffer
	done := make(chan int, 1)
	go func() {
		done <- workercmd.Run(ctx, args, cliutil.IO{Env: busconfig.MapEnv(env), Stdout: &stdout, Stderr: &stderr})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != 0 {
				t.Errorf("worker exit %d: %s", code, stderr.String())
			}
		case <-time.After(waitLimit):
			t.Error("worker did not stop")
		}
	})
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(stderr.String(), "worker connected") {
		if time.Now().After(deadline) {
			t.Fatalf("worker never connected: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &stderr
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func chat(text string) llmapi.ExecutionEventRequest {
	body, _ := json.Marshal(map[string]any{"model": "codex-chatgpt", "messages": []any{map[string]string{"role": "user", "content": text}}})
	return llmapi.ExecutionEventRequest{Operation: llmapi.OpChatCompletions, Model: "codex-chatgpt", Body: body}
}

// TestTokenFileRotationUnderLoad: the worker's token file is rotated
// several times while requests run; every request is answered, and the
// answers come from the newest token (the Events API stamps its subject).
func TestTokenFileRotationUnderLoad(t *testing.T) {
	b := startBus(t)
	path := filepath.Join(t.TempDir(), "worker-token")
	writeToken(t, b, path, "worker-0", time.Hour)
	stderr := startCommand(t, map[string]string{"BUS_API_TOKEN_FILE": path},
		"--provider", "static", "--events-url", b.URL, "--consumer", "w1", "--concurrency", "4")

	client, err := b.Client("frontdoor", serviceScopes)
	if err != nil {
		t.Fatal(err)
	}
	// Which token signed the answers: the subject the Events API stamps.
	var publisher atomic.Value
	publisher.Store("")
	observer, err := b.Client("observer", serviceScopes)
	if err != nil {
		t.Fatal(err)
	}
	lctx, stopListening := context.WithCancel(context.Background())
	connected, listened := make(chan struct{}), make(chan struct{})
	var once sync.Once
	go func() {
		defer close(listened)
		_ = observer.Listen(lctx, events.ListenOptions{Names: []string{llmapi.OpChatCompletions.ResponseEvent()},
			OnConnect: func() { once.Do(func() { close(connected) }) }},
			func(_ context.Context, env events.Envelope) error { publisher.Store(env.IdentityID); return nil })
	}()
	defer func() { stopListening(); <-listened }()
	<-connected

	r := correlator.StartRequester(client, correlator.Options{})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	var (
		stop           atomic.Bool
		wg             sync.WaitGroup
		answered, fail atomic.Int64
	)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				rctx, rcancel := context.WithTimeout(context.Background(), waitLimit)
				res, err := r.Do(rctx, chat(fmt.Sprintf("g%d-%d", g, i)), correlator.DoOptions{})
				rcancel()
				if err != nil || res.Response.StatusCode != http.StatusOK {
					fail.Add(1)
					t.Errorf("request g%d-%d: %v %+v", g, i, err, res)
					continue
				}
				answered.Add(1)
			}
		})
	}
	const rotations = 5
	for n := 1; n <= rotations; n++ {
		subject := fmt.Sprintf("worker-%d", n)
		writeToken(t, b, path, subject, time.Hour)
		eventually(t, "answers published with "+subject, func() bool { return publisher.Load() == subject })
	}
	stop.Store(true)
	wg.Wait()
	if fail.Load() != 0 || answered.Load() == 0 {
		t.Fatalf("%d answered, %d failed", answered.Load(), fail.Load())
	}
	if s := stderr.String(); strings.Count(s, "service token reloaded") < rotations {
		t.Errorf("the reloads are not logged: %s", s)
	}
	t.Logf("%d requests answered across %d rotations", answered.Load(), rotations)
}

// TestExpiredTokenFileMakesTheWorkerUnready: /readyz turns 503 once the
// token in the file has expired, and 200 again after the file is
// rotated; the token is never logged.
func TestExpiredTokenFileMakesTheWorkerUnready(t *testing.T) {
	b := startBus(t)
	path := filepath.Join(t.TempDir(), "worker-token")
	writeToken(t, b, path, "worker", 2*time.Second)
	addr, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	stderr := startCommand(t, map[string]string{"BUS_API_TOKEN_FILE": path},
		"--provider", "static", "--events-url", b.URL, "--consumer", "w1", "--metrics-addr", addr)
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("healthz: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	eventually(t, "unready once the token expired", func() bool {
		status, body := readyz()
		return status == http.StatusServiceUnavailable && strings.Contains(body, `"reason":"token_refused"`)
	})
	writeToken(t, b, path, "worker", time.Hour)
	eventually(t, "ready after the rotation", func() bool { status, _ := readyz(); return status == http.StatusOK })
	log := stderr.String()
	if n := strings.Count(log, "refused the worker's token"); n != 1 {
		t.Errorf("the refusal is logged %d times, want once:\n%s", n, log)
	}
	if strings.Contains(log, "eyJ") {
		t.Errorf("a token reached the log:\n%s", log)
	}
}
