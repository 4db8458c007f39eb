// Package eventsapi is the HTTP server of the Bus Events API: publish
// (POST /api/v1/events), NDJSON event streams (GET /api/v1/events/stream,
// ended early by POST /api/v1/events/stream/end) and the acknowledgement
// extension (POST /api/v1/events/ack and /release), with HS256 JWT
// authorization, on top of any eventstore.Backend.
//
// Trust model: bus.llm.* events are service traffic. Only service
// principals (Config.Services: a token with the scope bus:service, or a
// listed subject) that also carry llm:proxy may publish them, listen to
// them (broadcast or in a unicast group) and acknowledge them; any other
// token gets 403 forbidden. Other names need events:send to publish and
// events:listen to listen, and their listeners receive only their own
// identity's events unless they hold events:admin. Every stored event is
// stamped with the publisher's identity (identity_id, the token's sub) and
// kind (identity_type, "service" or "user"); what a publisher sends there
// is ignored. An acknowledgement or a release counts only from the
// consumer that holds the delivery; a stream is ended only by its own
// identity.
//
// Nothing a stream takes is held for a client that never received it: a
// delivery the stream took from the backend but could not write (the
// client went away, the stream was ended, the server is stopping, or the
// write failed) is released at once, not left pending until its
// visibility timeout.
//
// Observability: with Config.Metrics it counts publishes, deliveries (and
// their lag from publish), redeliveries, acknowledgements, open streams
// and pending deliveries, served on GET /metrics by
// Config.MetricsHandler; with Config.Tracer a publish is a span continuing
// the publisher's traceparent header (untraced publishes make no span).
//
// It imports internal/auth, internal/eventstore, internal/metrics, internal/tracing, pkg/events and the OpenTelemetry API; the concrete backends are chosen by its caller.
package eventsapi

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/tracing"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// Defaults.
const (
	DefaultMaxEventBytes = 8 << 20
	DefaultKeepalive     = 15 * time.Second
	maxNamesPerStream    = 16
	maxCorrelationIDLen  = 256
)

// Config configures a Server.
type Config struct {
	// Backend stores and delivers events.
	Backend eventstore.Backend
	// Verifier checks bearer tokens.
	Verifier *auth.Verifier
	// Services tells service principals from callers. The zero value
	// recognises services by the scope bus:service only.
	Services auth.ServicePolicy
	// Logger receives request logs (slog.Default when nil).
	Logger *slog.Logger
	// MaxEventBytes bounds a publish body (DefaultMaxEventBytes when 0).
	MaxEventBytes int64
	// Keepalive is how often an idle stream gets a blank line so proxies and
	// clients can tell it is alive (DefaultKeepalive when 0).
	Keepalive time.Duration
	// Metrics, when set, receives the server's metrics.
	Metrics *metrics.Events
	// MetricsHandler, when set, serves GET /metrics (without
	// authentication, like /healthz).
	MetricsHandler http.Handler
	// Tracer, when set, records a span per publish that carries a
	// traceparent header, continuing the publisher's trace.
	Tracer trace.Tracer
}

// Server serves the Events API.
type Server struct {
	cfg Config
	log *slog.Logger

	// stop ends every open stream when the server shuts down.
	stop     context.Context
	stopAll  context.CancelFunc
	inflight sync.Map // ackKey -> *creditWindow: unacknowledged deliveries of prefetch-limited streams
	open     sync.Map // stream id -> *openStream
	streams  sync.WaitGroup
}

// openStream is what POST /api/v1/events/stream/end needs of a stream.
type openStream struct {
	subject string             // only this identity may end it
	end     context.CancelFunc // stops the stream taking events
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxEventBytes <= 0 {
		cfg.MaxEventBytes = DefaultMaxEventBytes
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = DefaultKeepalive
	}
	if cfg.Tracer == nil {
		cfg.Tracer = noop.NewTracerProvider().Tracer("")
	}
	stop, cancel := context.WithCancel(context.Background())
	return &Server{cfg: cfg, log: cfg.Logger, stop: stop, stopAll: cancel}
}

