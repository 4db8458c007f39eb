// Package pgtest starts throwaway PostgreSQL servers for tests and
// benchmarks: each server gets a fresh cluster (initdb) in its own temporary
// directory, listens on a free loopback port and a socket in that directory,
// trusts local connections, and is stopped (its whole process group killed
// if need be) and removed when closed.
//
// PostgreSQL refuses to run as root, so when the caller is root the server
// runs as the unprivileged "postgres" user (or $BUS_TEST_POSTGRES_USER).
//
// Tests call Start; other programs (benchmarks, tools) call StartServer and
// Close the returned Server.
//
// It is test support: tests and tools/bus-bench import it, shipped commands never do.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

// ErrUnavailable is returned (wrapped) by StartServer when the PostgreSQL
// server binaries, or an unprivileged user to run them as, are missing.
var ErrUnavailable = errors.New("pgtest: postgresql server is not available")

// Environment variables read by this package.
const (
	// RequireEnv turns a missing server into a test failure instead of a
	// skip (CI sets it to 1).
	RequireEnv = "BUS_TEST_REQUIRE_SERVERS"
	// BinDirEnv names the directory holding initdb and postgres.
	BinDirEnv = "BUS_TEST_POSTGRES_BINDIR"
	// UserEnv names the user to run the server as when running as root
	// (default "postgres").
	UserEnv = "BUS_TEST_POSTGRES_USER"
)

// SuperUser is the cluster's superuser name (trust authentication).
const SuperUser = "postgres"

// Server is one running PostgreSQL server.
type Server struct {
	dir  string
	port int
	proc *testproc.Proc // the postmaster

	closeOnce sync.Once
	closeErr  error
}

// Start starts a server for t and returns the DSN of its "postgres"
// database. The server is stopped and its files removed when t ends. When
// PostgreSQL is missing, t is skipped, or fails when
// BUS_TEST_REQUIRE_SERVERS=1.
func Start(t testing.TB) string {
	t.Helper()
	srv, err := StartServer("")
	if errors.Is(err, ErrUnavailable) {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("%v (required: %s=1)", err, RequireEnv)
		}
		t.Skipf("%v; install postgresql or set %s to run this test", err, BinDirEnv)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("stop postgres: %v", err)
		}
	})
	return srv.DSN()
}

// StartServer initialises a cluster in a new temporary directory under dir
// (os.TempDir() when empty; when running as root, dir must be searchable
// by the server's user), starts it and waits until it accepts connections.
// The caller must Close it.
func StartServer(dir string) (*Server, error) {
	bin, err := findBinDir()
	if err != nil {
		return nil, err
	}
	cred, err := credential()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, "bus-pgtest-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: temp dir: %w", err)
	}
	s := &Server{dir: tmp}
	if err := s.init(bin, cred); err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	return s, nil
}

func (s *Server) init(bin string, cred *syscall.Credential) error {
	if cred != nil {
		if err := os.Chown(s.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("pgtest: chown %s: %w", s.dir, err)
		}
	}
	logPath := filepath.Join(s.dir, "postgres.log")
	data := filepath.Join(s.dir, "data")
	initdb := s.command(bin, "initdb", cred,
		"-D", data, "-U", SuperUser, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	p, err := startLogged(initdb, logPath)
	if err == nil {
		<-p.Done()
		err = p.Err()
	}
	if err != nil {
		return fmt.Errorf("pgtest: initdb: %w\n%s", err, testproc.TailFile(logPath, logLines))
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := testproc.FreePort()
		if err != nil {
			return fmt.Errorf("pgtest: %w", err)
		}
		if lastErr = s.launch(bin, cred, data, logPath, port); lastErr == nil {
			return nil
		}
	}
	return lastErr
}

func (s *Server) launch(bin string, cred *syscall.Credential, data, logPath string, port int) error {
	cmd := s.command(bin, "postgres", cred,
		"-D", data,
		"-p", strconv.Itoa(port),
		"-h", "127.0.0.1",
		"-k", s.dir,
		"-c", "fsync=off",
		"-c", "synchronous_commit=off",
		"-c", "full_page_writes=off",
		"-c", "max_connections=300",
		"-c", "logging_collector=off",
	)
	p, err := startLogged(cmd, logPath)
	if err != nil {
		return fmt.Errorf("pgtest: start postgres: %w", err)
	}
	s.proc, s.port = p, port
	if err := s.waitReady(p.Done()); err != nil {
		p.Kill()
		s.proc = nil
		return fmt.Errorf("%w\n%s", err, testproc.TailFile(logPath, logLines))
	}
	return nil
}

// logLines is how much of the server's log an error message quotes.
const logLines = 30

// command prepares one of the server binaries, run as cred (when not nil)
// in its own process group, killed if this process dies.
func (s *Server) command(bin, name string, cred *syscall.Credential, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Dir = s.dir
	cmd.Env = []string{"LC_ALL=C", "LANG=C", "TZ=UTC", "HOME=" + s.dir, "PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL, Credential: cred}
	return cmd
}

// startLogged starts cmd in its own process group with its output
// appended to logPath.
func startLogged(cmd *exec.Cmd, logPath string) (*testproc.Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("pgtest: log file: %w", err)
	}
	// The child gets its own copy of the descriptor.
	defer func() { _ = f.Close() }()
	cmd.Stdout, cmd.Stderr = f, f
	return testproc.Start(cmd)
}

// DSN returns the URL of the "postgres" database as the superuser.
func (s *Server) DSN() string { return s.DatabaseDSN("postgres") }

// DatabaseDSN returns the URL of database db on the server.
func (s *Server) DatabaseDSN(db string) string {
	return dsn(net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)), db)
}

