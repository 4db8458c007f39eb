package redisstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/busdk/bus-integration-codex/internal/busconfig"

	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/conformance"
	"github.com/busdk/bus-integration-codex/internal/eventstore/redisstore"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

func open(t *testing.T, cfg redisstore.Config) *redisstore.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := redisstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConformance(t *testing.T) {
	t.Parallel()
	addr := redistest.Start(t)
	conformance.Run(t, conformance.Harness{
		Durable: true,
		Open: func(t *testing.T, ns string, o conformance.Options) eventstore.Backend {
			return open(t, redisstore.Config{Addr: addr, Prefix: "bus:test:" + ns + ":", GroupIdleTTL: o.GroupIdleTTL})
		},
	})
}

func TestFromEnv(t *testing.T) {
	t.Parallel()
	if _, err := redisstore.FromEnv(busconfig.MapEnv(nil)); err == nil {
		t.Fatal("FromEnv without BUS_EVENTS_REDIS_ADDR succeeded")
	}
	cfg, err := redisstore.FromEnv(busconfig.MapEnv(map[string]string{
		"BUS_EVENTS_REDIS_ADDR":     "127.0.0.1:6379",
		"BUS_EVENTS_REDIS_PASSWORD": "hunter2-secret",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != "127.0.0.1:6379" || cfg.Password != "hunter2-secret" || cfg.Prefix != redisstore.DefaultPrefix || cfg.MaxLen != redisstore.DefaultMaxLen {
		t.Fatalf("config %+v", cfg)
	}
	if strings.Contains(cfg.String(), "hunter2") || strings.Contains(fmt.Sprint(cfg), "hunter2") {
		t.Fatalf("String shows the password: %s", cfg)
	}
	cfg, err = redisstore.FromEnv(busconfig.MapEnv(map[string]string{
		"BUS_EVENTS_REDIS_ADDR": "r:1", "BUS_EVENTS_REDIS_PREFIX": "x:", "BUS_EVENTS_REDIS_MAXLEN": "50",
	}))
	if err != nil || cfg.Prefix != "x:" || cfg.MaxLen != 50 {
		t.Fatalf("config %+v %v", cfg, err)
	}
	if _, err := redisstore.FromEnv(busconfig.MapEnv(map[string]string{
		"BUS_EVENTS_REDIS_ADDR": "r:1", "BUS_EVENTS_REDIS_MAXLEN": "lots",
	})); err == nil {
		t.Fatal("FromEnv accepted a bad MAXLEN")
	}
}

func TestWrongPasswordStaysSecret(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{Password: "right-password"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := redisstore.Open(ctx, redisstore.Config{Addr: srv.Addr(), Password: "wrong-secret-pw"})
	if err == nil {
		t.Fatal("Open with a wrong password succeeded")
	}
	if strings.Contains(err.Error(), "wrong-secret-pw") {
		t.Fatalf("error shows the password: %v", err)
	}
	b := open(t, redisstore.Config{Addr: srv.Addr(), Password: "right-password"})
	defer func() { _ = b.Close() }()
	if _, _, err := b.Publish(ctx, events.Envelope{Name: "test.pw", Payload: json.RawMessage(`1`)}); err != nil {
		t.Fatal(err)
	}
}

func TestKeyLayoutAndRetention(t *testing.T) {
	t.Parallel()
	addr := redistest.Start(t)
	b := open(t, redisstore.Config{Addr: addr, Prefix: "p:", MaxLen: 10})
	defer func() { _ = b.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var last events.Envelope
	for i := range 1000 {
		env, _, err := b.Publish(ctx, events.Envelope{Name: "test.trim", Payload: json.RawMessage(fmt.Sprint(i))})
		if err != nil {
			t.Fatal(err)
		}
		last = env
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer func() { _ = rdb.Close() }()
	n, err := rdb.XLen(ctx, "p:stream:test.trim").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 || n > 500 {
		t.Fatalf("stream holds %d entries with MaxLen 10, want about 10", n)
	}
	entries, err := rdb.XRevRangeN(ctx, "p:stream:test.trim", "+", "-", 1).Result()
	if err != nil || len(entries) != 1 || "evt_"+entries[0].ID != last.ID {
		t.Fatalf("last entry %v (%v), want the id of %s", entries, err, last.ID)
	}
	sub, err := b.Subscribe(ctx, eventstore.Subscription{Names: []string{"test.trim"}, Delivery: events.Broadcast, Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Close() }()
	var got []string
	for {
		env, err := sub.Next(ctx)
		if errors.Is(err, eventstore.ErrEndOfSnapshot) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(env.Payload))
	}
	if int64(len(got)) != n || got[len(got)-1] != "999" {
		t.Fatalf("replay after trimming: %d events ending %v, want %d ending 999", len(got), got[len(got)-1:], n)
	}
}

// TestSurvivesServerRestart restarts redis-server (append-only file on)
// under an open backend: history and the group's position survive, and the
// backend reconnects by itself.
func TestSurvivesServerRestart(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	b := open(t, redisstore.Config{Addr: srv.Addr()})
	defer func() { _ = b.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	uni := eventstore.Subscription{Names: []string{"test.srvrestart"}, Delivery: events.Unicast, Group: "g", Consumer: "c", Follow: true}
	x, err := b.Subscribe(ctx, uni)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, _, err := b.Publish(ctx, events.Envelope{Name: "test.srvrestart", Payload: json.RawMessage(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	if env, err := x.Next(ctx); err != nil || string(env.Payload) != "0" {
		t.Fatalf("first: %s %v", env.Payload, err)
	}
	_ = x.Close()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	y, err := b.Subscribe(ctx, uni)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = y.Close() }()
	for _, want := range []string{"1", "2"} {
		if env, err := y.Next(ctx); err != nil || string(env.Payload) != want {
			t.Fatalf("after restart: %s %v, want %s", env.Payload, err, want)
		}
	}
	hist, err := b.Subscribe(ctx, eventstore.Subscription{Names: []string{"test.srvrestart"}, Delivery: events.Broadcast, Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hist.Close() }()
	for _, want := range []string{"0", "1", "2"} {
		if env, err := hist.Next(ctx); err != nil || string(env.Payload) != want {
			t.Fatalf("history after restart: %s %v, want %s", env.Payload, err, want)
		}
	}
}

func TestCloseReleasesPromptly(t *testing.T) {
	t.Parallel()
	addr := redistest.Start(t)
	b := open(t, redisstore.Config{Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	x, err := b.Subscribe(ctx, eventstore.Subscription{Names: []string{"test.prompt"}, Delivery: events.Broadcast, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := x.Next(context.Background())
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond) // Next is blocked in a read
	start := time.Now()
	_ = x.Close()
	if err := <-errc; !errors.Is(err, eventstore.ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("Close and backend Close took %v", d)
	}
}
