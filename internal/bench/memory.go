package bench

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/busdk/bus-integration-codex/internal/stack"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// MemoryReport is section 5: resident memory of the worker and of the App
// Server processes, idle and under load. The worker runs as its own
// process (the bus-integration-codex command, built for the run) against
// this process's Events API and front door, so its figure is its own.
type MemoryReport struct {
	Skipped string `json:"skipped,omitempty"`
	// WorkerBinary says how the worker was run.
	WorkerBinary string `json:"worker_binary"`
	// MaxRSSMiB is the pool's retirement threshold (resident memory).
	MaxRSSMiB int64          `json:"max_rss_mib"`
	Workers   []MemoryWorker `json:"workers"`
	// Threads is the App Server's memory per finished and per live
	// thread, per mode.
	Threads []ThreadMemory `json:"threads"`
	// ThreadsSkipped says why Threads is empty.
	ThreadsSkipped string `json:"threads_skipped,omitempty"`
}

// MemoryWorker is one worker process on one provider.
type MemoryWorker struct {
	Provider string `json:"provider"`
	Skipped  string `json:"skipped,omitempty"`
	// Load describes each load phase.
	Load      string       `json:"load"`
	Phases    int          `json:"phases"`
	Requests  int          `json:"requests"`
	Errors    int          `json:"errors"`
	Processes []ProcMemory `json:"processes"`
}

// ProcMemory is the memory of one role (a process, or a set of them).
type ProcMemory struct {
	Role string `json:"role"`
	// MaxCount is the most processes of the role seen at once under load;
	// Seen is how many distinct ones the load phases saw (the pool
	// replaces an App Server whose memory passes MaxRSSMiB).
	MaxCount int `json:"max_count"`
	Seen     int `json:"seen"`
	// IdleMiB is VmRSS after start-up and a short warm-up, with no
	// request in flight.
	IdleMiB float64 `json:"idle_rss_mib"`
	// Peak is the largest VmRSS sampled (every 50 ms) during each load
	// phase; for several processes, of their sum.
	Peak Summary `json:"peak_rss_mib"`
	// HWMMiB is VmHWM (the kernel's peak RSS) at the end; for several
	// processes, the sum of the peaks of those still alive.
	HWMMiB float64 `json:"hwm_mib"`
}

const sampleEvery = 50 * time.Millisecond

func (b *bencher) memorySection(ctx context.Context, codexEnv *codexEnv) (*MemoryReport, error) {
	bin, desc, err := b.workerBinary(ctx)
	if err != nil {
		return nil, err
	}
	rep := &MemoryReport{WorkerBinary: desc, MaxRSSMiB: appserver.DefaultMaxRSS >> 20}
	providers := []string{"static"}
	if codexEnv != nil {
		providers = append([]string{"codex"}, providers...)
	} else {
		rep.Workers = append(rep.Workers, MemoryWorker{Provider: "codex", Skipped: "codex is not available"})
	}
	if codexEnv != nil {
		for _, mode := range benchModes() {
			t, err := b.threadMemory(ctx, codexEnv, mode)
			if err != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				b.note(fmt.Sprintf("thread memory (%s mode) failed: %v", mode.name, err))
				rep.ThreadsSkipped = "failed: " + err.Error()
				break
			}
			rep.Threads = append(rep.Threads, *t)
		}
	} else {
		rep.ThreadsSkipped = "codex is not available"
	}
	for _, p := range providers {
		w, err := b.memoryWorker(ctx, bin, p, codexEnv)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			w = &MemoryWorker{Provider: p, Skipped: "failed: " + err.Error()}
			b.note(fmt.Sprintf("memory (%s worker) failed: %v", p, err))
		}
		rep.Workers = append(rep.Workers, *w)
	}
	return rep, nil
}

// workerBinary returns the bus-integration-codex executable: --worker-binary,
// or one built now with go build.
func (b *bencher) workerBinary(ctx context.Context) (path, desc string, err error) {
	if b.opts.workerBinary != "" {
		return b.opts.workerBinary, "`" + b.opts.workerBinary + "`", nil
	}
	// Built once into b.tmp/ from the module root above the working
	// directory.
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.workerBuilt {
		if err := testproc.BuildCommands(ctx, b.tmp, false, "bus-integration-codex"); err != nil {
			return "", "", fmt.Errorf("cannot build the worker (pass --worker-binary to use another): %w", err)
		}
		b.workerBuilt = true
	}
	return filepath.Join(b.tmp, "bus-integration-codex"), "the bus-integration-codex command built with `go build`", nil
}

// workerProc is a running worker process.
type workerProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	ready  chan struct{}
	// concurrency is the --concurrency the worker reported when it
	// connected (read after ready; -1 if it did not say).
	concurrency int
	mu          sync.Mutex
	tail        []string // last stderr lines
}

