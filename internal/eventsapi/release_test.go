package eventsapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/eventsapi"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// Nothing a stream takes is held for a client that never received it.
// Every test here uses a visibility of 10 minutes: only a release can
// explain the event reaching another consumer within the tests' waits.

const longVisibility = 10 * time.Minute

// watchedBackend reports what the streams of consumer "leaver" take from
// the store. With hold set, such a stream's Next keeps the event it took
// until its context ends (the stream stops taking: the client went away,
// or ended the stream) and then returns it anyway, as a store whose claim
// completed just as the caller gave up may.
type watchedBackend struct {
	eventstore.Backend
	hold bool
	took chan events.Envelope
}

func (b *watchedBackend) Subscribe(ctx context.Context, sub eventstore.Subscription) (eventstore.Subscriber, error) {
	s, err := b.Backend.Subscribe(ctx, sub)
	if err != nil || sub.Consumer != "leaver" {
		return s, err
	}
	return &watchedSubscriber{Subscriber: s, b: b}, nil
}

type watchedSubscriber struct {
	eventstore.Subscriber
	b *watchedBackend
}

func (s *watchedSubscriber) Next(ctx context.Context) (events.Envelope, error) {
	env, err := s.Subscriber.Next(ctx)
	if err != nil {
		return env, err
	}
	s.b.took <- env
	if s.b.hold {
		<-ctx.Done()
	}
	return env, nil
}

