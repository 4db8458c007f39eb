package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/turn"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// codexPrompt is the user message of every codex request.
const codexPrompt = "Say hello"

// codexRequestTimeout bounds one codex request.
const codexRequestTimeout = 60 * time.Second

// codexEnv is what the codex sections share: the zero-latency fake model,
// a CODEX_HOME pointing Codex at it, and a working directory.
type codexEnv struct {
	command string
	fake    *fakemodel.Server
	home    string
	workdir string
	empty   string // an empty directory (model mode's working directory)
}

func newCodexEnv(command string) (*codexEnv, error) {
	e := &codexEnv{command: command, fake: fakemodel.Start()}
	var err error
	if e.home, err = os.MkdirTemp("", "bus-bench-codex-home-"); err == nil {
		if e.workdir, err = os.MkdirTemp("", "bus-bench-codex-work-"); err == nil {
			if e.empty, err = os.MkdirTemp("", "bus-bench-codex-empty-"); err == nil {
				err = fakemodel.WriteCodexHomeDir(e.home, e.fake.URL())
			}
		}
	}
	if err != nil {
		e.close()
		return nil, err
	}
	e.fake.SetReply(fakemodel.Reply{Text: "Hello from the fake model."})
	return e, nil
}

func (e *codexEnv) close() {
	e.fake.Close()
	for _, d := range []string{e.home, e.workdir, e.empty} {
		if d != "" {
			_ = os.RemoveAll(d)
		}
	}
}

// env is the environment codex needs.
func (e *codexEnv) env() []string { return []string{"CODEX_HOME=" + e.home} }

func (b *bencher) newProvider(ctx context.Context, e *codexEnv, processes int) (*codex.Provider, error) {
	return codex.New(ctx, codex.Config{
		Command: e.command, Workdir: e.workdir, Processes: processes, Env: e.env(), Logger: b.quiet,
	})
}

// directThread is the thread the codex provider starts for the bus
// request's chat completion in model mode (no system prompt, one user
// message): Codex's base prompt replaced by the provider's default
// instructions, every Codex tool and text block off, an empty working
// directory. It takes the provider's config (codex.ModelModeConfig) and
// mirrors the rest of its shapeOf (less the per-thread model catalog,
// which changes nothing in the request to the fake model); the section
// checks that both paths send the model a request of the same size.
func directThread(e *codexEnv) appserver.ThreadParams {
	return appserver.ThreadParams{
		Cwd: e.empty, Sandbox: appserver.SandboxReadOnly, ApprovalPolicy: appserver.ApprovalUntrusted,
		Handler: appserver.HandlerFunc(appserver.Deny), ServiceName: "bus-integration-codex",
		BaseInstructions: codex.DefaultInstructions, RawEvents: true, HoldToolCalls: true,
		Config: codex.ModelModeConfig(),
	}
}

// directTurn runs one turn of prompt on a fresh thread of pool and closes
// the thread.
func directTurn(ctx context.Context, pool *appserver.Pool, tp appserver.ThreadParams, prompt string) error {
	th, err := pool.StartThread(ctx, tp)
	if err != nil {
		return err
	}
	defer th.Close()
	tu, err := th.StartTurn(ctx, appserver.TurnParams{Input: []appserver.UserInput{appserver.TextInput(prompt)}})
	if err != nil {
		return err
	}
	for {
		if _, err := tu.Next(ctx); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
	}
	if err := tu.Err(); err != nil {
		return err
	}
	if st := tu.Status(); st != appserver.StatusCompleted {
		return fmt.Errorf("turn %s", st)
	}
	return nil
}

// CodexReport is section 3: the same codex request directly on the App
// Server client (A) and through the whole bus path (B), interleaved.
type CodexReport struct {
	Skipped string `json:"skipped,omitempty"`
	// Processes is the App Server pool size both paths share.
	Processes int `json:"processes"`
	// Pairs is the number of A,B pairs per run.
	Pairs int `json:"pairs_per_run"`
	// DirectRequestBytes and BusRequestBytes are the bodies the model
	// received from each path (the same request when they are equal).
	DirectRequestBytes int     `json:"direct_model_request_bytes"`
	BusRequestBytes    int     `json:"bus_model_request_bytes"`
	DirectP50          Summary `json:"direct_p50_ms"`
	DirectP99          Summary `json:"direct_p99_ms"`
	BusP50             Summary `json:"bus_p50_ms"`
	BusP99             Summary `json:"bus_p99_ms"`
	// RatioP50 is bus p50 / direct p50 of each run.
	RatioP50 Summary `json:"ratio_p50"`
	// AddedP50 is bus p50 − direct p50 of each run (ms).
	AddedP50 Summary `json:"added_p50_ms"`
	// PairedAdded is each run's median of (B − A) over its pairs (ms).
	PairedAdded Summary `json:"paired_added_median_ms"`
	// BusProviderP50 is the p50 of the codex provider's Run inside the
	// worker during (b) (ms): BusP50 − BusProviderP50 is the transport
	// (client, front door, Events API, worker), BusProviderP50 − DirectP50
	// the provider's own mapping around the same App Server turn.
	BusProviderP50 Summary `json:"bus_provider_run_p50_ms"`
	Errors         int     `json:"errors"`
	// PoolStarts, PoolRestarts and PoolRetired are the pool's counters at
	// the end (a retirement during the runs would show as an outlier).
	PoolStarts   int `json:"pool_starts"`
	PoolRestarts int `json:"pool_restarts"`
	PoolRetired  int `json:"pool_retired"`
}

