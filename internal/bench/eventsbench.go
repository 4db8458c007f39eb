package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/busdk/bus-integration-codex/internal/auth"
	"github.com/busdk/bus-integration-codex/internal/eventstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/memory"
	"github.com/busdk/bus-integration-codex/internal/eventstore/pgstore"
	"github.com/busdk/bus-integration-codex/internal/eventstore/redisstore"
	"github.com/busdk/bus-integration-codex/internal/localbus"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
	"github.com/busdk/bus-integration-codex/pkg/events"
)

// EventsReport is section 1: the Events API on its own, per backend.
type EventsReport struct {
	Skipped string `json:"skipped,omitempty"`
	// Publishers is the number of concurrent publishers of the
	// throughput test.
	Publishers int `json:"publishers"`
	// PayloadBytes is the size of every event's payload.
	PayloadBytes int             `json:"payload_bytes"`
	Backends     []BackendResult `json:"backends"`
}

// BackendResult holds one backend's numbers, or why it was skipped.
type BackendResult struct {
	Backend string       `json:"backend"`
	Skipped string       `json:"skipped,omitempty"`
	Modes   []EventsMode `json:"modes,omitempty"`
}

// EventsMode is one delivery mode on one backend.
type EventsMode struct {
	// Delivery is "broadcast" (how the front door receives responses) or
	// "unicast+ack" (how the worker takes requests).
	Delivery string `json:"delivery"`
	// LatencyP50 and LatencyP99: one event at a time, from the start of
	// the publish call until the event arrives on the stream (ms).
	LatencyP50 Summary `json:"latency_p50_ms"`
	LatencyP99 Summary `json:"latency_p99_ms"`
	// Pings is the number of events timed one at a time, over all runs.
	Pings int `json:"pings"`
	// Throughput: events delivered per second with Publishers publishing
	// as fast as they can.
	Throughput Summary `json:"throughput_events_per_s"`
	// LoadP50 and LoadP99 are publish→deliver latencies during the
	// throughput test (ms).
	LoadP50 Summary `json:"load_latency_p50_ms"`
	LoadP99 Summary `json:"load_latency_p99_ms"`
	// Errors counts failed publishes.
	Errors int `json:"errors"`
	// Undelivered counts events of the throughput test not delivered
	// within 20 s after the publishers stopped (the rate then counts only
	// the delivered ones).
	Undelivered int `json:"undelivered"`
}

const (
	eventsGroup      = "bench"
	eventsConsumer   = "bench"
	deliveryTimeout  = 10 * time.Second
	drainTimeout     = 20 * time.Second
	eventsPublishers = 8
	payloadBytes     = 256
)

func (b *bencher) eventsSection(ctx context.Context) *EventsReport {
	rep := &EventsReport{Publishers: eventsPublishers, PayloadBytes: payloadBytes}
	for _, name := range b.opts.backends {
		res := BackendResult{Backend: name}
		b.log.Info("events api", "backend", name)
		backend, cleanup, err := b.openBackend(ctx, name)
		switch {
		case err != nil:
			res.Skipped = err.Error()
			b.note(fmt.Sprintf("Events API on %s skipped: %v", name, err))
		default:
			res.Modes, err = b.eventsBackend(ctx, name, backend)
			if err != nil {
				res.Skipped = "failed: " + err.Error()
				b.note(fmt.Sprintf("Events API on %s failed: %v", name, err))
			}
		}
		cleanup()
		rep.Backends = append(rep.Backends, res)
	}
	return rep
}

