package redistest_test

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	"github.com/redis/go-redis/v9"
)

func TestStartAnswersAndCloseCleansUp(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer func() { _ = c.Close() }()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pid, dir := srv.Pid(), srv.Dir()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("redis-server %d still exists after Close (kill 0: %v)", pid, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("dir %s still exists after Close: %v", dir, err)
	}
}

func TestServersAreIndependent(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	if a == b {
		t.Fatalf("two servers share address %s", a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca := redis.NewClient(&redis.Options{Addr: a})
	cb := redis.NewClient(&redis.Options{Addr: b})
	defer func() { _ = ca.Close(); _ = cb.Close() }()
	if err := ca.Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := cb.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("second server sees the first one's key: %v", err)
	}
}

func TestRestartKeepsAppendOnlyData(t *testing.T) {
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true, Password: "s3cret"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Password: "s3cret"})
	defer func() { _ = c.Close() }()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Fatalf("after restart: %q %v", v, err)
	}
	anon := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer func() { _ = anon.Close() }()
	if err := anon.Get(ctx, "k").Err(); err == nil {
		t.Fatal("server accepted a client without the password")
	}
}