func (b *bencher) codexSection(ctx context.Context, e *codexEnv) (*CodexReport, error) {
	const processes = 1
	rep := &CodexReport{Processes: processes, Pairs: b.opts.pairs}
	prov, err := b.newProvider(ctx, e, processes)
	if err != nil {
		return nil, err
	}
	timed := &timedProvider{Provider: prov}
	st, err := startStack(ctx, stackConfig{provider: timed, concurrency: 8, timeout: codexRequestTimeout, log: b.quiet})
	if err != nil {
		_ = prov.Close()
		return nil, err
	}
	defer func() { _ = prov.Close() }()
	defer st.Close()
	client := newHTTPClient(8)
	defer client.CloseIdleConnections()
	busCall := newCaller(client, st, codexPrompt, false)
	tp := directThread(e)
	direct := func(ctx context.Context) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, codexRequestTimeout)
		defer cancel()
		start := time.Now()
		if err := directTurn(ctx, prov.Pool(), tp, codexPrompt); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	lastBytes := func() int {
		reqs := e.fake.Requests()
		if len(reqs) == 0 {
			return 0
		}
		return len(reqs[len(reqs)-1].Body)
	}
	viaBus := func(ctx context.Context) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, codexRequestTimeout)
		defer cancel()
		s, err := busCall.do(ctx)
		return s.total, err
	}
	for range b.opts.codexWarmup {
		if _, err := direct(ctx); err != nil {
			return nil, fmt.Errorf("warm-up (direct): %w", err)
		}
		rep.DirectRequestBytes = lastBytes()
		if _, err := viaBus(ctx); err != nil {
			return nil, fmt.Errorf("warm-up (bus): %w", err)
		}
		rep.BusRequestBytes = lastBytes()
	}
	if rep.DirectRequestBytes != rep.BusRequestBytes {
		b.note(fmt.Sprintf("codex direct vs bus: the direct thread sent the model %d bytes, the provider %d: bench's directThread no longer mirrors the provider's model mode",
			rep.DirectRequestBytes, rep.BusRequestBytes))
	}
	var d50, d99, b50, b99, ratio, added, paired, prov50 []float64
	var firstErr error
	for run := range b.opts.runs {
		e.fake.ResetRequests()
		timed.reset()
		var as, bs, diffs []time.Duration
		for range b.opts.pairs {
			a, errA := direct(ctx)
			bb, errB := viaBus(ctx)
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			for _, err := range []error{errA, errB} {
				if err != nil {
					rep.Errors++
					firstErr = cmpErr(firstErr, err)
				}
			}
			if errA == nil {
				as = append(as, a)
			}
			if errB == nil {
				bs = append(bs, bb)
			}
			if errA == nil && errB == nil {
				diffs = append(diffs, bb-a)
			}
		}
		if len(as) == 0 || len(bs) == 0 {
			return nil, fmt.Errorf("run %d: every request failed: %w", run+1, firstErr)
		}
		slices.Sort(as)
		slices.Sort(bs)
		slices.Sort(diffs)
		pa, pb := percentile(as, 50), percentile(bs, 50)
		d50, d99 = append(d50, ms(pa)), append(d99, ms(percentile(as, 99)))
		b50, b99 = append(b50, ms(pb)), append(b99, ms(percentile(bs, 99)))
		ratio = append(ratio, float64(pb)/float64(pa))
		added = append(added, ms(pb-pa))
		paired = append(paired, ms(percentile(diffs, 50)))
		prov50 = append(prov50, ms(percentile(timed.reset(), 50)))
		b.log.Info("codex direct vs bus run", "run", run+1, "direct_p50_ms", ms(pa), "bus_p50_ms", ms(pb), "added_ms", ms(pb-pa), "provider_run_p50_ms", prov50[len(prov50)-1])
	}
	if firstErr != nil {
		b.note(fmt.Sprintf("codex direct vs bus: %d failed requests, first: %v", rep.Errors, firstErr))
	}
	rep.DirectP50, rep.DirectP99 = summarize(d50), summarize(d99)
	rep.BusP50, rep.BusP99 = summarize(b50), summarize(b99)
	rep.RatioP50, rep.AddedP50, rep.PairedAdded = summarize(ratio), summarize(added), summarize(paired)
	rep.BusProviderP50 = summarize(prov50)
	stats := prov.Pool().Stats()
	rep.PoolStarts, rep.PoolRestarts, rep.PoolRetired = stats.Starts, stats.Restarts, stats.Retired
	return rep, nil
}

