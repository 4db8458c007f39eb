package bench

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/busdk/bus-integration-codex/internal/provider/static"
)

// StaticReport is section 2: the static provider's round trip, client →
// front door → Events API → worker → Events API → front door → client.
type StaticReport struct {
	Skipped string `json:"skipped,omitempty"`
	// WorkerConcurrency is the in-process worker's Concurrency (and
	// prefetch).
	WorkerConcurrency int         `json:"worker_concurrency"`
	Rows              []StaticRow `json:"rows"`
}

// StaticRow is one mode at one client concurrency.
type StaticRow struct {
	Stream      bool `json:"stream"`
	Concurrency int  `json:"concurrency"`
	// P50 and P99 are of the whole answer (ms); for streams, until
	// data: [DONE].
	P50 Summary `json:"p50_ms"`
	P99 Summary `json:"p99_ms"`
	// FirstP50 and FirstP99 are the time to the first chunk (streams only).
	FirstP50 *Summary `json:"first_chunk_p50_ms,omitempty"`
	FirstP99 *Summary `json:"first_chunk_p99_ms,omitempty"`
	// Max is the slowest request of each run (ms).
	Max Summary `json:"max_ms"`
	RPS Summary `json:"requests_per_s"`
	// CoresUsed is this process's CPU time over the wall time of the run:
	// how much of the machine the stack and client actually got.
	CoresUsed Summary `json:"cores_used"`
	// CPUPerRequest is this process's CPU time (user+system: the client,
	// front door, Events API and worker together) per request (µs).
	CPUPerRequest Summary `json:"cpu_per_request_us"`
	Requests      int     `json:"requests"`
	Errors        int     `json:"errors"`
}

// staticTimeout bounds a static request (the front door's and worker's
// timeout, so the worker's acknowledgement deadline is staticTimeout+10s):
// a static answer takes milliseconds, and a stuck request must not hold
// the run for the default minute.
const staticTimeout = 10 * time.Second

func (b *bencher) staticSection(ctx context.Context) (*StaticReport, error) {
	rep := &StaticReport{WorkerConcurrency: b.opts.staticWorkerConcurrency}
	st, err := startStack(ctx, stackConfig{provider: static.New(), concurrency: b.opts.staticWorkerConcurrency, timeout: staticTimeout, log: b.quiet})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	client := newHTTPClient(maxInt(b.opts.concurrencies))
	defer client.CloseIdleConnections()

	type acc struct {
		p50, p99, f50, f99, mx, rps, cpu, cores []float64
		n, errs                                 int
		firstErr                                error
	}
	type key struct {
		stream bool
		conc   int
	}
	var keys []key
	for _, stream := range []bool{false, true} {
		for _, c := range b.opts.concurrencies {
			keys = append(keys, key{stream, c})
		}
	}
	accs := map[key]*acc{}
	for _, k := range keys {
		accs[k] = &acc{}
	}
	// Warm up: connections, the worker's slots, the runtime.
	op := func(c *caller) func(context.Context) (sample, error) {
		return func(ctx context.Context) (sample, error) {
			ctx, cancel := context.WithTimeout(ctx, staticTimeout)
			defer cancel()
			return c.do(ctx)
		}
	}
	for _, k := range keys {
		closedLoop(ctx, k.conc, b.opts.warmup, op(newCaller(client, st, "hello world", k.stream)))
	}
	for run := range b.opts.runs {
		for _, k := range keys {
			c := newCaller(client, st, "hello world", k.stream)
			cpu0 := processCPU()
			r := closedLoop(ctx, k.conc, b.opts.duration, op(c))
			cpu := processCPU() - cpu0
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			a := accs[k]
			a.p50 = append(a.p50, ms(percentile(r.total, 50)))
			a.p99 = append(a.p99, ms(percentile(r.total, 99)))
			if k.stream {
				a.f50 = append(a.f50, ms(percentile(r.first, 50)))
				a.f99 = append(a.f99, ms(percentile(r.first, 99)))
			}
			a.rps = append(a.rps, r.rate())
			if len(r.total) > 0 {
				a.mx = append(a.mx, ms(r.total[len(r.total)-1]))
			}
			if r.ok > 0 {
				a.cpu = append(a.cpu, float64(cpu.Microseconds())/float64(r.ok))
			}
			a.cores = append(a.cores, cpu.Seconds()/r.elapsed.Seconds())
			a.n += r.ok
			a.errs += r.errs
			if a.firstErr == nil {
				a.firstErr = r.firstErr
			}
			b.log.Info("static run", "stream", k.stream, "concurrency", k.conc, "run", run+1,
				"p50_ms", ms(percentile(r.total, 50)), "p99_ms", ms(percentile(r.total, 99)), "rps", int(r.rate()), "cpu_us_per_req", cpu.Microseconds()/int64(max(1, r.ok)), "errors", r.errs)
		}
	}
	for _, k := range keys {
		a := accs[k]
		row := StaticRow{Stream: k.stream, Concurrency: k.conc, P50: summarize(a.p50), P99: summarize(a.p99), Max: summarize(a.mx), RPS: summarize(a.rps), CPUPerRequest: summarize(a.cpu), CoresUsed: summarize(a.cores), Requests: a.n, Errors: a.errs}
		if k.stream {
			f50, f99 := summarize(a.f50), summarize(a.f99)
			row.FirstP50, row.FirstP99 = &f50, &f99
		}
		if a.firstErr != nil {
			b.note(fmt.Sprintf("static round trip (stream=%v, concurrency %d): %d errors, first: %v", k.stream, k.conc, a.errs, a.firstErr))
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}

func maxInt(xs []int) int {
	m := 0
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// processCPU is the CPU time (user+system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
