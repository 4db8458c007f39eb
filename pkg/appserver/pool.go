package appserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Process configures every process of the pool.
	Process Config
	// Size is the number of processes (default 1). See the package doc for
	// sizing.
	Size int
	// Eager starts all processes in NewPool; otherwise each starts on the
	// first run that needs it.
	Eager bool
	// MaxRunsPerProcess retires a process after it has started that many
	// runs: it finishes its in-flight runs and is replaced. The app-server
	// keeps finished ephemeral threads loaded (thread/unsubscribe does not
	// unload them in 0.169.0; ≈1 MiB RSS per run), so this bounds memory.
	// 0 means DefaultMaxRunsPerProcess; negative means never retire.
	MaxRunsPerProcess int
}

// DefaultMaxRunsPerProcess is PoolConfig.MaxRunsPerProcess's default.
const DefaultMaxRunsPerProcess = 256

// Pool runs requests on N long-lived app-server processes. Run picks the
// least-loaded live process; a process that died is replaced on the next
// run that picks its slot (runs it was serving fail with ErrProcessExited).
type Pool struct {
	cfg    PoolConfig
	life   context.Context // processes live until this ends
	cancel context.CancelFunc

	mu      sync.Mutex
	slots   []*slot
	closed  bool
	runs    sync.WaitGroup // in-flight Pool.Run calls
	retired sync.WaitGroup // retiring processes being drained
	stats   PoolStats
}

type slot struct {
	sem      chan struct{} // 1-token lock guarding (re)starts
	proc     *Process      // guarded by Pool.mu
	started  int           // runs started on proc, guarded by Pool.mu
	inflight int           // guarded by Pool.mu
}

// PoolStats are counters of a Pool.
type PoolStats struct {
	// Starts counts processes started (including restarts).
	Starts int
	// Restarts counts processes started to replace a dead one.
	Restarts int
	// Retired counts processes retired by MaxRunsPerProcess.
	Retired int
}

// NewPool creates a pool. ctx bounds the pool's life: when it is cancelled
// all processes are killed (call Close anyway to wait for them). With
// cfg.Eager all processes are started now and an error is returned if any
// fails to start.
func NewPool(ctx context.Context, cfg PoolConfig) (*Pool, error) {
	if cfg.Size <= 0 {
		cfg.Size = 1
	}
	if cfg.MaxRunsPerProcess == 0 {
		cfg.MaxRunsPerProcess = DefaultMaxRunsPerProcess
	}
	life, cancel := context.WithCancel(ctx)
	p := &Pool{cfg: cfg, life: life, cancel: cancel}
	for range cfg.Size {
		p.slots = append(p.slots, &slot{sem: make(chan struct{}, 1)})
	}
	if cfg.Eager {
		for _, s := range p.slots {
			if _, err := p.ensure(ctx, s); err != nil {
				_ = p.Close()
				return nil, err
			}
		}
	}
	return p, nil
}

// Run runs req on the least-loaded process (see Process.Run).
func (p *Pool) Run(ctx context.Context, req RunRequest) (*RunResult, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("appserver: pool run: %w", ErrClosed)
	}
	p.runs.Add(1)
	s := p.pick()
	s.inflight++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		s.inflight--
		p.mu.Unlock()
		p.runs.Done()
	}()

	proc, err := p.ensure(ctx, s)
	if err != nil {
		return nil, err
	}
	return proc.Run(ctx, req)
}

// pick returns the slot with the fewest in-flight runs, preferring slots
// with a live process on ties. Caller holds p.mu.
func (p *Pool) pick() *slot {
	var best *slot
	for _, s := range p.slots {
		if best == nil || s.inflight < best.inflight ||
			(s.inflight == best.inflight && s.live() && !best.live()) {
			best = s
		}
	}
	return best
}

func (s *slot) live() bool { return s.proc != nil && s.proc.Alive() }

// ensure returns the slot's live process, starting (or restarting, or
// replacing a retired) one if needed. It also counts the run.
func (p *Pool) ensure(ctx context.Context, s *slot) (*Process, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("appserver: pool: %w", ctx.Err())
	}
	defer func() { <-s.sem }()

	p.mu.Lock()
	proc, closed := s.proc, p.closed
	if proc != nil && proc.Alive() && !closed {
		if p.cfg.MaxRunsPerProcess <= 0 || s.started < p.cfg.MaxRunsPerProcess {
			s.started++
			p.mu.Unlock()
			return proc, nil
		}
		p.retire(proc)
		s.proc, proc = nil, nil
	}
	p.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("appserver: pool run: %w", ErrClosed)
	}
	restart := proc != nil
	if proc != nil {
		_ = proc.Close() // reap the dead process before replacing it
	}

	np, err := start(p.life, ctx, p.cfg.Process)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = np.Close()
		return nil, fmt.Errorf("appserver: pool run: %w", ErrClosed)
	}
	s.proc, s.started = np, 1
	p.stats.Starts++
	if restart {
		p.stats.Restarts++
	}
	return np, nil
}

// retire drains proc in the background and closes it. Caller holds p.mu.
func (p *Pool) retire(proc *Process) {
	p.stats.Retired++
	p.retired.Add(1)
	go func() {
		defer p.retired.Done()
		_ = proc.Shutdown(p.life)
	}()
}

// Stats returns the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// InFlight returns the number of runs in progress per slot.
func (p *Pool) InFlight() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int, len(p.slots))
	for i, s := range p.slots {
		out[i] = s.inflight
	}
	return out
}

// Processes returns the live processes (for health checks such as
// Account, or diagnostics).
func (p *Pool) Processes() []*Process {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*Process
	for _, s := range p.slots {
		if s.live() {
			out = append(out, s.proc)
		}
	}
	return out
}

// Account reports the account state from a live process, starting one if
// none is running.
func (p *Pool) Account(ctx context.Context) (*AccountStatus, error) {
	if procs := p.Processes(); len(procs) > 0 {
		return procs[0].Account(ctx)
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("appserver: pool: %w", ErrClosed)
	}
	p.runs.Add(1)
	s := p.pick()
	p.mu.Unlock()
	defer p.runs.Done()
	proc, err := p.ensure(ctx, s)
	if err != nil {
		return nil, err
	}
	return proc.Account(ctx)
}

// Close kills all processes, failing in-flight runs (ErrProcessExited and
// ErrClosed), and waits for them and the runs to finish.
func (p *Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	procs := p.allProcs()
	p.mu.Unlock()
	p.cancel()
	var errs []error
	for _, pr := range procs {
		errs = append(errs, pr.Close())
	}
	p.runs.Wait()
	p.retired.Wait()
	// A run may have started a process between allProcs and closed=true;
	// ensure closes those itself, but close anything left to be sure.
	p.mu.Lock()
	procs = p.allProcs()
	p.mu.Unlock()
	for _, pr := range procs {
		errs = append(errs, pr.Close())
	}
	return errors.Join(errs...)
}

// Shutdown stops accepting runs, waits for in-flight runs to finish (or
// ctx to end), then closes the pool.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		p.runs.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("appserver: pool shutdown: %w", ctx.Err())
	}
	if cerr := p.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

func (p *Pool) allProcs() []*Process {
	var out []*Process
	for _, s := range p.slots {
		if s.proc != nil {
			out = append(out, s.proc)
		}
	}
	return out
}
