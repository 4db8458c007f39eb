package tracing_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
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

func TestSetupIsOffWithoutEndpoint(t *testing.T) {
	tr, err := tracing.Setup(context.Background(), func(string) string { return "" }, "svc")
	if err != nil || tr.Exporting {
		t.Fatalf("setup without endpoint: %+v %v", tr, err)
	}
	tr2, err := tracing.Setup(context.Background(), func(k string) string {
		if k == "OTEL_EXPORTER_OTLP_ENDPOINT" {
			return "http://127.0.0.1:4318"
		}
		return ""
	}, "svc")
	if err != nil || !tr2.Exporting {
		t.Fatalf("setup with endpoint: %+v %v", tr2, err)
	}
	_ = tr2.Shutdown(context.Background())
}
