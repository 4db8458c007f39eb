// Package frontdoor is the OpenAI-compatible REST front door of
// bus-api-provider-llm in events mode.
//
// It authenticates callers with Bus API JWTs, serves the model catalog, and
// turns every execution request (POST /v1/chat/completions, /v1/responses,
// /v1/completions) into a bus.llm.<op>.request event on the Bus Events API.
// The correlated bus.llm.<op>.response event — preceded by
// bus.llm.<op>.chunk events for streaming requests — becomes the HTTP
// answer: a JSON document, or Server-Sent Events in the OpenAI wire format.
//
// One long-lived broadcast listener per response and chunk event name
// serves every in-flight request through a map from request id to waiter;
// events nobody waits for (late, duplicate or foreign ones) and events no
// service published are dropped. A client that goes away, or a request
// that times out, gets a bus.llm.<op>.cancel event published so the worker
// can stop; a request that reached no worker group is answered 503 at once.
//
// Bounds: the caller's token is checked before its body is read; bodies,
// the stream data held for a slow reader, and the time a stream may be
// written are bounded.
//
// Usage and entitlements (usage.go): an execution request is admitted by
// the entitlement Enforcer before it is published; its exact tokens are
// charged before a non-streaming answer goes out (after a stream's last
// frame); and its usage record is queued, never written on the response
// path. GET /v1/usage serves the ledger.
//
// Metrics and traces (observe.go): every bus-backed request is counted
// and timed by operation, model and status, with its tokens, its time to
// the first stream frame and the requests in flight (Config.Metrics,
// served on GET /metrics by Config.MetricsHandler); and it is a span
// (Config.Tracer) continuing the client's W3C traceparent header, with a
// child span for the publish whose traceparent the request event carries
// to the worker. Its log lines carry the trace id.
//
// It imports internal/auth, internal/catalog, internal/correlator, internal/entitlement, internal/metrics, internal/tracing, internal/usage, pkg/events, pkg/llmapi and the OpenTelemetry API; never the worker side (executor, providers).
package frontdoor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/correlator"
	"github.com/busdk/bus-integration-codex/internal/entitlement"
	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/usage"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Defaults of Config.
const (
	// DefaultTimeout bounds how long a request waits for its answer.
	DefaultTimeout = 60 * time.Second
	// DefaultMaxBodyBytes is the largest accepted request body (2 MiB).
	DefaultMaxBodyBytes = 2 << 20
	// DefaultErrorGrace is how long a streaming request whose error
	// response arrived keeps waiting for chunks still in flight.
	DefaultErrorGrace = 100 * time.Millisecond
	// DefaultShutdownTimeout bounds how long shutdown waits for in-flight
	// requests before cancelling them.
	DefaultShutdownTimeout = 30 * time.Second

	// cancelPublishTimeout bounds publishing one cancel event.
	cancelPublishTimeout = 5 * time.Second
	// bodyReadTimeout bounds reading a request body.
	bodyReadTimeout = 60 * time.Second
)

