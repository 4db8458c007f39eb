package testproc_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

func TestFreePortAndAddr(t *testing.T) {
	port, err := testproc.FreePort()
	if err != nil || port <= 0 {
		t.Fatalf("FreePort: %d, %v", port, err)
	}
	addr, err := testproc.FreeAddr()
	if err != nil || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Fatalf("FreeAddr: %q, %v", addr, err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on the free address: %v", err)
	}
	_ = l.Close()
}

func TestTail(t *testing.T) {
	tests := []struct {
		text string
		n    int
		want string
	}{
		{"", 3, ""},
		{"a\nb\n", 3, "a\nb"},
		{"a\nb\nc\n\n", 3, "a\nb\nc"},
		{"a\nb\nc\nd\ne\n", 2, "... (3 earlier lines)\nd\ne"},
		{"a\nb", 0, "... (2 earlier lines)"},
		{"a\nb", -1, "... (2 earlier lines)"},
	}
	for _, tc := range tests {
		if got := testproc.Tail(tc.text, tc.n); got != tc.want {
			t.Errorf("Tail(%q, %d) = %q, want %q", tc.text, tc.n, got, tc.want)
		}
	}
}

func TestTailFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if got := testproc.TailFile(path, 5); got != "" {
		t.Errorf("missing file: %q", got)
	}
	if err := os.WriteFile(path, []byte("1\n2\n3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, want := testproc.TailFile(path, 2), "... (1 earlier lines)\n2\n3"; got != want {
		t.Errorf("TailFile = %q, want %q", got, want)
	}
}

func TestSyncBuffer(t *testing.T) {
	var b testproc.SyncBuffer
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				_, _ = b.Write([]byte("x"))
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if got := len(b.String()); got != 800 {
		t.Errorf("%d bytes, want 800", got)
	}
}

func TestModuleRoot(t *testing.T) {
	root, err := testproc.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.Contains(string(mod), "module github.com/busdk/bus-integration-codex\n") {
		t.Fatalf("%s is not this module's root: %v", root, err)
	}
}

func TestBuildCommandsError(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("the go command is not on PATH")
	}
	dir := t.TempDir()
	err := testproc.BuildCommands(context.Background(), dir, false, "does-not-exist")
	if err == nil || !strings.Contains(err.Error(), "go build -o "+dir+string(filepath.Separator)+" ./cmd/does-not-exist: ") {
		t.Fatalf("want a go build error naming the command line, got %v", err)
	}
}