// Handler returns the HTTP handler of the API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/events", s.handlePublish)
	mux.HandleFunc("GET /api/v1/events/stream", s.handleStream)
	mux.HandleFunc("POST /api/v1/events/stream/end", s.handleEndStream)
	mux.HandleFunc("POST /api/v1/events/ack", s.handleAck)
	mux.HandleFunc("POST /api/v1/events/release", s.handleRelease)
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /readyz", s.handleHealth)
	if s.cfg.MetricsHandler != nil {
		mux.Handle("GET /metrics", s.cfg.MetricsHandler)
	}
	return mux
}

// Serve serves on l until ctx ends, then ends open streams and shuts down
// gracefully (in-flight publishes finish). It returns nil after a clean stop.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		s.stopAll()
		return fmt.Errorf("events api: serve: %w", err)
	case <-ctx.Done():
	}
	s.stopAll()
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	s.streams.Wait()
	<-errc
	if err != nil {
		return fmt.Errorf("events api: shutdown: %w", err)
	}
	return nil
}

// Error codes of the API's JSON error bodies.
const (
	CodeBadRequest    = "bad_request"
	CodeInvalidAuth   = "invalid_auth"
	CodeForbidden     = "forbidden"
	CodeTooLarge      = "payload_too_large"
	CodeUnavailable   = "unavailable"
	CodeInternalError = "internal_error"
)

// ErrorBody is the JSON body of every error answer:
// {"error": "<code>", "message": "<human readable>"}.
type ErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, ErrorBody{Error: code, Message: msg})
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// authenticate verifies the caller's token or writes a 401.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (*auth.Claims, bool) {
	claims, err := s.cfg.Verifier.Authenticate(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, CodeInvalidAuth, err.Error())
		return nil, false
	}
	return claims, true
}

type action int

const (
	actPublish action = iota
	actListen
	actAck
	actRelease
)

func (a action) verb() string {
	switch a {
	case actPublish:
		return "publish"
	case actListen:
		return "listen to"
	case actRelease:
		return "release"
	}
	return "acknowledge"
}

// protectedPrefix starts the names of service traffic.
const protectedPrefix = "bus.llm."

// protected reports whether name is service traffic: only services may
// publish, listen to or acknowledge it.
func protected(name string) bool { return strings.HasPrefix(name, protectedPrefix) }

// requiredScope is the scope a token needs to act on name: llm:proxy for
// bus.llm.*, else events:send to publish or events:listen to listen,
// acknowledge and release.
func requiredScope(name string, a action) string {
	if protected(name) {
		return auth.ScopeLLMProxy
	}
	if a == actPublish {
		return auth.ScopeEventsSend
	}
	return auth.ScopeEventsListen
}

// authorize checks that claims may act on name, or writes the 403 and
// reports false.
func (s *Server) authorize(w http.ResponseWriter, claims *auth.Claims, name string, a action) bool {
	if scope := requiredScope(name, a); !claims.HasScope(scope) {
		writeError(w, http.StatusForbidden, CodeForbidden, fmt.Sprintf("token lacks scope %s needed to %s %s", scope, a.verb(), name))
		return false
	}
	if protected(name) && !s.cfg.Services.IsService(claims) {
		writeError(w, http.StatusForbidden, CodeForbidden, fmt.Sprintf(
			"only service principals may %s %s events; this token is a caller's, good at the REST front door only (a service token carries the scope %s: issue it with --scope \"%s %s\")",
			a.verb(), protectedPrefix+"*", auth.ScopeService, auth.ScopeLLMProxy, auth.ScopeService))
		return false
	}
	return true
}

// identityType is the kind of principal claims names.
func (s *Server) identityType(claims *auth.Claims) string {
	if s.cfg.Services.IsService(claims) {
		return events.IdentityService
	}
	return events.IdentityUser
}

