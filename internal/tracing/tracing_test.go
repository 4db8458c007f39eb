package tracing_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/busdk/bus-integration-codex/internal/tracing"
)

func TestTraceParentRoundTripAndLogs(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tr := tracing.WithSyncExporter("test", exp)
	defer tr.Shutdown(context.Background())

	// A client's traceparent continues into our span.
	h := http.Header{}
	h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx := tracing.FromHeader(context.Background(), propagation.HeaderCarrier(h))
	ctx, span := tr.Tracer.Start(ctx, "frontdoor.request")
	tp := tracing.TraceParent(ctx)
	if !strings.HasPrefix(tp, "00-4bf92f3577b34da6a3ce929d0e0e4736-") || strings.Contains(tp, "00f067aa0ba902b7") {
		t.Fatalf("traceparent %q: not the client's trace with our span", tp)
	}
	// Across the bus: the worker continues from the string.
	wctx, wspan := tr.Tracer.Start(tracing.FromTraceParent(context.Background(), tp), "worker.execute")
	var logs bytes.Buffer
	log := slog.New(tracing.LogHandler(slog.NewTextHandler(&logs, nil)))
	log.InfoContext(wctx, "request done")
	wspan.End()
	span.End()

	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	for _, s := range spans {
		if s.SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
			t.Fatalf("span %s in trace %s", s.Name, s.SpanContext.TraceID())
		}
	}
	if spans[0].Name != "worker.execute" || spans[0].Parent.SpanID() != spans[1].SpanContext.SpanID() {
		t.Fatalf("the worker span is not a child of the front door's: %+v", spans[0].Parent)
	}
	if !strings.Contains(logs.String(), "trace_id=4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Fatalf("log without trace_id: %s", logs.String())
	}
	if got := tracing.TraceParent(context.Background()); got != "" {
		t.Fatalf("traceparent without a span: %q", got)
	}
	if ctx := tracing.FromTraceParent(context.Background(), "garbage"); tracing.TraceParent(ctx) != "" {
		t.Fatal("a malformed traceparent was accepted")
	}
}

// Without an endpoint nothing is exported, but spans still get ids, so a
// request's traceparent travels and its logs carry a trace id.
func TestSetupWithoutEndpointMakesIDs(t *testing.T) {
	tr, err := tracing.Setup(context.Background(), func(string) string { return "" }, "svc")
	if err != nil || tr.Exporting {
		t.Fatalf("setup without endpoint: %+v %v", tr, err)
	}
	defer tr.Close(slog.New(slog.DiscardHandler))
	ctx, span := tr.Tracer.Start(context.Background(), "x")
	defer span.End()
	if tp := tracing.TraceParent(ctx); len(tp) != 55 {
		t.Fatalf("no traceparent without an endpoint: %q", tp)
	}
}

// With OTEL_EXPORTER_OTLP_ENDPOINT the spans go to <endpoint>/v1/traces
// by OTLP/HTTP, at the latest when the tracing is closed.
func TestSetupExportsToTheEndpoint(t *testing.T) {
	got := make(chan []byte, 10)
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost && r.URL.Path == "/v1/traces" {
			got <- b
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	env := map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": collector.URL + "/"}
	tr, err := tracing.Setup(context.Background(), func(k string) string { return env[k] }, "bus-test-service")
	if err != nil || !tr.Exporting {
		t.Fatalf("setup with endpoint: %+v %v", tr, err)
	}
	_, span := tr.Tracer.Start(context.Background(), "exported-span")
	span.End()
	tr.Close(slog.New(slog.DiscardHandler))
	select {
	case b := <-got:
		for _, want := range []string{"bus-test-service", "exported-span"} {
			if !bytes.Contains(b, []byte(want)) {
				t.Errorf("the export lacks %q", want)
			}
		}
	default:
		t.Fatal("nothing was exported to the collector")
	}

	for _, bad := range []string{"localhost:4318", "ftp://x", "http://"} {
		if _, err := tracing.Setup(context.Background(), func(k string) string {
			if k == "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" {
				return bad
			}
			return ""
		}, "svc"); err == nil || !strings.Contains(err.Error(), "not an http(s) URL") {
			t.Errorf("endpoint %q: %v", bad, err)
		}
	}
}

// Transport sends the traceparent of the request's context, and nothing
// without one.
func TestTransportSendsTraceParent(t *testing.T) {
	seen := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		seen <- r.Header.Get("traceparent")
	}))
	defer srv.Close()
	c := &http.Client{Transport: tracing.Transport(nil)}
	defer c.CloseIdleConnections()
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, ctx := range []context.Context{tracing.FromTraceParent(context.Background(), tp), context.Background()} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.Header.Get("traceparent") != "" {
			t.Fatal("the caller's request was modified")
		}
	}
	if a, b := <-seen, <-seen; a != tp || b != "" {
		t.Fatalf("traceparent headers %q, %q; want %q, none", a, b, tp)
	}
}
