package scaleout_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

const (
	requests      = 300
	clients       = 24
	workerTimeout = 3 * time.Second
	// visibility is the acknowledgement deadline the worker asks for:
	// its --timeout plus the worker's fixed 10s margin. A request held by
	// a dead worker is redelivered no sooner than this after delivery.
	visibility = workerTimeout + 10*time.Second
	// frontTimeout bounds each request at the front door; it leaves room
	// for a redelivery.
	frontTimeout  = 60 * time.Second
	clientTimeout = frontTimeout + 30*time.Second
	group         = "scaleout"
)

// TestScaleOut runs the LLM path with real processes on a shared backend:
// two Events API replicas (A and B), three workers in one group (w1 on A,
// w2 and w3 only on B), and a front door on A. 300 chat completions go
// through the front door while w1 is frozen and then killed with SIGKILL
// holding deliveries; every request must still get exactly one answer, its
// own.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real processes; skipped with -short")
	}
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		addr := redistest.Start(t)
		runScaleOut(t, "redis", []string{"BUS_EVENTS_REDIS_ADDR=" + addr, "BUS_EVENTS_REDIS_PREFIX=scaleout:"})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		dsn := pgtest.Start(t)
		runScaleOut(t, "postgres", []string{"BUS_EVENTS_POSTGRES_DSN=" + dsn})
	})
}

// result is the outcome of one HTTP request.
type result struct {
	status    int
	requestID string // X-Request-Id: the bus correlation id
	content   string
	objectID  string
	latency   time.Duration
	err       error
}