// identityScoped reports whether listeners with claims only receive their
// own identity's events on name: unprotected names, unless the token has
// events:admin. Protected names are service traffic: every service
// receives all of it.
func identityScoped(claims *auth.Claims, name string) bool {
	return !protected(name) && !claims.HasScope(auth.ScopeEventsAdmin)
}

// internalGroup keeps identity-scoped unicast groups of different
// identities apart. '~' cannot appear in a group name a client sends.
func internalGroup(claims *auth.Claims, names []string, group string) string {
	for _, n := range names {
		if identityScoped(claims, n) {
			sum := sha256.Sum256([]byte(claims.Subject))
			return group + "~" + hex.EncodeToString(sum[:12])
		}
	}
	return group
}

// PublishRequest is the body of POST /api/v1/events.
type PublishRequest struct {
	Name          string          `json:"name"`
	CorrelationID string          `json:"correlationId"`
	Payload       json.RawMessage `json:"payload"`
}

func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	// A publish is a span only in a trace its publisher started (the
	// traceparent header): untraced traffic makes no root spans.
	ctx := tracing.FromHeader(r.Context(), propagation.HeaderCarrier(r.Header))
	span := trace.SpanFromContext(ctx)
	if span.SpanContext().IsValid() {
		ctx, span = s.cfg.Tracer.Start(ctx, "events.publish", trace.WithSpanKind(trace.SpanKindServer))
	}
	defer span.End()
	r = r.WithContext(ctx)
	claims, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxEventBytes))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			writeError(w, http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("event body exceeds %d bytes", s.cfg.MaxEventBytes))
			return
		}
		writeError(w, http.StatusBadRequest, CodeBadRequest, "could not read request body")
		return
	}
	var req PublishRequest
	if err := json.Unmarshal(body, &req); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "request body is not a JSON event object: "+err.Error())
		return
	}
	if err := events.ValidateName(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	if len(req.CorrelationID) > maxCorrelationIDLen {
		writeError(w, http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("correlationId is longer than %d bytes", maxCorrelationIDLen))
		return
	}
	if !s.authorize(w, claims, req.Name, actPublish) {
		return
	}
	span.SetAttributes(attribute.String("messaging.destination.name", req.Name))
	if len(req.Payload) == 0 {
		req.Payload = json.RawMessage("null")
	}
	env, groups, err := s.cfg.Backend.Publish(r.Context(), events.Envelope{
		Name: req.Name, CorrelationID: req.CorrelationID, IdentityID: claims.Subject, IdentityType: s.identityType(claims), Payload: req.Payload,
	})
	if err != nil {
		s.log.ErrorContext(ctx, "publish failed", "name", req.Name, "err", err)
		span.SetStatus(codes.Error, "event store is unavailable")
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "event store is unavailable")
		return
	}
	span.SetAttributes(attribute.String("messaging.message.id", env.ID), attribute.Int("bus.groups", groups))
	if m := s.cfg.Metrics; m != nil {
		m.Published.WithLabelValues(metrics.NameClass(env.Name)).Inc()
	}
	writeJSON(w, http.StatusAccepted, events.Accepted{Accepted: true, ID: env.ID, Name: env.Name, CorrelationID: env.CorrelationID, Groups: &groups})
}

// streamParams are the parsed query parameters of a stream request.
type streamParams struct {
	sub      eventstore.Subscription
	prefetch int
}

func parseBool(q map[string][]string, key string, def bool) (bool, error) {
	vs, ok := q[key]
	if !ok || len(vs) == 0 || vs[0] == "" {
		return def, nil
	}
	b, err := strconv.ParseBool(vs[0])
	if err != nil {
		return false, fmt.Errorf("%s must be true or false", key)
	}
	return b, nil
}