// openBackend opens the named backend, starting a throwaway server for
// Redis and PostgreSQL. cleanup stops that server (after the bus using
// the backend was closed).
func (b *bencher) openBackend(ctx context.Context, name string) (eventstore.Backend, func(), error) {
	nop := func() {}
	switch name {
	case "memory":
		return memory.New(memory.Options{}), nop, nil
	case "redis":
		srv, err := redistest.StartServer("")
		if err != nil {
			return nil, nop, err
		}
		stop := func() { _ = srv.Close() }
		be, err := redisstore.Open(ctx, redisstore.Config{Addr: srv.Addr()})
		if err != nil {
			stop()
			return nil, nop, err
		}
		return be, stop, nil
	case "postgres":
		srv, err := pgtest.StartServer("")
		if err != nil {
			return nil, nop, err
		}
		stop := func() { _ = srv.Close() }
		be, err := pgstore.Open(ctx, pgstore.Config{DSN: srv.DSN(), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			stop()
			return nil, nop, err
		}
		return be, stop, nil
	}
	return nil, nop, fmt.Errorf("unknown backend %q", name)
}

func (b *bencher) eventsBackend(ctx context.Context, name string, backend eventstore.Backend) ([]EventsMode, error) {
	bus, err := localbus.Start(localbus.Options{Backend: backend})
	if err != nil {
		return nil, err
	}
	defer bus.Close()
	scopes := []string{auth.ScopeEventsSend, auth.ScopeEventsListen}
	pub, err := bus.Client("bench-events", scopes)
	if err != nil {
		return nil, err
	}
	defer pub.CloseIdleConnections()
	sub, err := bus.Client("bench-events", scopes)
	if err != nil {
		return nil, err
	}
	defer sub.CloseIdleConnections()

	modes := []string{"broadcast", "unicast+ack"}
	type acc struct {
		p50, p99, eps, lp50, lp99 []float64
		pings, errs, undelivered  int
	}
	accs := make([]acc, len(modes))
	// Warm up connections and the backend.
	if _, err := pingLatency(ctx, pub, sub, "bench.warmup", false, 200*time.Millisecond, 100); err != nil {
		return nil, err
	}
	for run := range b.opts.runs {
		for i, mode := range modes {
			unicast := mode != "broadcast"
			evName := fmt.Sprintf("bench.%s.r%d", strings.ReplaceAll(strings.ReplaceAll(mode, "+", "-"), "unicast-ack", "unicast"), run)
			lat, err := pingLatency(ctx, pub, sub, evName+".ping", unicast, b.opts.duration, 5000)
			if err != nil {
				return nil, fmt.Errorf("%s latency: %w", mode, err)
			}
			a := &accs[i]
			a.p50 = append(a.p50, ms(percentile(lat, 50)))
			a.p99 = append(a.p99, ms(percentile(lat, 99)))
			a.pings += len(lat)
			tp, err := throughput(ctx, pub, sub, evName+".load", unicast, b.opts.duration, eventsPublishers)
			if err != nil {
				return nil, fmt.Errorf("%s throughput: %w", mode, err)
			}
			a.eps = append(a.eps, tp.eps)
			a.lp50 = append(a.lp50, ms(percentile(tp.lat, 50)))
			a.lp99 = append(a.lp99, ms(percentile(tp.lat, 99)))
			a.errs += tp.errs
			a.undelivered += tp.undelivered
			b.log.Info("events api run", "backend", name, "delivery", mode, "run", run+1,
				"p50_ms", ms(percentile(lat, 50)), "p99_ms", ms(percentile(lat, 99)), "events_per_s", int(tp.eps), "undelivered", tp.undelivered)
		}
	}
	out := make([]EventsMode, len(modes))
	for i, mode := range modes {
		a := accs[i]
		out[i] = EventsMode{
			Delivery: mode, LatencyP50: summarize(a.p50), LatencyP99: summarize(a.p99), Pings: a.pings,
			Throughput: summarize(a.eps), LoadP50: summarize(a.lp50), LoadP99: summarize(a.lp99), Errors: a.errs, Undelivered: a.undelivered,
		}
	}
	return out, nil
}

// payload is the body of every benchmark event.
func payload() []byte {
	return []byte(`{"pad":"` + strings.Repeat("x", payloadBytes-10) + `"}`)
}

// openStream opens a stream on name and returns its events on a channel,
// closed when the stream ends; stop closes the stream and waits.
func openStream(ctx context.Context, c *events.Client, name string, unicast bool) (<-chan events.Envelope, func(), error) {
	lo := events.ListenOptions{Names: []string{name}}
	if unicast {
		lo.Delivery, lo.Group, lo.Consumer, lo.Ack = events.Unicast, eventsGroup, eventsConsumer, true
	}
	sctx, cancel := context.WithCancel(ctx)
	st, err := c.Open(sctx, lo)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	out := make(chan events.Envelope, 1024)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(out)
		for {
			env, err := st.Next()
			if err != nil {
				return
			}
			select {
			case out <- env:
			case <-sctx.Done():
				return
			}
		}
	}()
	return out, func() { cancel(); _ = st.Close(); <-done }, nil
}

