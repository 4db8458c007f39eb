package pgtest_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/jackc/pgx/v5"
)

func TestServerLifecycle(t *testing.T) {
	srv, err := pgtest.StartServer("")
	if errors.Is(err, pgtest.ErrUnavailable) && os.Getenv(pgtest.RequireEnv) != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	dsn, err := pgtest.CreateDatabase(ctx, srv.DSN(), "app_db")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := pgtest.CreateDatabase(ctx, srv.DSN(), "app_db"); err != nil || again != dsn {
		t.Fatalf("creating an existing database: %q %v", again, err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != "app_db" {
		t.Fatalf("current_database %q %v", db, err)
	}
	_ = conn.Close(ctx)

	pid, dir := srv.Pid(), srv.Dir()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("postgres %d still exists after Close (kill 0: %v)", pid, err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process group %d still has members after Close (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir %s still exists after Close: %v", dir, err)
	}
}

func TestStartGivesAWorkingDSN(t *testing.T) {
	dsn := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1: %d %v", one, err)
	}
}
