package appserver

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// PoolConfig configures a Pool.
type PoolConfig struct {
	// Process configures every process of the pool.
	Process Config
	// Size is the number of processes (default 1). See the package doc for
	// sizing.
	Size int
	// Eager starts all processes in NewPool; otherwise each starts on the
	// first thread that needs it.
	Eager bool
	// MaxRunsPerProcess retires a process after that many threads were
	// started on it (0: no limit). Retiring lets the threads it holds end,
	// then closes it; new threads go to a fresh process meanwhile.
	MaxRunsPerProcess int
	// MaxRSS retires a process whose resident memory (its process group
	// included) exceeds it, measured when a thread of it closes and at
	// most every RSSCheckInterval. 0 means DefaultMaxRSS, negative never.
	MaxRSS int64
	// RSSCheckInterval bounds how often a process's memory is read
	// (DefaultRSSCheckInterval when 0).
	RSSCheckInterval time.Duration
}

// Defaults of PoolConfig. Measured on 0.171.0 (docs/BENCHMARKS.md): a
// thread closed with thread_unload_delay_secs 0 leaves ≈57 KB behind, so
// memory, not a run count, decides when a process is recycled.
const (
	DefaultMaxRSS           = 1 << 30
	DefaultRSSCheckInterval = 5 * time.Second
)

// Pool runs threads on N long-lived app-server processes. A thread goes to
// the process with the fewest open threads; a process that died is
// replaced on the next thread that needs its slot (threads it held fail
// with ErrProcessExited).
type Pool struct {
	cfg    PoolConfig
	life   context.Context // processes live until this ends
	cancel context.CancelFunc

	mu      sync.Mutex
	slots   []*slot
	closed  bool
	calls   sync.WaitGroup // in-flight Run and StartThread calls
	retired sync.WaitGroup // retiring processes being drained
	stats   PoolStats
}

type slot struct {
	sem chan struct{} // 1-token lock guarding (re)starts
	cur *member       // guarded by Pool.mu
}

// member is one process of the pool with its accounting, guarded by
// Pool.mu.
type member struct {
	proc      *Process
	threads   int // open threads (counted when the slot is taken)
	started   int // threads started on it
	retiring  bool
	lastCheck time.Time
}

// PoolStats are counters of a Pool.
type PoolStats struct {
	// Starts counts processes started (including restarts).
	Starts int
	// Restarts counts processes started to replace a dead one.
	Restarts int
	// Retired counts processes retired (MaxRunsPerProcess or MaxRSS).
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
	if cfg.MaxRSS == 0 {
		cfg.MaxRSS = DefaultMaxRSS
	}
	if cfg.RSSCheckInterval <= 0 {
		cfg.RSSCheckInterval = DefaultRSSCheckInterval
	}
	life, cancel := context.WithCancel(ctx)
	p := &Pool{cfg: cfg, life: life, cancel: cancel}
	for range cfg.Size {
		p.slots = append(p.slots, &slot{sem: make(chan struct{}, 1)})
	}
	if cfg.Eager {
		for _, s := range p.slots {
			p.calls.Add(1)
			m, err := p.take(ctx, s)
			p.calls.Done()
			if err != nil {
				_ = p.Close()
				return nil, err
			}
			p.release(m)
		}
	}
	return p, nil
}

// Run runs req on a fresh thread of the least-loaded process (see
// Process.Run).
func (p *Pool) Run(ctx context.Context, req RunRequest) (*RunResult, error) {
	m, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer p.calls.Done()
	defer p.release(m)
	return m.proc.Run(ctx, req)
}

// StartThread starts a thread on the least-loaded process. The thread
// counts against its process until it is closed: the owner must Close it
// (before closing the pool, for a clean drain).
func (p *Pool) StartThread(ctx context.Context, tp ThreadParams) (*Thread, error) {
	m, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer p.calls.Done()
	th, err := m.proc.StartThread(ctx, tp)
	if err != nil {
		p.release(m)
		return nil, err
	}
	th.OnClose(func() { p.release(m) })
	return th, nil
}

// acquire registers one thread on the least-loaded slot's process,
// starting or replacing it if needed, and counts the caller's call.
func (p *Pool) acquire(ctx context.Context) (*member, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("appserver: pool: %w", ErrClosed)
	}
	p.calls.Add(1)
	s := p.pick()
	p.mu.Unlock()
	m, err := p.take(ctx, s)
	if err != nil {
		p.calls.Done()
	}
	return m, err
}

