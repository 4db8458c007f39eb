package eventsapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

func startBus(t *testing.T) *localbus.Bus {
	t.Helper()
	b, err := localbus.Start(localbus.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// serviceScopes are those of a service principal's token.
var serviceScopes = []string{auth.ScopeLLMProxy, auth.ScopeService}

func token(t *testing.T, b *localbus.Bus, sub string, scopes ...string) string {
	t.Helper()
	tok, err := b.Token(sub, scopes...)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func client(t *testing.T, b *localbus.Bus, sub string, scopes ...string) *events.Client {
	t.Helper()
	c, err := b.Client(sub, scopes, events.WithRetry(events.RetryPolicy{}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type httpResult struct {
	status int
	body   map[string]any
	ctype  string
}

func do(t *testing.T, method, u, tok, body string) httpResult {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := httpResult{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type")}
	if resp.StatusCode != http.StatusOK || !strings.Contains(r.ctype, "ndjson") {
		raw, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(raw, &r.body)
	}
	return r
}

func TestAuthMatrix(t *testing.T) {
	b := startBus(t)
	now := time.Now()
	sign := func(key []byte, c auth.Claims) string {
		s, err := auth.Issue(key, c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := auth.Claims{Subject: "u1", Audience: []string{auth.Audience}, Scopes: []string{"llm:proxy", "events:send", "events:listen"}, IssuedAt: now, ExpiresAt: now.Add(time.Hour)}
	wrongAud := good
	wrongAud.Audience = []string{"someone.else/api"}
	expired := good
	expired.IssuedAt, expired.ExpiresAt = now.Add(-2*time.Hour), now.Add(-time.Hour)
	noScope := good
	noScope.Scopes = []string{"events:listen"}

	publishURL := b.URL + "/api/v1/events"
	releaseURL := b.URL + "/api/v1/events/release"
	endURL := b.URL + "/api/v1/events/stream/end"
	streamURL := func(q string) string { return b.URL + "/api/v1/events/stream?" + q + "&follow=false" }
	llmEvent := `{"name":"bus.llm.chat.completions.request","payload":{}}`
	cases := []struct {
		name, method, url, token, body string
		status                         int
		code                           string
	}{
		{"publish without token", "POST", publishURL, "", llmEvent, 401, "invalid_auth"},
		{"publish with bad signature", "POST", publishURL, sign([]byte("another-secret"), good), llmEvent, 401, "invalid_auth"},
		{"publish with wrong audience", "POST", publishURL, sign(b.Secret(), wrongAud), llmEvent, 401, "invalid_auth"},
		{"publish with expired token", "POST", publishURL, sign(b.Secret(), expired), llmEvent, 401, "invalid_auth"},
		{"publish with garbage token", "POST", publishURL, "not.a.jwt", llmEvent, 401, "invalid_auth"},
		{"publish bus.llm without llm:proxy", "POST", publishURL, sign(b.Secret(), noScope), llmEvent, 403, "forbidden"},
		{"publish plain event without events:send", "POST", publishURL, sign(b.Secret(), noScope), `{"name":"example.ping"}`, 403, "forbidden"},
		{"publish wildcard name", "POST", publishURL, sign(b.Secret(), good), `{"name":"bus.llm.*"}`, 400, "bad_request"},
		{"publish invalid name", "POST", publishURL, sign(b.Secret(), good), `{"name":"Bad Name"}`, 400, "bad_request"},
		{"publish malformed JSON", "POST", publishURL, sign(b.Secret(), good), `{"name":`, 400, "bad_request"},
		{"publish without name", "POST", publishURL, sign(b.Secret(), good), `{"payload":1}`, 400, "bad_request"},
		{"stream without token", "GET", streamURL("name=bus.llm.chat.completions.request"), "", "", 401, "invalid_auth"},
		{"stream with expired token", "GET", streamURL("name=example.ping"), sign(b.Secret(), expired), "", 401, "invalid_auth"},
		{"stream bus.llm without llm:proxy", "GET", streamURL("name=bus.llm.chat.completions.request"), sign(b.Secret(), noScope), "", 403, "forbidden"},
		{"stream plain event without events:listen", "GET", streamURL("name=example.ping"), token(t, b, "u2", "events:send"), "", 403, "forbidden"},
		{"stream wildcard name", "GET", streamURL("name=bus.llm.*"), sign(b.Secret(), good), "", 400, "bad_request"},
		{"stream wildcard >", "GET", streamURL("name=bus.>"), sign(b.Secret(), good), "", 400, "bad_request"},
		{"stream without name", "GET", streamURL("delivery=broadcast"), sign(b.Secret(), good), "", 400, "bad_request"},
		{"stream bad delivery", "GET", streamURL("name=example.ping&delivery=multicast"), sign(b.Secret(), good), "", 400, "bad_request"},
		{"stream group with slash", "GET", streamURL("name=example.ping&delivery=unicast&group=a/b"), sign(b.Secret(), good), "", 400, "bad_request"},
		{"stream consumer with space", "GET", streamURL("name=example.ping&delivery=unicast&consumer=" + url.QueryEscape("a b")), sign(b.Secret(), good), "", 400, "bad_request"},
		{"stream ack on broadcast", "GET", streamURL("name=example.ping&ack=true"), sign(b.Secret(), good), "", 400, "bad_request"},
		{"release without token", "POST", releaseURL, "", `{"name":"example.ping","ids":["evt_1"]}`, 401, "invalid_auth"},
		{"release bus.llm without llm:proxy", "POST", releaseURL, sign(b.Secret(), noScope), `{"name":"bus.llm.chat.completions.request","ids":["evt_1"]}`, 403, "forbidden"},
		{"release plain event without events:listen", "POST", releaseURL, token(t, b, "u2", "events:send"), `{"name":"example.ping","ids":["evt_1"]}`, 403, "forbidden"},
		{"release without ids", "POST", releaseURL, sign(b.Secret(), good), `{"name":"example.ping","ids":[]}`, 400, "bad_request"},
		{"release malformed JSON", "POST", releaseURL, sign(b.Secret(), good), `{"name":`, 400, "bad_request"},
		{"release bad consumer", "POST", releaseURL, sign(b.Secret(), good), `{"name":"example.ping","consumer":"a/b","ids":["evt_1"]}`, 400, "bad_request"},
		{"end stream without token", "POST", endURL, "", `{"stream":"str_x"}`, 401, "invalid_auth"},
		{"end stream without id", "POST", endURL, sign(b.Secret(), good), `{}`, 400, "bad_request"},
		{"end unknown stream", "POST", endURL, sign(b.Secret(), good), `{"stream":"str_x"}`, 200, ""},
		{"publish ok", "POST", publishURL, sign(b.Secret(), good), `{"name":"example.ping","correlationId":"c1","payload":{"x":1}}`, 202, ""},
		{"stream ok", "GET", streamURL("name=example.ping"), sign(b.Secret(), good), "", 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, tc.method, tc.url, tc.token, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (body %v)", r.status, tc.status, r.body)
			}
			if tc.code != "" {
				if r.body["error"] != tc.code || r.body["message"] == "" {
					t.Fatalf("error body %v, want error=%q with a message", r.body, tc.code)
				}
				if !strings.HasPrefix(r.ctype, "application/json") {
					t.Fatalf("content type %q", r.ctype)
				}
			}
			if tc.status == 202 && (r.body["accepted"] != true || r.body["id"] == "" || r.body["name"] != "example.ping") {
				t.Fatalf("accept body %v", r.body)
			}
			if tc.url == endURL && tc.status == 200 && r.body["ended"] != false {
				t.Fatalf("end body %v, want ended=false", r.body)
			}
			if tc.status == 200 && tc.method == "GET" && !strings.HasPrefix(r.ctype, "application/x-ndjson") {
				t.Fatalf("stream content type %q", r.ctype)
			}
		})
	}
}

func collect(t *testing.T, c *events.Client, o events.ListenOptions) []events.Envelope {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o.NoFollow = true
	var got []events.Envelope
	if err := c.Listen(ctx, o, func(_ context.Context, env events.Envelope) error {
		got = append(got, env)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestPublishStampsIdentityAndReplays(t *testing.T) {
	b := startBus(t)
	pub := client(t, b, "publisher-1", "events:send", "events:listen")
	ctx := context.Background()
	// A publisher cannot forge identity_id: the body field is ignored.
	body := `{"name":"example.ping","correlationId":"c1","identity_id":"forged","payload":{"n":1}}`
	r := do(t, "POST", b.URL+"/api/v1/events", token(t, b, "publisher-1", "events:send"), body)
	if r.status != 202 {
		t.Fatalf("publish: %d %v", r.status, r.body)
	}
	if _, err := pub.PublishJSON(ctx, "example.ping", "c2", map[string]int{"n": 2}); err != nil {
		t.Fatal(err)
	}
	got := collect(t, pub, events.ListenOptions{Names: []string{"example.ping"}, Replay: true})
	if len(got) != 2 {
		t.Fatalf("replay returned %d events, want 2", len(got))
	}
	for i, env := range got {
		if env.IdentityID != "publisher-1" {
			t.Fatalf("event %d identity %q, want the token subject", i, env.IdentityID)
		}
		if env.CorrelationID != fmt.Sprintf("c%d", i+1) || env.ID == "" || env.CreatedAt.IsZero() {
			t.Fatalf("event %d: %+v", i, env)
		}
	}
	// follow=false without replay is an empty snapshot.
	if got := collect(t, pub, events.ListenOptions{Names: []string{"example.ping"}}); len(got) != 0 {
		t.Fatalf("follow=false without replay returned %d events", len(got))
	}
}

func TestIdentityScopedListeners(t *testing.T) {
	b := startBus(t)
	alice := client(t, b, "alice", "events:send", "events:listen")
	bob := client(t, b, "bob", "events:send", "events:listen")
	admin := client(t, b, "ops", "events:listen", "events:admin")
	ctx := context.Background()
	if _, err := alice.PublishJSON(ctx, "notes.saved", "a", "alice's"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.PublishJSON(ctx, "notes.saved", "b", "bob's"); err != nil {
		t.Fatal(err)
	}
	opts := events.ListenOptions{Names: []string{"notes.saved"}, Replay: true}
	if got := collect(t, alice, opts); len(got) != 1 || got[0].IdentityID != "alice" {
		t.Fatalf("alice sees %v, want only her own event", got)
	}
	if got := collect(t, bob, opts); len(got) != 1 || got[0].IdentityID != "bob" {
		t.Fatalf("bob sees %v, want only his own event", got)
	}
	if got := collect(t, admin, opts); len(got) != 2 {
		t.Fatalf("events:admin sees %d events, want 2", len(got))
	}
}

// listen runs a following listener and sends what it gets to a channel.
func listen(t *testing.T, c *events.Client, o events.ListenOptions) <-chan events.Envelope {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan events.Envelope, 1000)
	connected := make(chan struct{})
	var once sync.Once
	o.OnConnect = func() { once.Do(func() { close(connected) }) }
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Listen(ctx, o, func(_ context.Context, env events.Envelope) error {
			ch <- env
			return nil
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-connected:
	case <-time.After(30 * time.Second):
		t.Fatal("listener did not connect")
	}
	return ch
}

func TestBroadcastVersusUnicastOverHTTP(t *testing.T) {
	b := startBus(t)
	svc := client(t, b, "svc", serviceScopes...)
	name := "bus.llm.completions.request"
	bc1 := listen(t, svc, events.ListenOptions{Names: []string{name}})
	bc2 := listen(t, svc, events.ListenOptions{Names: []string{name}})
	u1 := listen(t, svc, events.ListenOptions{Names: []string{name}, Delivery: events.Unicast, Group: "g", Consumer: "c1"})
	u2 := listen(t, svc, events.ListenOptions{Names: []string{name}, Delivery: events.Unicast, Group: "g", Consumer: "c2"})
	other := listen(t, svc, events.ListenOptions{Names: []string{name}, Delivery: events.Unicast, Group: "other", Consumer: "c1"})
	const n = 50
	for i := range n {
		if _, err := svc.PublishJSON(context.Background(), name, fmt.Sprint(i), i); err != nil {
			t.Fatal(err)
		}
	}
	for i, ch := range []<-chan events.Envelope{bc1, bc2, other} {
		for k := range n {
			if env := next(t, ch); env.CorrelationID != fmt.Sprint(k) {
				t.Fatalf("listener %d: event %d is %s", i, k, env.CorrelationID)
			}
		}
	}
	seen := map[string]int{}
	for range n {
		select {
		case env := <-u1:
			seen[env.CorrelationID]++
		case env := <-u2:
			seen[env.CorrelationID]++
		case <-time.After(30 * time.Second):
			t.Fatalf("unicast group got %d events, want %d", len(seen), n)
		}
	}
	quiet(t, u1, 200*time.Millisecond, "a delivery beyond the group's events")
	quiet(t, u2, 0, "a delivery beyond the group's events")
	if len(seen) != n {
		t.Fatalf("unicast group got %d distinct events, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Fatalf("event %s delivered %d times within one group", id, k)
		}
	}
}

// next waits for the next event of ch (failing after 10s).
func next(t *testing.T, ch <-chan events.Envelope) events.Envelope {
	t.Helper()
	select {
	case env := <-ch:
		return env
	case <-time.After(30 * time.Second):
		t.Fatal("no event within 30s")
		return events.Envelope{}
	}
}

// quiet asserts that nothing arrives on ch within d (0: nothing is
// waiting on ch now).
func quiet(t *testing.T, ch <-chan events.Envelope, d time.Duration, why string) {
	t.Helper()
	if d <= 0 {
		select {
		case env := <-ch:
			t.Fatalf("%s: got %s (%s)", why, env.ID, env.CorrelationID)
		default:
		}
		return
	}
	select {
	case env := <-ch:
		t.Fatalf("%s: got %s (%s)", why, env.ID, env.CorrelationID)
	case <-time.After(d):
	}
}

// TestAckPrefetchAndRedelivery: prefetch bounds a stream's unacknowledged
// deliveries and each acknowledgement lets one more through; deliveries a
// consumer dies holding come back to another consumer of the group after
// their visibility timeout, acknowledged ones never. The consumers that
// must not see a redelivery during the test hold their deliveries for an
// hour, so no quiet window races a visibility timeout.
func TestAckPrefetchAndRedelivery(t *testing.T) {
	b := startBus(t)
	svc := client(t, b, "svc", serviceScopes...)
	name := "bus.llm.responses.request"
	opts := events.ListenOptions{Names: []string{name}, Delivery: events.Unicast, Group: "g", Consumer: "slow", Ack: true, Prefetch: 2, Visibility: time.Hour}
	slow := listen(t, svc, opts)
	for i := range 5 {
		if _, err := svc.PublishJSON(context.Background(), name, fmt.Sprint(i), i); err != nil {
			t.Fatal(err)
		}
	}
	// prefetch=2: only two deliveries are outstanding before any ack.
	first := []events.Envelope{next(t, slow), next(t, slow)}
	quiet(t, slow, 300*time.Millisecond, "a third delivery before any ack, beyond prefetch=2")
	if n, err := svc.Ack(context.Background(), name, "g", "slow", first[0].ID); err != nil || n != 1 {
		t.Fatalf("ack: %d %v", n, err)
	}
	if env := next(t, slow); env.CorrelationID != "2" {
		t.Fatalf("after one ack got %s, want event 2", env.CorrelationID)
	}
	quiet(t, slow, 300*time.Millisecond, "a second delivery after one ack")

	// A consumer that dies holding events 3 and 4: they come back to a
	// second consumer after its short visibility timeout.
	mortalOpts := opts
	mortalOpts.Consumer, mortalOpts.Prefetch, mortalOpts.Visibility = "mortal", 10, 500*time.Millisecond
	mortalCtx, die := context.WithCancel(context.Background())
	held := make(chan events.Envelope, 10)
	mortalDone := make(chan error, 1)
	go func() {
		mortalDone <- svc.Listen(mortalCtx, mortalOpts, func(_ context.Context, env events.Envelope) error { held <- env; return nil })
	}()
	got := map[string]bool{next(t, held).CorrelationID: true, next(t, held).CorrelationID: true}
	die()
	<-mortalDone
	if !got["3"] || !got["4"] {
		t.Fatalf("the second consumer took %v, want events 3 and 4", got)
	}
	rescuerOpts := opts
	rescuerOpts.Consumer, rescuerOpts.Prefetch = "rescuer", 10
	rescuer := listen(t, svc, rescuerOpts)
	again := map[string]int{}
	for range 2 {
		env := next(t, rescuer)
		again[env.CorrelationID] = env.Deliveries
	}
	if again["3"] != 2 || again["4"] != 2 {
		t.Fatalf("rescuer got %v (correlation id: deliveries), want 3 and 4 on their second delivery", again)
	}
	// Event 0 was acknowledged and 1, 2 are held for an hour: nothing else
	// comes.
	quiet(t, rescuer, 300*time.Millisecond, "an acknowledged or still-held event was redelivered")
}

func TestListenerReconnectsAfterRestart(t *testing.T) {
	// A listener with retry enabled survives the Events API going away and
	// coming back on the same address.
	b := startBus(t)
	addr := strings.TrimPrefix(b.URL, "http://")
	c, err := b.Client("svc", []string{"events:send", "events:listen", "events:admin"}, events.WithRetry(events.RetryPolicy{Enabled: true, Min: 20 * time.Millisecond, Max: 100 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	connects := make(chan struct{}, 10)
	got := make(chan events.Envelope, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- c.Listen(ctx, events.ListenOptions{Names: []string{"example.ping"}, OnConnect: func() { connects <- struct{}{} }},
			func(_ context.Context, env events.Envelope) error { got <- env; return nil })
	}()
	defer func() { cancel(); <-done }()
	<-connects
	secret := b.Secret()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b2, err := localbus.Start(localbus.Options{Addr: addr, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	select {
	case <-connects:
	case <-time.After(30 * time.Second):
		t.Fatal("listener did not reconnect")
	}
	if _, err := c.PublishJSON(context.Background(), "example.ping", "after", 1); err != nil {
		t.Fatal(err)
	}
	select {
	case env := <-got:
		if env.CorrelationID != "after" {
			t.Fatalf("got %+v", env)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no event after reconnect")
	}
}

func TestListenRelaysPermanentErrors(t *testing.T) {
	b := startBus(t)
	c, err := events.NewClient(b.URL, events.WithToken(token(t, b, "u", "events:listen")))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Listen(context.Background(), events.ListenOptions{Names: []string{"bus.llm.chat.completions.request"}}, func(context.Context, events.Envelope) error { return nil })
	var apiErr *events.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != 403 || apiErr.Code != "forbidden" || !strings.Contains(apiErr.Message, "llm:proxy") {
		t.Fatalf("got %v, want the 403 forbidden answer naming llm:proxy", err)
	}
}

func TestListenGivesUpWhenUnreachable(t *testing.T) {
	c, err := events.NewClient("http://127.0.0.1:1", events.WithRetry(events.RetryPolicy{Enabled: true, Min: 10 * time.Millisecond, Max: 20 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	err = c.Listen(context.Background(), events.ListenOptions{Names: []string{"example.ping"}, ConnectTimeout: 200 * time.Millisecond}, func(context.Context, events.Envelope) error { return nil })
	if !errors.Is(err, events.ErrUnreachable) {
		t.Fatalf("got %v, want ErrUnreachable", err)
	}
	noRetry, _ := events.NewClient("http://127.0.0.1:1", events.WithRetry(events.RetryPolicy{}))
	err = noRetry.Listen(context.Background(), events.ListenOptions{Names: []string{"example.ping"}}, func(context.Context, events.Envelope) error { return nil })
	if err == nil || errors.Is(err, events.ErrUnreachable) {
		t.Fatalf("without retry: got %v, want the connection error at once", err)
	}
}

func TestPublishTooLarge(t *testing.T) {
	b := startBus(t)
	big := `{"name":"example.ping","payload":"` + strings.Repeat("x", 9<<20) + `"}`
	r := do(t, "POST", b.URL+"/api/v1/events", token(t, b, "u", "events:send"), big)
	if r.status != http.StatusRequestEntityTooLarge || r.body["error"] != "payload_too_large" {
		t.Fatalf("got %d %v", r.status, r.body)
	}
}

// TestImmediateAcksReleasePrefetch: a consumer that acknowledges each
// delivery at once must never stall on its prefetch window, even when the
// acknowledgement reaches the server before it has finished writing the
// delivery (a leaked credit would block until the one-hour visibility).
func TestImmediateAcksReleasePrefetch(t *testing.T) {
	b := startBus(t)
	svc := client(t, b, "svc", serviceScopes...)
	name := "bus.llm.chat.completions.request"
	const n = 300
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got := 0
	connected := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- svc.Listen(ctx, events.ListenOptions{
			Names: []string{name}, Delivery: events.Unicast, Group: "g", Consumer: "fast",
			Ack: true, Prefetch: 1, Visibility: time.Hour, OnConnect: func() { close(connected) },
		}, func(ctx context.Context, env events.Envelope) error {
			if _, err := svc.Ack(ctx, name, "g", "fast", env.ID); err != nil {
				return err
			}
			if got++; got == n {
				cancel()
			}
			return nil
		})
	}()
	<-connected
	for i := range n {
		if _, err := svc.PublishJSON(context.Background(), name, fmt.Sprint(i), i); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("received %d of %d events: the prefetch window stalled", got, n)
	}
}