// startServer runs an Events API on b with keep-alives far apart (so a
// stream's Next ends only when the stream stops taking) and returns a
// service client for it.
func startServer(t *testing.T, b eventstore.Backend) *events.Client {
	t.Helper()
	secret := []byte("release-test-secret")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := eventsapi.New(eventsapi.Config{Backend: b, Verifier: auth.NewVerifier(secret, auth.Audience),
		Keepalive: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done; _ = b.Close() })
	now := time.Now()
	tok, err := auth.Issue(secret, auth.Claims{Subject: "worker", Audience: []string{auth.Audience}, Scopes: serviceScopes, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := events.NewClient("http://"+l.Addr().String(), events.WithToken(tok), events.WithRetry(events.RetryPolicy{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func requests(consumer string) events.ListenOptions {
	return events.ListenOptions{Names: []string{requestName}, Delivery: events.Unicast, Group: workerGroup,
		Consumer: consumer, Ack: true, Visibility: longVisibility}
}

func took(t *testing.T, ch <-chan events.Envelope) events.Envelope {
	t.Helper()
	select {
	case env := <-ch:
		return env
	case <-time.After(30 * time.Second):
		t.Fatal("the stream took nothing within 30s")
		return events.Envelope{}
	}
}

// TestStreamReleasesWhatItCouldNotWrite: a stream that took an event from
// the store as it stopped taking — its client went away, or ended it —
// releases that event instead of writing it: another consumer gets it at
// once, as a first delivery.
func TestStreamReleasesWhatItCouldNotWrite(t *testing.T) {
	for _, how := range []string{"client went away", "client ended the stream"} {
		t.Run(how, func(t *testing.T) {
			b := &watchedBackend{Backend: memory.New(memory.Options{}), hold: true, took: make(chan events.Envelope, 1)}
			c := startServer(t, b)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := c.Open(ctx, requests("leaver"))
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := c.PublishJSON(ctx, requestName, "r1", json.RawMessage(`{}`)); err != nil {
				t.Fatal(err)
			}
			taken := took(t, b.took)
			stayer := listen(t, c, requests("stayer"))

			switch how {
			case "client went away":
				_ = st.Close()
			default:
				if ended, err := c.EndStream(ctx, st.ID()); err != nil || !ended {
					t.Fatalf("end stream %q: %v %v", st.ID(), ended, err)
				}
				// The stream ends without the event it was holding.
				if env, err := st.Next(); !errors.Is(err, io.EOF) {
					t.Fatalf("after its end the stream gave %s (%v), want io.EOF", env.ID, err)
				}
			}
			got := next(t, stayer)
			if got.ID != taken.ID || got.Deliveries != 1 {
				t.Fatalf("the other consumer got %s (deliveries=%d), want %s as a first delivery", got.ID, got.Deliveries, taken.ID)
			}
		})
	}
}

// TestListenReleasesWhatArrivesAfterStop: when a listener stops, the events
// the server took for it but its handler never saw are released (the
// stream is ended gracefully and read to its end), so another consumer
// gets them at once; the one its handler took stays with it.
func TestListenReleasesWhatArrivesAfterStop(t *testing.T) {
	b := &watchedBackend{Backend: memory.New(memory.Options{}), took: make(chan events.Envelope, 10)}
	c := startServer(t, b)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	connected := make(chan struct{})
	handled := make(chan events.Envelope, 10)
	all := make(chan struct{})
	o := requests("leaver")
	o.OnConnect = func() { close(connected) }
	done := make(chan error, 1)
	go func() {
		done <- c.Listen(ctx, o, func(_ context.Context, env events.Envelope) error {
			handled <- env
			<-all // the server has taken every event for this stream
			stop()
			return nil
		})
	}()
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not connect")
	}
	const n = 3
	for i := range n {
		if _, err := c.PublishJSON(context.Background(), requestName, string(rune('a'+i)), json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		took(t, b.took)
	}
	close(all)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Listen: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Listen did not return after its context ended")
	}
	kept := next(t, handled)
	quiet(t, handled, 0, "the handler was called after its listener stopped")

	stayer := listen(t, c, requests("stayer"))
	for range n - 1 {
		got := next(t, stayer)
		if got.ID == kept.ID || got.Deliveries != 1 {
			t.Fatalf("the other consumer got %s (deliveries=%d); want the events the handler never saw, as first deliveries (the handler kept %s)", got.ID, got.Deliveries, kept.ID)
		}
	}
	quiet(t, stayer, 500*time.Millisecond, "the delivery the stopped listener's handler kept")
}

// TestReleaseByHolderOnly: POST /api/v1/events/release counts only from
// the consumer that holds the delivery; a caller cannot release bus.llm.*
// at all. The holder's release frees its prefetch slot and hands the
// delivery out again at once, as a first delivery.
func TestReleaseByHolderOnly(t *testing.T) {
	b := startBus(t)
	ctx := context.Background()
	worker := client(t, b, "worker", serviceScopes...)
	o := requests("w1")
	o.Prefetch = 1
	held := listen(t, worker, o)
	if _, err := worker.PublishJSON(ctx, requestName, "r1", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	first := next(t, held)
	other := client(t, b, "other-service", serviceScopes...)
	for _, consumer := range []string{"w2", "", "W1"} {
		if n, err := other.Release(ctx, requestName, workerGroup, consumer, first.ID); err != nil || n != 0 {
			t.Fatalf("another service releasing as consumer %q: %d %v, want 0", consumer, n, err)
		}
	}
	caller := client(t, b, "mallory", auth.ScopeLLMProxy)
	_, err := caller.Release(ctx, requestName, workerGroup, "w1", first.ID)
	wantForbidden(t, "release", err)

	if n, err := worker.Release(ctx, requestName, workerGroup, "w1", first.ID); err != nil || n != 1 {
		t.Fatalf("the holder's release: %d %v, want 1", n, err)
	}
	// w1 is the group's only consumer and its window was full: only the
	// release's freed slot lets the delivery through before its visibility
	// timeout.
	if again := next(t, held); again.ID != first.ID || again.Deliveries != 1 {
		t.Fatalf("after the release got %s (deliveries=%d), want %s with deliveries=1", again.ID, again.Deliveries, first.ID)
	}
}

// TestEndStreamOnlyByItsIdentity: another identity cannot end a stream,
// even knowing its id; the stream goes on delivering.
func TestEndStreamOnlyByItsIdentity(t *testing.T) {
	b := startBus(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	owner := client(t, b, "owner", "events:send", "events:listen")
	st, err := owner.Open(ctx, events.ListenOptions{Names: []string{"example.ping"}})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if st.ID() == "" {
		t.Fatalf("the stream's answer has no %s header", events.StreamIDHeader)
	}
	intruder := client(t, b, "intruder", "events:send", "events:listen", "events:admin")
	if ended, err := intruder.EndStream(ctx, st.ID()); err != nil || ended {
		t.Fatalf("another identity ending the stream: %v %v, want false", ended, err)
	}
	if _, err := owner.PublishJSON(ctx, "example.ping", "still-open", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if env, err := st.Next(); err != nil || env.CorrelationID != "still-open" {
		t.Fatalf("after the intruder's attempt: %+v %v, want the event", env, err)
	}
	if ended, err := owner.EndStream(ctx, st.ID()); err != nil || !ended {
		t.Fatalf("the owner ending the stream: %v %v, want true", ended, err)
	}
	if _, err := st.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after its end: %v, want io.EOF", err)
	}
}