func runScaleOut(t *testing.T, backend string, backendEnv []string) {
	c := newCluster(t, binaries(t))

	// The multi-host token split (docs/SCALING.md): services carry
	// bus:service, callers only llm:proxy, and the Events API lists no
	// service subjects.
	serviceToken := c.token("scaleout-service", llmapi.Scope+" "+auth.ScopeService)
	callerToken := c.token("scaleout-caller", llmapi.Scope)
	eventsEnv := append([]string{auth.EnvServiceSubjects + "="}, backendEnv...)

	// Two replicas on the one backend.
	_, replicaA := c.startHTTP("events-a", "bus-api-provider-events", eventsEnv, "--events-backend", backend, "--log-level", "info")
	_, replicaB := c.startHTTP("events-b", "bus-api-provider-events", eventsEnv, "--events-backend", backend, "--log-level", "info")

	// Three workers in one group: w1 on A, w2 and w3 only on B.
	workerEnv := []string{"BUS_API_TOKEN=" + serviceToken}
	startWorker := func(consumer, eventsURL string) *proc {
		return c.start(consumer, "bus-integration-codex", workerEnv,
			"--provider", "static", "--events-url", eventsURL, "--group", group, "--consumer", consumer,
			"--concurrency", "4", "--timeout", workerTimeout.String(), "--connect-timeout", "30s", "--log-level", "info")
	}
	workers := map[string]*proc{
		"w1": startWorker("w1", replicaA),
		"w2": startWorker("w2", replicaB),
		"w3": startWorker("w3", replicaB),
	}
	onB := map[string]bool{"w2": true, "w3": true}
	// The group exists once a worker subscribed; requests published before
	// would not reach it.
	for _, w := range workers {
		waitLog(t, w, "worker connected", 60*time.Second)
	}

	// The front door on A; /readyz answers 200 only once its response
	// listeners are connected.
	_, front := c.startHTTP("front-door", "bus-api-provider-llm",
		[]string{"BUS_API_TOKEN=" + serviceToken, "BUS_EVENTS_LISTENER_REQUIRED=1"},
		"--execution-backend", "events", "--events-url", replicaA, "--timeout", frontTimeout.String(), "--log-level", "info")

	// A broadcast listener on B sees every response event, whichever
	// replica it was published on.
	mon := startMonitor(t, replicaB, serviceToken)

	// The callers' token is good at the front door only: the Events API
	// refuses it bus.llm.* traffic.
	callerBus, err := events.NewClient(replicaA, events.WithToken(callerToken))
	if err != nil {
		t.Fatal(err)
	}
	_, err = callerBus.PublishJSON(context.Background(), "bus.llm.chat.completions.response", "forged", map[string]any{})
	if apiErr, ok := errors.AsType[*events.APIError](err); !ok || apiErr.Status != http.StatusForbidden {
		t.Fatalf("a caller's forged response: got %v, want 403", err)
	}
	callerBus.CloseIdleConnections()

	var answered atomic.Int64
	results := make([]result, requests)
	jobs := make(chan int)
	loadDone := make(chan struct{})
	httpClient := &http.Client{Timeout: clientTimeout, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	defer httpClient.CloseIdleConnections()
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for n := range jobs {
				results[n] = chat(httpClient, front, callerToken, n)
				answered.Add(1)
			}
		})
	}
	go func() {
		defer close(jobs)
		for n := range requests {
			jobs <- n
		}
	}()
	go func() {
		wg.Wait()
		close(loadDone)
	}()

	// After a third of the answers, freeze w1 (SIGSTOP): its replica keeps
	// handing it deliveries (up to its prefetch) that it can neither answer
	// nor acknowledge. Once more answers came in, kill it with SIGKILL.
	// What it held must be redelivered to w2 and w3 after the visibility
	// timeout.
	victim := workers["w1"]
	killed := false
	if waitAnswered(&answered, requests/3, loadDone) {
		if err := victim.Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("SIGSTOP w1: %v", err)
		}
		frozenAt := answered.Load()
		if waitAnswered(&answered, frozenAt+40, loadDone) {
			if err := victim.Signal(syscall.SIGKILL); err != nil {
				t.Fatalf("SIGKILL w1: %v", err)
			}
			<-victim.Done()
			killed = true
			t.Logf("%s: w1 frozen after %d answers, killed after %d", backend, frozenAt, answered.Load())
		}
	}
	<-loadDone
	if !killed {
		t.Fatalf("the load finished before w1 could be killed (%d answered)", answered.Load())
	}

	// Exactly one answer per request, each its own.
	seenReq := map[string]int{}
	seenObj := map[string]int{}
	slow := map[string]bool{} // request ids answered visibility or later after sending
	failures := 0
	for n, r := range results {
		want := fmt.Sprintf("Echo: request %d", n)
		switch {
		case r.err != nil:
			t.Errorf("request %d: %v", n, r.err)
		case r.status != http.StatusOK:
			t.Errorf("request %d (%s): status %d, content %q", n, r.requestID, r.status, r.content)
		case r.content != want:
			t.Errorf("request %d (%s): answer %q, want %q", n, r.requestID, r.content, want)
		case r.requestID == "" || r.objectID == "":
			t.Errorf("request %d: request id %q, completion id %q", n, r.requestID, r.objectID)
		default:
			if prev, dup := seenReq[r.requestID]; dup {
				t.Errorf("requests %d and %d share the request id %s", prev, n, r.requestID)
			}
			if prev, dup := seenObj[r.objectID]; dup {
				t.Errorf("requests %d and %d got the same completion %s", prev, n, r.objectID)
			}
			seenReq[r.requestID], seenObj[r.objectID] = n, n
			if r.latency >= visibility {
				slow[r.requestID] = true
			}
			continue
		}
		if failures++; failures >= 10 {
			t.Fatalf("too many failed requests")
		}
	}
	if t.Failed() {
		return
	}

	// Who answered, from the workers' "request done" log lines.
	answeredBy := map[string][]string{} // request id -> workers
	perWorker := map[string]int{}
	for name, w := range workers {
		for _, rec := range logRecords(w.output(), "request done") {
			if rec["status"] != "200" {
				t.Errorf("%s logged request %s with status %s", name, rec["request"], rec["status"])
			}
			answeredBy[rec["request"]] = append(answeredBy[rec["request"]], name)
			perWorker[name]++
		}
	}
	onlyB := 0
	for id, n := range seenReq {
		by := answeredBy[id]
		if len(by) == 0 {
			t.Errorf("request %d (%s) answered over HTTP, but no worker logged it done", n, id)
		}
		for _, w := range by {
			if onB[w] {
				onlyB++
				break
			}
		}
	}
	t.Logf("%s: answers per worker (log): %v; HTTP requests answered by a worker on replica B: %d; answered %s or more after sending: %d",
		backend, perWorker, onlyB, visibility, len(slow))

	// Requests published on A reached consumers on B and their responses,
	// published on B, reached the front door's listeners on A.
	if onlyB == 0 {
		t.Errorf("no request was answered by w2 or w3, the workers connected only to replica B")
	}
	// Every response event reached the listener on B, including those
	// published on A.
	byID := mon.wait(seenReq, 30*time.Second)
	dupes := 0
	for id, n := range seenReq {
		switch ws := byID[id]; {
		case len(ws) == 0:
			t.Errorf("request %d (%s): the broadcast listener on replica B saw no response event", n, id)
		case len(ws) > 1:
			dupes++ // legal: a worker may die after publishing, before acknowledging
			t.Logf("request %s: %d response events on the bus (%v); the front door answered once", id, len(ws), ws)
		}
	}
	fromA := 0
	for _, ws := range byID {
		for _, w := range ws {
			if w == "bus-integration-codex/w1" {
				fromA++
			}
		}
	}
	t.Logf("%s: response events seen on B: %d requests, %d with duplicates, %d published by w1 on A", backend, len(byID), dupes, fromA)

	// w1 was frozen while its replica still handed it requests (up to its
	// prefetch), then killed: what it held unacknowledged came back after
	// the visibility timeout, through w2 and w3. A held request shows as an
	// answer that took the visibility timeout or longer (w1 had not
	// answered it), or as a second run by another worker (w1 had answered
	// but not acknowledged it; the front door kept the first answer).
	redelivered := map[string]bool{}
	for id := range seenReq {
		if slow[id] || len(answeredBy[id]) > 1 || len(byID[id]) > 1 {
			redelivered[id] = true
		}
	}
	t.Logf("%s: requests redelivered after w1 died: %d", backend, len(redelivered))
	if len(redelivered) == 0 {
		t.Errorf("no request was redelivered: w1 held no unacknowledged delivery when it was killed, so the redelivery path was not exercised")
	}
	if fromA == 0 && perWorker["w1"] > 0 {
		t.Errorf("w1 (on replica A) answered %d requests, but the listener on B saw none of its response events", perWorker["w1"])
	}
	for name, w := range workers {
		if name != "w1" && w.Exited() {
			t.Errorf("%s exited: %v", name, w.Err())
		}
	}
}