func parseStreamParams(r *http.Request) (streamParams, error) {
	q := r.URL.Query()
	var p streamParams
	names := q["name"]
	if len(names) == 0 {
		return p, errors.New("name is required")
	}
	if len(names) > maxNamesPerStream {
		return p, fmt.Errorf("at most %d names per stream", maxNamesPerStream)
	}
	seen := map[string]bool{}
	for _, n := range names {
		if err := events.ValidateName(n); err != nil {
			return p, err
		}
		if !seen[n] {
			seen[n] = true
			p.sub.Names = append(p.sub.Names, n)
		}
	}
	switch d := events.Delivery(q.Get("delivery")); d {
	case "", events.Broadcast:
		p.sub.Delivery = events.Broadcast
	case events.Unicast:
		p.sub.Delivery = events.Unicast
	default:
		return p, fmt.Errorf("delivery must be broadcast or unicast, not %q", d)
	}
	p.sub.Group, p.sub.Consumer = q.Get("group"), q.Get("consumer")
	if p.sub.Group == "" {
		p.sub.Group = events.DefaultGroup
	}
	if p.sub.Consumer == "" {
		p.sub.Consumer = events.DefaultConsumer
	}
	if err := events.ValidateKey("group", p.sub.Group); err != nil {
		return p, err
	}
	if err := events.ValidateKey("consumer", p.sub.Consumer); err != nil {
		return p, err
	}
	var err error
	if p.sub.Replay, err = parseBool(q, "replay", false); err != nil {
		return p, err
	}
	if p.sub.Follow, err = parseBool(q, "follow", true); err != nil {
		return p, err
	}
	if p.sub.Ack, err = parseBool(q, "ack", false); err != nil {
		return p, err
	}
	if p.sub.Ack && p.sub.Delivery != events.Unicast {
		return p, errors.New("ack applies to unicast delivery only")
	}
	if v := q.Get("visibility"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 100*time.Millisecond || d > 24*time.Hour {
			return p, errors.New("visibility must be a duration between 100ms and 24h")
		}
		p.sub.Visibility = d
	}
	if v := q.Get("prefetch"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 100000 {
			return p, errors.New("prefetch must be a number between 0 and 100000")
		}
		if n > 0 && !p.sub.Ack {
			return p, errors.New("prefetch needs ack=true")
		}
		p.prefetch = n
	}
	return p, nil
}

