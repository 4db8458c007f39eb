package codex

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// This file holds the provider's metrics and spans: the pool, the login's
// rate-limit state and the turn latency on Config.Metrics (read at every
// scrape), and a "codex.turn" span per request, a child of the span in
// the request's context (the worker's), recorded by that span's tracer
// provider.

// tracerName is the instrumentation scope of the provider's spans.
const tracerName = "github.com/busdk/bus-integration-codex/internal/provider/codex"

// busy counts the requests being driven on each App Server process: a
// process with one is busy (a turn held at a tool step waiting for the
// client is not).
type busy struct {
	mu  sync.Mutex
	per map[*appserver.Process]int
}

// enter counts one request driven on th's process until leave is called.
func (b *busy) enter(th *appserver.Thread) (leave func()) {
	proc := th.Process()
	b.mu.Lock()
	if b.per == nil {
		b.per = map[*appserver.Process]int{}
	}
	b.per[proc]++
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if b.per[proc]--; b.per[proc] == 0 {
			delete(b.per, proc)
		}
	}
}

// processes is how many processes are busy.
func (b *busy) processes() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.per)
}

// registerMetrics registers the provider's metrics on Config.Metrics.
func (p *Provider) registerMetrics() {
	if p.cfg.Metrics != nil {
		p.metrics = metrics.NewCodex(p.cfg.Metrics, p.metricsState)
	}
}

// metricsState is the provider's state at scrape time.
func (p *Provider) metricsState() metrics.CodexState {
	st := p.pool.Stats()
	s := metrics.CodexState{
		Processes: p.cfg.Processes, Live: len(p.pool.Processes()), Busy: p.busy.processes(),
		Starts: st.Starts, Restarts: st.Restarts, Retired: st.Retired, LiveThreads: p.LiveThreads(),
	}
	if rl, ok := p.RateLimits(); ok {
		for _, w := range []struct {
			name string
			w    *appserver.RateLimitWindow
		}{{"primary", rl.Primary}, {"secondary", rl.Secondary}} {
			if w.w == nil {
				continue
			}
			lw := metrics.LimitWindow{Name: w.name, UsedPercent: float64(w.w.UsedPercent)}
			if w.w.ResetsAt != nil {
				lw.ResetsAt = time.Unix(*w.w.ResetsAt, 0)
			}
			s.Windows = append(s.Windows, lw)
		}
	}
	if until, ok := p.Exhausted(); ok {
		s.ExhaustedUntil = until
	}
	return s
}

// observeTurn starts observing one request's turn: its span is in the
// returned context; done records the outcome and the latency.
func (p *Provider) observeTurn(ctx context.Context, req *turn.Request) (context.Context, func(*turn.Result, error)) {
	mode := req.Mode
	if mode == "" {
		mode = turn.ModeModel
	}
	start := time.Now()
	tracer := trace.SpanFromContext(ctx).TracerProvider().Tracer(tracerName)
	ctx, span := tracer.Start(ctx, "codex.turn", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("llm.model", req.Model), attribute.String("llm.mode", string(mode))))
	return ctx, func(res *turn.Result, err error) {
		outcome := "ok"
		switch {
		case err != nil:
			outcome = "error"
			span.SetStatus(codes.Error, err.Error())
		case res.Finish == turn.FinishToolCalls:
			outcome = "tool_step"
		}
		if res != nil {
			span.SetAttributes(attribute.Int64("gen_ai.usage.input_tokens", res.Usage.InputTokens),
				attribute.Int64("gen_ai.usage.output_tokens", res.Usage.OutputTokens))
		}
		span.SetAttributes(attribute.String("llm.outcome", outcome))
		span.End()
		if p.metrics != nil {
			p.metrics.TurnDuration.WithLabelValues(string(mode), outcome).Observe(time.Since(start).Seconds())
		}
	}
}