// timedProvider records how long each Run of the provider it wraps takes.
type timedProvider struct {
	turn.Provider
	mu    sync.Mutex
	times []time.Duration
}

func (p *timedProvider) Run(ctx context.Context, req *turn.Request, sink turn.Sink) (*turn.Result, error) {
	start := time.Now()
	res, err := p.Provider.Run(ctx, req, sink)
	d := time.Since(start)
	p.mu.Lock()
	p.times = append(p.times, d)
	p.mu.Unlock()
	return res, err
}

// reset returns the recorded times, sorted, and forgets them.
func (p *timedProvider) reset() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	t := p.times
	p.times = nil
	slices.Sort(t)
	return t
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// ScalingReport is section 4: wall time of N concurrent codex requests
// through the bus, per App Server pool size.
type ScalingReport struct {
	Skipped string `json:"skipped,omitempty"`
	// Rounds is how many times each N was measured.
	Rounds int           `json:"rounds"`
	Pools  []ScalingPool `json:"pools"`
}

// ScalingPool holds the rows of one pool size.
type ScalingPool struct {
	Processes int          `json:"processes"`
	Rows      []ScalingRow `json:"rows"`
}

// ScalingRow is N concurrent requests.
type ScalingRow struct {
	N int `json:"n"`
	// Wall is the time until all N answered (ms).
	Wall Summary `json:"wall_ms"`
	// Ratio is wall(N) / wall(1) of the same round.
	Ratio Summary `json:"ratio_to_one"`
	// Throughput is N / wall (requests/s).
	Throughput Summary `json:"requests_per_s"`
	Errors     int     `json:"errors"`
}

func (b *bencher) scalingSection(ctx context.Context, e *codexEnv) (*ScalingReport, error) {
	rep := &ScalingReport{Rounds: b.opts.rounds}
	for _, size := range b.opts.poolSizes {
		pool, err := b.scalePool(ctx, e, size)
		if err != nil {
			return nil, fmt.Errorf("pool of %d: %w", size, err)
		}
		rep.Pools = append(rep.Pools, *pool)
	}
	return rep, nil
}

func (b *bencher) scalePool(ctx context.Context, e *codexEnv, size int) (*ScalingPool, error) {
	prov, err := b.newProvider(ctx, e, size)
	if err != nil {
		return nil, err
	}
	defer func() { _ = prov.Close() }()
	maxN := maxInt(b.opts.scalingN)
	st, err := startStack(ctx, stackConfig{provider: prov, concurrency: maxN, timeout: codexRequestTimeout, log: b.quiet})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	client := newHTTPClient(maxN)
	defer client.CloseIdleConnections()
	call := newCaller(client, st, codexPrompt, false)
	burst := func(n int) (time.Duration, int, error) {
		ctx, cancel := context.WithTimeout(ctx, codexRequestTimeout)
		defer cancel()
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			errs     int
			firstErr error
		)
		start := time.Now()
		for range n {
			wg.Go(func() {
				if _, err := call.do(ctx); err != nil {
					mu.Lock()
					errs++
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		return time.Since(start), errs, firstErr
	}
	// Warm every process of the pool.
	for range 2 {
		if _, _, err := burst(2 * size); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	walls := map[int][]float64{}
	ratios := map[int][]float64{}
	rates := map[int][]float64{}
	errCount := map[int]int{}
	var firstErr error
	for round := range b.opts.rounds {
		e.fake.ResetRequests()
		var one time.Duration
		for _, n := range b.opts.scalingN {
			wall, errs, err := burst(n)
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
			errCount[n] += errs
			firstErr = cmpErr(firstErr, err)
			if n == 1 || one == 0 {
				one = wall
			}
			walls[n] = append(walls[n], ms(wall))
			ratios[n] = append(ratios[n], float64(wall)/float64(one))
			rates[n] = append(rates[n], float64(n)/wall.Seconds())
			b.log.Info("pool scaling", "processes", size, "n", n, "round", round+1, "wall_ms", ms(wall))
		}
	}
	if firstErr != nil {
		b.note(fmt.Sprintf("pool scaling (%d processes): failed requests, first: %v", size, firstErr))
	}
	pool := &ScalingPool{Processes: size}
	for _, n := range b.opts.scalingN {
		pool.Rows = append(pool.Rows, ScalingRow{N: n, Wall: summarize(walls[n]), Ratio: summarize(ratios[n]), Throughput: summarize(rates[n]), Errors: errCount[n]})
	}
	return pool, nil
}
