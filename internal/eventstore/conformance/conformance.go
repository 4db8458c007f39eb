// Package conformance is the one test suite every eventstore backend runs,
// so memory, Redis and PostgreSQL behave the same behind the Events API.
//
// It imports only internal/eventstore and pkg/events (and testing: it is test support for the backends).
package conformance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// Options are the backend settings a test needs; zero fields mean the
// backend's defaults.
type Options struct {
	// GroupIdleTTL is how long a group without subscriptions is kept.
	GroupIdleTTL time.Duration
}

// Harness tells the suite how to open backends.
type Harness struct {
	// Open returns a backend instance on namespace ns with options o. For
	// durable backends, instances opened on the same ns share one store
	// (replicas) and see what earlier, closed instances stored. The suite
	// closes what it opens.
	Open func(t *testing.T, ns string, o Options) eventstore.Backend
	// Durable marks backends whose state outlives an instance and is shared
	// between instances on one namespace: it enables the restart and
	// replica tests.
	Durable bool
}

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, *suite)
	}{
		{"PublishAssignsIDAndTime", testPublish},
		{"BroadcastReachesEveryListener", testBroadcastFanout},
		{"BroadcastWithoutReplaySkipsHistory", testBroadcastNoReplay},
		{"ReplayWithoutFollowEndsAtSnapshot", testReplayNoFollow},
		{"ReplayThenFollow", testReplayFollow},
		{"NamesAreIsolated", testNamesIsolated},
		{"MultiNameSubscriptionKeepsPublishOrder", testMultiName},
		{"MultiNameOrderAcrossManyEvents", testMultiNameMany},
		{"OrderingPerName", testOrdering},
		{"ConcurrentPublishers", testConcurrentPublishers},
		{"UnicastExclusivity", testUnicastExclusive},
		{"UnicastGroupsAreIndependent", testUnicastGroups},
		{"UnicastGroupCollectsWhileNoConsumer", testUnicastCollects},
		{"UnicastReplayStartsNewGroupAtHistory", testUnicastReplay},
		{"UnicastSnapshotEndsAndLeavesLaterEvents", testUnicastSnapshot},
		{"UnicastWithoutAckIsNotRedelivered", testNoAckNoRedelivery},
		{"AckRedeliversToAnotherConsumer", testAckRedelivery},
		{"AckCounts", testAckCounts},
		{"RedeliveryFollowsTheHoldersVisibility", testHolderVisibility},
		{"OnlyTheHolderAcknowledges", testAckByHolderOnly},
		{"DeliveriesAreCounted", testDeliveriesCounted},
		{"ReleaseHandsOutAtOnce", testRelease},
		{"OnlyTheHolderReleases", testReleaseByHolderOnly},
		{"ClosedSubscriptionReleasesWhatItTook", testCloseReleases},
		{"PublishCountsGroups", testGroupsCounted},
		{"IdentityTypeIsStored", testIdentityType},
		{"IdleGroupsExpire", testGroupIdleExpiry},
		{"CancelledNextLosesNothing", testCancelledNext},
		{"CloseEndsBlockedNext", testCloseEndsNext},
		{"BackendCloseEndsSubscriptions", testBackendClose},
		{"RestartLosesNothing", testRestart},
		{"ReplicasActAsOne", testReplicas},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !h.Durable && (tc.name == "RestartLosesNothing" || tc.name == "ReplicasActAsOne") {
				t.Skip("backend is not durable")
			}
			tc.fn(t, &suite{h: h, ns: fmt.Sprintf("t%d", time.Now().UnixNano())})
		})
	}
}

type suite struct {
	h  Harness
	ns string
}

func (s *suite) open(t *testing.T) eventstore.Backend {
	t.Helper()
	return s.openWith(t, Options{})
}

func (s *suite) openWith(t *testing.T, o Options) eventstore.Backend {
	t.Helper()
	b := s.h.Open(t, s.ns, o)
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func publish(t *testing.T, b eventstore.Backend, name string, i int) events.Envelope {
	t.Helper()
	env, _, err := b.Publish(ctxT(t), events.Envelope{
		Name: name, CorrelationID: fmt.Sprintf("c%d", i), IdentityID: "id-1",
		Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i)),
	})
	if err != nil {
		t.Fatalf("publish %s #%d: %v", name, i, err)
	}
	return env
}

