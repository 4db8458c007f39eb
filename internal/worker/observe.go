package worker

import (
	"context"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/busdk/bus-integration-codex/internal/tracing"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// This file holds the worker's metrics and spans (Config.Metrics,
// Config.Tracer): a delivered request is a "worker.execute" span that
// continues the traceparent of its request event, the provider's spans
// are its children (through the request's context), and its response
// event carries the span's traceparent; the request is counted and timed
// by operation, model and status, with its tokens, when it is answered.

// observation is one delivered request's span and metrics.
type observation struct {
	w       *Worker
	span    trace.Span
	op      llmapi.Operation
	model   string
	taken   time.Time
	counted bool
}

// observe starts the span of a delivered request, continuing the
// traceparent its event carries, and counts it in flight. The returned
// context carries the span and nothing else (no deadline): the request's
// own context derives from it. end finishes it.
func (w *Worker) observe(env events.Envelope, req *llmapi.ExecutionEventRequest, op llmapi.Operation, taken time.Time) (context.Context, *observation) {
	tracer := w.cfg.Tracer
	if tracer == nil {
		tracer = noop.NewTracerProvider().Tracer("")
	}
	ctx := tracing.FromTraceParent(context.Background(), req.TraceParent)
	ctx, span := tracer.Start(ctx, "worker.execute", trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(taken),
		trace.WithAttributes(
			attribute.String("messaging.system", "bus"),
			attribute.String("messaging.destination.name", env.Name),
			attribute.String("messaging.message.id", env.ID),
			attribute.Int("bus.deliveries", env.Deliveries),
			attribute.String("llm.request_id", req.RequestID),
			attribute.String("llm.operation", string(op)),
			attribute.String("llm.model", req.Model),
		))
	o := &observation{w: w, span: span, op: op, model: req.Model, taken: taken}
	if m := w.cfg.Metrics; m != nil {
		m.InFlight.WithLabelValues(string(op)).Inc()
	}
	return ctx, o
}

// answer is called with the response before it is published: resp gets
// the span's traceparent, and the request is counted with the status and
// tokens of its first answer (a response replaced because it was too
// large for the Events API is not counted again).
func (o *observation) answer(resp *llmapi.ExecutionEventResponse) {
	resp.TraceParent = tracing.TraceParent(trace.ContextWithSpan(context.Background(), o.span))
	if o.counted {
		return
	}
	o.counted = true
	o.span.SetAttributes(attribute.Int("http.response.status_code", resp.StatusCode))
	if resp.StatusCode >= http.StatusInternalServerError {
		o.span.SetStatus(codes.Error, http.StatusText(resp.StatusCode))
	}
	if m := o.w.cfg.Metrics; m != nil {
		m.Observe(o.op, o.model, resp.StatusCode, time.Since(o.taken).Seconds(), resp.Usage)
	}
}

// end ends the span and the in-flight count, once the request is answered
// and acknowledged (or left to be redelivered).
func (o *observation) end() {
	if m := o.w.cfg.Metrics; m != nil {
		m.InFlight.WithLabelValues(string(o.op)).Dec()
	}
	o.span.End()
}

// reportPaused sets the paused gauges: usage_limit while the provider's
// login is exhausted, auth while the Events API refuses the token.
func (w *Worker) reportPaused() {
	m := w.cfg.Metrics
	if m == nil {
		return
	}
	_, refused := w.auth.state()
	for reason, paused := range map[string]bool{"usage_limit": !w.pause.paused().IsZero(), "auth": refused != nil} {
		v := 0.0
		if paused {
			v = 1
		}
		m.Paused.WithLabelValues(reason).Set(v)
	}
}

// countDeadLetter counts a request moved to its dead-letter name.
func (w *Worker) countDeadLetter() {
	if m := w.cfg.Metrics; m != nil {
		m.DeadLettered.Inc()
	}
}