// logInt reads key=N from a text log line (-1 when absent).
func logInt(line, key string) int {
	for f := range strings.FieldsSeq(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
		}
	}
	return -1
}

// waitReady waits until w has connected to the Events API.
func (w *workerProc) waitReady(ctx context.Context) error {
	select {
	case <-w.ready:
		return nil
	case <-w.exited:
		return fmt.Errorf("worker exited: %s", w.stderrTail())
	case <-time.After(60 * time.Second):
		return fmt.Errorf("worker not connected after 60s: %s", w.stderrTail())
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *workerProc) stderrTail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.tail, "\n")
}

// startWorker runs the worker command against st's Events API, with
// extra flags (e.g. --concurrency) after the connection's; everything
// else is the command's default.
func (b *bencher) startWorker(bin string, st *stack.Stack, provider string, e *codexEnv, extra ...string) (*workerProc, error) {
	token, err := st.Bus.Token("bench-worker-process", stack.ServiceScopes()...)
	if err != nil {
		return nil, err
	}
	args := []string{
		"--events-url", st.Bus.URL, "--provider", provider,
		"--group", workerGroup, "--consumer", "bench-" + provider, "--log-level", "info", "--connect-timeout", "10s",
	}
	env := append(os.Environ(), "BUS_API_TOKEN="+token)
	if e != nil {
		args = append(args, "--codex-command", e.command, "--workdir", e.workdir)
		env = append(env, e.env()...)
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start worker: %w", err)
	}
	w := &workerProc{cmd: cmd, exited: make(chan struct{}), ready: make(chan struct{}), concurrency: -1}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		ready := false
		for sc.Scan() {
			line := sc.Text()
			if !ready && strings.Contains(line, "worker connected") {
				ready = true
				w.concurrency = logInt(line, "concurrency")
				close(w.ready)
			}
			if strings.Contains(line, "request done") {
				continue // one line per request
			}
			w.mu.Lock()
			w.tail = append(w.tail, line)
			if len(w.tail) > 20 {
				w.tail = w.tail[1:]
			}
			w.mu.Unlock()
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		<-scanned
		_ = cmd.Wait()
		close(w.exited)
	}()
	return w, nil
}

// stop ends the worker with SIGTERM (it closes its App Servers), killing
// its process group and any App Server left after a grace period.
func (w *workerProc) stop() {
	pid := w.cmd.Process.Pid
	children := descendants(pid)
	_ = syscall.Kill(pid, syscall.SIGTERM)
	select {
	case <-w.exited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-w.exited
	}
	// The App Servers run in their own process groups.
	for _, c := range children {
		_ = syscall.Kill(-c.pid, syscall.SIGKILL)
	}
}

// App Server roles: the worker's descendants, by command name.
const (
	roleAppServer = "App Server (native codex)"
	roleLauncher  = "npm launcher (node)"
	roleOther     = "short-lived helpers"
	roleTotal     = "App Server total"
)

func roleOf(comm string) string {
	switch comm {
	case "codex":
		return roleAppServer
	case "node":
		return roleLauncher
	}
	return roleOther
}

// roleSample is the memory of a role's processes at one reading (kB).
type roleSample struct {
	rss, hwm int64
	pids     []int
}

// memSample is one reading of the worker and its descendants.
type memSample struct {
	worker procMem
	roles  map[string]*roleSample
	comms  map[string]string // pid's command names by role, for the report
}

func (s memSample) total() int64 {
	var t int64
	for _, r := range s.roles {
		t += r.rss
	}
	return t
}

func (s memSample) role(name string) roleSample {
	if r := s.roles[name]; r != nil {
		return *r
	}
	return roleSample{}
}

func readTree(pid int) memSample {
	s := memSample{roles: map[string]*roleSample{}, comms: map[string]string{}}
	s.worker, _ = readProcMem(pid)
	for _, p := range descendants(pid) {
		m, ok := readProcMem(p.pid)
		if !ok {
			continue
		}
		role := roleOf(p.comm)
		r := s.roles[role]
		if r == nil {
			r = &roleSample{}
			s.roles[role] = r
		}
		r.rss += m.rssKB
		r.hwm += m.hwmKB
		r.pids = append(r.pids, p.pid)
		if role == roleOther {
			s.comms[p.comm] = role
		}
	}
	return s
}

// roleStats accumulates a role over a load phase and the whole run.
type roleStats struct {
	peaks    []float64 // per phase, MiB
	maxCount int
	seen     map[int]bool
}