func (s *Server) handleStream(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	p, err := parseStreamParams(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return
	}
	scoped := map[string]bool{}
	for _, n := range p.sub.Names {
		if !s.authorize(w, claims, n, actListen) {
			return
		}
		scoped[n] = identityScoped(claims, n)
	}
	if p.sub.Delivery == events.Unicast {
		p.sub.Group = internalGroup(claims, p.sub.Names, p.sub.Group)
	}

	s.streams.Add(1)
	defer s.streams.Done()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	stopStream := context.AfterFunc(s.stop, cancel)
	defer stopStream()
	// take ends when the stream stops taking events: the client went away,
	// the server is stopping, or the client asked to end the stream.
	take, endTaking := context.WithCancel(ctx)
	defer endTaking()

	sub, err := s.cfg.Backend.Subscribe(ctx, p.sub)
	if err != nil {
		s.log.Error("subscribe failed", "names", p.sub.Names, "err", err)
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "event store is unavailable")
		return
	}
	defer sub.Close()
	if m := s.cfg.Metrics; m != nil {
		m.Streams.Inc()
		defer m.Streams.Dec()
	}

	id := newStreamID()
	s.open.Store(id, &openStream{subject: claims.Subject, end: endTaking})
	defer s.open.Delete(id)

	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("X-Accel-Buffering", "no")
	w.Header().Set(events.StreamIDHeader, id)
	w.WriteHeader(http.StatusOK)
	flush := func() error {
		if err := rc.Flush(); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return err
		}
		return nil
	}
	if flush() != nil {
		return
	}

	var window *creditWindow
	if p.prefetch > 0 {
		window = newCreditWindow(p.prefetch, s.cfg.Metrics)
		defer s.forget(window)
	}
	keepalive := func() bool {
		if _, err := io.WriteString(w, "\n"); err != nil {
			return false
		}
		return flush() == nil
	}
	// giveBack releases a delivery the stream took but the client never
	// received, so the group has it again at once.
	giveBack := func(env events.Envelope) {
		if !p.sub.Ack {
			return // at most once: handing it over was final
		}
		if window != nil {
			key := ackKey{name: env.Name, group: p.sub.Group, consumer: p.sub.Consumer, id: env.ID}
			if v, ok := s.inflight.LoadAndDelete(key); ok {
				v.(*creditWindow).release(key)
			}
		}
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer rcancel()
		if _, err := s.cfg.Backend.Release(rctx, env.Name, p.sub.Group, p.sub.Consumer, []string{env.ID}); err != nil {
			s.log.Warn("delivery not written and not released; it is redelivered after its visibility timeout", "name", env.Name, "id", env.ID, "err", err)
		}
	}
	enc := json.NewEncoder(w)
	for {
		if window != nil {
			// A full window may last long (the consumer works on what it
			// holds): keep the stream visibly alive meanwhile.
			for {
				err := window.wait(take, s, s.cfg.Keepalive)
				if err == nil {
					break
				}
				if !errors.Is(err, errWaitTimeout) || !keepalive() {
					return
				}
			}
		}
		nctx, ncancel := context.WithTimeout(take, s.cfg.Keepalive)
		env, err := sub.Next(nctx)
		ncancel()
		switch {
		case err == nil:
		case errors.Is(err, context.DeadlineExceeded) && take.Err() == nil:
			if !keepalive() {
				return
			}
			continue
		case errors.Is(err, eventstore.ErrEndOfSnapshot):
			return
		default:
			if take.Err() == nil {
				s.log.Warn("stream ended", "names", p.sub.Names, "err", err)
			}
			return
		}
		if take.Err() != nil {
			// Taken as the stream was ending: the client will not read it.
			giveBack(env)
			return
		}
		if scoped[env.Name] && env.IdentityID != claims.Subject {
			if p.sub.Ack {
				_, _ = s.cfg.Backend.Ack(ctx, env.Name, p.sub.Group, p.sub.Consumer, []string{env.ID})
			}
			continue
		}
		if window != nil {
			// Count the delivery before the client can see it: its
			// acknowledgement may come back before this loop goes on.
			key := ackKey{name: env.Name, group: p.sub.Group, consumer: p.sub.Consumer, id: env.ID}
			window.add(key, time.Now().Add(p.sub.EffectiveVisibility()))
			s.inflight.Store(key, window)
		}
		s.delivered(env, p.sub.Delivery)
		if err := enc.Encode(env); err != nil {
			giveBack(env)
			return
		}
		if err := flush(); err != nil {
			giveBack(env)
			return
		}
	}
}

// releaseTimeout bounds the release of a delivery a stream could not write.
const releaseTimeout = 10 * time.Second

// newStreamID returns a fresh, unguessable stream id.
func newStreamID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "str_" + hex.EncodeToString(b[:])
}

// EndStreamRequest is the body of POST /api/v1/events/stream/end: Stream is
// the id the stream's answer carried in its Bus-Stream-Id header.
type EndStreamRequest struct {
	Stream string `json:"stream"`
}

// EndStreamResponse answers an EndStreamRequest: Ended reports whether an
// open stream of the caller's identity had that id.
type EndStreamResponse struct {
	Ended bool `json:"ended"`
}

