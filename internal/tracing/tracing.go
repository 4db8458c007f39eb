// Package tracing carries a request's W3C trace context across the bus and
// records OpenTelemetry spans: it sets up the tracer provider of a service
// (spans exported by OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, dropped otherwise — trace ids
// are still made, so the bus events and the logs of one request share
// one), turns the trace context into the traceparent string a bus event
// carries and back, sends it as the traceparent header of outgoing HTTP
// requests (Transport), and adds trace_id and span_id to the log records
// of a traced context.
//
// It imports only the OpenTelemetry API and SDK.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing is a service's tracer and its shutdown.
type Tracing struct {
	// Tracer starts the service's spans.
	Tracer trace.Tracer
	// Provider is the tracer provider.
	Provider trace.TracerProvider
	// Exporting reports whether spans leave the process.
	Exporting bool
	shutdown  func(context.Context) error
}

// Shutdown flushes and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.shutdown == nil {
		return nil
	}
	return t.shutdown(ctx)
}

// ShutdownTimeout bounds the export of the spans left when a service
// stops (Close).
const ShutdownTimeout = 5 * time.Second

// Close flushes the spans not exported yet, within ShutdownTimeout, and
// stops the exporter; a failure is logged to log.
func (t *Tracing) Close(log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := t.Shutdown(ctx); err != nil {
		log.Warn("spans not exported at shutdown", "err", err)
	}
}

// Setup returns the tracing of service: exporting by OTLP/HTTP when the
// standard OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the full URL) or
// OTEL_EXPORTER_OTLP_ENDPOINT (the base URL, /v1/traces added) variable
// is set in getenv; the exporter reads the other OTEL_EXPORTER_OTLP_*
// variables (headers, timeout, TLS) from the process environment itself.
// Otherwise spans go nowhere, but they still get trace and span ids: a
// request's traceparent travels on the bus and its logs carry trace_id
// either way.
func Setup(ctx context.Context, getenv func(string) string, service string) (*Tracing, error) {
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
	if base := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); endpoint == "" && base != "" {
		endpoint = strings.TrimRight(base, "/") + "/v1/traces"
	}
	if endpoint == "" {
		p := sdktrace.NewTracerProvider(sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))))
		return &Tracing{Tracer: p.Tracer(service), Provider: p, shutdown: p.Shutdown}, nil
	}
	if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("tracing: the OTLP endpoint %q is not an http(s) URL", endpoint)
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(endpoint))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	return WithExporter(service, exp), nil
}

// WithExporter returns the tracing of service that sends every span to exp
// (tests use an in-memory exporter).
func WithExporter(service string, exp sdktrace.SpanExporter) *Tracing {
	p := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))),
	)
	return &Tracing{Tracer: p.Tracer(service), Provider: p, Exporting: true, shutdown: p.Shutdown}
}

// WithSyncExporter is WithExporter without batching: every span is
// exported when it ends (for tests that read them at once).
func WithSyncExporter(service string, exp sdktrace.SpanExporter) *Tracing {
	p := sdktrace.NewTracerProvider(
		sdktrace.WithSyncer(exp),
		sdktrace.WithResource(resource.NewSchemaless(semconv.ServiceName(service))),
	)
	return &Tracing{Tracer: p.Tracer(service), Provider: p, Exporting: true, shutdown: p.Shutdown}
}

// traceContext is the W3C Trace Context propagator.
func traceContext() propagation.TraceContext { return propagation.TraceContext{} }

// TraceParent returns the W3C traceparent of ctx's span ("" without one).
func TraceParent(ctx context.Context) string {
	c := propagation.MapCarrier{}
	traceContext().Inject(ctx, c)
	return c.Get("traceparent")
}

// FromTraceParent returns ctx continuing the trace of a W3C traceparent
// ("" or malformed: ctx unchanged).
func FromTraceParent(ctx context.Context, traceparent string) context.Context {
	if traceparent == "" {
		return ctx
	}
	return traceContext().Extract(ctx, propagation.MapCarrier{"traceparent": traceparent})
}

// FromHeader returns ctx continuing the trace of an HTTP request's
// traceparent header, if any.
func FromHeader(ctx context.Context, h propagation.TextMapCarrier) context.Context {
	return traceContext().Extract(ctx, h)
}

// Transport returns base (http.DefaultTransport when nil) sending the
// traceparent of each request's context as its traceparent header, so the
// server's spans continue the caller's trace.
func Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return transport{base}
}

type transport struct{ base http.RoundTripper }

func (t transport) RoundTrip(r *http.Request) (*http.Response, error) {
	tp := TraceParent(r.Context())
	if tp == "" {
		return t.base.RoundTrip(r)
	}
	r = r.Clone(r.Context()) // a RoundTripper must not modify the request
	r.Header.Set("traceparent", tp)
	return t.base.RoundTrip(r)
}

// CloseIdleConnections closes the idle connections of the base transport
// (http.Client.CloseIdleConnections reaches it through this).
func (t transport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// LogHandler wraps h so that records logged with a traced context carry
// trace_id and span_id.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (l logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return l.Handler.Handle(ctx, r)
}

func (l logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return logHandler{l.Handler.WithAttrs(attrs)}
}

func (l logHandler) WithGroup(name string) slog.Handler { return logHandler{l.Handler.WithGroup(name)} }