func dsn(hostport, db string) string {
	u := url.URL{Scheme: "postgres", User: url.User(SuperUser), Host: hostport, Path: "/" + db, RawQuery: "sslmode=disable"}
	return u.String()
}

// Pid is the postmaster's process id (also its process group id).
func (s *Server) Pid() int { return s.proc.Pid() }

// Dir is the server's temporary directory (data, socket and log).
func (s *Server) Dir() string { return s.dir }

func (s *Server) waitReady(exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgx.Connect(attempt, s.DSN())
		cancelAttempt()
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("pgtest: postgres exited before accepting connections")
		case <-ctx.Done():
			return fmt.Errorf("pgtest: postgres not ready: %w", err)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// Close stops the server (fast shutdown, then SIGKILL of its process group
// after a few seconds) and removes its directory.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if s.proc != nil {
			// Fast shutdown; Stop also kills the backends a crash left
			// behind (they belong to the same group).
			s.proc.Stop(syscall.SIGINT, 10*time.Second)
		}
		if err := os.RemoveAll(s.dir); err != nil {
			s.closeErr = fmt.Errorf("pgtest: remove %s: %w", s.dir, err)
		}
	})
	return s.closeErr
}

// CreateDatabase creates database name on the server that adminDSN points
// to, unless it exists, and returns the DSN of the new database.
func CreateDatabase(ctx context.Context, adminDSN, name string) (string, error) {
	cfg, err := pgx.ParseConfig(adminDSN)
	if err != nil {
		return "", errors.New("pgtest: cannot parse the admin DSN")
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return "", fmt.Errorf("pgtest: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
	var pgErr *pgconn.PgError
	if err != nil && !(errors.As(err, &pgErr) && pgErr.Code == "42P04") { // duplicate_database
		return "", fmt.Errorf("pgtest: create database %s: %w", name, err)
	}
	u, err := url.Parse(adminDSN)
	if err != nil || u.Scheme == "" {
		return "", errors.New("pgtest: CreateDatabase needs a URL-style admin DSN")
	}
	u.Path = "/" + name
	return u.String(), nil
}

// findBinDir locates a directory holding initdb and postgres.
func findBinDir() (string, error) {
	has := func(dir string) bool {
		for _, n := range []string{"initdb", "postgres"} {
			if fi, err := os.Stat(filepath.Join(dir, n)); err != nil || fi.IsDir() {
				return false
			}
		}
		return true
	}
	if d := os.Getenv(BinDirEnv); d != "" {
		if !has(d) {
			return "", fmt.Errorf("%w: %s=%s has no initdb and postgres", ErrUnavailable, BinDirEnv, d)
		}
		return d, nil
	}
	if p, err := exec.LookPath("postgres"); err == nil && has(filepath.Dir(p)) {
		return filepath.Dir(p), nil
	}
	// Debian and Ubuntu keep the server binaries off PATH; prefer the
	// newest major version.
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(dirs, func(a, b string) int {
		va, _ := strconv.Atoi(filepath.Base(filepath.Dir(a)))
		vb, _ := strconv.Atoi(filepath.Base(filepath.Dir(b)))
		return vb - va
	})
	for _, d := range append(dirs, "/usr/local/pgsql/bin") {
		if has(d) {
			return d, nil
		}
	}
	return "", fmt.Errorf("%w: no initdb/postgres found (looked on PATH and in /usr/lib/postgresql/*/bin)", ErrUnavailable)
}

// credential returns the user to run the server as: nil (this process's
// user) unless running as root.
func credential() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	name := os.Getenv(UserEnv)
	if name == "" {
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("%w: running as root and no unprivileged user %q to run postgres as (set %s): %w",
			ErrUnavailable, name, UserEnv, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil || uid == 0 {
		return nil, fmt.Errorf("%w: user %q is not a usable unprivileged user", ErrUnavailable, name)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}