// pingLatency publishes one event at a time on name and times each until
// it arrives on a stream, for dur or maxN events.
func pingLatency(ctx context.Context, pub, sub *events.Client, name string, unicast bool, dur time.Duration, maxN int) ([]time.Duration, error) {
	got, stop, err := openStream(ctx, sub, name, unicast)
	if err != nil {
		return nil, err
	}
	defer stop()
	body := payload()
	var lat []time.Duration
	timeout := time.NewTimer(deliveryTimeout)
	defer timeout.Stop()
	start := time.Now()
	for i := 0; i < maxN && (i == 0 || time.Since(start) < dur); i++ {
		id := strconv.Itoa(i)
		t0 := time.Now()
		if _, err := pub.Publish(ctx, events.Event{Name: name, CorrelationID: id, Payload: body}); err != nil {
			return nil, err
		}
		timeout.Reset(deliveryTimeout)
	wait:
		for {
			select {
			case env, ok := <-got:
				if !ok {
					return nil, errors.New("stream ended")
				}
				if env.CorrelationID != id {
					continue
				}
				lat = append(lat, time.Since(t0))
				if unicast {
					if _, err := sub.Ack(ctx, name, eventsGroup, eventsConsumer, env.ID); err != nil {
						return nil, err
					}
				}
				break wait
			case <-timeout.C:
				return nil, fmt.Errorf("event %s not delivered within %s", id, deliveryTimeout)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	slices.Sort(lat)
	return lat, nil
}

type throughputResult struct {
	eps  float64
	lat  []time.Duration
	errs int
	// undelivered counts events still not delivered drainTimeout after
	// the publishers stopped.
	undelivered int
}

// throughput publishes from publishers goroutines as fast as they can for
// dur and counts the deliveries on one stream (acknowledged in batches
// when unicast). Each event's correlation id carries its publish time.
func throughput(ctx context.Context, pub, sub *events.Client, name string, unicast bool, dur time.Duration, publishers int) (throughputResult, error) {
	got, stop, err := openStream(ctx, sub, name, unicast)
	if err != nil {
		return throughputResult{}, err
	}
	defer stop()
	var (
		published, failed atomic.Int64
		res               throughputResult
		lastDelivery      time.Time
		delivered         int64
	)
	acks := make(chan string, 4096)
	var ackWG sync.WaitGroup
	if unicast {
		ackWG.Go(func() { ackLoop(ctx, sub, name, acks) })
	}
	body := payload()
	start := time.Now()
	deadline := start.Add(dur)
	var pubWG sync.WaitGroup
	for range publishers {
		pubWG.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				id := strconv.FormatInt(time.Now().UnixNano(), 10)
				if _, err := pub.Publish(ctx, events.Event{Name: name, CorrelationID: id, Payload: body}); err != nil {
					failed.Add(1)
					continue
				}
				published.Add(1)
			}
		})
	}
	pubDone := make(chan struct{})
	go func() { pubWG.Wait(); close(pubDone) }()
	timeout := time.NewTimer(dur + drainTimeout)
	defer timeout.Stop()
	pubFinished := false
loop:
	for !pubFinished || delivered < published.Load() {
		select {
		case env, ok := <-got:
			if !ok {
				err = errors.New("stream ended")
				break loop
			}
			now := time.Now()
			if t, perr := strconv.ParseInt(env.CorrelationID, 10, 64); perr == nil {
				res.lat = append(res.lat, now.Sub(time.Unix(0, t)))
			}
			delivered++
			lastDelivery = now
			if unicast {
				acks <- env.ID
			}
		case <-pubDone:
			pubFinished, pubDone = true, nil
		case <-timeout.C:
			res.undelivered = int(published.Load() - delivered)
			break loop
		case <-ctx.Done():
			err = ctx.Err()
			break loop
		}
	}
	close(acks)
	pubWG.Wait()
	ackWG.Wait()
	if err != nil {
		return res, err
	}
	if elapsed := lastDelivery.Sub(start); elapsed > 0 {
		res.eps = float64(delivered) / elapsed.Seconds()
	}
	res.errs = int(failed.Load())
	slices.Sort(res.lat)
	return res, nil
}

// ackLoop acknowledges the ids it receives, in batches of what is queued.
func ackLoop(ctx context.Context, c *events.Client, name string, ids <-chan string) {
	for id := range ids {
		batch := []string{id}
	drain:
		for len(batch) < 1000 {
			select {
			case id, ok := <-ids:
				if !ok {
					break drain
				}
				batch = append(batch, id)
			default:
				break drain
			}
		}
		_, _ = c.Ack(ctx, name, eventsGroup, eventsConsumer, batch...)
	}
}