// pick returns the slot whose process has the fewest open threads,
// preferring live processes on ties. Caller holds p.mu.
func (p *Pool) pick() *slot {
	var best *slot
	load := func(s *slot) int {
		if s.cur == nil {
			return 0
		}
		return s.cur.threads
	}
	for _, s := range p.slots {
		if best == nil || load(s) < load(best) || (load(s) == load(best) && s.live() && !best.live()) {
			best = s
		}
	}
	return best
}

func (s *slot) live() bool { return s.cur != nil && s.cur.proc.Alive() }

// take registers one thread on s's process — where the slot is taken, so
// a retirement can never close a process under a thread that is starting
// — starting, restarting or replacing the process when needed.
func (p *Pool) take(ctx context.Context, s *slot) (*member, error) {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("appserver: pool: %w", ctx.Err())
	}
	defer func() { <-s.sem }()

	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("appserver: pool: %w", ErrClosed)
	}
	m := s.cur
	if m != nil && m.proc.Alive() && p.cfg.MaxRunsPerProcess > 0 && m.started >= p.cfg.MaxRunsPerProcess {
		p.retireLocked(s, m)
		m = nil
	}
	if m != nil && m.proc.Alive() {
		m.threads++
		m.started++
		p.mu.Unlock()
		return m, nil
	}
	dead := m
	if dead != nil {
		s.cur = nil
	}
	p.mu.Unlock()
	if dead != nil && dead.threads == 0 {
		_ = dead.proc.Close() // reap the dead process before replacing it
	}

	np, err := start(p.life, ctx, p.cfg.Process)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = np.Close()
		return nil, fmt.Errorf("appserver: pool: %w", ErrClosed)
	}
	m = &member{proc: np, threads: 1, started: 1, lastCheck: time.Now()}
	s.cur = m
	p.stats.Starts++
	if dead != nil {
		p.stats.Restarts++
	}
	return m, nil
}

// release ends one thread's registration. A retiring process is closed
// when its last thread ends; a process over MaxRSS is retired.
func (p *Pool) release(m *member) {
	p.mu.Lock()
	m.threads--
	check := p.cfg.MaxRSS > 0 && !m.retiring && m.proc.Alive() && time.Since(m.lastCheck) >= p.cfg.RSSCheckInterval
	if check {
		m.lastCheck = time.Now()
	}
	p.drainLocked(m)
	p.mu.Unlock()
	if !check {
		return
	}
	rss, err := groupRSS(m.proc.PID())
	if err != nil || rss <= p.cfg.MaxRSS {
		return
	}
	m.proc.log.Info("retiring codex app-server: resident memory over the limit", "rss_mib", rss>>20, "limit_mib", p.cfg.MaxRSS>>20)
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		if s.cur == m {
			p.retireLocked(s, m)
		}
	}
}

// retireLocked takes m out of s: new threads go elsewhere, and m is
// closed once its open threads end. Caller holds p.mu.
func (p *Pool) retireLocked(s *slot, m *member) {
	if m.retiring {
		return
	}
	m.retiring = true
	s.cur = nil
	p.stats.Retired++
	p.drainLocked(m)
}

// drainLocked closes a retiring process without open threads. Caller
// holds p.mu.
func (p *Pool) drainLocked(m *member) {
	if !m.retiring || m.threads > 0 {
		return
	}
	m.threads = -1 // closed once
	p.retired.Add(1)
	go func() {
		defer p.retired.Done()
		_ = m.proc.Shutdown(p.life)
	}()
}

// Stats returns the pool's counters.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}

// InFlight returns the number of open threads per slot.
func (p *Pool) InFlight() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]int, len(p.slots))
	for i, s := range p.slots {
		if s.cur != nil {
			out[i] = s.cur.threads
		}
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
			out = append(out, s.cur.proc)
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
	m, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer p.calls.Done()
	defer p.release(m)
	return m.proc.Account(ctx)
}

// Close kills all processes, failing open threads and in-flight runs
// (ErrProcessExited and ErrClosed), and waits for the runs to finish.
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
	p.calls.Wait()
	p.retired.Wait()
	// A thread may have started a process between allProcs and
	// closed=true; take closes those itself, but close anything left.
	p.mu.Lock()
	procs = p.allProcs()
	p.mu.Unlock()
	for _, pr := range procs {
		errs = append(errs, pr.Close())
	}
	return errors.Join(errs...)
}

// Shutdown stops accepting threads, waits for in-flight runs to end (or
// ctx to end), then closes the pool.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	done := make(chan struct{})
	go func() {
		p.calls.Wait()
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
		if s.cur != nil {
			out = append(out, s.cur.proc)
		}
	}
	return out
}