// Config configures a Server.
type Config struct {
	// Events is the Events API client, carrying the service token (which
	// needs llm:proxy). Required.
	Events *events.Client
	// Verifier checks the callers' bearer tokens. Required.
	Verifier *auth.Verifier
	// Catalog lists the public models (catalog.Default() when nil).
	Catalog *catalog.Catalog
	// Usage, when set, receives the usage record of every execution
	// request the front door answers, and GET /v1/usage reads its ledger.
	// Its owner closes it after Serve returns (which writes what is queued).
	Usage *usage.Writer
	// Entitlements, when set, admits every execution request before it is
	// published (403 for a model not allowed, 429 over a limit) and is
	// charged its exact tokens once it is answered.
	Entitlements *entitlement.Enforcer
	// Timeout bounds each execution request (DefaultTimeout when 0). It is
	// also sent to the worker as the request's deadline.
	Timeout time.Duration
	// ListenerRequired makes GET /readyz answer 503 until every response
	// and chunk listener is connected.
	ListenerRequired bool
	// ConnectTimeout bounds how long the listeners retry before their first
	// connection; Serve fails when it passes (0: retry as long as the
	// client's retry policy allows).
	ConnectTimeout time.Duration
	// ErrorGrace is how long a streaming request whose error response has
	// arrived waits for chunks still in flight (DefaultErrorGrace when 0).
	ErrorGrace time.Duration
	// ShutdownTimeout bounds the drain of in-flight requests on shutdown
	// (DefaultShutdownTimeout when 0).
	ShutdownTimeout time.Duration
	// MaxBodyBytes bounds request bodies (DefaultMaxBodyBytes when 0).
	MaxBodyBytes int64
	// StreamBufferBytes bounds the stream data one request holds for a
	// client that reads slowly; past it the stream ends with a
	// stream_buffer_exceeded error (correlator.DefaultMaxBufferedBytes
	// when 0).
	StreamBufferBytes int64
	// TrustUnstamped accepts response and chunk events without an
	// identity_type, for an Events API that does not stamp publishers (the
	// bus is then not a trust boundary). By default only events a service
	// published are accepted.
	TrustUnstamped bool
	// Logger receives the logs (slog.Default when nil). Tokens and request
	// bodies are never logged.
	Logger *slog.Logger
	// Metrics, when set, receives the request metrics.
	Metrics *metrics.FrontDoor
	// MetricsHandler, when set, serves GET /metrics (without
	// authentication, like /healthz and /readyz).
	MetricsHandler http.Handler
	// Tracer, when set, records the spans of the bus-backed requests;
	// without one the client's traceparent still travels in the request
	// event.
	Tracer trace.Tracer
}

// listener is one long-lived broadcast stream of one event name.
type listener struct {
	op        llmapi.Operation
	kind      llmapi.EventKind
	name      string
	connected atomic.Bool
}

type listenerKey struct {
	op   llmapi.Operation
	kind llmapi.EventKind
}

