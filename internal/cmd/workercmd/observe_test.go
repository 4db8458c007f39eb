package workercmd_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/correlator"
	"github.com/busdk/bus-integration-codex/internal/testutil/scrape"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

// TestMetricsAndTraces: --metrics-addr serves GET /metrics, where an
// answered request moves the counters; the request's traceparent is
// continued: the response carries the worker span's, its log line the
// trace id, and the span reaches the OTLP collector of
// OTEL_EXPORTER_OTLP_ENDPOINT by the time the worker has stopped.
func TestMetricsAndTraces(t *testing.T) {
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	exported := make(chan []byte, 10)
	collector := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/v1/traces" {
			exported <- b
		}
	}))
	t.Cleanup(collector.Close)
	t.Cleanup(func() { // after the worker's cleanup has stopped it
		select {
		case b := <-exported:
			if !bytes.Contains(b, []byte("worker.execute")) || !bytes.Contains(b, []byte("bus-integration-codex")) {
				t.Error("the exported spans lack the worker's")
			}
		default:
			t.Error("no span reached the OTLP collector")
		}
	})
	b := startBus(t)
	tok, err := b.Token("worker", serviceScopes...)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := testproc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	stderr := startCommand(t, map[string]string{"BUS_API_TOKEN": tok, "OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL},
		"--provider", "static", "--events-url", b.URL, "--consumer", "w1", "--metrics-addr", addr)
	before := scrape.Get(t, http.DefaultClient, "http://"+addr+"/metrics")

	client, err := b.Client("frontdoor", serviceScopes)
	if err != nil {
		t.Fatal(err)
	}
	r := correlator.StartRequester(client, correlator.Options{})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := r.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	req := chat("three words here")
	req.TraceParent = "00-" + traceID + "-00f067aa0ba902b7-01"
	res, err := r.Do(ctx, req, correlator.DoOptions{})
	if err != nil || res.Response.StatusCode != http.StatusOK {
		t.Fatalf("request: %v %+v", err, res)
	}
	if tp := res.Response.TraceParent; !strings.HasPrefix(tp, "00-"+traceID+"-") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Errorf("response traceparent %q: not the worker's span in the request's trace", tp)
	}

	after := scrape.Get(t, http.DefaultClient, "http://"+addr+"/metrics")
	labels := []string{"operation=chat.completions", "model=codex-chatgpt"}
	for key, want := range map[string]float64{
		scrape.Key("bus_worker_requests_total", append(labels, "status=200")...):    1,
		scrape.Key("bus_worker_tokens_total", "model=codex-chatgpt", "kind=input"):  3, // the static provider counts words
		scrape.Key("bus_worker_tokens_total", "model=codex-chatgpt", "kind=output"): 4,
		scrape.Key("bus_worker_dead_lettered_total"):                                0,
	} {
		if got := after[key] - before[key]; got != want {
			t.Errorf("%s moved by %v, want %v", key, got, want)
		}
	}
	deadline := time.Now().Add(waitLimit)
	for !strings.Contains(stderr.String(), "trace_id="+traceID) {
		if time.Now().After(deadline) {
			t.Fatalf("the request's log line lacks its trace id: %s", stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
