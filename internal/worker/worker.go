// Package worker is the bus side of bus-integration-codex: it takes
// bus.llm.*.request events with unicast delivery (at most Concurrency at a
// time), runs each through an executor.Executor, publishes the streaming
// chunks and exactly one correlated response event, acknowledges the
// delivery, and interrupts requests whose cancel event arrives.
//
// Trust: only a request published by a service principal (the envelope's
// identity_type, stamped by the Events API) is run, because only then is
// its payload's identityId the caller a front door authenticated; any
// other request is answered 403 and acknowledged. Cancel events of other
// publishers are ignored.
//
// Faults: a panic while serving a request answers it 500; a request
// delivered more than MaxDeliveries times is answered with an error and
// moved to its dead-letter event name; when the Events API refuses the
// worker's token the worker stops taking requests until it is accepted
// again (Run fails after AuthRecoveryTimeout).
//
// Metrics and traces (observe.go): requests are counted and timed
// (Config.Metrics), and each is a span (Config.Tracer) continuing the
// traceparent of its request event; the response event carries the
// span's traceparent and the request's log lines its trace id.
//
// It imports internal/executor, internal/metrics, internal/tracing, pkg/events, pkg/llmapi and the OpenTelemetry API; it knows no provider and no OpenAI wire shape.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/busdk/bus-integration-codex/internal/executor"
	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/pkg/events"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// Defaults of Config.
const (
	// DefaultMaxDeliveries is how many deliveries of one request are
	// tried before it is dead-lettered.
	DefaultMaxDeliveries = 5
	// DefaultAuthRecoveryTimeout is how long a refused token may stay
	// refused before Run fails.
	DefaultAuthRecoveryTimeout = 2 * time.Minute
)

// Config configures a Worker.
type Config struct {
	// Client talks to the Events API.
	Client *events.Client
	// Executor runs requests. When nil, the worker subscribes anyway and
	// the requests it takes (at most Concurrency) wait until SetExecutor
	// provides one.
	Executor *executor.Executor
	// RequestNames and CancelNames are the events to take (unicast) and to
	// watch for cancellation (broadcast), from the declared contract.
	RequestNames, CancelNames []string
	// Group is the unicast group; Consumer names this worker in it.
	Group, Consumer string
	// Concurrency caps requests running at once (and taken from the bus).
	Concurrency int
	// Timeout caps each request (the request's own deadline may be sooner).
	Timeout time.Duration
	// ConnectTimeout bounds the first connection to the Events API.
	ConnectTimeout time.Duration
	// MaxDeliveries: a request delivered more often than this is answered
	// with an error and moved to its dead-letter name instead of being run
	// again (DefaultMaxDeliveries when 0; negative: never).
	MaxDeliveries int
	// AuthRecoveryTimeout bounds how long the worker waits for the Events
	// API to accept its token again after refusing it (401/403) before Run
	// fails with ErrTokenRefused (DefaultAuthRecoveryTimeout when 0).
	AuthRecoveryTimeout time.Duration
	// TokenExpiry, when set, returns when the worker's current token
	// expires (zero: unknown). Once it has passed the worker stops taking
	// requests at once, as if the Events API had refused the token, until
	// a renewed or rotated token is accepted.
	TokenExpiry func() time.Time
	// TrustUnstamped trusts events without an identity_type, for an Events
	// API that does not stamp publishers; the bus is then not a trust
	// boundary. By default such events are treated as not from a service.
	TrustUnstamped bool
	// Logger receives logs (slog.Default when nil).
	Logger *slog.Logger
	// OnReady is called once both listeners are connected.
	OnReady func()
	// Metrics, when set, receives the request metrics (observe.go).
	Metrics *metrics.Worker
	// Tracer, when set, records a span per request (observe.go).
	Tracer trace.Tracer
}

// Worker runs requests from the bus.
type Worker struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	running   map[string]context.CancelCauseFunc
	cancelled *cancelSet

	exec      atomic.Pointer[executor.Executor]
	execReady chan struct{}
	execOnce  sync.Once

	auth            *authGate
	pause           *pauseGate
	reqConnected    atomic.Bool
	cancelConnected atomic.Bool
	// stopping is closed when Run starts to stop: waits for the token or
	// the executor give up (the deliveries stay unacknowledged).
	stopping chan struct{}
	stopOnce sync.Once
	stopped  atomic.Bool
	// everConnected: a refusal before the first connection is a
	// configuration error that ends Run at once.
	everConnected   atomic.Bool
	untrustedLogged atomic.Bool
}