func subscribe(t *testing.T, b eventstore.Backend, sub eventstore.Subscription) eventstore.Subscriber {
	t.Helper()
	s, err := b.Subscribe(ctxT(t), sub)
	if err != nil {
		t.Fatalf("subscribe %+v: %v", sub, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func broadcast(names ...string) eventstore.Subscription {
	return eventstore.Subscription{Names: names, Delivery: events.Broadcast, Follow: true}
}

func unicast(group, consumer string, names ...string) eventstore.Subscription {
	return eventstore.Subscription{Names: names, Delivery: events.Unicast, Group: group, Consumer: consumer, Follow: true}
}

// next reads one event or fails after d.
func next(t *testing.T, s eventstore.Subscriber, d time.Duration) events.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	env, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("next: %v", err)
	}
	return env
}

// nothing asserts that no event arrives within d.
func nothing(t *testing.T, s eventstore.Subscriber, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	env, err := s.Next(ctx)
	if err == nil {
		t.Fatalf("unexpected event %s %s %s", env.ID, env.Name, env.Payload)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("next: want deadline exceeded, got %v", err)
	}
}

func index(t *testing.T, env events.Envelope) int {
	t.Helper()
	var p struct{ I int }
	if err := json.Unmarshal(env.Payload, &p); err != nil {
		t.Fatalf("payload %s: %v", env.Payload, err)
	}
	return p.I
}

const wait = 15 * time.Second

func testPublish(t *testing.T, s *suite) {
	b := s.open(t)
	before := time.Now().Add(-time.Second)
	a := publish(t, b, "test.publish", 1)
	c := publish(t, b, "test.publish", 2)
	if a.ID == "" || c.ID == "" || a.ID == c.ID {
		t.Fatalf("ids %q %q: want distinct non-empty ids", a.ID, c.ID)
	}
	if !strings.HasPrefix(a.ID, "evt_") {
		t.Fatalf("id %q: want evt_ prefix", a.ID)
	}
	if a.CreatedAt.Before(before) || a.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("createdAt %v not near now", a.CreatedAt)
	}
	if a.Name != "test.publish" || a.CorrelationID != "c1" || a.IdentityID != "id-1" || string(a.Payload) != `{"i":1}` {
		t.Fatalf("published envelope lost fields: %+v", a)
	}
	sub := subscribe(t, b, eventstore.Subscription{Names: []string{"test.publish"}, Delivery: events.Broadcast, Replay: true})
	got := next(t, sub, wait)
	if got.ID != a.ID || got.CorrelationID != "c1" || got.IdentityID != "id-1" || !got.CreatedAt.Equal(a.CreatedAt) {
		t.Fatalf("stored envelope %+v differs from published %+v", got, a)
	}
	var p map[string]int
	if err := json.Unmarshal(got.Payload, &p); err != nil || p["i"] != 1 {
		t.Fatalf("payload %s", got.Payload)
	}
}

func testBroadcastFanout(t *testing.T, s *suite) {
	b := s.open(t)
	subs := []eventstore.Subscriber{
		subscribe(t, b, broadcast("test.fan")),
		subscribe(t, b, broadcast("test.fan")),
		subscribe(t, b, broadcast("test.fan")),
	}
	for i := range 10 {
		publish(t, b, "test.fan", i)
	}
	for n, sub := range subs {
		for i := range 10 {
			if got := index(t, next(t, sub, wait)); got != i {
				t.Fatalf("listener %d: event %d is #%d", n, i, got)
			}
		}
	}
}

func testBroadcastNoReplay(t *testing.T, s *suite) {
	b := s.open(t)
	publish(t, b, "test.noreplay", 1)
	sub := subscribe(t, b, broadcast("test.noreplay"))
	publish(t, b, "test.noreplay", 2)
	if got := index(t, next(t, sub, wait)); got != 2 {
		t.Fatalf("got #%d, want only the event published after subscribing (#2)", got)
	}
}