// handleEndStream ends a stream gracefully: it takes no more events, and
// its answer ends once what it already wrote is sent, so the client can
// read every event up to the end and release those it will not handle.
func (s *Server) handleEndStream(w http.ResponseWriter, r *http.Request) {
	claims, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	var req EndStreamRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10)).Decode(&req); err != nil || req.Stream == "" {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "request body is not a JSON object naming a stream: {\"stream\": \"str_...\"}")
		return
	}
	v, found := s.open.Load(req.Stream)
	// Another identity's stream is answered like an unknown one.
	ended := found && v.(*openStream).subject == claims.Subject
	if ended {
		v.(*openStream).end()
	}
	writeJSON(w, http.StatusOK, EndStreamResponse{Ended: ended})
}

// AckRequest is the body of POST /api/v1/events/ack and of POST
// /api/v1/events/release. Consumer names the consumer that holds the
// deliveries (the one named when its stream was opened;
// events.DefaultConsumer when empty): deliveries another consumer holds are
// neither acknowledged nor released.
type AckRequest struct {
	Name     string   `json:"name"`
	Group    string   `json:"group"`
	Consumer string   `json:"consumer"`
	IDs      []string `json:"ids"`
}

// AckResponse answers an acknowledgement.
type AckResponse struct {
	Acknowledged int `json:"acknowledged"`
}

// ReleaseResponse answers a release: how many deliveries went back to the
// group.
type ReleaseResponse struct {
	Released int `json:"released"`
}

func (s *Server) handleAck(w http.ResponseWriter, r *http.Request) {
	req, group, ok := s.deliveriesRequest(w, r, actAck)
	if !ok {
		return
	}
	n, err := s.cfg.Backend.Ack(r.Context(), req.Name, group, req.Consumer, req.IDs)
	if err != nil {
		s.log.Error("ack failed", "name", req.Name, "err", err)
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "event store is unavailable")
		return
	}
	s.settled(req, group)
	if m := s.cfg.Metrics; m != nil {
		m.Acked.Add(float64(n))
	}
	writeJSON(w, http.StatusOK, AckResponse{Acknowledged: n})
}

// handleRelease gives deliveries the consumer will not handle back to its
// group at once (eventstore.Backend.Release): a consumer that is stopping
// releases what it received but will not run, instead of holding it until
// its visibility timeout.
func (s *Server) handleRelease(w http.ResponseWriter, r *http.Request) {
	req, group, ok := s.deliveriesRequest(w, r, actRelease)
	if !ok {
		return
	}
	n, err := s.cfg.Backend.Release(r.Context(), req.Name, group, req.Consumer, req.IDs)
	if err != nil {
		s.log.Error("release failed", "name", req.Name, "err", err)
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "event store is unavailable")
		return
	}
	s.settled(req, group)
	writeJSON(w, http.StatusOK, ReleaseResponse{Released: n})
}

// deliveriesRequest authenticates, parses and authorizes an
// acknowledgement or release; it returns the request with its defaults and
// the backend group, or writes the error and reports false.
func (s *Server) deliveriesRequest(w http.ResponseWriter, r *http.Request, a action) (AckRequest, string, bool) {
	var req AckRequest
	claims, ok := s.authenticate(w, r)
	if !ok {
		return req, "", false
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, `request body is not a JSON object {"name", "group", "consumer", "ids"}: `+err.Error())
		return req, "", false
	}
	if err := events.ValidateName(req.Name); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return req, "", false
	}
	if req.Group == "" {
		req.Group = events.DefaultGroup
	}
	if err := events.ValidateKey("group", req.Group); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return req, "", false
	}
	if req.Consumer == "" {
		req.Consumer = events.DefaultConsumer
	}
	if err := events.ValidateKey("consumer", req.Consumer); err != nil {
		writeError(w, http.StatusBadRequest, CodeBadRequest, err.Error())
		return req, "", false
	}
	if len(req.IDs) == 0 || len(req.IDs) > 10000 {
		writeError(w, http.StatusBadRequest, CodeBadRequest, "ids must list 1 to 10000 event ids")
		return req, "", false
	}
	if !s.authorize(w, claims, req.Name, a) {
		return req, "", false
	}
	return req, internalGroup(claims, []string{req.Name}, req.Group), true
}