func (b *bencher) memoryWorker(ctx context.Context, bin, provider string, e *codexEnv) (*MemoryWorker, error) {
	if provider != "codex" {
		e = nil
	}
	st, err := startStack(ctx, stackConfig{log: b.quiet, timeout: codexRequestTimeout})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	conc, workerConc := 64, b.opts.staticWorkerConcurrency
	if e != nil {
		conc, workerConc = 8, 8
	}
	extra := []string{"--concurrency", strconv.Itoa(workerConc)}
	if e != nil {
		extra = append(extra, "--codex-processes", "1")
	}
	w, err := b.startWorker(bin, st, provider, e, extra...)
	if err != nil {
		return nil, err
	}
	defer w.stop()
	if err := w.waitReady(ctx); err != nil {
		return nil, err
	}
	pid := w.cmd.Process.Pid
	client := newHTTPClient(conc)
	defer client.CloseIdleConnections()
	call := newCaller(client, st, "hello world", false)
	if e != nil {
		call = newCaller(client, st, codexPrompt, false)
	}
	op := func(ctx context.Context) (sample, error) {
		ctx, cancel := context.WithTimeout(ctx, codexRequestTimeout)
		defer cancel()
		return call.do(ctx)
	}
	// Warm-up, then idle.
	warm := closedLoop(ctx, min(conc, 4), b.opts.warmup, op)
	if warm.ok == 0 {
		return nil, fmt.Errorf("warm-up failed: %v: %s", warm.firstErr, w.stderrTail())
	}
	if err := sleepCtx(ctx, time.Second); err != nil {
		return nil, err
	}
	idle := readTree(pid)

	res := &MemoryWorker{
		Provider: provider, Phases: b.opts.runs,
		Load: fmt.Sprintf("%d concurrent requests for %s", conc, b.opts.memoryLoad),
	}
	roles := []string{roleAppServer, roleLauncher, roleOther, roleTotal}
	stats := map[string]*roleStats{}
	for _, r := range roles {
		stats[r] = &roleStats{seen: map[int]bool{}}
	}
	var workerPeaks []float64
	helpers := map[string]bool{}
	for range b.opts.runs {
		if e != nil {
			e.fake.ResetRequests()
		}
		var (
			workerPeak int64
			peak       = map[string]int64{}
			stop       = make(chan struct{})
			sampled    = make(chan struct{})
		)
		go func() {
			defer close(sampled)
			t := time.NewTicker(sampleEvery)
			defer t.Stop()
			for {
				s := readTree(pid)
				workerPeak = max(workerPeak, s.worker.rssKB)
				peak[roleTotal] = max(peak[roleTotal], s.total())
				for name, r := range s.roles {
					peak[name] = max(peak[name], r.rss)
					st := stats[name]
					st.maxCount = max(st.maxCount, len(r.pids))
					for _, p := range r.pids {
						st.seen[p] = true
						stats[roleTotal].seen[p] = true
					}
				}
				count := 0
				for _, r := range s.roles {
					count += len(r.pids)
				}
				stats[roleTotal].maxCount = max(stats[roleTotal].maxCount, count)
				for c := range s.comms {
					helpers[c] = true
				}
				select {
				case <-t.C:
				case <-stop:
					return
				}
			}
		}()
		r := closedLoop(ctx, conc, b.opts.memoryLoad, op)
		close(stop)
		<-sampled
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		res.Requests += r.ok
		res.Errors += r.errs
		workerPeaks = append(workerPeaks, mib(workerPeak))
		for _, name := range roles {
			stats[name].peaks = append(stats[name].peaks, mib(peak[name]))
		}
		b.log.Info("memory phase", "provider", provider, "requests", r.ok, "errors", r.errs,
			"worker_peak_mib", mib(workerPeak), "appserver_peak_mib", mib(peak[roleTotal]))
	}
	last := readTree(pid)
	res.Processes = append(res.Processes, ProcMemory{
		Role: "worker (bus-integration-codex)", MaxCount: 1, Seen: 1, IdleMiB: mib(idle.worker.rssKB),
		Peak: summarize(workerPeaks), HWMMiB: mib(last.worker.hwmKB),
	})
	if e != nil {
		var hwmTotal int64
		for _, name := range roles {
			st := stats[name]
			if name != roleTotal && len(st.seen) == 0 {
				continue
			}
			pm := ProcMemory{Role: name, MaxCount: st.maxCount, Seen: len(st.seen), Peak: summarize(st.peaks)}
			if name == roleTotal {
				pm.IdleMiB, pm.HWMMiB = mib(idle.total()), mib(hwmTotal)
			} else {
				pm.IdleMiB, pm.HWMMiB = mib(idle.role(name).rss), mib(last.role(name).hwm)
				hwmTotal += last.role(name).hwm
			}
			if name == roleOther {
				pm.Role += " (" + strings.Join(slices.Sorted(maps.Keys(helpers)), ", ") + ")"
			}
			res.Processes = append(res.Processes, pm)
		}
	}
	if res.Errors > 0 {
		b.note(fmt.Sprintf("memory (%s worker): %d failed requests", provider, res.Errors))
	}
	return res, nil
}

func mib(kb int64) float64 { return float64(kb) / 1024 }
