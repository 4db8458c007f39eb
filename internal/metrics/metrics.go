// Package metrics defines the Prometheus metrics of the services (the REST
// front door, the Events API, the worker and its Codex pool) with the
// official Prometheus Go client, each set registered on a registry of the
// caller's (never the global default one), and serves them in the
// Prometheus text format.
//
// Listen serves them on a listener of their own, for a service whose
// main port is public.
//
// Names follow the Prometheus conventions: a bus_ prefix per subsystem
// (bus_llm_ for the front door and the worker, bus_events_ for the Events
// API, bus_codex_ for the App Server pool and the login), base units
// (seconds, tokens), _total for counters. Label values are bounded: model
// ids come from the catalog, event names are collapsed to their bus.llm.*
// operation or "other".
//
// It imports only the Prometheus client and pkg/llmapi.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// NewRegistry returns a registry with the Go runtime and process
// collectors, for one service.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg's metrics in the Prometheus text format (GET
// /metrics).
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}

// Listen serves h on addr, on a listener of its own, until stop is
// called; what stops it unexpectedly is logged to log.
func Listen(addr string, h http.Handler, log *slog.Logger) (stop func(), err error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", l.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}

// latencyBuckets cover a model turn: tens of milliseconds to minutes.
func latencyBuckets() []float64 {
	return []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300}
}

// Requests are the request metrics shared by the front door and the
// worker: count, latency and tokens by operation, model and status, and
// requests in flight.
type Requests struct {
	// Total counts answered requests.
	Total *prometheus.CounterVec
	// Duration is the time from receipt to answer.
	Duration *prometheus.HistogramVec
	// InFlight counts requests being served.
	InFlight *prometheus.GaugeVec
	// Tokens counts tokens by kind: input, cached, output, reasoning.
	Tokens *prometheus.CounterVec
}

func newRequests(reg prometheus.Registerer, subsystem, what string) *Requests {
	r := &Requests{
		Total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bus", Subsystem: subsystem, Name: "requests_total",
			Help: what + " answered, by operation, model and HTTP status.",
		}, []string{"operation", "model", "status"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "bus", Subsystem: subsystem, Name: "request_duration_seconds",
			Help: "Time from receiving " + strings.ToLower(what) + " to its answer, by operation, model and HTTP status.", Buckets: latencyBuckets(),
		}, []string{"operation", "model", "status"}),
		InFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "bus", Subsystem: subsystem, Name: "requests_in_flight",
			Help: what + " being served, by operation.",
		}, []string{"operation"}),
		Tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bus", Subsystem: subsystem, Name: "tokens_total",
			Help: "Tokens of answered " + strings.ToLower(what) + " as the model counted them, by model and kind (input, cached, output, reasoning).",
		}, []string{"model", "kind"}),
	}
	reg.MustRegister(r.Total, r.Duration, r.InFlight, r.Tokens)
	return r
}

// Observe records one answered request.
func (r *Requests) Observe(op llmapi.Operation, model string, status int, seconds float64, u *llmapi.Usage) {
	s := strconv.Itoa(status)
	r.Total.WithLabelValues(string(op), model, s).Inc()
	r.Duration.WithLabelValues(string(op), model, s).Observe(seconds)
	if u == nil {
		return
	}
	// Input and output include their cached and reasoning parts; the
	// parts are counted apart as well.
	r.Tokens.WithLabelValues(model, "input").Add(float64(u.PromptTokens))
	r.Tokens.WithLabelValues(model, "cached").Add(float64(u.CachedTokens))
	r.Tokens.WithLabelValues(model, "output").Add(float64(u.CompletionTokens))
	r.Tokens.WithLabelValues(model, "reasoning").Add(float64(u.ReasoningTokens))
}

// FrontDoor are the metrics of the REST front door.
type FrontDoor struct {
	*Requests
	// FirstChunk is the time from receipt to the first stream frame sent.
	FirstChunk *prometheus.HistogramVec
	// Refused counts requests refused before publishing, by reason
	// (rate_limited, forbidden_model, no_worker, unauthenticated, ...).
	Refused *prometheus.CounterVec
}

