package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// silentServer answers every stream with 200 and the events of script,
// then stays silent (no keep-alive) until the client goes away, as a
// connection that died without a reset looks to the client.
func silentServer(t *testing.T, script ...string) (*httptest.Server, <-chan struct{}) {
	t.Helper()
	conns := make(chan struct{}, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		for _, line := range script {
			_, _ = io.WriteString(w, line+"\n")
		}
		w.(http.Flusher).Flush()
		conns <- struct{}{}
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv, conns
}

func envelope(id string) string {
	b, _ := json.Marshal(events.Envelope{ID: id, Name: "example.ping", Payload: json.RawMessage(`{}`)})
	return string(b)
}

// TestListenDetectsSilentConnection: a stream that delivers nothing, not
// even keep-alive lines, for its idle timeout is closed as dead;
// OnDisconnect reports ErrStreamIdle and Listen reconnects.
func TestListenDetectsSilentConnection(t *testing.T) {
	srv, conns := silentServer(t)
	c, err := events.NewClient(srv.URL, events.WithRetry(events.RetryPolicy{Enabled: true, Min: 10 * time.Millisecond, Max: 20 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	disconnected := make(chan error, 10)
	done := make(chan error, 1)
	go func() {
		done <- c.Listen(ctx, events.ListenOptions{Names: []string{"example.ping"}, IdleTimeout: 200 * time.Millisecond,
			OnDisconnect: func(err error) { disconnected <- err }},
			func(context.Context, events.Envelope) error { return nil })
	}()
	defer func() { cancel(); <-done }()
	select {
	case err := <-disconnected:
		if !errors.Is(err, events.ErrStreamIdle) {
			t.Fatalf("OnDisconnect got %v, want ErrStreamIdle", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a silent stream was never noticed")
	}
	for i := range 2 { // the first connection, then the reconnection
		select {
		case <-conns:
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %d never came", i+1)
		}
	}
}

// TestIdleTimeoutIgnoresSlowHandlers: the idle timeout measures the
// connection, not the consumer: a handler that takes longer than it does
// not break the stream.
func TestIdleTimeoutIgnoresSlowHandlers(t *testing.T) {
	const idle = 100 * time.Millisecond
	srv, _ := silentServer(t, envelope("evt_1"), envelope("evt_2"))
	c, err := events.NewClient(srv.URL, events.WithRetry(events.RetryPolicy{}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	var got []string
	err = c.Listen(ctx, events.ListenOptions{Names: []string{"example.ping"}, IdleTimeout: idle,
		OnDisconnect: func(err error) { t.Errorf("disconnected: %v", err) }},
		func(_ context.Context, env events.Envelope) error {
			got = append(got, env.ID)
			if len(got) == 1 {
				time.Sleep(5 * idle) // a slow consumer, not a dead connection
			} else {
				cancel()
			}
			return nil
		})
	if err != nil || strings.Join(got, ",") != "evt_1,evt_2" {
		t.Fatalf("Listen: %v, got %v; want both events on one connection", err, got)
	}
}

// TestOpenTimesOutWithoutHeaders: the idle timeout covers the wait for
// the answer's headers too.
func TestOpenTimesOutWithoutHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }))
	defer srv.Close()
	c, err := events.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	_, err = c.Open(context.Background(), events.ListenOptions{Names: []string{"example.ping"}, IdleTimeout: 100 * time.Millisecond})
	if !errors.Is(err, events.ErrStreamIdle) {
		t.Fatalf("Open: %v, want ErrStreamIdle", err)
	}
}

// TestAckNamesTheConsumer: the acknowledgement body carries the consumer
// that holds the deliveries.
func TestAckNamesTheConsumer(t *testing.T) {
	var (
		mu   sync.Mutex
		body map[string]any
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		_ = json.NewDecoder(r.Body).Decode(&body)
		_, _ = io.WriteString(w, `{"acknowledged":2}`)
	}))
	defer srv.Close()
	c, err := events.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	n, err := c.Ack(context.Background(), "example.ping", "g", "w1", "evt_1", "evt_2")
	mu.Lock()
	defer mu.Unlock()
	if err != nil || n != 2 || body["name"] != "example.ping" || body["group"] != "g" || body["consumer"] != "w1" || fmt.Sprint(body["ids"]) != "[evt_1 evt_2]" {
		t.Fatalf("Ack: %d %v, body %v", n, err, body)
	}
}

func TestDeadLetterName(t *testing.T) {
	for _, op := range llmapi.AllOperations() {
		name := op.RequestEvent()
		dead := events.DeadLetterName(name)
		if dead != name+".dead" {
			t.Errorf("DeadLetterName(%q) = %q", name, dead)
		}
		if err := events.ValidateName(dead); err != nil {
			t.Errorf("DeadLetterName(%q) = %q is not a valid name: %v", name, dead, err)
		}
	}
	if err := events.ValidateName(events.DeadLetterName(strings.Repeat("a", 195))); err != nil {
		t.Errorf("a 195-byte name's dead letter: %v", err)
	}
}