func testReplayNoFollow(t *testing.T, s *suite) {
	b := s.open(t)
	for i := range 5 {
		publish(t, b, "test.snapshot", i)
	}
	sub := subscribe(t, b, eventstore.Subscription{Names: []string{"test.snapshot"}, Delivery: events.Broadcast, Replay: true})
	publish(t, b, "test.snapshot", 99) // after the snapshot: not part of it
	for i := range 5 {
		if got := index(t, next(t, sub, wait)); got != i {
			t.Fatalf("replay %d is #%d", i, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if env, err := sub.Next(ctx); !errors.Is(err, eventstore.ErrEndOfSnapshot) {
		t.Fatalf("after snapshot: got %v %s, want ErrEndOfSnapshot", err, env.Payload)
	}
}

func testReplayFollow(t *testing.T, s *suite) {
	b := s.open(t)
	for i := range 3 {
		publish(t, b, "test.replayfollow", i)
	}
	sub := subscribe(t, b, eventstore.Subscription{Names: []string{"test.replayfollow"}, Delivery: events.Broadcast, Replay: true, Follow: true})
	publish(t, b, "test.replayfollow", 3)
	for i := range 4 {
		if got := index(t, next(t, sub, wait)); got != i {
			t.Fatalf("event %d is #%d", i, got)
		}
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _, _ = b.Publish(context.Background(), events.Envelope{Name: "test.replayfollow", Payload: json.RawMessage(`{"i":4}`)})
	}()
	if got := index(t, next(t, sub, wait)); got != 4 {
		t.Fatalf("followed event is #%d", got)
	}
}

func testNamesIsolated(t *testing.T, s *suite) {
	b := s.open(t)
	subA := subscribe(t, b, broadcast("test.iso.a"))
	subB := subscribe(t, b, broadcast("test.iso.b"))
	publish(t, b, "test.iso.a", 1)
	publish(t, b, "test.iso.b", 2)
	if got := next(t, subA, wait); got.Name != "test.iso.a" {
		t.Fatalf("a got %s", got.Name)
	}
	if got := next(t, subB, wait); got.Name != "test.iso.b" {
		t.Fatalf("b got %s", got.Name)
	}
	nothing(t, subA, 200*time.Millisecond)
}

func testMultiName(t *testing.T, s *suite) {
	b := s.open(t)
	sub := subscribe(t, b, broadcast("test.multi.a", "test.multi.b"))
	uni := subscribe(t, b, unicast("g", "c1", "test.multi.a", "test.multi.b"))
	publish(t, b, "test.multi.a", 0)
	publish(t, b, "test.multi.b", 1)
	publish(t, b, "test.multi.a", 2)
	publish(t, b, "test.multi.other", 3)
	for _, x := range []eventstore.Subscriber{sub, uni} {
		for i := range 3 {
			if got := index(t, next(t, x, wait)); got != i {
				t.Fatalf("event %d is #%d", i, got)
			}
		}
		nothing(t, x, 200*time.Millisecond)
	}
}

// testMultiNameMany interleaves several names unevenly, with more events
// than a backend is likely to fetch at once, and checks that following,
// snapshot and unicast readers all see the publish order.
func testMultiNameMany(t *testing.T, s *suite) {
	b := s.open(t)
	names := []string{"test.many.a", "test.many.b", "test.many.c"}
	live := subscribe(t, b, broadcast(names...))
	const n = 400
	for i := range n {
		name := names[0] // a: 4 of 7, b: 2 of 7, c: 1 of 7
		switch i % 7 {
		case 4, 5:
			name = names[1]
		case 6:
			name = names[2]
		}
		publish(t, b, name, i)
	}
	snap := subscribe(t, b, eventstore.Subscription{Names: names, Delivery: events.Broadcast, Replay: true})
	uniSub := unicast("g", "c", names...)
	uniSub.Replay = true
	uni := subscribe(t, b, uniSub)
	for k, x := range []eventstore.Subscriber{live, snap, uni} {
		for i := range n {
			if got := index(t, next(t, x, wait)); got != i {
				t.Fatalf("reader %d: event %d is #%d", k, i, got)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if _, err := snap.Next(ctx); !errors.Is(err, eventstore.ErrEndOfSnapshot) {
		t.Fatalf("after snapshot: got %v, want ErrEndOfSnapshot", err)
	}
}

func testOrdering(t *testing.T, s *suite) {
	b := s.open(t)
	sub := subscribe(t, b, broadcast("test.order"))
	uni := subscribe(t, b, unicast("g", "only", "test.order"))
	const n = 500
	for i := range n {
		publish(t, b, "test.order", i)
	}
	for _, x := range []eventstore.Subscriber{sub, uni} {
		for i := range n {
			if got := index(t, next(t, x, wait)); got != i {
				t.Fatalf("event %d is #%d", i, got)
			}
		}
	}
}

func testConcurrentPublishers(t *testing.T, s *suite) {
	b := s.open(t)
	sub := subscribe(t, b, broadcast("test.concurrent"))
	const pubs, each = 4, 50
	var wg sync.WaitGroup
	errs := make(chan error, pubs)
	for p := range pubs {
		wg.Go(func() {
			for i := range each {
				if _, _, err := b.Publish(context.Background(), events.Envelope{
					Name: "test.concurrent", Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, p*1000+i)),
				}); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	last := map[int]int{}
	seen := map[string]bool{}
	for range pubs * each {
		env := next(t, sub, wait)
		if seen[env.ID] {
			t.Fatalf("duplicate %s", env.ID)
		}
		seen[env.ID] = true
		i := index(t, env)
		p, k := i/1000, i%1000
		if prev, ok := last[p]; ok && k <= prev {
			t.Fatalf("publisher %d: event %d after %d", p, k, prev)
		}
		last[p] = k
	}
}

// drain reads from every subscriber concurrently until total events arrived.
func drain(t *testing.T, subs []eventstore.Subscriber, total int, ack func(events.Envelope)) [][]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := make([][]int, len(subs))
	var (
		mu    sync.Mutex
		count int
		wg    sync.WaitGroup
	)
	done := make(chan struct{})
	for i, sub := range subs {
		wg.Go(func() {
			for {
				env, err := sub.Next(ctx)
				if err != nil {
					return
				}
				if ack != nil {
					ack(env)
				}
				var p struct{ I int }
				_ = json.Unmarshal(env.Payload, &p)
				mu.Lock()
				got[i] = append(got[i], p.I)
				count++
				if count == total {
					close(done)
				}
				mu.Unlock()
			}
		})
	}
	select {
	case <-done:
	case <-ctx.Done():
	}
	time.Sleep(200 * time.Millisecond) // let any extra (wrong) delivery show up
	cancel()
	wg.Wait()
	return got
}

func testUnicastExclusive(t *testing.T, s *suite) {
	b := s.open(t)
	var subs []eventstore.Subscriber
	for i := range 3 {
		subs = append(subs, subscribe(t, b, unicast("workers", fmt.Sprintf("c%d", i), "test.unicast")))
	}
	const n = 200
	for i := range n {
		publish(t, b, "test.unicast", i)
	}
	got := drain(t, subs, n, nil)
	seen := map[int]int{}
	for c, list := range got {
		for j := 1; j < len(list); j++ {
			if list[j] <= list[j-1] {
				t.Fatalf("consumer %d got #%d after #%d", c, list[j], list[j-1])
			}
		}
		for _, i := range list {
			seen[i]++
		}
	}
	for i := range n {
		if seen[i] != 1 {
			t.Fatalf("event #%d delivered %d times, want exactly once", i, seen[i])
		}
	}
	if len(seen) != n {
		t.Fatalf("%d distinct events delivered, want %d", len(seen), n)
	}
}

func testUnicastGroups(t *testing.T, s *suite) {
	b := s.open(t)
	g1 := subscribe(t, b, unicast("g1", "c", "test.groups"))
	g2 := subscribe(t, b, unicast("g2", "c", "test.groups"))
	for i := range 5 {
		publish(t, b, "test.groups", i)
	}
	for _, g := range []eventstore.Subscriber{g1, g2} {
		for i := range 5 {
			if got := index(t, next(t, g, wait)); got != i {
				t.Fatalf("event %d is #%d", i, got)
			}
		}
	}
}

func testUnicastCollects(t *testing.T, s *suite) {
	b := s.open(t)
	first := subscribe(t, b, unicast("g", "c1", "test.collect"))
	_ = first.Close()
	for i := range 5 {
		publish(t, b, "test.collect", i)
	}
	again := subscribe(t, b, unicast("g", "c2", "test.collect"))
	for i := range 5 {
		if got := index(t, next(t, again, wait)); got != i {
			t.Fatalf("event %d is #%d", i, got)
		}
	}
}

func testUnicastReplay(t *testing.T, s *suite) {
	b := s.open(t)
	for i := range 3 {
		publish(t, b, "test.unireplay", i)
	}
	fresh := subscribe(t, b, unicast("late", "c", "test.unireplay"))
	sub := eventstore.Subscription{Names: []string{"test.unireplay"}, Delivery: events.Unicast, Group: "history", Consumer: "c", Replay: true, Follow: true}
	hist := subscribe(t, b, sub)
	for i := range 3 {
		if got := index(t, next(t, hist, wait)); got != i {
			t.Fatalf("replayed event %d is #%d", i, got)
		}
	}
	nothing(t, fresh, 200*time.Millisecond)
}

// testUnicastSnapshot reads a group without Follow: it ends after the
// events that existed at subscribe time and leaves later ones to the group.
func testUnicastSnapshot(t *testing.T, s *suite) {
	b := s.open(t)
	for i := range 3 {
		publish(t, b, "test.unisnap", i)
	}
	sub := eventstore.Subscription{Names: []string{"test.unisnap"}, Delivery: events.Unicast, Group: "g", Consumer: "c1", Replay: true}
	x := subscribe(t, b, sub)
	publish(t, b, "test.unisnap", 3) // after the snapshot
	for i := range 3 {
		if got := index(t, next(t, x, wait)); got != i {
			t.Fatalf("snapshot event %d is #%d", i, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if env, err := x.Next(ctx); !errors.Is(err, eventstore.ErrEndOfSnapshot) {
		t.Fatalf("after snapshot: got %v %s, want ErrEndOfSnapshot", err, env.Payload)
	}
	sub.Consumer, sub.Follow = "c2", true
	y := subscribe(t, b, sub)
	if got := index(t, next(t, y, wait)); got != 3 {
		t.Fatalf("group's next event is #%d, want #3 (the snapshot reader must not take it)", got)
	}
}

func testNoAckNoRedelivery(t *testing.T, s *suite) {
	b := s.open(t)
	sub := unicast("g", "c1", "test.noack")
	sub.Visibility = 200 * time.Millisecond
	a := subscribe(t, b, sub)
	publish(t, b, "test.noack", 1)
	next(t, a, wait)
	_ = a.Close()
	sub.Consumer = "c2"
	other := subscribe(t, b, sub)
	nothing(t, other, 700*time.Millisecond)
}

func testAckRedelivery(t *testing.T, s *suite) {
	b := s.open(t)
	sub := unicast("g", "c1", "test.ack")
	sub.Ack = true
	sub.Visibility = 300 * time.Millisecond
	a := subscribe(t, b, sub)
	publish(t, b, "test.ack", 1)
	publish(t, b, "test.ack", 2)
	// The visibility timeout starts when #1 is handed out, which is after
	// this instant: nothing may redeliver it before start + Visibility.
	start := time.Now()
	first := next(t, a, wait)
	second := next(t, a, wait)
	if n, err := b.Ack(ctxT(t), "test.ack", "g", "c1", []string{second.ID}); err != nil || n != 1 {
		t.Fatalf("ack: %d %v", n, err)
	}
	_ = a.Close() // dies holding #1 unacknowledged

	sub.Consumer = "c2"
	bsub := subscribe(t, b, sub)
	again := next(t, bsub, wait)
	if again.ID != first.ID || index(t, again) != 1 {
		t.Fatalf("redelivered %s #%d, want %s #1", again.ID, index(t, again), first.ID)
	}
	// The backends' clocks may round to the millisecond.
	if waited := time.Since(start); waited < sub.Visibility-10*time.Millisecond {
		t.Fatalf("redelivered %v after it was handed out, before the visibility timeout (%v)", waited, sub.Visibility)
	}
	if n, err := b.Ack(ctxT(t), "test.ack", "g", "c2", []string{again.ID}); err != nil || n != 1 {
		t.Fatalf("ack redelivered: %d %v", n, err)
	}
	nothing(t, bsub, 900*time.Millisecond)
}

func testAckCounts(t *testing.T, s *suite) {
	b := s.open(t)
	sub := unicast("g", "c1", "test.ackcount")
	sub.Ack = true
	a := subscribe(t, b, sub)
	publish(t, b, "test.ackcount", 1)
	env := next(t, a, wait)
	if n, err := b.Ack(ctxT(t), "test.ackcount", "g", "c1", []string{"evt_unknown"}); err != nil || n != 0 {
		t.Fatalf("ack unknown: %d %v", n, err)
	}
	if n, err := b.Ack(ctxT(t), "test.ackcount", "other-group", "c1", []string{env.ID}); err != nil || n != 0 {
		t.Fatalf("ack in another group: %d %v", n, err)
	}
	if n, err := b.Ack(ctxT(t), "test.ackcount", "g", "c1", []string{env.ID}); err != nil || n != 1 {
		t.Fatalf("ack: %d %v", n, err)
	}
	if n, err := b.Ack(ctxT(t), "test.ackcount", "g", "c1", []string{env.ID}); err != nil || n != 0 {
		t.Fatalf("ack twice: %d %v", n, err)
	}
}

func testCancelledNext(t *testing.T, s *suite) {
	for _, ack := range []bool{false, true} {
		t.Run(fmt.Sprintf("ack=%v", ack), func(t *testing.T) {
			b := s.open(t)
			name := fmt.Sprintf("test.cancelled.%v", ack)
			sub := unicast("g", "c", name)
			sub.Ack = ack
			x := subscribe(t, b, sub)
			const n = 60
			go func() {
				for i := range n {
					_, _, _ = b.Publish(context.Background(), events.Envelope{Name: name, Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
					time.Sleep(time.Millisecond)
				}
			}()
			seen := map[int]int{}
			deadline := time.Now().Add(20 * time.Second)
			for len(seen) < n && time.Now().Before(deadline) {
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Millisecond)
				env, err := x.Next(ctx)
				cancel()
				if err != nil {
					continue
				}
				seen[index(t, env)]++
				if ack {
					_, _ = b.Ack(context.Background(), name, "g", "c", []string{env.ID})
				}
			}
			for i := range n {
				if seen[i] != 1 {
					t.Fatalf("event #%d seen %d times with short-lived Next calls", i, seen[i])
				}
			}
		})
	}
}

func testCloseEndsNext(t *testing.T, s *suite) {
	b := s.open(t)
	for _, sub := range []eventstore.Subscription{broadcast("test.close"), unicast("g", "c", "test.close")} {
		x, err := b.Subscribe(ctxT(t), sub)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := x.Next(context.Background())
			errc <- err
		}()
		time.Sleep(50 * time.Millisecond)
		_ = x.Close()
		select {
		case err := <-errc:
			if err == nil {
				t.Fatal("Next returned an event after Close")
			}
		case <-time.After(wait):
			t.Fatal("Next still blocked after Close")
		}
	}
}

func testBackendClose(t *testing.T, s *suite) {
	b := s.h.Open(t, s.ns, Options{})
	var subs []eventstore.Subscriber
	for _, sub := range []eventstore.Subscription{broadcast("test.bclose"), unicast("g", "c", "test.bclose")} {
		x, err := b.Subscribe(ctxT(t), sub)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, x)
	}
	errc := make(chan error, len(subs))
	for _, x := range subs {
		go func() {
			_, err := x.Next(context.Background())
			errc <- err
		}()
	}
	time.Sleep(50 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for range subs {
		select {
		case err := <-errc:
			if !errors.Is(err, eventstore.ErrClosed) {
				t.Fatalf("Next after the backend closed: got %v, want ErrClosed", err)
			}
		case <-time.After(wait):
			t.Fatal("Next still blocked after the backend closed")
		}
	}
	for _, x := range subs {
		_ = x.Close()
	}
}

func testRestart(t *testing.T, s *suite) {
	b := s.h.Open(t, s.ns, Options{})
	for i := range 5 {
		publish(t, b, "test.restart", i)
	}
	sub := unicast("g", "c1", "test.restart")
	sub.Ack = true
	sub.Visibility = 300 * time.Millisecond
	sub.Replay = true
	x, err := b.Subscribe(ctxT(t), sub)
	if err != nil {
		t.Fatal(err)
	}
	e0 := next(t, x, wait)
	e1 := next(t, x, wait)
	if _, err := b.Ack(ctxT(t), "test.restart", "g", "c1", []string{e0.ID}); err != nil {
		t.Fatal(err)
	}
	_ = x.Close()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b2 := s.open(t)
	hist := subscribe(t, b2, eventstore.Subscription{Names: []string{"test.restart"}, Delivery: events.Broadcast, Replay: true})
	for i := range 5 {
		if got := index(t, next(t, hist, wait)); got != i {
			t.Fatalf("history after restart: event %d is #%d", i, got)
		}
	}
	sub.Consumer = "c2"
	y := subscribe(t, b2, sub)
	var got []int
	for range 4 {
		env := next(t, y, wait)
		got = append(got, index(t, env))
		_, _ = b2.Ack(ctxT(t), "test.restart", "g", "c2", []string{env.ID})
	}
	sort.Ints(got)
	if fmt.Sprint(got) != "[1 2 3 4]" {
		t.Fatalf("group after restart got %v, want [1 2 3 4] (#1 = %s redelivered, #0 acknowledged)", got, e1.ID)
	}
	nothing(t, y, 500*time.Millisecond)
}

func testReplicas(t *testing.T, s *suite) {
	a := s.open(t)
	b := s.open(t)
	sub := subscribe(t, b, broadcast("test.replica"))
	uniA := subscribe(t, a, unicast("g", "on-a", "test.replica"))
	uniB := subscribe(t, b, unicast("g", "on-b", "test.replica"))
	const n = 40
	for i := range n {
		if i%2 == 0 {
			publish(t, a, "test.replica", i)
		} else {
			publish(t, b, "test.replica", i)
		}
	}
	for i := range n {
		if got := index(t, next(t, sub, wait)); got != i {
			t.Fatalf("broadcast across replicas: event %d is #%d", i, got)
		}
	}
	got := drain(t, []eventstore.Subscriber{uniA, uniB}, n, nil)
	seen := map[int]int{}
	for _, list := range got {
		for _, i := range list {
			seen[i]++
		}
	}
	for i := range n {
		if seen[i] != 1 {
			t.Fatalf("unicast across replicas: #%d delivered %d times", i, seen[i])
		}
	}
}

// testHolderVisibility: a delivery is handed out again when its holder's
// visibility timeout passes, not when another consumer's shorter one does.
func testHolderVisibility(t *testing.T, s *suite) {
	b := s.open(t)
	holder := unicast("g", "holder", "test.holdervis")
	holder.Ack = true
	holder.Visibility = time.Hour
	h := subscribe(t, b, holder)
	publish(t, b, "test.holdervis", 1)
	held := next(t, h, wait)
	impatient := unicast("g", "impatient", "test.holdervis")
	impatient.Ack = true
	impatient.Visibility = 100 * time.Millisecond
	x := subscribe(t, b, impatient)
	nothing(t, x, 800*time.Millisecond)
	if n, err := b.Ack(ctxT(t), "test.holdervis", "g", "holder", []string{held.ID}); err != nil || n != 1 {
		t.Fatalf("holder's ack: %d %v", n, err)
	}
}

// testAckByHolderOnly: an acknowledgement naming a consumer that does not
// hold the delivery is ignored, so the delivery is still redelivered after
// the holder's visibility timeout; after the redelivery only the new holder
// can acknowledge it.
func testAckByHolderOnly(t *testing.T, s *suite) {
	b := s.open(t)
	sub := unicast("g", "holder", "test.ackholder")
	sub.Ack = true
	sub.Visibility = 300 * time.Millisecond
	h := subscribe(t, b, sub)
	publish(t, b, "test.ackholder", 1)
	held := next(t, h, wait)
	for _, intruder := range []string{"intruder", "default", ""} {
		if n, err := b.Ack(ctxT(t), "test.ackholder", "g", intruder, []string{held.ID}); err != nil || n != 0 {
			t.Fatalf("ack by %q, who does not hold the delivery: %d %v, want 0", intruder, n, err)
		}
	}
	_ = h.Close() // the holder dies without acknowledging

	sub.Consumer = "rescuer"
	r := subscribe(t, b, sub)
	again := next(t, r, wait)
	if again.ID != held.ID {
		t.Fatalf("redelivered %s, want %s: the intruder's ack must not have counted", again.ID, held.ID)
	}
	if n, err := b.Ack(ctxT(t), "test.ackholder", "g", "holder", []string{again.ID}); err != nil || n != 0 {
		t.Fatalf("ack by the former holder: %d %v, want 0", n, err)
	}
	if n, err := b.Ack(ctxT(t), "test.ackholder", "g", "rescuer", []string{again.ID}); err != nil || n != 1 {
		t.Fatalf("ack by the holder: %d %v, want 1", n, err)
	}
}

// testDeliveriesCounted: acknowledged deliveries count 1, 2, 3, ... as
// the event is handed out again; other deliveries carry no count.
func testDeliveriesCounted(t *testing.T, s *suite) {
	b := s.open(t)
	name := "test.deliveries"
	acked := unicast("acked", "c1", name)
	acked.Ack = true
	acked.Visibility = 200 * time.Millisecond
	x := subscribe(t, b, acked)
	plain := subscribe(t, b, unicast("plain", "c1", name))
	bc := subscribe(t, b, broadcast(name))
	publish(t, b, name, 1)
	var id string
	for want := 1; want <= 3; want++ {
		if want == 3 { // a redelivery to another consumer counts on
			_ = x.Close()
			acked.Consumer = "c2"
			x = subscribe(t, b, acked)
		}
		env := next(t, x, wait)
		if id == "" {
			id = env.ID
		}
		if env.ID != id || env.Deliveries != want {
			t.Fatalf("delivery %d: %s with deliveries=%d, want %s with %d", want, env.ID, env.Deliveries, id, want)
		}
	}
	if n, err := b.Ack(ctxT(t), name, "acked", "c2", []string{id}); err != nil || n != 1 {
		t.Fatalf("ack: %d %v", n, err)
	}
	for kind, sub := range map[string]eventstore.Subscriber{"unacknowledged unicast": plain, "broadcast": bc} {
		if env := next(t, sub, wait); env.ID != id || env.Deliveries != 0 {
			t.Fatalf("%s delivery %s has deliveries=%d, want %s with 0", kind, env.ID, env.Deliveries, id)
		}
	}
}

// releaseVisibility is the visibility of the release tests: far longer
// than any wait of theirs, so only a release can explain a redelivery.
const releaseVisibility = 10 * time.Minute

// testRelease: a released delivery goes to the next consumer of the group
// at once, long before its visibility timeout, and its count is taken
// back; after the release nobody holds it, and other deliveries of the
// holder stay held.
func testRelease(t *testing.T, s *suite) {
	b := s.open(t)
	name := "test.release"
	sub := unicast("g", "holder", name)
	sub.Ack = true
	sub.Visibility = releaseVisibility
	h := subscribe(t, b, sub)
	publish(t, b, name, 1)
	publish(t, b, name, 2)
	first := next(t, h, wait)
	second := next(t, h, wait)
	if n, err := b.Release(ctxT(t), name, "g", "holder", []string{first.ID, "evt_unknown"}); err != nil || n != 1 {
		t.Fatalf("release by the holder: %d %v, want 1", n, err)
	}
	if n, err := b.Release(ctxT(t), name, "g", "holder", []string{first.ID}); err != nil || n != 0 {
		t.Fatalf("second release: %d %v, want 0 (nobody holds it)", n, err)
	}
	if n, err := b.Ack(ctxT(t), name, "g", "holder", []string{first.ID}); err != nil || n != 0 {
		t.Fatalf("ack by the former holder after its release: %d %v, want 0", n, err)
	}

	sub.Consumer = "next"
	x := subscribe(t, b, sub)
	again := next(t, x, wait)
	if again.ID != first.ID || index(t, again) != 1 {
		t.Fatalf("after the release got %s #%d, want %s #1", again.ID, index(t, again), first.ID)
	}
	if again.Deliveries != 1 {
		t.Fatalf("released delivery handed out again with deliveries=%d, want 1 (a release does not count)", again.Deliveries)
	}
	nothing(t, x, 700*time.Millisecond) // #2 is still held
	if n, err := b.Ack(ctxT(t), name, "g", "next", []string{again.ID}); err != nil || n != 1 {
		t.Fatalf("ack by the new holder: %d %v, want 1", n, err)
	}
	if n, err := b.Ack(ctxT(t), name, "g", "holder", []string{second.ID}); err != nil || n != 1 {
		t.Fatalf("ack of the delivery not released: %d %v, want 1", n, err)
	}
}

// testReleaseByHolderOnly: a release naming a consumer that does not hold
// the delivery (or another group) is ignored: nobody else gets it.
func testReleaseByHolderOnly(t *testing.T, s *suite) {
	b := s.open(t)
	name := "test.releaseholder"
	sub := unicast("g", "holder", name)
	sub.Ack = true
	sub.Visibility = releaseVisibility
	h := subscribe(t, b, sub)
	publish(t, b, name, 1)
	held := next(t, h, wait)
	for _, intruder := range []string{"intruder", "default", ""} {
		if n, err := b.Release(ctxT(t), name, "g", intruder, []string{held.ID}); err != nil || n != 0 {
			t.Fatalf("release by %q, who does not hold the delivery: %d %v, want 0", intruder, n, err)
		}
	}
	if n, err := b.Release(ctxT(t), name, "other-group", "holder", []string{held.ID}); err != nil || n != 0 {
		t.Fatalf("release in another group: %d %v, want 0", n, err)
	}
	sub.Consumer = "rescuer"
	r := subscribe(t, b, sub)
	nothing(t, r, 700*time.Millisecond)
	if n, err := b.Release(ctxT(t), name, "g", "holder", []string{held.ID}); err != nil || n != 1 {
		t.Fatalf("release by the holder: %d %v, want 1", n, err)
	}
	if again := next(t, r, wait); again.ID != held.ID {
		t.Fatalf("after the holder's release got %s, want %s", again.ID, held.ID)
	}
}

// testCloseReleases: an acknowledged-mode subscription closed while a read
// of it may be taking an event (its Next gave up first) does not keep
// that event: another consumer gets it long before the visibility timeout,
// as its first delivery. (Whether the closed subscription's read took the
// event depends on timing; either way the other consumer must get it.)
func testCloseReleases(t *testing.T, s *suite) {
	b := s.open(t)
	for round := range 3 {
		name := fmt.Sprintf("test.closerelease.%d", round)
		sub := unicast("g", "leaver", name)
		sub.Ack = true
		sub.Visibility = releaseVisibility
		x := subscribe(t, b, sub)
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		_, err := x.Next(ctx)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Next with nothing published: %v, want deadline exceeded", err)
		}
		publish(t, b, name, round)
		_ = x.Close()

		sub.Consumer = "stayer"
		y := subscribe(t, b, sub)
		got := next(t, y, wait)
		if index(t, got) != round || got.Deliveries != 1 {
			t.Fatalf("round %d: got #%d with deliveries=%d, want #%d with 1", round, index(t, got), got.Deliveries, round)
		}
	}
}

func publishCount(t *testing.T, b eventstore.Backend, name string) int {
	t.Helper()
	_, n, err := b.Publish(ctxT(t), events.Envelope{Name: name, Payload: json.RawMessage(`{"i":0}`)})
	if err != nil {
		t.Fatalf("publish %s: %v", name, err)
	}
	return n
}

// testGroupsCounted: a publish reports how many unicast groups of its name
// exist; groups exist from their first subscription, also with no
// subscription open; broadcast listeners and other names do not count.
func testGroupsCounted(t *testing.T, s *suite) {
	b := s.open(t)
	name := "test.groupcount"
	if n := publishCount(t, b, name); n != 0 {
		t.Fatalf("no group yet: publish counted %d groups", n)
	}
	subscribe(t, b, broadcast(name))
	if n := publishCount(t, b, name); n != 0 {
		t.Fatalf("a broadcast listener is no group: publish counted %d", n)
	}
	g1 := subscribe(t, b, unicast("g1", "c", name))
	subscribe(t, b, unicast("g1", "c2", name)) // same group, another consumer
	if n := publishCount(t, b, name); n != 1 {
		t.Fatalf("one group: publish counted %d", n)
	}
	subscribe(t, b, unicast("g2", "c", name, "test.groupcount.other"))
	if n := publishCount(t, b, name); n != 2 {
		t.Fatalf("two groups: publish counted %d", n)
	}
	_ = g1.Close()
	if n := publishCount(t, b, name); n != 2 {
		t.Fatalf("a group without open subscription still collects: publish counted %d, want 2", n)
	}
	if n := publishCount(t, b, "test.groupcount.other"); n != 1 {
		t.Fatalf("other name: publish counted %d, want 1", n)
	}
	if n := publishCount(t, b, "test.groupcount.none"); n != 0 {
		t.Fatalf("unrelated name: publish counted %d, want 0", n)
	}
}

// testIdentityType: the publisher's identity type is stored and handed
// out with every kind of delivery.
func testIdentityType(t *testing.T, s *suite) {
	b := s.open(t)
	name := "test.identitytype"
	uni := subscribe(t, b, unicast("g", "c", name))
	for _, typ := range []string{events.IdentityService, events.IdentityUser} {
		env, _, err := b.Publish(ctxT(t), events.Envelope{Name: name, IdentityID: "who", IdentityType: typ, Payload: json.RawMessage(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		if env.IdentityType != typ {
			t.Fatalf("published envelope has identity type %q, want %q", env.IdentityType, typ)
		}
		if got := next(t, uni, wait); got.IdentityType != typ || got.IdentityID != "who" {
			t.Fatalf("unicast delivery has identity %q type %q, want who %q", got.IdentityID, got.IdentityType, typ)
		}
	}
	hist := subscribe(t, b, eventstore.Subscription{Names: []string{name}, Delivery: events.Broadcast, Replay: true})
	for _, typ := range []string{events.IdentityService, events.IdentityUser} {
		if got := next(t, hist, wait); got.IdentityType != typ {
			t.Fatalf("replayed identity type %q, want %q", got.IdentityType, typ)
		}
	}
}

// testGroupIdleExpiry: a group that has had no subscription for the idle
// TTL is deleted (it no longer counts, and a new subscription starts it
// afresh at the end of the log); a group with an open subscription is
// kept however long it is open.
func testGroupIdleExpiry(t *testing.T, s *suite) {
	const ttl = 3 * time.Second
	b := s.openWith(t, Options{GroupIdleTTL: ttl})
	name := "test.idlegroups"
	live := subscribe(t, b, unicast("live", "c", name))
	idle := subscribe(t, b, unicast("idle", "c", name))
	publish(t, b, name, 0)
	if env := next(t, idle, wait); index(t, env) != 0 {
		t.Fatalf("idle group got #%d", index(t, env))
	}
	_ = idle.Close()
	closed := time.Now()
	if n := publishCount(t, b, name); n != 2 {
		t.Fatalf("before expiry: publish counted %d groups, want 2", n)
	}
	// Wait for the expiry, publishing now and then; give up long after it
	// is due.
	deadline := closed.Add(ttl + 30*time.Second)
	for publishCount(t, b, name) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("the idle group was not deleted %v after its last subscription closed", time.Since(closed))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if since := time.Since(closed); since < ttl-10*time.Millisecond {
		t.Fatalf("the idle group was deleted %v after its last subscription closed, before its TTL %v", since, ttl)
	}
	// Stay another TTL: the live group must survive it (a backend that
	// expired it by the time of its last refresh would have done so by
	// now).
	for until := time.Now().Add(ttl); time.Now().Before(until); time.Sleep(100 * time.Millisecond) {
		if n := publishCount(t, b, name); n != 1 {
			t.Fatalf("the group with an open subscription expired: publish counted %d groups, want 1", n)
		}
	}
	if env := next(t, live, wait); index(t, env) != 0 {
		t.Fatalf("live group's first event is #%d, want #0", index(t, env))
	}
	again := subscribe(t, b, unicast("idle", "c2", name))
	publish(t, b, name, 99)
	if env := next(t, again, wait); index(t, env) != 99 {
		t.Fatalf("the re-created group got #%d, want only what was published after it (#99)", index(t, env))
	}
}
