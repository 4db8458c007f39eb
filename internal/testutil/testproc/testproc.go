// Package testproc holds the small helpers that tests, test servers
// (pgtest, redistest) and the benchmark share for running programs: a free
// loopback port, the tail of a log, a goroutine-safe output buffer, the
// module root and building its commands, and (on unix) a child process
// alone in its own process group.
//
// It does not import testing, so non-test code (internal/bench) can use it;
// callers turn its errors into test failures themselves.
//
// It is test support: tests and tools/bus-bench import it, shipped commands never do.
package testproc

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// FreePort returns a TCP port on 127.0.0.1 that nothing listened on a
// moment ago. Another process may take it before the caller does, so a
// caller that can tell should retry with another port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// FreeAddr is FreePort as an address, "127.0.0.1:port".
func FreeAddr() (string, error) {
	port, err := FreePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), nil
}

// Tail returns the last n lines of text, without its trailing newlines,
// preceded by a line "... (K earlier lines)" when it leaves K lines out.
func Tail(text string, n int) string {
	n = max(n, 0)
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// TailFile is Tail of the file at path, "" when it cannot be read (error
// messages use it for a server's log).
func TailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return Tail(string(b), n)
}

// SyncBuffer is a bytes.Buffer that goroutines may write and read at the
// same time, such as a command's Stdout and Stderr or a logger's output
// read by the test. The zero value is an empty buffer ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p to the buffer.
func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// ModuleRoot returns the directory holding go.mod at or above the working
// directory (a test's working directory is its package's directory).
func ModuleRoot() (string, error) {
	start, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for dir := start; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("module root: no go.mod at or above %s", start)
		}
		dir = parent
	}
}

// BuildCommands runs "go build -o dir/ ./cmd/NAME..." in the module root
// (ModuleRoot) for the named commands, or for all of them (./cmd/...) when
// none is named; with race, it adds -race. The error of a failed build
// holds the go command line and its output.
func BuildCommands(ctx context.Context, dir string, race bool, names ...string) error {
	root, err := ModuleRoot()
	if err != nil {
		return fmt.Errorf("cannot build the commands: %w", err)
	}
	goCmd, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("the go command is needed to build the commands: %w", err)
	}
	args := []string{"build"}
	if race {
		args = append(args, "-race")
	}
	args = append(args, "-o", dir+string(filepath.Separator))
	if len(names) == 0 {
		args = append(args, "./cmd/...")
	}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.CommandContext(ctx, goCmd, args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
