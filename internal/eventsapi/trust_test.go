package eventsapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/eventsapi"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// The attacks of a caller who holds a front-door token (scope llm:proxy,
// not a service) on the Events API, and of a service acknowledging what
// another consumer holds. Each was possible before the Events API became a
// trust boundary.

const (
	requestName  = "bus.llm.chat.completions.request"
	responseName = "bus.llm.chat.completions.response"
	workerGroup  = "bus-integration-codex"
)

// wantForbidden checks that err is the API's 403 for a caller.
func wantForbidden(t *testing.T, what string, err error) {
	t.Helper()
	apiErr, ok := errors.AsType[*events.APIError](err)
	if !ok || apiErr.Status != http.StatusForbidden || apiErr.Code != eventsapi.CodeForbidden || !strings.Contains(apiErr.Message, "service") {
		t.Fatalf("%s: got %v, want 403 forbidden for a caller's token", what, err)
	}
}

// open opens a stream and reports the API's answer.
func open(t *testing.T, c *events.Client, o events.ListenOptions) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Open(ctx, o)
	if err == nil {
		_ = st.Close()
	}
	return err
}

// TestCallerCannotEavesdrop: a caller's token cannot listen to anyone's
// requests, responses or chunks.
func TestCallerCannotEavesdrop(t *testing.T) {
	b := startBus(t)
	caller := client(t, b, "alice", auth.ScopeLLMProxy, auth.ScopeEventsListen)
	for _, names := range [][]string{
		{requestName}, {responseName}, {"bus.llm.chat.completions.chunk"}, {"bus.llm.responses.retrieve.response"},
		{"example.ping", responseName}, // one protected name among others is enough
	} {
		err := open(t, caller, events.ListenOptions{Names: names, Replay: true})
		wantForbidden(t, "listen to "+strings.Join(names, ","), err)
	}
}