// Server is the REST front door. Create it with New and run it with Serve.
type Server struct {
	cfg Config
	log *slog.Logger

	listeners []*listener
	byKey     map[listenerKey]*listener
	ready     chan struct{}
	readyOnce sync.Once

	calls          *correlator.Correlator
	untrustedNoted atomic.Bool
	draining       atomic.Bool
	served         atomic.Bool

	// hardStop is the base context of every HTTP request; it is cancelled
	// when the shutdown drain runs out of time, so waiting requests give up.
	hardStop   context.Context
	hardCancel context.CancelFunc
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	if cfg.Events == nil {
		return nil, errors.New("frontdoor: Config.Events is required")
	}
	if cfg.Verifier == nil {
		return nil, errors.New("frontdoor: Config.Verifier is required")
	}
	if cfg.Catalog == nil {
		cfg.Catalog = catalog.Default()
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.ErrorGrace <= 0 {
		cfg.ErrorGrace = DefaultErrorGrace
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		byKey: map[listenerKey]*listener{},
		ready: make(chan struct{}),
		calls: correlator.New(correlator.Options{MaxBufferedBytes: cfg.StreamBufferBytes, TrustUnstamped: cfg.TrustUnstamped}),
	}
	s.hardStop, s.hardCancel = context.WithCancel(context.Background())
	for _, op := range llmapi.AllOperations() {
		kinds := []llmapi.EventKind{llmapi.KindResponse, llmapi.KindChunk}
		if op.IsState() {
			kinds = kinds[:1] // stored-response operations never stream
		}
		for _, kind := range kinds {
			name := op.ResponseEvent()
			if kind == llmapi.KindChunk {
				name = op.ChunkEvent()
			}
			l := &listener{op: op, kind: kind, name: name}
			s.listeners = append(s.listeners, l)
			s.byKey[listenerKey{op, kind}] = l
		}
	}
	return s, nil
}

// Ready is closed once every response and chunk listener has connected to
// the Events API for the first time.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Listening reports whether every response and chunk listener is connected
// right now.
func (s *Server) Listening() bool {
	for _, l := range s.listeners {
		if !l.connected.Load() {
			return false
		}
	}
	return true
}

// canExecute reports whether the listeners a request of op needs are
// connected.
func (s *Server) canExecute(op llmapi.Operation, stream bool) bool {
	if !s.byKey[listenerKey{op, llmapi.KindResponse}].connected.Load() {
		return false
	}
	return !stream || s.byKey[listenerKey{op, llmapi.KindChunk}].connected.Load()
}

// Handler returns the HTTP handler of the front door. Execution requests
// need Serve to be running (it owns the response listeners). Every path
// outside the routes, a non-canonical one included (//v1/models,
// /v1/models/), gets an OpenAI error object, never a redirect.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, op := range llmapi.Operations() {
		mux.HandleFunc(op.RESTPath(), s.handleExecute(op))
	}
	mux.HandleFunc("/v1/responses/{id}", s.handleStored)
	mux.HandleFunc("/v1/responses/{id}/input_items", s.handleInputItems)
	mux.HandleFunc("/v1/embeddings", s.handleEmbeddings)
	mux.HandleFunc("/v1/usage", s.handleUsage)
	mux.HandleFunc("/v1/models", s.handleModels)
	mux.HandleFunc("/v1/models/{id...}", s.handleModel)
	mux.HandleFunc("/readyz", s.handleReady)
	mux.HandleFunc("/healthz", s.handleHealth)
	if h := s.cfg.MetricsHandler; h != nil {
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, r *http.Request) {
			if allow(w, r, http.MethodGet, http.MethodHead) {
				h.ServeHTTP(w, r)
			}
		})
	}
	mux.HandleFunc("/", unknownURL)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// ServeMux would redirect a path that is not canonical.
		if p := r.URL.Path; p == "" || p[0] != '/' || path.Clean(p) != p {
			unknownURL(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// unknownURL answers a path outside the routes.
func unknownURL(w http.ResponseWriter, r *http.Request) {
	writeError(w, llmapi.NewError(http.StatusNotFound, llmapi.TypeInvalidRequest, "unknown_url",
		"", fmt.Sprintf("Unknown request URL: %s %s.", r.Method, r.URL.Path)))
}

// Serve opens the response and chunk listeners and serves HTTP on l until
// ctx ends. Then it stops accepting connections, lets in-flight requests
// finish within ShutdownTimeout (cancelling the rest), and stops the
// listeners. It returns nil after a clean stop, or the error that ended it:
// a listener that could not connect within ConnectTimeout (wrapping
// events.ErrUnreachable), a listener the Events API refused (wrapping its
// *events.APIError, e.g. 401 for a rejected service token), or an HTTP
// serving error. Serve may be called once.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	if !s.served.CompareAndSwap(false, true) {
		return errors.New("frontdoor: Serve called twice")
	}
	defer s.hardCancel()

	lctx, stopListeners := context.WithCancel(context.WithoutCancel(ctx))
	defer stopListeners()
	var listenersDone sync.WaitGroup
	listenErr := make(chan error, len(s.listeners))
	for _, ln := range s.listeners {
		listenersDone.Go(func() { s.runListener(lctx, ln, listenErr) })
	}

	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return s.hardStop },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- srv.Serve(l) }()
	s.log.Info("front door listening", "addr", l.Addr().String(), "models", len(s.cfg.Catalog.List()), "timeout", s.cfg.Timeout)

	var runErr error
	httpDone := false
	select {
	case <-ctx.Done():
	case runErr = <-listenErr:
	case err := <-httpErr:
		httpDone = true
		runErr = fmt.Errorf("frontdoor: serve: %w", err)
	}

	s.draining.Store(true)
	drainCtx, cancelDrain := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	err := srv.Shutdown(drainCtx)
	cancelDrain()
	if err != nil {
		n := s.calls.Len()
		s.log.Warn("shutdown drain timed out; cancelling in-flight requests", "in_flight", n)
		s.hardCancel()
		forceCtx, cancelForce := context.WithTimeout(context.Background(), cancelPublishTimeout+time.Second)
		if err := srv.Shutdown(forceCtx); err != nil {
			_ = srv.Close()
		}
		cancelForce()
	}
	if !httpDone {
		if err := <-httpErr; !errors.Is(err, http.ErrServerClosed) && runErr == nil {
			runErr = fmt.Errorf("frontdoor: serve: %w", err)
		}
	}
	stopListeners()
	listenersDone.Wait()
	s.log.Info("front door stopped")
	return runErr
}