// NewFrontDoor registers the front door's metrics on reg.
func NewFrontDoor(reg prometheus.Registerer) *FrontDoor {
	f := &FrontDoor{
		Requests: newRequests(reg, "llm", "Requests"),
		FirstChunk: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "bus", Subsystem: "llm", Name: "time_to_first_chunk_seconds",
			Help: "Time from receiving a streaming request to its first frame, by operation and model.", Buckets: latencyBuckets(),
		}, []string{"operation", "model"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bus", Subsystem: "llm", Name: "requests_refused_total",
			Help: "Requests answered by the front door itself without reaching a worker, by reason.",
		}, []string{"reason"}),
	}
	reg.MustRegister(f.FirstChunk, f.Refused)
	return f
}

// Worker are the metrics of a worker.
type Worker struct {
	*Requests
	// DeadLettered counts requests moved to the dead-letter name.
	DeadLettered prometheus.Counter
	// Paused is 1 while the worker takes no requests (its login is
	// exhausted, its token refused), by reason.
	Paused *prometheus.GaugeVec
}

// NewWorker registers the worker's metrics on reg.
func NewWorker(reg prometheus.Registerer) *Worker {
	w := &Worker{
		Requests: newRequests(reg, "worker", "Requests"),
		DeadLettered: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "bus", Subsystem: "worker", Name: "dead_lettered_total",
			Help: "Requests delivered too many times and moved to the dead-letter name.",
		}),
		Paused: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: "bus", Subsystem: "worker", Name: "paused",
			Help: "1 while the worker takes no requests from the bus, by reason (usage_limit, auth).",
		}, []string{"reason"}),
	}
	reg.MustRegister(w.DeadLettered, w.Paused)
	return w
}

// Events are the metrics of the Events API.
type Events struct {
	// Published counts accepted events, by name class.
	Published *prometheus.CounterVec
	// Delivered counts events written to streams, by name class and
	// delivery.
	Delivered *prometheus.CounterVec
	// Redelivered counts deliveries beyond the first of an acknowledged
	// event.
	Redelivered *prometheus.CounterVec
	// Lag is the time from publish to delivery.
	Lag *prometheus.HistogramVec
	// Streams counts open streams.
	Streams prometheus.Gauge
	// Pending counts acknowledged-mode deliveries not acknowledged yet.
	Pending prometheus.Gauge
	// Acked counts acknowledgements accepted.
	Acked prometheus.Counter
}

// NewEvents registers the Events API's metrics on reg.
func NewEvents(reg prometheus.Registerer) *Events {
	e := &Events{
		Published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bus", Subsystem: "events", Name: "published_total",
			Help: "Events accepted, by name class (the bus.llm.* kind, or other).",
		}, []string{"name"}),
		Delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bus", Subsystem: "events", Name: "delivered_total",
			Help: "Events written to streams, by name class and delivery (broadcast, unicast).",
		}, []string{"name", "delivery"}),
		Redelivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "bus", Subsystem: "events", Name: "redelivered_total",
			Help: "Deliveries of acknowledged events beyond the first, by name class.",
		}, []string{"name"}),
		Lag: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "bus", Subsystem: "events", Name: "delivery_lag_seconds",
			Help:    "Time from an event's publish to its delivery on a stream, by name class.",
			Buckets: []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30},
		}, []string{"name"}),
		Streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "bus", Subsystem: "events", Name: "streams_open",
			Help: "Event streams open.",
		}),
		Pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "bus", Subsystem: "events", Name: "pending_deliveries",
			Help: "Acknowledged-mode deliveries handed out by this server and not acknowledged yet.",
		}),
		Acked: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "bus", Subsystem: "events", Name: "acknowledged_total",
			Help: "Deliveries acknowledged.",
		}),
	}
	reg.MustRegister(e.Published, e.Delivered, e.Redelivered, e.Lag, e.Streams, e.Pending, e.Acked)
	return e
}

// NameClass is the label value of an event name: its bus.llm.* kind
// ("bus.llm.chat.completions.request"), or "other" for everything else,
// so callers cannot grow the label set.
func NameClass(name string) string {
	if _, _, err := llmapi.ParseEventName(name); err == nil {
		return name
	}
	return "other"
}
