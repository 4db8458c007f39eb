package eventsapi_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/testutil/scrape"
	"github.com/busdk/bus-integration-codex/internal/tracing"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// TestMetricsAndSpans: GET /metrics (no token needed) counts publishes,
// deliveries with their lag, pending deliveries, a redelivery and the
// acknowledgement; a publish with a traceparent header is a span in the
// publisher's trace, one without makes none.
func TestMetricsAndSpans(t *testing.T) {
	reg := metrics.NewRegistry()
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.WithSyncExporter("bus-api-provider-events", exp)
	defer tr.Shutdown(context.Background())
	b, err := localbus.Start(localbus.Options{Metrics: metrics.NewEvents(reg), MetricsHandler: metrics.Handler(reg), Tracer: tr.Tracer})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	get := func() scrape.Samples { return scrape.Get(t, http.DefaultClient, b.URL+"/metrics") }
	k := scrape.Key
	name := "bus.llm.responses.request"
	class := "name=" + name
	svc := client(t, b, "svc", serviceScopes...)
	s0 := get()

	// A consumer takes the event and dies holding it.
	opts := events.ListenOptions{Names: []string{name}, Delivery: events.Unicast, Group: "g", Consumer: "mortal",
		Ack: true, Prefetch: 10, Visibility: 500 * time.Millisecond}
	mortalCtx, die := context.WithCancel(context.Background())
	held := make(chan events.Envelope, 10)
	connected := make(chan struct{})
	mortalOpts := opts
	mortalOpts.OnConnect = func() { close(connected) }
	mortalDone := make(chan error, 1)
	go func() {
		mortalDone <- svc.Listen(mortalCtx, mortalOpts, func(_ context.Context, env events.Envelope) error { held <- env; return nil })
	}()
	<-connected
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if _, err := svc.PublishJSON(tracing.FromTraceParent(context.Background(), tp), name, "r1", 1); err != nil {
		t.Fatal(err)
	}
	first := next(t, held)
	s1 := get()
	for key, want := range map[string]float64{
		k("bus_events_published_total", class):                       1,
		k("bus_events_delivered_total", class, "delivery=unicast"):   1,
		k("bus_events_delivery_lag_seconds_count", class):            1,
		k("bus_events_pending_deliveries"):                           1,
		k("bus_events_streams_open"):                                 1,
		k("bus_events_redelivered_total", class):                     0,
		k("bus_events_published_total", "name=bus.llm.other.chunk"):  0,
		k("bus_events_delivery_lag_seconds_count", "name=example.x"): 0,
	} {
		if got := s1[key] - s0[key]; got != want {
			t.Errorf("after one delivery %s moved by %v, want %v", key, got, want)
		}
	}
	die()
	<-mortalDone
	deadline := time.Now().Add(30 * time.Second)
	for get()[k("bus_events_pending_deliveries")] != 0 { // the server notices the closed stream
		if time.Now().After(deadline) {
			t.Fatal("the dead consumer's delivery stays pending")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Another consumer gets it again after the visibility timeout, and
	// acknowledges it.
	rescuerOpts := opts
	rescuerOpts.Consumer = "rescuer"
	again := next(t, listen(t, svc, rescuerOpts))
	if again.ID != first.ID || again.Deliveries != 2 {
		t.Fatalf("redelivery %+v of %+v", again, first)
	}
	s2 := get()
	if got := s2[k("bus_events_redelivered_total", class)]; got != 1 {
		t.Errorf("redelivered %v, want 1", got)
	}
	if got := s2[k("bus_events_pending_deliveries")]; got != 1 {
		t.Errorf("pending %v while the rescuer holds it, want 1", got)
	}
	if n, err := svc.Ack(context.Background(), name, "g", "rescuer", again.ID); err != nil || n != 1 {
		t.Fatalf("ack: %d %v", n, err)
	}
	s3 := get()
	if s3[k("bus_events_pending_deliveries")] != 0 || s3[k("bus_events_acknowledged_total")]-s0[k("bus_events_acknowledged_total")] != 1 {
		t.Errorf("after the ack: pending %v, acknowledged %v", s3[k("bus_events_pending_deliveries")], s3[k("bus_events_acknowledged_total")])
	}

	// One span: the traced publish, in the publisher's trace. The
	// untraced one made none.
	if _, err := svc.PublishJSON(context.Background(), name, "r2", 2); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("%d spans, want the traced publish only", len(spans))
	}
	s := spans[0]
	if s.Name != "events.publish" || s.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || s.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Fatalf("span %s in trace %s, parent %s", s.Name, s.SpanContext.TraceID(), s.Parent.SpanID())
	}
}