// New returns a Worker.
func New(cfg Config) (*Worker, error) {
	switch {
	case cfg.Client == nil:
		return nil, errors.New("worker: client is required")
	case len(cfg.RequestNames) == 0:
		return nil, errors.New("worker: no request events to listen to")
	case cfg.Concurrency < 1:
		return nil, errors.New("worker: concurrency must be at least 1")
	case cfg.Timeout <= 0:
		return nil, errors.New("worker: timeout must be positive")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxDeliveries == 0 {
		cfg.MaxDeliveries = DefaultMaxDeliveries
	}
	if cfg.AuthRecoveryTimeout <= 0 {
		cfg.AuthRecoveryTimeout = DefaultAuthRecoveryTimeout
	}
	w := &Worker{
		cfg: cfg, log: cfg.Logger, running: map[string]context.CancelCauseFunc{},
		cancelled: newCancelSet(cfg.Timeout + redeliveryMargin),
		execReady: make(chan struct{}), auth: &authGate{}, pause: &pauseGate{}, stopping: make(chan struct{}),
	}
	if cfg.Executor != nil {
		w.SetExecutor(cfg.Executor)
	}
	return w, nil
}

// SetExecutor provides the executor requests run on, when Config.Executor
// was nil (e.g. once the provider has warmed up). Only the first call
// counts.
func (w *Worker) SetExecutor(x *executor.Executor) {
	if x == nil {
		return
	}
	w.execOnce.Do(func() {
		w.exec.Store(x)
		close(w.execReady)
	})
}

// ErrCancelled is the cause of a request cancelled by a cancel event.
var ErrCancelled = errors.New("request cancelled by its client")

// Name is how the worker signs its responses.
func (w *Worker) Name() string { return "bus-integration-codex/" + w.cfg.Consumer }

// Readiness reports whether the worker is taking and able to run
// requests, and when not, why: "stopping", "token_refused",
// "usage_limit" (its provider's login is exhausted until it resets),
// "not_subscribed" (a listener is not connected) or "starting" (no
// executor yet).
func (w *Worker) Readiness() (ready bool, reason string) {
	_, refused := w.auth.state()
	switch {
	case w.stopped.Load():
		return false, "stopping"
	case refused != nil:
		return false, "token_refused"
	case !w.pause.paused().IsZero():
		return false, "usage_limit"
	case !w.reqConnected.Load() || !w.cancelConnected.Load():
		return false, "not_subscribed"
	case w.exec.Load() == nil:
		return false, "starting"
	}
	return true, ""
}

// Run listens until ctx ends, then stops taking requests and waits for the
// running ones to finish and publish their responses. It returns an error
// when the Events API cannot be reached within ConnectTimeout, refuses the
// worker's token at the first connection (its *events.APIError) or for
// longer than AuthRecoveryTimeout later (ErrTokenRefused), or ends a
// listener for another permanent reason.
func (w *Worker) Run(ctx context.Context) error {
	listenCtx, stopListening := context.WithCancel(ctx)
	defer stopListening()

	var (
		connected           sync.WaitGroup
		reqOnce, cancelOnce sync.Once
		wg, inflight        sync.WaitGroup
		errs                = make(chan error, 3)
		slots               = make(chan struct{}, w.cfg.Concurrency)
	)
	connected.Add(2)
	go func() {
		connected.Wait()
		if listenCtx.Err() == nil && w.cfg.OnReady != nil {
			w.cfg.OnReady()
		}
	}()
	// Give up waiting for readiness when listening stops.
	context.AfterFunc(listenCtx, func() { reqOnce.Do(connected.Done); cancelOnce.Do(connected.Done) })

	wg.Go(func() { errs <- w.listenCancels(listenCtx, func() { cancelOnce.Do(connected.Done) }) })
	wg.Go(func() {
		errs <- w.listenRequests(listenCtx, func() { reqOnce.Do(connected.Done) }, func(env events.Envelope) {
			taken := time.Now()
			inflight.Go(func() {
				defer func() { <-slots }()
				w.serve(env, taken)
			})
		}, slots)
	})
	wg.Go(func() { errs <- w.watchAuth(listenCtx) })

	var first error
	for range 3 {
		if err := <-errs; err != nil && first == nil {
			first = err
			stopListening()
		}
	}
	wg.Wait()
	w.stopped.Store(true)
	w.stopOnce.Do(func() { close(w.stopping) })
	inflight.Wait()
	return first
}

// listenRequests takes requests until ctx ends. While the token is refused
// it holds no request stream; it opens one again once the token is
// accepted.
func (w *Worker) listenRequests(ctx context.Context, onFirst func(), take func(events.Envelope), slots chan struct{}) error {
	connectTimeout := w.cfg.ConnectTimeout
	for {
		if err := w.auth.wait(ctx, nil); err != nil {
			return nil
		}
		if err := w.pause.wait(ctx, nil); err != nil {
			return nil
		}
		lctx, cancel := context.WithCancel(ctx)
		w.auth.setStopTaking(cancel)
		w.pause.setStopTaking(cancel)
		err := w.cfg.Client.Listen(lctx, events.ListenOptions{
			Names: w.cfg.RequestNames, Delivery: events.Unicast,
			Group: w.cfg.Group, Consumer: w.cfg.Consumer,
			Ack: true, Prefetch: w.cfg.Concurrency,
			// A request is redelivered only when this worker dies holding
			// it, or could not answer it.
			Visibility:     w.cfg.Timeout + redeliveryMargin,
			ConnectTimeout: connectTimeout,
			OnConnect: func() {
				connectTimeout = 0 // after the first connection, reconnect for as long as it takes
				w.everConnected.Store(true)
				w.reqConnected.Store(true)
				w.accepted(false)
				onFirst()
			},
			OnDisconnect: func(err error) {
				w.reqConnected.Store(false)
				w.log.Warn("request stream disconnected; reconnecting", "err", err)
			},
		}, func(hctx context.Context, env events.Envelope) error {
			select {
			case slots <- struct{}{}:
			case <-hctx.Done():
				w.release(env) // not run here: another worker takes it at once
				return nil
			}
			take(env)
			return nil
		})
		w.auth.setStopTaking(nil)
		w.pause.setStopTaking(nil)
		cancel()
		w.reqConnected.Store(false)
		switch {
		case ctx.Err() != nil:
			return nil
		case isRefusal(err) && w.everConnected.Load():
			w.refused(err)
		case err != nil:
			return err
		}
		// The stream was closed because the token was refused: wait until
		// it is accepted again.
	}
}

// release gives a delivery this worker will not run back to its group at
// once. When that fails it is redelivered after its visibility timeout.
func (w *Worker) release(env events.Envelope) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := w.cfg.Client.Release(ctx, env.Name, w.cfg.Group, w.cfg.Consumer, env.ID); err != nil {
		w.log.Warn("release failed; the request is redelivered after its visibility timeout", "event", env.ID, "err", err)
	}
}

