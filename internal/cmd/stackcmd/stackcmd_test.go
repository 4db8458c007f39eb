package stackcmd_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/stackcmd"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	addr, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func TestStaticStack(t *testing.T) {
	cfg := t.TempDir()
	addr, eventsAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testproc.SyncBuffer
	done := make(chan int, 1)
	go func() {
		env := busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": cfg})
		done <- stackcmd.Run(ctx, []string{"--provider", "static", "--addr", addr, "--events-addr", eventsAddr, "--concurrency", "2"},
			cliutil.IO{Env: env, Stdout: &stdout, Stderr: &stderr})
	}()
	stopped := false
	t.Cleanup(func() { // stop the stack however the test ends
		if !stopped {
			cancel()
			<-done
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(stdout.String(), "is running") {
		select {
		case code := <-done:
			stopped = true
			t.Fatalf("stack exited %d: %s", code, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("stack not ready: stdout %q stderr %q", stdout.String(), stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	base := "http://" + addr
	tokenFile := filepath.Join(cfg, "auth", "api-token")
	banner := stdout.String()
	for _, want := range []string{"provider static", base + "/v1", tokenFile, "curl"} {
		if !strings.Contains(banner, want) {
			t.Errorf("banner lacks %q:\n%s", want, banner)
		}
	}
	st, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %o, want 600", st.Mode().Perm())
	}
	raw, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(raw))

	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	post := func(tok string) (int, []byte) {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1/chat/completions",
			strings.NewReader(`{"model":"codex-chatgpt","messages":[{"role":"user","content":"Reply OK"}]}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	code, body := post(token)
	var cc struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &cc); err != nil || code != http.StatusOK || cc.Object != "chat.completion" || cc.Model != "codex-chatgpt" ||
		len(cc.Choices) != 1 || cc.Choices[0].Message.Content != "Echo: Reply OK" {
		t.Errorf("chat completion %d %s (%v)", code, body, err)
	}
	if code, body := post(token + "x"); code != http.StatusUnauthorized {
		t.Errorf("tampered token: %d %s", code, body)
	}

	cancel()
	select {
	case code := <-done:
		stopped = true
		if code != 0 {
			t.Errorf("exit %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		stopped = true // cannot wait for it
		t.Fatal("stack did not stop")
	}
	if !strings.Contains(stdout.String(), "stopping...") {
		t.Errorf("stdout %q", stdout.String())
	}
}

func TestStartupErrors(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		code  int
		wants []string
	}{
		{"codex not found", []string{"--codex-command", "/nonexistent", "--addr", "127.0.0.1:0", "--events-addr", "127.0.0.1:0"}, 1, []string{`codex command "/nonexistent" was not found`}},
		{"bad provider", []string{"--provider", "llama"}, 2, []string{"--provider"}},
		{"unknown flag", []string{"--nope"}, 2, []string{"nope"}},
		{"missing catalog", []string{"--provider", "static", "--model-catalog", "/nonexistent/models.json"}, 1, []string{"/nonexistent/models.json"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--workdir", t.TempDir()}, tc.args...)
			var stdout, stderr testproc.SyncBuffer
			env := busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": t.TempDir()})
			code := stackcmd.Run(context.Background(), args, cliutil.IO{Env: env, Stdout: &stdout, Stderr: &stderr})
			if code != tc.code {
				t.Errorf("exit %d, want %d: %q", code, tc.code, stderr.String())
			}
			if strings.Count(stderr.String(), "\n") != 1 || !strings.HasPrefix(stderr.String(), stackcmd.Name+": ") {
				t.Errorf("stderr is not one line: %q", stderr.String())
			}
			for _, w := range tc.wants {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q lacks %q", stderr.String(), w)
				}
			}
		})
	}
}
