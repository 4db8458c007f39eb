package bench

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/cmd/workercmd"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// ConcurrencyReport is the section on requests that wait for a slow model:
// N requests at once through the bus to one worker process (the
// bus-integration-codex command) whose model answers after a fixed delay,
// with the worker's default App Server pool and its default
// --concurrency, beside a worker that admits every request and one with
// the default of before (one request per CPU).
type ConcurrencyReport struct {
	Skipped string `json:"skipped,omitempty"`
	// ModelDelayMS is how long the fake model waits before answering.
	ModelDelayMS float64 `json:"model_delay_ms"`
	Rounds       int     `json:"rounds"`
	// Processes is the worker's default App Server pool size, and
	// PerProcess its default requests in flight per process
	// (workercmd.DefaultProcesses, workercmd.ConcurrencyPerProcess).
	Processes  int `json:"default_processes"`
	PerProcess int `json:"default_concurrency_per_process"`
	// WorkerBinary says how the worker was run.
	WorkerBinary string              `json:"worker_binary"`
	Configs      []ConcurrencyConfig `json:"configs"`
}

// ConcurrencyConfig is one worker configuration.
type ConcurrencyConfig struct {
	Name string `json:"name"`
	// Flags are the worker flags beyond the connection's ("" = defaults).
	Flags string `json:"flags"`
	// Concurrency is the --concurrency the worker reported.
	Concurrency int `json:"concurrency"`
	// IdleRSSMiB is the App Server processes' RSS after the warm-up.
	IdleRSSMiB float64          `json:"idle_rss_mib"`
	Rows       []ConcurrencyRow `json:"rows"`
	Skipped    string           `json:"skipped,omitempty"`
}

// ConcurrencyRow is N requests sent by Client concurrent clients (N at
// once when Client = N).
type ConcurrencyRow struct {
	N      int `json:"n"`
	Client int `json:"client_concurrency"`
	// Wall is the time until all N answered (ms); Ratio is Wall over the
	// same round's single request.
	Wall  Summary `json:"wall_ms"`
	Ratio Summary `json:"ratio_to_one"`
	// IdealRatio is ceil(N/Client): the ratio if every wave of Client
	// requests took as long as one request.
	IdealRatio int `json:"ideal_ratio"`
	// Throughput is N / Wall (requests/s).
	Throughput Summary `json:"requests_per_s"`
	// CPUPerRequest is the App Server processes' CPU per request (ms).
	CPUPerRequest Summary `json:"codex_cpu_per_request_ms"`
	// PeakRSS is the largest total RSS of the App Server processes
	// sampled during the requests (MiB); AddedRSSPerRequest is that peak
	// minus the RSS before them, per request (KiB).
	PeakRSS            Summary `json:"peak_rss_mib"`
	AddedRSSPerRequest Summary `json:"added_rss_per_request_kib"`
	Errors             int     `json:"errors"`
}

// Names of the concurrency section's worker configurations.
const (
	configDefault  = "default"
	configAdmitAll = "every request admitted"
	configPrevious = "previous default (one per CPU)"
)

// concurrencyLoad is one row's load: n requests from client clients.
type concurrencyLoad struct{ n, client int }

func (b *bencher) concurrencySection(ctx context.Context, e *codexEnv) (*ConcurrencyReport, error) {
	bin, desc, err := b.workerBinary(ctx)
	if err != nil {
		return nil, err
	}
	rep := &ConcurrencyReport{
		ModelDelayMS: ms(b.opts.waitModel), Rounds: b.opts.waitRounds,
		Processes: workercmd.DefaultProcesses(), PerProcess: workercmd.ConcurrencyPerProcess, WorkerBinary: desc,
	}
	delay := b.opts.waitModel
	e.fake.SetReply(fakemodel.Reply{Text: "ONE", DelayBefore: delay})
	defer e.fake.SetReply(fakemodel.Reply{Text: fakemodel.DefaultText})

	bursts := func(ns ...int) []concurrencyLoad {
		var out []concurrencyLoad
		for _, n := range ns {
			out = append(out, concurrencyLoad{n, n})
		}
		return out
	}
	sweep := b.opts.waitN
	loop := concurrencyLoad{40, 8} // the example: 40 requests, 8 at a time
	type config struct {
		name  string
		flags []string
		loads []concurrencyLoad
	}
	configs := []config{{configDefault, nil, append(bursts(sweep...), loop)}}
	if !b.opts.quick {
		maxN := maxInt(sweep)
		configs = append(configs,
			config{configAdmitAll, []string{"--concurrency", strconv.Itoa(maxN)}, bursts(sweep...)},
			config{configPrevious, []string{"--concurrency", strconv.Itoa(runtime.NumCPU())}, append(bursts(1, waitingN), loop)})
	}
	for _, c := range configs {
		cc, err := b.concurrencyConfig(ctx, bin, e, c.name, c.flags, c.loads)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			cc = &ConcurrencyConfig{Name: c.name, Flags: joinFlags(c.flags), Skipped: "failed: " + err.Error()}
			b.note(fmt.Sprintf("concurrency (%s) failed: %v", c.name, err))
		}
		rep.Configs = append(rep.Configs, *cc)
	}
	return rep, nil
}