// runListener keeps one broadcast stream open until ctx ends; a terminal
// failure goes to errc.
func (s *Server) runListener(ctx context.Context, ln *listener, errc chan<- error) {
	defer ln.connected.Store(false)
	err := s.cfg.Events.Listen(ctx, events.ListenOptions{
		Names:          []string{ln.name},
		Delivery:       events.Broadcast,
		ConnectTimeout: s.cfg.ConnectTimeout,
		OnConnect: func() {
			ln.connected.Store(true)
			s.log.Info("events listener connected", "name", ln.name)
			if s.Listening() {
				s.readyOnce.Do(func() {
					s.log.Info("front door ready: every response listener is connected")
					close(s.ready)
				})
			}
		},
		OnDisconnect: func(err error) {
			ln.connected.Store(false)
			s.log.Warn("events listener disconnected; reconnecting", "name", ln.name, "err", err)
		},
	}, func(_ context.Context, env events.Envelope) error {
		s.dispatch(env)
		return nil
	})
	if ctx.Err() != nil {
		return
	}
	if err == nil {
		err = errors.New("stream ended")
	}
	errc <- fmt.Errorf("frontdoor: events listener %s: %w", ln.name, err)
}

// handleReady answers GET /readyz.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	switch {
	case s.draining.Load():
		writeError(w, llmapi.NewError(http.StatusServiceUnavailable, "", "shutting_down", "", "The server is shutting down."))
		return
	case s.cfg.ListenerRequired && !s.Listening():
		writeError(w, llmapi.NewError(http.StatusServiceUnavailable, "", "listeners_not_connected", "",
			"The Events API response listeners are not connected yet."))
		return
	}
	listening := map[string]bool{}
	for _, l := range s.listeners {
		listening[l.name] = l.connected.Load()
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "listeners": listening})
}

// handleHealth answers GET /healthz: the process is up.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet, http.MethodHead) {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// handleModels answers GET /v1/models: the catalog, for any valid token.
func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	if _, apiErr := s.authorize(r, ""); apiErr != nil {
		writeError(w, apiErr)
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Catalog.Models())
}

// handleModel answers GET /v1/models/{id}.
func (s *Server) handleModel(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodGet) {
		return
	}
	if _, apiErr := s.authorize(r, ""); apiErr != nil {
		writeError(w, apiErr)
		return
	}
	id := r.PathValue("id")
	e, ok := s.cfg.Catalog.Lookup(id)
	if !ok {
		writeError(w, modelNotFound(id))
		return
	}
	writeJSON(w, http.StatusOK, e.Model())
}

// handleEmbeddings answers POST /v1/embeddings: not available in events mode.
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	if !allow(w, r, http.MethodPost) {
		return
	}
	if _, apiErr := s.authorize(r, ""); apiErr != nil {
		rejectUnread(w, apiErr)
		return
	}
	if _, apiErr := s.readBody(w, r); apiErr != nil {
		writeError(w, apiErr)
		return
	}
	writeError(w, llmapi.NewError(http.StatusBadRequest, llmapi.TypeInvalidRequest, "unsupported_endpoint", "",
		"Embeddings are served only in HTTP proxy mode (--execution-backend http); this front door runs --execution-backend events, which carries chat completions, responses and completions only."))
}

// writeJSON writes v as a JSON answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeError(w, llmapi.NewError(http.StatusInternalServerError, "", "internal_error", "", "could not encode the answer"))
		return
	}
	writeRaw(w, status, b)
}

// writeRaw writes body as a JSON answer with status.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError writes an OpenAI error document.
func writeError(w http.ResponseWriter, e *llmapi.APIError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="bus"`)
	}
	writeRaw(w, e.Status, e.JSON())
}

// allow checks the method, answering 405 otherwise.
func allow(w http.ResponseWriter, r *http.Request, methods ...string) bool {
	for _, m := range methods {
		if r.Method == m {
			return true
		}
	}
	allowed := methods[0]
	for _, m := range methods[1:] {
		allowed += ", " + m
	}
	w.Header().Set("Allow", allowed)
	writeError(w, llmapi.NewError(http.StatusMethodNotAllowed, llmapi.TypeInvalidRequest, "method_not_allowed", "",
		fmt.Sprintf("Method %s is not allowed on %s; use %s.", r.Method, r.URL.Path, allowed)))
	return false
}
