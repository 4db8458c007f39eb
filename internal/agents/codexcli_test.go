package agents_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// codexExec runs the pinned Codex CLI as a client of the front door: its
// model provider is this API (wire_api responses, the bearer token from an
// environment variable), everything else Codex's default configuration.
func (b *bridge) codexExec(t *testing.T, prompt string) (stdout, stderr string) {
	t.Helper()
	home, work := t.TempDir(), t.TempDir()
	config := fmt.Sprintf(`model = %q
model_provider = "bus"

[model_providers.bus]
name = "bus"
base_url = %q
wire_api = "responses"
env_key = "BUS_TOKEN"
request_max_retries = 0
stream_max_retries = 0
`, model, b.st.URL)
	if err := os.WriteFile(filepath.Join(home, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	tok, err := b.st.IssueToken("codex-cli-user", llmapi.Scope)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, b.cmd, "exec", "--skip-git-repo-check", prompt)
	cmd.Dir = work
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "CODEX_HOME=" + home, "BUS_TOKEN=" + tok}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("codex exec: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
	}
	return out.String(), errb.String()
}

// The Codex CLI, with its default configuration, uses this API as its
// model provider: a plain turn, then a turn in which it runs its own shell
// tool and sends the result back as a function_call_output.
func TestCodexCLIAsAClient(t *testing.T) {
	b := newBridge(t, memoryStore())
	b.startWorker("w1")

	b.fake.Enqueue(fakemodel.Reply{Text: "hello from the bridge"})
	out, _ := b.codexExec(t, "say hello")
	if !strings.Contains(out, "hello from the bridge") {
		t.Fatalf("plain turn printed %q", out)
	}
	// What the CLI sent reached the model as its own tools, renamed where
	// they clash with Codex's (the worker's codex) and mapped back.
	first := b.fake.Requests()[0]
	if first.Tool("client_exec_command") == nil {
		t.Fatalf("the CLI's shell tool was not offered to the model: %v", first.ToolNames())
	}

	b.fake.Enqueue(
		fakemodel.Reply{FunctionCalls: []fakemodel.FunctionCall{{Name: "client_exec_command", CallID: "call_shell", Arguments: `{"cmd":"echo marker-5521"}`}}},
	)
	b.fake.SetHandler(func(r fakemodel.Request) fakemodel.Reply {
		for _, o := range r.ItemsOfType("function_call_output") {
			if o["call_id"] == "call_shell" {
				return fakemodel.Reply{Text: fmt.Sprintf("the command said %v", strings.Contains(fmt.Sprint(o["output"]), "marker-5521"))}
			}
		}
		return fakemodel.Reply{Text: "no tool output"}
	})
	out, _ = b.codexExec(t, "run echo marker-5521")
	if !strings.Contains(out, "the command said true") {
		t.Fatalf("shell-tool turn printed %q", out)
	}
}