func joinFlags(flags []string) string { return strings.Join(flags, " ") }

func (b *bencher) concurrencyConfig(ctx context.Context, bin string, e *codexEnv, name string, flags []string, loads []concurrencyLoad) (*ConcurrencyConfig, error) {
	st, err := startStack(ctx, stackConfig{log: b.quiet, timeout: codexRequestTimeout})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	w, err := b.startWorker(bin, st, "codex", e, flags...)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	if err := w.waitReady(ctx); err != nil {
		return nil, err
	}
	cc := &ConcurrencyConfig{Name: name, Flags: joinFlags(flags), Concurrency: w.concurrency}
	pid := w.cmd.Process.Pid
	maxN := 0
	for _, l := range loads {
		maxN = max(maxN, l.client)
	}
	client := newHTTPClient(maxN)
	defer client.CloseIdleConnections()
	call := newCaller(client, st, modesPlain, false)

	// run sends l's requests and measures the App Server processes around
	// them.
	run := func(l concurrencyLoad) (wall, cpu time.Duration, peakKB, beforeKB int64, errs int, firstErr error) {
		ctx, cancel := context.WithTimeout(ctx, 4*codexRequestTimeout)
		defer cancel()
		codexPIDs := func() []int {
			var pids []int
			for _, p := range descendants(pid) {
				pids = append(pids, p.pid)
			}
			return pids
		}
		before := codexPIDs()
		beforeKB, cpu0 := rssOf(before), cpuOf(before)
		stop, sampled := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(sampled)
			t := time.NewTicker(sampleEvery)
			defer t.Stop()
			for {
				peakKB = max(peakKB, rssOf(codexPIDs()))
				select {
				case <-t.C:
				case <-stop:
					return
				}
			}
		}()
		var (
			mu   sync.Mutex
			wg   sync.WaitGroup
			next int
		)
		start := time.Now()
		for range l.client {
			wg.Go(func() {
				for {
					mu.Lock()
					if next >= l.n {
						mu.Unlock()
						return
					}
					next++
					mu.Unlock()
					_, err := call.do(ctx)
					if err != nil {
						mu.Lock()
						errs++
						firstErr = cmpErr(firstErr, err)
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		wall = time.Since(start)
		close(stop)
		<-sampled
		cpu = cpuOf(codexPIDs()) - cpu0
		return wall, cpu, peakKB, beforeKB, errs, firstErr
	}
	// Warm the pool: start-up, then a burst at the largest load.
	for _, n := range []int{1, min(maxN, 8)} {
		if _, _, _, _, errs, err := run(concurrencyLoad{n, n}); errs > 0 {
			return nil, fmt.Errorf("warm-up: %w: %s", err, w.stderrTail())
		}
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	var idle []int
	for _, p := range descendants(pid) {
		idle = append(idle, p.pid)
	}
	cc.IdleRSSMiB = roundTo(mib(rssOf(idle)), 1)
	type acc struct {
		wall, ratio, rate, cpu, peak, added []float64
		errs                                int
	}
	accs := make([]acc, len(loads))
	var firstErr error
	for round := range b.opts.waitRounds {
		var one time.Duration
		for i, l := range loads {
			wall, cpu, peakKB, beforeKB, errs, err := run(l)
			if cerr := ctx.Err(); cerr != nil {
				return nil, cerr
			}
			firstErr = cmpErr(firstErr, err)
			a := &accs[i]
			a.errs += errs
			if l.n == 1 || one == 0 {
				one = wall
			}
			a.wall = append(a.wall, ms(wall))
			a.ratio = append(a.ratio, float64(wall)/float64(one))
			a.rate = append(a.rate, float64(l.n)/wall.Seconds())
			a.cpu = append(a.cpu, ms(cpu)/float64(l.n))
			a.peak = append(a.peak, mib(peakKB))
			a.added = append(a.added, float64(max(0, peakKB-beforeKB))/float64(l.n))
			b.log.Info("concurrency", "config", name, "n", l.n, "client", l.client, "round", round+1,
				"wall_ms", ms(wall), "ratio", float64(wall)/float64(one), "codex_cpu_ms_per_request", ms(cpu)/float64(l.n), "errors", errs)
		}
	}
	if firstErr != nil {
		b.note(fmt.Sprintf("concurrency (%s): failed requests, first: %v", name, firstErr))
	}
	for i, l := range loads {
		a := accs[i]
		cc.Rows = append(cc.Rows, ConcurrencyRow{
			N: l.n, Client: l.client, Wall: summarize(a.wall), Ratio: summarize(a.ratio),
			IdealRatio: (l.n + l.client - 1) / l.client, Throughput: summarize(a.rate), CPUPerRequest: summarize(a.cpu),
			PeakRSS: summarize(a.peak), AddedRSSPerRequest: summarize(a.added), Errors: a.errs,
		})
	}
	return cc, nil
}

// row returns the config's row of n requests all at once, or nil.
func (c *ConcurrencyConfig) row(n int) *ConcurrencyRow {
	for i, r := range c.Rows {
		if r.N == n && r.Client == n {
			return &c.Rows[i]
		}
	}
	return nil
}

// config returns the named configuration that ran, or nil.
func (r *ConcurrencyReport) config(name string) *ConcurrencyConfig {
	if r == nil || r.Skipped != "" {
		return nil
	}
	i := slices.IndexFunc(r.Configs, func(c ConcurrencyConfig) bool { return c.Name == name && c.Skipped == "" })
	if i < 0 {
		return nil
	}
	return &r.Configs[i]
}

// Sizing is what the run says about the worker's default number of
// requests in flight per App Server process (workercmd.ConcurrencyPerProcess):
// at least enough for the waiting goal, and at most what its share of the
// cores can run while the requests wait and what fits in its memory
// limit (see verdict).
type Sizing struct {
	Skipped string `json:"skipped,omitempty"`
	// PerProcess is the default being checked; Processes the default pool
	// size and Cores the machine's.
	PerProcess int `json:"default_concurrency_per_process"`
	Processes  int `json:"default_processes"`
	Cores      int `json:"cores"`
	// ModelDelayMS is the waiting model's delay.
	ModelDelayMS float64 `json:"model_delay_ms"`
	// Carried is the most requests at once the pool answered within
	// 1.3× the time of one when the worker admitted every request (the
	// largest load tried when all were), and CarriedRatio that load's
	// ratio; Tried is the largest load tried.
	Carried      int     `json:"carried"`
	CarriedRatio float64 `json:"carried_ratio"`
	Tried        int     `json:"tried"`
	// WaitingRate is the most requests per second per process the
	// worker that admitted every request answered with the waiting model,
	// at WaitingRateN at once.
	WaitingRate  float64 `json:"waiting_requests_per_s_per_process"`
	WaitingRateN int     `json:"waiting_rate_at_once"`
	// CPUPerRequestMS is the App Server processes' CPU per request with
	// 8 or more at once (median over those loads of the default worker).
	// CPUBound is how many requests one process can have waiting on a
	// model of ModelDelayMS before they need more CPU than its share of
	// the cores: delay × (cores / processes) / CPU per request.
	CPUPerRequestMS float64 `json:"codex_cpu_per_request_ms"`
	CPUBound        int     `json:"cpu_bound"`
	// InFlightKiB is the App Server RSS added per request in flight
	// (median over the loads of 8 or more of the default worker);
	// LiveKiB the RSS per live conversation thread (memory section,
	// model mode); LiveThreads the provider's default bound on them.
	// MemoryBound is how many requests in flight fit under MaxRSSMiB
	// beside IdleMiB and LiveThreads live threads.
	InFlightKiB float64 `json:"rss_per_request_in_flight_kib"`
	LiveKiB     float64 `json:"rss_per_live_thread_kib"`
	// LiveMeasured says LiveKiB was measured (the memory section ran).
	LiveMeasured bool    `json:"live_measured"`
	LiveThreads  int     `json:"live_threads"`
	IdleMiB      float64 `json:"idle_rss_mib"`
	MaxRSSMiB    int64   `json:"max_rss_mib"`
	MemoryBound  int     `json:"memory_bound"`
	// ModelCPUMS and AgentCPUMS are the App Server's CPU per plain
	// request in model and agent mode, one request at a time (section 4;
	// 0 when it did not run).
	ModelCPUMS float64 `json:"model_cpu_per_request_ms"`
	AgentCPUMS float64 `json:"agent_cpu_per_request_ms"`
	// TurnsPerSecond is the most requests per second one App Server
	// process answered with the zero-latency model, through the bus, at
	// TurnsN at once (section 5, pool of one process; 0 when it did not
	// run): the rate at which its CPU runs out.
	TurnsPerSecond float64 `json:"turns_per_second_per_process"`
	TurnsN         int     `json:"turns_at_once"`
	// Verdict is the conclusion in one sentence.
	Verdict string `json:"verdict"`
}

func sizing(r *Report) *Sizing {
	s := &Sizing{
		PerProcess: workercmd.ConcurrencyPerProcess, Processes: workercmd.DefaultProcesses(), Cores: r.Machine.Cores,
		LiveThreads: codex.DefaultLiveThreads, MaxRSSMiB: appserver.DefaultMaxRSS >> 20,
	}
	if t := r.Modes.timing(catalog.ModeModel); t != nil {
		s.ModelCPUMS = t.CPUPlain.Median
	}
	if t := r.Modes.timing(catalog.ModeAgent); t != nil {
		s.AgentCPUMS = t.CPUPlain.Median
	}
	if r.Scaling != nil && r.Scaling.Skipped == "" {
		for _, p := range r.Scaling.Pools {
			if p.Processes != 1 {
				continue
			}
			for _, row := range p.Rows {
				if row.Errors == 0 && row.Throughput.Median > s.TurnsPerSecond {
					s.TurnsPerSecond, s.TurnsN = roundTo(row.Throughput.Median, 1), row.N
				}
			}
		}
	}
	def, all := r.Concurrency.config(configDefault), r.Concurrency.config(configAdmitAll)
	if def == nil || all == nil {
		s.Skipped = "needs the concurrency section's default and every-request-admitted workers (not in --quick)"
		return s
	}
	s.ModelDelayMS = r.Concurrency.ModelDelayMS
	for _, row := range all.Rows {
		if row.Client != row.N {
			continue
		}
		s.Tried = max(s.Tried, row.N)
		if row.Ratio.Median <= targetWaitingRatio && row.N > s.Carried {
			s.Carried, s.CarriedRatio = row.N, row.Ratio.Median
		}
		if rate := row.Throughput.Median / float64(max(1, s.Processes)); rate > s.WaitingRate {
			s.WaitingRate, s.WaitingRateN = roundTo(rate, 1), row.N
		}
	}
	var cpus, added []float64
	for _, row := range def.Rows {
		if row.N >= waitingN && row.Client == row.N {
			cpus = append(cpus, row.CPUPerRequest.Median)
			added = append(added, row.AddedRSSPerRequest.Median)
		}
	}
	s.CPUPerRequestMS, s.InFlightKiB = roundTo(summarize(cpus).Median, 1), roundTo(summarize(added).Median, 0)
	if s.CPUPerRequestMS > 0 {
		share := float64(s.Cores) / float64(max(1, s.Processes))
		s.CPUBound = int(s.ModelDelayMS * share / s.CPUPerRequestMS)
	}
	s.IdleMiB = def.IdleRSSMiB
	if m := r.Memory; m != nil {
		for _, t := range m.Threads {
			if t.Mode == catalog.ModeModel {
				s.LiveKiB, s.LiveMeasured = t.LiveKiB, true
			}
		}
	}
	if s.InFlightKiB > 0 {
		free := float64(s.MaxRSSMiB)*1024 - s.IdleMiB*1024 - float64(s.LiveThreads)*max(0, s.LiveKiB)
		s.MemoryBound = max(0, int(free/s.InFlightKiB))
	}
	s.Verdict = verdict(s)
	return s
}

// verdict weighs the default per process against the run's bounds: at
// least the waiting goal's requests at once, at most what the process's
// share of the cores runs while the requests wait (the CPU bound) and
// what fits under its memory limit. What the pool answered within 1.3×
// of one request (Carried) is reported beside them but is no bound: a
// burst's thread starts queue for the cores at once, so on a shared
// machine it measures the other work as much as the App Server.
func verdict(s *Sizing) string {
	low := (waitingN + s.Processes - 1) / max(1, s.Processes) // the goal's 8 at once on the default pool
	bound, by := 0, ""
	if s.CPUBound > 0 {
		bound, by = s.CPUBound, "the CPU bound"
	}
	if s.MemoryBound > 0 && (bound == 0 || s.MemoryBound < bound) {
		bound, by = s.MemoryBound, "the memory bound"
	}
	switch {
	case bound > 0 && s.PerProcess > bound:
		return fmt.Sprintf("too high: %d per process is more than %s, %d", s.PerProcess, by, bound)
	case s.PerProcess < low:
		return fmt.Sprintf("too low: %d per process admits fewer than the %d requests of the waiting goal at once", s.PerProcess, waitingN)
	case bound == 0:
		return fmt.Sprintf("unbounded: %d per process admits the %d requests of the waiting goal, but neither CPU nor memory per request was measured", s.PerProcess, waitingN)
	}
	measured := func(n int) string {
		if n == 0 {
			return "not measured"
		}
		return strconv.Itoa(n)
	}
	return fmt.Sprintf("supported: %d per process admits the %d requests of the waiting goal at once and stays under the CPU bound (%s) "+
		"and the memory bound (%s); the lower, %s, is what would limit it", s.PerProcess, waitingN, measured(s.CPUBound), measured(s.MemoryBound), by)
}