// settled frees the prefetch window slots of deliveries acknowledged or
// released through this server.
func (s *Server) settled(req AckRequest, group string) {
	for _, id := range req.IDs {
		key := ackKey{name: req.Name, group: group, consumer: req.Consumer, id: id}
		if v, ok := s.inflight.LoadAndDelete(key); ok {
			v.(*creditWindow).release(key)
		}
	}
}

// ackKey names one unacknowledged delivery and its holder.
type ackKey struct{ name, group, consumer, id string }

// delivered counts one delivery of env on a stream, and its lag from the
// publish.
func (s *Server) delivered(env events.Envelope, d events.Delivery) {
	m := s.cfg.Metrics
	if m == nil {
		return
	}
	class := metrics.NameClass(env.Name)
	m.Delivered.WithLabelValues(class, string(d)).Inc()
	if env.Deliveries > 1 {
		m.Redelivered.WithLabelValues(class).Inc()
	}
	if !env.CreatedAt.IsZero() {
		m.Lag.WithLabelValues(class).Observe(max(0, time.Since(env.CreatedAt).Seconds()))
	}
}

// creditWindow limits a stream to prefetch unacknowledged deliveries. A
// delivery stops counting when it is acknowledged through this server or
// when its visibility timeout passes (it is then redelivered elsewhere).
// The pending-deliveries gauge follows its contents.
type creditWindow struct {
	limit   int
	pending prometheus.Gauge // nil without metrics
	mu      sync.Mutex
	out     map[ackKey]time.Time
	notify  chan struct{}
}

func newCreditWindow(limit int, m *metrics.Events) *creditWindow {
	c := &creditWindow{limit: limit, out: map[ackKey]time.Time{}, notify: make(chan struct{}, 1)}
	if m != nil {
		c.pending = m.Pending
	}
	return c
}

// count moves the pending gauge by n.
func (c *creditWindow) count(n int) {
	if c.pending != nil && n != 0 {
		c.pending.Add(float64(n))
	}
}

func (c *creditWindow) add(k ackKey, deadline time.Time) {
	c.mu.Lock()
	if _, dup := c.out[k]; !dup {
		c.count(1)
	}
	c.out[k] = deadline
	c.mu.Unlock()
}

func (c *creditWindow) release(k ackKey) {
	c.mu.Lock()
	if _, ok := c.out[k]; ok {
		delete(c.out, k)
		c.count(-1)
	}
	c.mu.Unlock()
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// errWaitTimeout is returned by creditWindow.wait when the window stayed
// full for its timeout.
var errWaitTimeout = errors.New("eventsapi: prefetch window still full")

// wait blocks until the window has room, ctx ends (its error) or timeout
// passes (errWaitTimeout).
func (c *creditWindow) wait(ctx context.Context, s *Server, timeout time.Duration) error {
	give := time.NewTimer(timeout)
	defer give.Stop()
	for {
		c.mu.Lock()
		now := time.Now()
		var earliest time.Time
		for k, d := range c.out {
			if !d.After(now) {
				delete(c.out, k)
				c.count(-1)
				s.inflight.Delete(k)
				continue
			}
			if earliest.IsZero() || d.Before(earliest) {
				earliest = d
			}
		}
		room := len(c.out) < c.limit
		c.mu.Unlock()
		if room {
			return nil
		}
		t := time.NewTimer(time.Until(earliest))
		select {
		case <-c.notify:
		case <-t.C:
		case <-give.C:
			t.Stop()
			return errWaitTimeout
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		t.Stop()
	}
}

// forget drops a closed stream's outstanding deliveries from the ack index
// (they are no longer pending here: the backend redelivers them).
func (s *Server) forget(c *creditWindow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.out {
		s.inflight.Delete(k)
	}
	c.count(-len(c.out))
	clear(c.out)
}
