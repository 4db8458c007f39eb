// Package redistest starts throwaway redis-server processes for tests and
// benchmarks: each server listens on a free loopback port, keeps its files in
// its own temporary directory, persists nothing unless asked, and is killed
// (with its whole process group) when closed.
//
// Tests call Start; other programs (benchmarks, tools) call StartServer and
// Close the returned Server.
//
// It is test support: tests and tools/bus-bench import it, shipped commands never do.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

// ErrUnavailable is returned (wrapped) by StartServer when redis-server is
// not installed.
var ErrUnavailable = errors.New("redistest: redis-server is not available")

// RequireEnv is the environment variable that turns a missing server into a
// test failure instead of a skip (CI sets it to 1).
const RequireEnv = "BUS_TEST_REQUIRE_SERVERS"

// BinaryEnv overrides the redis-server binary to run.
const BinaryEnv = "BUS_TEST_REDIS_SERVER"

// Options tune StartServer.
type Options struct {
	// AppendOnly enables the append-only file, so a Restart keeps the data.
	AppendOnly bool
	// Password, when set, is required from clients (requirepass).
	Password string
}

// Server is one running redis-server.
type Server struct {
	dir  string
	opts Options
	bin  string

	mu     sync.Mutex
	port   int
	proc   *testproc.Proc
	closed bool
}

// Start starts a server for t and returns its address ("127.0.0.1:port").
// The server is stopped and its files removed when t ends. When
// redis-server is missing, t is skipped, or fails when BUS_TEST_REQUIRE_SERVERS=1.
func Start(t testing.TB) string {
	t.Helper()
	return StartWith(t, Options{}).Addr()
}

// StartWith is Start with options; it returns the Server so a test can
// Restart it.
func StartWith(t testing.TB, opts Options) *Server {
	t.Helper()
	srv, err := StartServerWith("", opts)
	if errors.Is(err, ErrUnavailable) {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%v (required: %s=1)", err, RequireEnv)
		}
		t.Skipf("%v; install redis-server or set %s to run this test", err, BinaryEnv)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("stop redis-server: %v", err)
		}
	})
	return srv
}

// StartServer starts a redis-server in a new temporary directory under dir
// (os.TempDir() when empty) with default options. The caller must Close it.
func StartServer(dir string) (*Server, error) {
	return StartServerWith(dir, Options{})
}

// StartServerWith is StartServer with options.
func StartServerWith(dir string, opts Options) (*Server, error) {
	bin, err := findBinary()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, "bus-redistest-")
	if err != nil {
		return nil, fmt.Errorf("redistest: temp dir: %w", err)
	}
	s := &Server{dir: tmp, opts: opts, bin: bin}
	if err := s.start(0); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	return s, nil
}

func findBinary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %w", ErrUnavailable, BinaryEnv, p, err)
		}
		return p, nil
	}
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return p, nil
}

// Addr is the server's address, "127.0.0.1:port".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Pid is the server's process id (also its process group id).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc.Pid()
}

// Dir is the server's working directory.
func (s *Server) Dir() string { return s.dir }

// start launches redis-server on port (a free one when 0) and waits until it
// answers. Retries on a free-port race.
func (s *Server) start(port int) error {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		p := port
		if p == 0 {
			var err error
			if p, err = testproc.FreePort(); err != nil {
				return fmt.Errorf("redistest: %w", err)
			}
		}
		lastErr = s.launch(p)
		if lastErr == nil {
			return nil
		}
		if port != 0 {
			break
		}
	}
	return lastErr
}

func (s *Server) launch(port int) error {
	appendOnly := "no"
	if s.opts.AppendOnly {
		appendOnly = "yes"
	}
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", appendOnly,
		"--dir", s.dir,
		"--daemonize", "no",
		"--logfile", filepath.Join(s.dir, "redis.log"),
	}
	if s.opts.Password != "" {
		args = append(args, "--requirepass", s.opts.Password)
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	proc, err := testproc.Start(cmd)
	if err != nil {
		return fmt.Errorf("redistest: start redis-server: %w", err)
	}
	s.mu.Lock()
	s.proc, s.port = proc, port
	s.mu.Unlock()

	if err := s.waitReady(proc.Done(), port); err != nil {
		proc.Kill()
		return fmt.Errorf("%w\n%s", err, testproc.TailFile(filepath.Join(s.dir, "redis.log"), 20))
	}
	return nil
}

func (s *Server) waitReady(exited <-chan struct{}, port int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := redis.NewClient(&redis.Options{
		Addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Password: s.opts.Password,
		PoolSize: 1, MaxRetries: -1, DialTimeout: time.Second,
	})
	defer func() { _ = client.Close() }()
	for {
		err := client.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redistest: redis-server exited before accepting connections")
		case <-ctx.Done():
			return fmt.Errorf("redistest: redis-server not ready: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Restart stops the server and starts it again on the same port and
// directory (with AppendOnly, the data survives).
func (s *Server) Restart() error {
	s.mu.Lock()
	closed, port := s.closed, s.port
	s.mu.Unlock()
	if closed {
		return errors.New("redistest: server closed")
	}
	s.stop()
	return s.start(port)
}

// stop asks redis-server to exit and kills its process group if it does
// not within a few seconds (or nothing of the group may remain).
func (s *Server) stop() {
	s.mu.Lock()
	proc := s.proc
	s.mu.Unlock()
	if proc != nil {
		proc.Stop(syscall.SIGTERM, 5*time.Second)
	}
}

// Close stops the server and removes its directory.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.stop()
	if err := os.RemoveAll(s.dir); err != nil {
		return fmt.Errorf("redistest: remove %s: %w", s.dir, err)
	}
	return nil
}