// listenCancels watches cancel events until ctx ends, through refusals of
// the token.
func (w *Worker) listenCancels(ctx context.Context, onFirst func()) error {
	connectTimeout := w.cfg.ConnectTimeout
	for {
		err := w.cfg.Client.Listen(ctx, events.ListenOptions{
			Names: w.cfg.CancelNames, Delivery: events.Broadcast,
			ConnectTimeout: connectTimeout,
			OnConnect: func() {
				connectTimeout = 0
				w.everConnected.Store(true)
				w.cancelConnected.Store(true)
				w.accepted(false)
				onFirst()
			},
			OnDisconnect: func(err error) {
				w.cancelConnected.Store(false)
				w.log.Warn("cancel stream disconnected; reconnecting", "err", err)
			},
		}, w.handleCancel)
		w.cancelConnected.Store(false)
		switch {
		case ctx.Err() != nil:
			return nil
		case !isRefusal(err) || !w.everConnected.Load():
			return err
		}
		w.refused(err)
		if err := w.auth.wait(ctx, nil); err != nil {
			return nil
		}
	}
}

// watchAuth notices an expired token, probes the Events API while the
// token is refused (reopening the gate once a call is accepted), and fails
// when the refusal outlasts AuthRecoveryTimeout.
func (w *Worker) watchAuth(ctx context.Context) error {
	tick := time.NewTicker(authTick)
	defer tick.Stop()
	delay, next := probeMin, time.Time{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		now := time.Now()
		w.checkExhausted(now)
		w.reportPaused() // observe.go
		expired := false
		if w.cfg.TokenExpiry != nil {
			if exp := w.cfg.TokenExpiry(); !exp.IsZero() && now.After(exp) {
				expired = true
				w.refused(fmt.Errorf("the token expired at %s", exp.UTC().Format(time.RFC3339)))
			}
		}
		since, refused := w.auth.state()
		if refused == nil {
			delay, next = probeMin, time.Time{}
			continue
		}
		if now.Sub(since) > w.cfg.AuthRecoveryTimeout {
			return fmt.Errorf("%w for %s: %w", ErrTokenRefused, w.cfg.AuthRecoveryTimeout, refused)
		}
		if expired || now.Before(next) {
			continue // an expired token is not worth a call
		}
		if err := w.probe(ctx); err == nil {
			w.accepted(false)
		} else if isRefusal(err) {
			w.refused(err)
		}
		next = now.Add(delay/2 + rand.N(delay))
		delay = min(2*delay, probeMax)
	}
}

