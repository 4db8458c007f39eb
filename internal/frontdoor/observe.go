package frontdoor

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/busdk/bus-integration-codex/internal/tracing"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// This file holds the front door's metrics and spans: every bus-backed
// request (the execution operations and the stored-response ones) is a
// span continuing the client's traceparent header, with a child span for
// the publish of its request event, whose traceparent the event carries;
// and it is counted, timed and its tokens added once it is answered.

// observation is one bus-backed request's span and metrics.
type observation struct {
	s     *Server
	op    llmapi.Operation
	start time.Time
	w     *statusWriter
	span  trace.Span

	// model is the catalog id once the request named a known one.
	model string
	// x is the exchange once the request is in flight.
	x *exchange
	// published: the request event was accepted; noWorker: but no
	// worker group took it.
	published, noWorker bool
	// usage is the response event's, when one arrived.
	usage *llmapi.Usage
	// firstFrame: a stream frame went out; answered: when the client
	// had its whole answer.
	firstFrame bool
	answered   time.Time
}

// observe starts observing a request of op: its span (continuing the
// client's traceparent) is in the returned request's context, and the
// returned writer records the status. end finishes it.
func (s *Server) observe(w http.ResponseWriter, r *http.Request, op llmapi.Operation, start time.Time) (*observation, http.ResponseWriter, *http.Request) {
	ctx := tracing.FromHeader(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := s.cfg.Tracer.Start(ctx, "frontdoor.request", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(start), trace.WithAttributes(
			attribute.String("http.request.method", r.Method),
			attribute.String("http.route", op.RESTPath()),
			attribute.String("llm.operation", string(op)),
		))
	o := &observation{s: s, op: op, start: start, w: &statusWriter{ResponseWriter: w}, span: span}
	if m := s.cfg.Metrics; m != nil {
		m.InFlight.WithLabelValues(string(op)).Inc()
	}
	return o, o.w, r.WithContext(ctx)
}

// end records the answered request and ends its span.
func (o *observation) end() {
	status := o.w.status
	if o.x != nil && o.x.status != 0 {
		status = o.x.status // 499 when the client went away
	}
	if status == 0 {
		status = http.StatusOK // net/http answers 200 for a handler that wrote nothing
	}
	done := o.answered
	if done.IsZero() {
		done = time.Now()
	}
	if m := o.s.cfg.Metrics; m != nil {
		m.InFlight.WithLabelValues(string(o.op)).Dec()
		m.Observe(o.op, o.model, status, done.Sub(o.start).Seconds(), o.usage)
		switch {
		case o.noWorker:
			m.Refused.WithLabelValues("no_worker").Inc()
		case !o.published && status >= 400:
			m.Refused.WithLabelValues(refusal(status)).Inc()
		}
	}
	o.span.SetAttributes(attribute.Int("http.response.status_code", status))
	if o.model != "" {
		o.span.SetAttributes(attribute.String("llm.model", o.model))
	}
	if o.x != nil {
		o.span.SetAttributes(attribute.String("llm.request_id", o.x.id))
	}
	if status >= 500 {
		o.span.SetStatus(codes.Error, http.StatusText(status))
	}
	o.span.End()
}

// refusal is the reason label of a request answered without publishing.
func refusal(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusForbidden:
		return "forbidden"
	case http.StatusNotFound:
		return "not_found"
	case http.StatusRequestEntityTooLarge:
		return "too_large"
	case http.StatusTooManyRequests:
		return "rate_limited"
	case http.StatusServiceUnavailable:
		return "unavailable"
	case http.StatusGatewayTimeout:
		return "timeout"
	case 499:
		return "client_closed"
	}
	if status < 500 {
		return "invalid_request"
	}
	return "error"
}

// publishSpan starts the span of publishing x's request event; the
// request event carries its traceparent. end ends it with the outcome.
func (x *exchange) publishSpan(ctx context.Context) (context.Context, func(events.Accepted, error)) {
	name := x.op.RequestEvent()
	ctx, span := x.s.cfg.Tracer.Start(ctx, "frontdoor.publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "bus"), attribute.String("messaging.destination.name", name),
			attribute.String("llm.request_id", x.id)))
	return ctx, func(acc events.Accepted, err error) {
		defer span.End()
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
			return
		}
		x.obs.published = true
		span.SetAttributes(attribute.String("messaging.message.id", acc.ID))
		if acc.Groups != nil {
			span.SetAttributes(attribute.Int("bus.groups", *acc.Groups))
			x.obs.noWorker = *acc.Groups == 0
		}
	}
}

// frameSent records the first stream frame of x.
func (x *exchange) frameSent() {
	o := x.obs
	if o.firstFrame {
		return
	}
	o.firstFrame = true
	if m := x.s.cfg.Metrics; m != nil {
		m.FirstChunk.WithLabelValues(string(x.op), o.model).Observe(time.Since(o.start).Seconds())
	}
	o.span.AddEvent("first frame")
}

// statusWriter records the status of an answer. ResponseController
// reaches the connection through Unwrap.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap returns the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// unwrap returns the writer net/http gave the handler.
func unwrap(w http.ResponseWriter) http.ResponseWriter {
	if sw, ok := w.(*statusWriter); ok {
		return sw.ResponseWriter
	}
	return w
}
