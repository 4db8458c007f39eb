package main_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/busconfig"
)

// buildBinaries builds bus and bus-operator-token into a temp dir and
// returns it.
func buildBinaries(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go tool is needed to build the binaries: %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(goBin, "build", "-o", dir+string(os.PathSeparator), ".", "../bus-operator-token")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return dir
}

// result is the outcome of one bus run.
type result struct {
	code           int
	stdout, stderr string
}

// runBus runs bin/bus with args, environment env (nothing inherited) and
// stdin.
func runBus(t *testing.T, bin string, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "bus"), args...)
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run bus: %v", err)
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errOut.String()}
}

func TestBus(t *testing.T) {
	bin := buildBinaries(t)
	emptyPath := "PATH=" + t.TempDir()

	t.Run("operator token via secret variable", func(t *testing.T) {
		cfg := t.TempDir()
		const secret = "e2e-secret"
		r := runBus(t, bin, []string{emptyPath, "BUS_CONFIG_DIR=" + cfg, "BUS_AUTH_HS256_SECRET=" + secret}, "",
			"operator", "token", "issue", "--local", "--scope", "llm:proxy", "--format", "token")
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		tok, ok := strings.CutSuffix(r.stdout, "\n")
		if !ok || strings.Contains(tok, "\n") {
			t.Fatalf("stdout is not one token line: %q", r.stdout)
		}
		c, err := auth.NewVerifier([]byte(secret), auth.Audience).Verify(tok)
		if err != nil {
			t.Fatalf("token does not verify: %v", err)
		}
		if !c.HasScope(auth.ScopeLLMProxy) {
			t.Errorf("scopes = %q", c.Scopes)
		}
		id, err := busconfig.LocalIdentity(busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": cfg}))
		if err != nil || c.Subject != id {
			t.Errorf("subject %q, want local identity %q (%v)", c.Subject, id, err)
		}
	})

	t.Run("operator token via generated secret", func(t *testing.T) {
		cfg := t.TempDir()
		r := runBus(t, bin, []string{emptyPath, "BUS_CONFIG_DIR=" + cfg}, "",
			"operator", "token", "issue", "--local", "--scope", "llm:proxy", "--format", "token")
		if r.code != 0 {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		key, err := busconfig.LocalSecret(busconfig.MapEnv(map[string]string{"BUS_CONFIG_DIR": cfg}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := auth.NewVerifier(key, "").Verify(strings.TrimSpace(r.stdout)); err != nil {
			t.Errorf("token does not verify with the generated secret: %v", err)
		}
	})

	t.Run("unknown command", func(t *testing.T) {
		r := runBus(t, bin, []string{emptyPath}, "", "a", "b", "c")
		want := `bus: unknown command "a b c" (no bus-a-b-c, bus-a-b or bus-a on PATH)` + "\n"
		if r.code != 2 || r.stderr != want || r.stdout != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 2 and %q", r.code, r.stdout, r.stderr, want)
		}
	})

	t.Run("help lists commands", func(t *testing.T) {
		r := runBus(t, bin, []string{emptyPath}, "", "--help")
		if r.code != 0 || !strings.Contains(r.stdout, "  bus operator token\n") {
			t.Errorf("exit %d, stdout %q", r.code, r.stdout)
		}
	})

	t.Run("passes stdin, args and exit status; replaces the process", func(t *testing.T) {
		if runtime.GOOS == "windows" {
			t.Skip("uses a shell script")
		}
		pathDir := t.TempDir()
		script := "#!/bin/sh\necho \"pid=$$\"\necho \"args=$*\"\ncat\necho oops >&2\nexit 7\n"
		if err := os.WriteFile(filepath.Join(pathDir, "bus-echo"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(filepath.Join(bin, "bus"), "echo", "one", "--two")
		cmd.Env = []string{"PATH=" + pathDir + string(os.PathListSeparator) + "/usr/bin:/bin"}
		cmd.Stdin = strings.NewReader("from stdin\n")
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		_ = cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 7 {
			t.Errorf("exit %d, want 7 (stderr %q)", code, errOut.String())
		}
		want := "pid=" + strconv.Itoa(cmd.Process.Pid) + "\nargs=one --two\nfrom stdin\n"
		if out.String() != want {
			t.Errorf("stdout %q, want %q (the command must replace bus)", out.String(), want)
		}
		if errOut.String() != "oops\n" {
			t.Errorf("stderr %q", errOut.String())
		}
	})
}