// How often the token's state is checked, and the probe back-off while it
// is refused.
const (
	authTick = 250 * time.Millisecond
	probeMin = 500 * time.Millisecond
	probeMax = 10 * time.Second
)

// probe makes one side-effect-free authenticated call: it opens a
// snapshot of the cancel stream that ends at once.
func (w *Worker) probe(ctx context.Context) error {
	names := w.cfg.CancelNames
	if len(names) == 0 {
		names = w.cfg.RequestNames
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := w.cfg.Client.Open(pctx, events.ListenOptions{Names: names[:1], Delivery: events.Broadcast, NoFollow: true})
	if err != nil {
		return err
	}
	return st.Close()
}

// refused records that the Events API refused the token; the first
// refusal of an outage is logged once.
func (w *Worker) refused(err error) {
	if w.auth.refuse(err, time.Now(), w.cfg.AuthRecoveryTimeout) {
		w.log.Error("the Events API refused the worker's token: not taking requests until it is accepted again (rotate the token or fix its scope)",
			"err", err, "exit_after", w.cfg.AuthRecoveryTimeout)
	}
}

// accepted records a call the Events API accepted. A token known to have
// expired does not reopen the gate (the Events API may accept it for a
// little longer, but not for long).
func (w *Worker) accepted(confirmed bool) {
	now := time.Now()
	if w.cfg.TokenExpiry != nil {
		if exp := w.cfg.TokenExpiry(); !exp.IsZero() && now.After(exp) {
			return
		}
	}
	if w.auth.accept(now, confirmed) {
		w.log.Info("the Events API accepts the worker's token again; taking requests")
	}
}

// fromService reports whether env was published by a service principal.
func (w *Worker) fromService(env events.Envelope) bool {
	return env.FromService(w.cfg.TrustUnstamped)
}

func (w *Worker) handleCancel(_ context.Context, env events.Envelope) error {
	var c llmapi.ExecutionEventCancel
	if err := json.Unmarshal(env.Payload, &c); err != nil || c.RequestID == "" {
		w.log.Warn("ignoring malformed cancel event", "event", env.ID)
		return nil
	}
	if !w.fromService(env) {
		w.log.Warn("ignoring a cancel event not published by a service", "event", env.ID, "publisher", env.IdentityID)
		return nil
	}
	w.mu.Lock()
	cancel := w.running[c.RequestID]
	if cancel == nil {
		// Not running here (yet): if it is still queued, it must not run.
		w.cancelled.add(c.RequestID, time.Now())
	}
	w.mu.Unlock()
	if cancel != nil {
		w.log.Info("cancelling request", "request", c.RequestID, "reason", c.Reason)
		cancel(fmt.Errorf("%w (%s)", ErrCancelled, c.Reason))
	}
	return nil
}

// redeliveryMargin is added to the request timeout to get the
// acknowledgement deadline: a live worker answers (at worst with a timeout
// error) well before it, so only a dead worker's requests are redelivered.
const redeliveryMargin = 10 * time.Second
