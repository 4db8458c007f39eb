package codex_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
)

// An approved command in agent mode cannot read the deny-read paths (a
// directory, a file named through a symbolic link, Codex's own login) nor
// the worker's environment in /proc, while it still reads other files and
// the sandbox mode's write rules still hold.
func TestAgentModeCannotReadDeniedPaths(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("bubblewrap sandbox and /proc")
	}
	t.Setenv("BUS_API_TOKEN", "env-secret-4471") // the worker's own environment
	for _, sandbox := range []string{"read-only", "workspace-write"} {
		t.Run(sandbox, func(t *testing.T) {
			dir := t.TempDir()
			authDir := filepath.Join(dir, ".config", "bus", "auth")
			tokenDir := filepath.Join(dir, "tokens")
			for path, text := range map[string]string{
				filepath.Join(authDir, "local-hs256-secret"): "dir-secret-5521",
				filepath.Join(tokenDir, "api-token"):         "file-secret-8812",
				filepath.Join(tokenDir, "neighbour.txt"):     "neighbour-2290",
				filepath.Join(dir, "visible.txt"):            "visible-3307",
			} {
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Symlink(tokenDir, filepath.Join(dir, "token-link")); err != nil {
				t.Fatal(err)
			}
			s := newStackWith(t, options{cfg: func(c *codex.Config) {
				c.Approvals, c.Sandbox = codex.ApprovalsApprove, sandbox
				c.DenyRead = []string{authDir, filepath.Join(dir, "token-link", "api-token")}
				for _, e := range c.Env {
					if home, ok := strings.CutPrefix(e, "CODEX_HOME="); ok {
						c.DenyRead = append(c.DenyRead, filepath.Join(home, "auth.json"))
					}
				}
			}})
			// Codex's own login, written after start-up (the fake model needs none).
			if err := os.WriteFile(filepath.Join(s.home, "auth.json"), []byte(`{"tokens":"codex-login-6610"}`), 0o600); err != nil {
				t.Fatal(err)
			}
			s.fake.Enqueue(fakemodel.Reply{ShellCommand: strings.Join([]string{
				"cat " + filepath.Join(authDir, "local-hs256-secret"),
				"ls " + authDir,
				"cat " + filepath.Join(tokenDir, "api-token"),
				"cat " + filepath.Join(dir, "token-link", "api-token"),
				"cat $CODEX_HOME/auth.json",
				"cat " + filepath.Join(tokenDir, "neighbour.txt"),
				"cat " + filepath.Join(dir, "visible.txt"),
				"cat /proc/[0-9]*/environ",
				"echo written > written.txt",
				"echo end-of-command",
			}, "; ")})
			s.fake.SetReply(fakemodel.Reply{Text: "done"})
			ans := s.chat(t, map[string]any{"model": catalog.AgentModelID, "messages": []any{user("read the files")}})
			if ans.Content == nil || *ans.Content != "done" {
				t.Fatalf("answer %+v", ans)
			}
			reqs := s.fake.Requests()
			b, _ := json.Marshal(reqs[len(reqs)-1].ItemsOfType("function_call_output"))
			out := string(b)
			if !strings.Contains(out, "end-of-command") {
				t.Fatalf("the command did not run to its end: %s", out)
			}
			for _, secret := range []string{"dir-secret-5521", "file-secret-8812", "codex-login-6610", "env-secret-4471"} {
				if strings.Contains(out, secret) {
					t.Fatalf("the model saw %q: %s", secret, out)
				}
			}
			// cat, ls, cat, cat, cat: one denial each.
			if n := strings.Count(out, "Permission denied"); n != 5 {
				t.Fatalf("%d permission errors, want 5: %s", n, out)
			}
			for _, want := range []string{"visible-3307", "neighbour-2290"} {
				if !strings.Contains(out, want) {
					t.Fatalf("the output lacks %q: %s", want, out)
				}
			}
			_, err := os.Stat(filepath.Join(s.workdir, "written.txt"))
			if wrote := err == nil; wrote != (sandbox == "workspace-write") {
				t.Fatalf("sandbox %s: the command wrote in the workdir: %v (%s)", sandbox, wrote, out)
			}
		})
	}
}

func TestDenyReadPathsMustBeAbsolute(t *testing.T) {
	for _, path := range []string{"relative/auth", "/home/*/auth", ""} {
		_, err := codex.New(context.Background(), codex.Config{Command: "codex-not-started", DenyRead: []string{path}})
		if err == nil || !strings.Contains(err.Error(), "deny-read path") {
			t.Errorf("DenyRead %q: %v", path, err)
		}
	}
}
