package pgstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/busdk/bus-integration-codex/internal/busconfig"

	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/conformance"
	"github.com/busdk/bus-integration-codex/internal/eventstore/pgstore"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

func open(t *testing.T, cfg pgstore.Config) *pgstore.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := pgstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// database creates (once) the database named ns and returns its DSN.
func database(t *testing.T, adminDSN, ns string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dsn, err := pgtest.CreateDatabase(ctx, adminDSN, ns)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

func TestConformance(t *testing.T) {
	t.Parallel()
	admin := pgtest.Start(t)
	conformance.Run(t, conformance.Harness{
		Durable: true,
		Open: func(t *testing.T, ns string, o conformance.Options) eventstore.Backend {
			return open(t, pgstore.Config{DSN: database(t, admin, ns), GroupIdleTTL: o.GroupIdleTTL})
		},
	})
}

func TestFromEnv(t *testing.T) {
	t.Parallel()
	if _, err := pgstore.FromEnv(busconfig.MapEnv(nil)); err == nil {
		t.Fatal("FromEnv without BUS_EVENTS_POSTGRES_DSN succeeded")
	}
	cfg, err := pgstore.FromEnv(busconfig.MapEnv(map[string]string{"BUS_EVENTS_POSTGRES_DSN": "postgres://u:p@h/db"}))
	if err != nil || cfg.DSN != "postgres://u:p@h/db" || cfg.PollInterval != pgstore.DefaultPollInterval {
		t.Fatalf("config %+v %v", cfg, err)
	}
}

func TestErrorsHideThePassword(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, dsn := range []string{
		"postgres://bus:Secr3tPw@127.0.0.1:1/db?sslmode=disable&connect_timeout=2",
		"postgres://bus:Secr3tPw@127.0.0.1:notaport/db",
		"host=127.0.0.1 port=1 password=Secr3tPw user=bus connect_timeout=2 sslmode=disable",
		"host=127.0.0.1 password='Secr3tPw unterminated",
	} {
		b, err := pgstore.Open(ctx, pgstore.Config{DSN: dsn})
		if err == nil {
			_ = b.Close()
			t.Fatalf("Open(%q) succeeded", dsn)
		}
		if strings.Contains(err.Error(), "Secr3tPw") {
			t.Fatalf("error shows the password: %v", err)
		}
	}
}

// TestCreatesTablesConcurrently opens several replicas at once on an empty
// database: all succeed and the tables exist.
func TestCreatesTablesConcurrently(t *testing.T) {
	t.Parallel()
	admin := pgtest.Start(t)
	dsn := database(t, admin, "fresh")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			b, err := pgstore.Open(ctx, pgstore.Config{DSN: dsn})
			if err != nil {
				errs <- err
				return
			}
			errs <- b.Close()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM information_schema.tables WHERE table_name IN
		('bus_events', 'bus_event_group_cursors', 'bus_event_pending')`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("%d of the 3 tables exist (%v)", n, err)
	}
}

// TestNotifyWakesOtherReplica polls only once an hour on the listening
// replica, so the event can only arrive in time through LISTEN/NOTIFY.
func TestNotifyWakesOtherReplica(t *testing.T) {
	t.Parallel()
	admin := pgtest.Start(t)
	dsn := database(t, admin, "notify")
	listener := open(t, pgstore.Config{DSN: dsn, PollInterval: time.Hour})
	defer func() { _ = listener.Close() }()
	publisher := open(t, pgstore.Config{DSN: dsn, PollInterval: time.Hour})
	defer func() { _ = publisher.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sub := range []eventstore.Subscription{
		{Names: []string{"test.notify"}, Delivery: events.Broadcast, Follow: true},
		{Names: []string{"test.notify"}, Delivery: events.Unicast, Group: "g", Consumer: "c", Follow: true},
	} {
		x, err := listener.Subscribe(ctx, sub)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = x.Close() }()
		errc := make(chan error, 1)
		go func() {
			wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
			defer wcancel()
			_, err := x.Next(wctx)
			errc <- err
		}()
		time.Sleep(100 * time.Millisecond) // the read is waiting
		if _, _, err := publisher.Publish(ctx, events.Envelope{Name: "test.notify", Payload: json.RawMessage(`1`)}); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("%s subscription on another replica: %v", sub.Delivery, err)
		}
	}
}

// TestPollingCoversLostNotifications inserts an event behind the backend's
// back (no NOTIFY): polling still delivers it.
func TestPollingCoversLostNotifications(t *testing.T) {
	t.Parallel()
	admin := pgtest.Start(t)
	dsn := database(t, admin, "poll")
	b := open(t, pgstore.Config{DSN: dsn, PollInterval: 100 * time.Millisecond})
	defer func() { _ = b.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	x, err := b.Subscribe(ctx, eventstore.Subscription{Names: []string{"test.poll"}, Delivery: events.Broadcast, Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = x.Close() }()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	if _, err := conn.Exec(ctx, `INSERT INTO bus_events (name, payload) VALUES ('test.poll', '7')`); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	env, err := x.Next(wctx)
	if err != nil || string(env.Payload) != "7" || !strings.HasPrefix(env.ID, "evt_") {
		t.Fatalf("polled event %+v %v", env, err)
	}
}

func TestRetentionPrunes(t *testing.T) {
	t.Parallel()
	admin := pgtest.Start(t)
	dsn := database(t, admin, "retention")
	b := open(t, pgstore.Config{DSN: dsn, Retention: 10})
	defer func() { _ = b.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	uni := eventstore.Subscription{Names: []string{"test.prune"}, Delivery: events.Unicast, Group: "g", Consumer: "c", Ack: true, Follow: true}
	x, err := b.Subscribe(ctx, uni)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = x.Close() }()
	for i := range 300 {
		if _, _, err := b.Publish(ctx, events.Envelope{Name: "test.prune", Payload: json.RawMessage(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	first, err := x.Next(ctx) // pending, then pruned away with its event
	if err != nil {
		t.Fatal(err)
	}
	for i := 300; i < 400; i++ {
		if _, _, err := b.Publish(ctx, events.Envelope{Name: "test.prune", Payload: json.RawMessage(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	hist, err := b.Subscribe(ctx, eventstore.Subscription{Names: []string{"test.prune"}, Delivery: events.Broadcast, Replay: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = hist.Close() }()
	var got []string
	for {
		env, err := hist.Next(ctx)
		if errors.Is(err, eventstore.ErrEndOfSnapshot) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(env.Payload))
	}
	if len(got) < 10 || len(got) > 10+64 || got[len(got)-1] != "399" {
		t.Fatalf("after pruning: %d events ending %v, want 10 to 74 ending 399", len(got), got[len(got)-1:])
	}
	if n, err := b.Ack(ctx, "test.prune", "g", "c", []string{first.ID}); err != nil || n != 0 {
		t.Fatalf("ack of a pruned pending delivery: %d %v, want 0 (it went with its event)", n, err)
	}
}
