//go:build unix

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

// TestSeedREADMEScript runs the seed README's commands as written, in bash,
// against the commands built from this repository: the Events API on its
// default address, the worker on the codex provider (the real codex binary
// talking to the fake model, configured through BUS_CODEX_COMMAND and
// CODEX_HOME), the front door on 127.0.0.1:8088, and the curl call.
func TestSeedREADMEScript(t *testing.T) {
	root, err := testproc.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"127.0.0.1:8081", "127.0.0.1:8088"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("%s is in use (%v): the seed README's commands run bus-api-provider-events on 127.0.0.1:8081 and bus-api-provider-llm on 127.0.0.1:8088; stop whatever listens there", addr, err)
		}
		_ = l.Close()
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is not installed; the seed README calls the front door with curl")
	}

	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	bin := t.TempDir()
	provider, want := "codex", "OK"
	env := scriptEnv(bin, t.TempDir())
	if cmd, ok := codexForScript(t, root); ok {
		fake := fakemodel.New(t)
		fake.SetReply(fakemodel.Reply{Text: want})
		env = append(env, "BUS_CODEX_COMMAND="+cmd, "CODEX_HOME="+fake.WriteCodexHome(t))
	} else {
		t.Logf("codex binary not found (%s unset): the worker runs with --provider static", fakemodel.EnvCodexCommand)
		provider, want = "static", "Echo: Reply OK"
	}
	build(t, bin)
	step("built the commands")

	t.Run("self-test", func(t *testing.T) {
		if out, err := runScript(t, env, `bus-integration-codex --self-test`); err != nil || !strings.Contains(out, " 0 failed") {
			t.Fatalf("bus-integration-codex --self-test: %v\n%s", err, out)
		}
	})
	t.Run("events", func(t *testing.T) {
		out, err := runScript(t, env, `bus-integration-codex --events --format text | grep bus.llm.chat.completions.request`)
		if err != nil || !strings.Contains(out, "bus.llm.chat.completions.request") {
			t.Fatalf("grep failed: %v\n%s", err, out)
		}
	})

	events := startScript(t, "bus-api-provider-events", env, `bus-api-provider-events`)
	poll(t, events, "the Events API to answer /healthz", func() bool {
		status, _ := get("http://127.0.0.1:8081/healthz")
		return status == http.StatusOK
	})
	step("events api ready")

	worker := startScript(t, "bus-integration-codex", env, fmt.Sprintf(`BUS_API_TOKEN="$(bus operator token issue --local --scope llm:proxy --format token)" \
bus-integration-codex \
  --provider %s \
  --events-url http://127.0.0.1:8081 \
  --workdir %s`, provider, shellQuote(t.TempDir())))
	// The README: "The command is connected when it stays running without
	// printing a startup error"; the worker also logs when it is connected.
	poll(t, worker, "the worker to connect", func() bool { return strings.Contains(worker.output(), `msg="worker connected"`) })
	step("worker connected")

	front := startScript(t, "bus-api-provider-llm", env, `BUS_API_TOKEN="$(bus operator token issue --local --scope llm:proxy --format token)" \
bus-api-provider-llm \
  --addr 127.0.0.1:8088 \
  --execution-backend events \
  --events-url http://127.0.0.1:8081`)
	poll(t, front, "the front door's listeners (/readyz)", func() bool {
		status, body := get("http://127.0.0.1:8088/readyz")
		var r struct {
			Listeners map[string]bool `json:"listeners"`
		}
		if status != http.StatusOK || json.Unmarshal(body, &r) != nil || len(r.Listeners) == 0 {
			return false
		}
		for _, ok := range r.Listeners {
			if !ok {
				return false
			}
		}
		return true
	})
	step("front door ready")

	const call = `TOKEN="$(bus operator token issue --local --scope llm:proxy --format token)"
curl -fsS \
  -H "Authorization: Bearer $TOKEN" \
  -H "Content-Type: application/json" \
  http://127.0.0.1:8088/v1/chat/completions \
  -d '{"model":"codex-chatgpt","messages":[{"role":"user","content":"Reply OK"}]}'`
	var out string
	poll(t, nil, "a successful curl call", func() bool {
		var err error
		out, err = runScript(t, env, call)
		if err != nil {
			t.Logf("curl: %v: %s", err, out)
		}
		return err == nil
	})
	step("curl answered")
	var c struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			Total int64 `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal([]byte(out), &c); err != nil {
		t.Fatalf("curl printed no JSON: %v\n%s", err, out)
	}
	if c.Object != "chat.completion" || c.Model != "codex-chatgpt" || len(c.Choices) != 1 ||
		c.Choices[0].Message.Role != "assistant" || c.Choices[0].Message.Content != want || c.Choices[0].FinishReason != "stop" || c.Usage.Total == 0 {
		t.Fatalf("not the chat completion answering %q: %s", want, out)
	}

	// Every command is still running (none printed a startup error and quit).
	for _, p := range []*proc{events, worker, front} {
		if p.Exited() {
			t.Errorf("%s exited: %v\n%s", p.name, p.Err(), p.output())
		}
	}
}

// build runs "go build -o bin/ ./cmd/..." in the module root, with -race
// when this test binary has it.
func build(t *testing.T, bin string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := testproc.BuildCommands(ctx, bin, raceEnabled); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"bus", "bus-operator-token", "bus-api-provider-events", "bus-api-provider-llm", "bus-integration-codex"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			t.Fatalf("go build did not produce %s: %v", name, err)
		}
	}
}

// codexForScript finds the codex binary like fakemodel.CodexCommand, but
// reports its absence instead of skipping (failing when
// BUS_TEST_REQUIRE_CODEX=1).
func codexForScript(t *testing.T, root string) (string, bool) {
	t.Helper()
	if c := os.Getenv(fakemodel.EnvCodexCommand); c != "" {
		return c, true
	}
	p := filepath.Join(root, ".tools", "codex", "node_modules", ".bin", "codex")
	if st, err := os.Stat(p); err == nil && !st.IsDir() {
		return p, true
	}
	if os.Getenv(fakemodel.EnvRequireCodex) == "1" {
		t.Fatalf("codex binary not found: set %s or npm-install @openai/codex into .tools/codex", fakemodel.EnvCodexCommand)
	}
	return "", false
}

// scriptEnv is the commands' environment: this process's, without any
// BUS_*, OPENAI_* or CODEX_* setting, with bin first on PATH and a fresh
// Bus configuration root (where the local secret is generated on first
// use and shared by every command).
func scriptEnv(bin, configDir string) []string {
	var env []string
	path := ""
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "PATH":
			path = v
		case strings.HasPrefix(k, "BUS_"), strings.HasPrefix(k, "OPENAI_"), strings.HasPrefix(k, "CODEX_"):
		default:
			env = append(env, kv)
		}
	}
	return append(env, "PATH="+bin+string(os.PathListSeparator)+path, "BUS_CONFIG_DIR="+configDir)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// runScript runs script with bash -c to the end and returns its output.
func runScript(t *testing.T, env []string, script string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if err != nil && stderr.Len() > 0 {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	checkRaces(t, "bash -c "+script, stderr.String())
	return stdout.String(), err
}

// checkRaces fails the test when a -race built command reported a race.
func checkRaces(t *testing.T, name, output string) {
	t.Helper()
	if strings.Contains(output, "WARNING: DATA RACE") {
		t.Errorf("%s reported a data race:\n%s", name, output)
	}
}

// proc is a command started in the background in its own process group.
type proc struct {
	*testproc.Proc
	name string
	out  testproc.SyncBuffer
}

// startScript starts script with bash -c in a new process group; the
// group is stopped (SIGTERM, then SIGKILL) when the test ends.
func startScript(t *testing.T, name string, env []string, script string) *proc {
	t.Helper()
	p := &proc{name: name}
	cmd := exec.Command("bash", "-c", script)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	cmd.WaitDelay = 5 * time.Second
	started, err := testproc.Start(cmd)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p.Proc = started
	t.Cleanup(func() {
		// SIGTERM, then SIGKILL after 20s: nothing of the group may
		// outlive the test.
		p.Stop(syscall.SIGTERM, 20*time.Second)
		checkRaces(t, name, p.output())
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.output())
		}
	})
	return p
}

func (p *proc) output() string { return p.out.String() }

// poll calls cond until it holds, failing the test after waitLimit or when
// p (if not nil) exits first.
func poll(t *testing.T, p *proc, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if p != nil && p.Exited() {
			t.Fatalf("%s exited while waiting for %s: %v\n%s", p.name, what, p.Err(), p.output())
		}
		if time.Now().After(deadline) {
			if p != nil {
				t.Fatalf("timed out waiting for %s; output of %s:\n%s", what, p.name, p.output())
			}
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// get fetches url once (status 0 when it cannot be reached).
func get(url string) (int, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil
	}
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil && !errors.Is(err, context.Canceled) {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, b.Bytes()
}