// TestCallerCannotForgeResponse: a caller cannot publish a response for
// someone else's request; the front door's listener never sees it.
func TestCallerCannotForgeResponse(t *testing.T) {
	b := startBus(t)
	frontDoor := client(t, b, "front-door", serviceScopes...)
	responses := listen(t, frontDoor, events.ListenOptions{Names: []string{responseName}})
	caller := client(t, b, "mallory", auth.ScopeLLMProxy, auth.ScopeEventsSend)
	_, err := caller.PublishJSON(context.Background(), responseName, "victims-request", map[string]any{"forged": true})
	wantForbidden(t, "publish a response", err)
	if _, err := frontDoor.PublishJSON(context.Background(), responseName, "marker", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	if env := next(t, responses); env.CorrelationID != "marker" {
		t.Fatalf("the front door's listener got %q first, want only the service's event", env.CorrelationID)
	}
}

// TestCallerCannotJoinWorkerGroup: a caller cannot join the workers'
// unicast group (or any group of bus.llm.*) and take other people's
// requests; the worker gets every request.
func TestCallerCannotJoinWorkerGroup(t *testing.T) {
	b := startBus(t)
	worker := client(t, b, "worker", serviceScopes...)
	requests := listen(t, worker, events.ListenOptions{Names: []string{requestName}, Delivery: events.Unicast, Group: workerGroup, Consumer: "w1"})
	caller := client(t, b, "mallory", auth.ScopeLLMProxy)
	for _, ack := range []bool{false, true} {
		err := open(t, caller, events.ListenOptions{Names: []string{requestName}, Delivery: events.Unicast, Group: workerGroup, Consumer: "thief", Ack: ack})
		wantForbidden(t, "join the workers' group", err)
	}
	frontDoor := client(t, b, "front-door", serviceScopes...)
	for i := range 5 {
		if _, err := frontDoor.PublishJSON(context.Background(), requestName, string(rune('a'+i)), map[string]any{}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		if env := next(t, requests); env.CorrelationID != string(rune('a'+i)) {
			t.Fatalf("worker's request %d is %q", i, env.CorrelationID)
		}
	}
}

// TestCallerCannotRetrieveThroughBus: a caller cannot ask the workers for
// another identity's stored response by publishing the request itself
// (with a payload naming that identity), nor publish any other bus.llm.*
// request.
func TestCallerCannotRetrieveThroughBus(t *testing.T) {
	b := startBus(t)
	caller := client(t, b, "mallory", auth.ScopeLLMProxy, auth.ScopeEventsSend)
	for _, name := range []string{"bus.llm.responses.retrieve.request", "bus.llm.responses.delete.request", requestName, "bus.llm.responses.cancel"} {
		_, err := caller.PublishJSON(context.Background(), name, "r1", map[string]any{"requestId": "r1", "identityId": "bob", "response_id": "resp_bob"})
		wantForbidden(t, "publish "+name, err)
	}
}

// TestForeignAck: an acknowledgement counts only from the consumer that
// holds the delivery, even when it comes from another service or from the
// same group; the holder's delivery is still redelivered after its
// visibility timeout. A caller cannot acknowledge at all.
func TestForeignAck(t *testing.T) {
	b := startBus(t)
	ctx := context.Background()
	worker := client(t, b, "worker", serviceScopes...)
	held := listen(t, worker, events.ListenOptions{Names: []string{requestName}, Delivery: events.Unicast, Group: workerGroup,
		Consumer: "w1", Ack: true, Prefetch: 1, Visibility: 500 * time.Millisecond})
	if _, err := worker.PublishJSON(ctx, requestName, "r1", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	first := next(t, held)
	if first.Deliveries != 1 {
		t.Fatalf("first delivery has deliveries=%d, want 1", first.Deliveries)
	}
	other := client(t, b, "other-service", serviceScopes...)
	for _, consumer := range []string{"w2", "", "W1"} {
		if n, err := other.Ack(ctx, requestName, workerGroup, consumer, first.ID); err != nil || n != 0 {
			t.Fatalf("another service acknowledging as consumer %q: %d %v, want 0", consumer, n, err)
		}
	}
	caller := client(t, b, "mallory", auth.ScopeLLMProxy)
	_, err := caller.Ack(ctx, requestName, workerGroup, "w1", first.ID)
	wantForbidden(t, "acknowledge", err)

	again := next(t, held)
	if again.ID != first.ID || again.Deliveries != 2 {
		t.Fatalf("after the visibility timeout got %s (deliveries=%d), want %s redelivered (2)", again.ID, again.Deliveries, first.ID)
	}
	if n, err := worker.Ack(ctx, requestName, workerGroup, "w1", again.ID); err != nil || n != 1 {
		t.Fatalf("the holder's ack: %d %v, want 1", n, err)
	}
}

// TestIdentityTypeStamped: every event carries the publisher's kind, from
// its token; an identity_type (or identity_id) in the publish body is
// ignored.
func TestIdentityTypeStamped(t *testing.T) {
	b := startBus(t)
	svc := client(t, b, "front-door", serviceScopes...)
	if _, err := svc.PublishJSON(context.Background(), requestName, "from-service", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	body := `{"name":"notes.saved","correlationId":"from-user","identity_type":"service","identityType":"service","identity_id":"front-door","payload":{}}`
	if r := do(t, "POST", b.URL+"/api/v1/events", token(t, b, "alice", auth.ScopeEventsSend, auth.ScopeLLMProxy), body); r.status != http.StatusAccepted {
		t.Fatalf("publish: %d %v", r.status, r.body)
	}
	got := collect(t, svc, events.ListenOptions{Names: []string{requestName}, Replay: true})
	if len(got) != 1 || got[0].IdentityType != events.IdentityService || got[0].IdentityID != "front-door" {
		t.Fatalf("service's event: %+v, want identity_type service", got)
	}
	admin := client(t, b, "ops", auth.ScopeEventsListen, auth.ScopeEventsAdmin)
	got = collect(t, admin, events.ListenOptions{Names: []string{"notes.saved"}, Replay: true})
	if len(got) != 1 || got[0].IdentityType != events.IdentityUser || got[0].IdentityID != "alice" {
		t.Fatalf("caller's event: %+v, want identity alice of type user (the body's fields ignored)", got)
	}
}

// TestPublishReportsGroups: the publish answer says how many unicast
// groups took the event; 0 means no worker will ever see it.
func TestPublishReportsGroups(t *testing.T) {
	b := startBus(t)
	svc := client(t, b, "front-door", serviceScopes...)
	groups := func() int {
		t.Helper()
		acc, err := svc.PublishJSON(context.Background(), requestName, "r", map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		if acc.Groups == nil {
			t.Fatalf("publish answer %+v lacks groups", acc)
		}
		return *acc.Groups
	}
	if n := groups(); n != 0 {
		t.Fatalf("no worker yet: groups=%d, want 0", n)
	}
	listen(t, svc, events.ListenOptions{Names: []string{requestName}, Delivery: events.Unicast, Group: workerGroup, Consumer: "w1"})
	if n := groups(); n != 1 {
		t.Fatalf("one worker group: groups=%d, want 1", n)
	}
}

// TestLocalIdentityIsService: an Events API that lists a subject as a
// service (bus-api-provider-events lists the local identity by default)
// treats that subject's llm:proxy token as a service: the seed's
// one-machine commands keep working. Other subjects stay callers.
func TestLocalIdentityIsService(t *testing.T) {
	b, err := localbus.Start(localbus.Options{Services: auth.ServicePolicy{Subjects: []string{"local-operator"}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	local := client(t, b, "local-operator", auth.ScopeLLMProxy)
	requests := listen(t, local, events.ListenOptions{Names: []string{requestName}, Delivery: events.Unicast, Group: workerGroup, Consumer: "w1", Ack: true})
	if _, err := local.PublishJSON(context.Background(), requestName, "r1", map[string]any{}); err != nil {
		t.Fatal(err)
	}
	env := next(t, requests)
	if env.IdentityType != events.IdentityService {
		t.Fatalf("identity type %q, want service", env.IdentityType)
	}
	if n, err := local.Ack(context.Background(), requestName, workerGroup, "w1", env.ID); err != nil || n != 1 {
		t.Fatalf("ack: %d %v", n, err)
	}
	stranger := client(t, b, "someone-else", auth.ScopeLLMProxy)
	wantForbidden(t, "a subject not listed", open(t, stranger, events.ListenOptions{Names: []string{requestName}}))
}

// TestFullPrefetchWindowKeepsStreamAlive: a consumer whose prefetch window
// is full gets keep-alive lines meanwhile, so its idle timeout does not
// mistake a busy stream for a dead connection; the acknowledgement then
// lets the next event through on the same connection.
func TestFullPrefetchWindowKeepsStreamAlive(t *testing.T) {
	secret := []byte("keepalive-secret")
	const keepalive = 200 * time.Millisecond
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := eventsapi.New(eventsapi.Config{Backend: memory.New(memory.Options{}), Verifier: auth.NewVerifier(secret, auth.Audience),
		Keepalive: keepalive, Logger: slog.New(slog.DiscardHandler)})
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	now := time.Now()
	tok, err := auth.Issue(secret, auth.Claims{Subject: "worker", Audience: []string{auth.Audience}, Scopes: serviceScopes, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := events.NewClient("http://"+l.Addr().String(), events.WithToken(tok), events.WithRetry(events.RetryPolicy{Enabled: true, Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.CloseIdleConnections)
	var connects, disconnects atomic.Int32
	connected := make(chan struct{}, 10)
	got := make(chan events.Envelope, 10)
	lctx, stop := context.WithCancel(context.Background())
	ldone := make(chan error, 1)
	go func() {
		ldone <- c.Listen(lctx, events.ListenOptions{
			Names: []string{requestName}, Delivery: events.Unicast, Group: workerGroup, Consumer: "w1", Ack: true, Prefetch: 1, Visibility: time.Hour,
			IdleTimeout: 10 * keepalive,
			OnConnect:   func() { connects.Add(1); connected <- struct{}{} }, OnDisconnect: func(error) { disconnects.Add(1) },
		}, func(_ context.Context, env events.Envelope) error { got <- env; return nil })
	}()
	t.Cleanup(func() { stop(); <-ldone })
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not connect")
	}
	for i := range 2 {
		if _, err := c.PublishJSON(context.Background(), requestName, string(rune('a'+i)), json.RawMessage(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	first := next(t, got)
	quiet(t, got, 15*keepalive, "a delivery beyond prefetch=1")
	if d := disconnects.Load(); d != 0 {
		t.Fatalf("the stream broke %d times while its prefetch window was full: no keep-alive lines", d)
	}
	if n, err := c.Ack(context.Background(), requestName, workerGroup, "w1", first.ID); err != nil || n != 1 {
		t.Fatalf("ack: %d %v", n, err)
	}
	if env := next(t, got); env.CorrelationID != "b" {
		t.Fatalf("after the ack got %q, want b", env.CorrelationID)
	}
	if n := connects.Load(); n != 1 {
		t.Fatalf("connected %d times, want 1", n)
	}
}