// waitAnswered waits until at least n requests were answered; false when the
// load finished first.
func waitAnswered(answered *atomic.Int64, n int64, done <-chan struct{}) bool {
	for answered.Load() < n {
		select {
		case <-done:
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
	return true
}

// chat sends chat completion request n through the front door.
func chat(client *http.Client, front, token string, n int) result {
	body, _ := json.Marshal(map[string]any{
		"model":    "codex-chatgpt",
		"messages": []map[string]string{{"role": "user", "content": fmt.Sprintf("request %d", n)}},
	})
	req, err := http.NewRequest(http.MethodPost, front+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return result{err: err}
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return result{err: err}
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, requestID: resp.Header.Get("X-Request-Id"), latency: time.Since(start), err: err}
	if err != nil {
		return r
	}
	var doc struct {
		ID      string `json:"id"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Choices) != 1 {
		r.content = string(raw)
		if resp.StatusCode == http.StatusOK {
			r.err = fmt.Errorf("status 200 with a body that is not one chat completion choice: %s", raw)
		}
		return r
	}
	r.content, r.objectID = doc.Choices[0].Message.Content, doc.ID
	return r
}

// monitor records every chat completion response event seen by a broadcast
// listener: correlation id -> the workers that published one.
type monitor struct {
	mu   sync.Mutex
	byID map[string][]string
}

func startMonitor(t *testing.T, eventsURL, token string) *monitor {
	t.Helper()
	client, err := events.NewClient(eventsURL, events.WithToken(token))
	if err != nil {
		t.Fatal(err)
	}
	m := &monitor{byID: map[string][]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	connected := make(chan struct{})
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- client.Listen(ctx, events.ListenOptions{
			Names: []string{llmapi.OpChatCompletions.ResponseEvent()}, Delivery: events.Broadcast,
			ConnectTimeout: 30 * time.Second,
			OnConnect:      func() { once.Do(func() { close(connected) }) },
		}, func(_ context.Context, env events.Envelope) error {
			var resp llmapi.ExecutionEventResponse
			_ = json.Unmarshal(env.Payload, &resp)
			m.mu.Lock()
			m.byID[env.CorrelationID] = append(m.byID[env.CorrelationID], resp.Worker)
			m.mu.Unlock()
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("monitor: %v", err)
		}
		client.CloseIdleConnections()
	})
	select {
	case <-connected:
	case err := <-done:
		t.Fatalf("monitor did not connect: %v", err)
	case <-time.After(40 * time.Second):
		t.Fatal("monitor did not connect")
	}
	return m
}

// wait waits until a response event was seen for every id in want (or limit
// passes) and returns a copy of what was seen.
func (m *monitor) wait(want map[string]int, limit time.Duration) map[string][]string {
	deadline := time.Now().Add(limit)
	for {
		m.mu.Lock()
		missing := 0
		for id := range want {
			if len(m.byID[id]) == 0 {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			out := make(map[string][]string, len(m.byID))
			for id, ws := range m.byID {
				out[id] = append([]string(nil), ws...)
				sort.Strings(out[id])
			}
			m.mu.Unlock()
			return out
		}
		m.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
	}
}
