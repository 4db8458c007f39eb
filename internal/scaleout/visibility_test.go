package scaleout_test

import (
	"context"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// TestRedeliveryWaitsForTheHoldersVisibility checks, on two real replicas,
// that an acknowledged-mode delivery held by a live consumer is not handed
// to another consumer of the group before the holder's own visibility
// timeout, however short the other consumer's visibility is.
//
// Workers derive their visibility from --timeout (timeout + 10s), so a group
// whose workers run with different --timeout values (a rolling change, or
// workers sized for different models) mixes visibilities. If the shortest
// one applied to every delivery, a live worker's long request would be
// taken over and run a second time, and the front door would answer with
// whichever run finished first — possibly the other worker's timeout error.
func TestRedeliveryWaitsForTheHoldersVisibility(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes; skipped with -short")
	}
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		addr := redistest.Start(t)
		runHolderVisibility(t, "redis", []string{"BUS_EVENTS_REDIS_ADDR=" + addr})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dsn := pgtest.Start(t)
		runHolderVisibility(t, "postgres", []string{"BUS_EVENTS_POSTGRES_DSN=" + dsn})
	})
}

func runHolderVisibility(t *testing.T, backend string, backendEnv []string) {
	c := newCluster(t, binaries(t))
	token := c.token("scaleout-visibility", "events:send events:listen")
	_, replicaA := c.startHTTP("events-a", "bus-api-provider-events", backendEnv, "--events-backend", backend, "--log-level", "info")
	_, replicaB := c.startHTTP("events-b", "bus-api-provider-events", backendEnv, "--events-backend", backend, "--log-level", "info")
	clientA, err := events.NewClient(replicaA, events.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	clientB, err := events.NewClient(replicaB, events.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	defer clientA.CloseIdleConnections()
	defer clientB.CloseIdleConnections()

	const name = "scaleout.visibility"
	opts := func(consumer string, visibility time.Duration) events.ListenOptions {
		return events.ListenOptions{Names: []string{name}, Delivery: events.Unicast, Group: "g", Consumer: consumer,
			Ack: true, Visibility: visibility}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// The holder, on A, takes the event with a one-hour visibility and
	// stays connected without acknowledging it.
	holder, err := clientA.Open(ctx, opts("holder", time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Close() }()
	acc, err := clientA.PublishJSON(ctx, name, "probe", map[string]int{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan events.Envelope, 1)
	go func() {
		if env, err := holder.Next(); err == nil {
			got <- env
		}
	}()
	select {
	case env := <-got:
		if env.ID != acc.ID {
			t.Fatalf("holder got %s, want %s", env.ID, acc.ID)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the holder did not receive the event")
	}

	// Another consumer of the group, on B, with a one-second visibility:
	// for the next five seconds the event is the holder's.
	const watch = 5 * time.Second
	octx, ocancel := context.WithTimeout(ctx, watch)
	defer ocancel()
	other, err := clientB.Open(octx, opts("other", time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = other.Close() }()
	if env, err := other.Next(); err == nil {
		t.Errorf("%s: consumer \"other\" (visibility 1s, replica B) got %s within %s, while consumer \"holder\" (visibility 1h, replica A, connected) "+
			"held it unacknowledged: the delivery was taken over after the asking consumer's visibility instead of the holder's", backend, env.ID, watch)
	}
}
