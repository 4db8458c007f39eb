package entitlement

import (
	"context"
	"sync"
	"time"
)

// Counter is one windowed counter of an admission or a charge. Its key
// names its window (a minute, day or month), so a counter never resets: a
// new window is a new key, and Expires only lets the store forget it.
type Counter struct {
	// Key names the counter.
	Key string
	// Limit is the most the counter may reach (admissions only).
	Limit int64
	// Cost is what an admission adds (0 for token budgets, which are
	// charged afterwards), or what a charge adds.
	Cost int64
	// Expires is when the store may forget the counter.
	Expires time.Time
}

// Store keeps the counters. Implementations are safe for concurrent use,
// and several front doors may share one (Redis, PostgreSQL).
type Store interface {
	// Admit checks all counters at once, atomically: when every counter
	// satisfies value + max(Cost, 1) <= Limit, it adds each Cost and
	// returns the new values and refused = -1; otherwise it changes
	// nothing and returns the current values and the index of the first
	// counter that does not.
	Admit(ctx context.Context, counters []Counter) (values []int64, refused int, err error)
	// Add adds each counter's Cost (Limit is ignored).
	Add(ctx context.Context, counters []Counter) error
	// Close releases the store.
	Close() error
}

// need is what a counter must have left to admit a request: its cost, and
// at least one (a spent token budget admits nothing).
func need(c Counter) int64 { return max(c.Cost, 1) }

// Memory is a Store in the process's memory, for one front door.
type Memory struct {
	mu     sync.Mutex
	values map[string]memValue
	ops    int
	now    func() time.Time
}

type memValue struct {
	n       int64
	expires time.Time
}

// NewMemory returns an empty Memory store.
func NewMemory() *Memory { return &Memory{values: map[string]memValue{}, now: time.Now} }

// Admit implements Store.
func (m *Memory) Admit(_ context.Context, cs []Counter) ([]int64, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep()
	values := make([]int64, len(cs))
	refused := -1
	for i, c := range cs {
		values[i] = m.values[c.Key].n
		if refused < 0 && values[i]+need(c) > c.Limit {
			refused = i
		}
	}
	if refused >= 0 {
		return values, refused, nil
	}
	for i, c := range cs {
		values[i] += c.Cost
		m.set(c, values[i])
	}
	return values, -1, nil
}

// Add implements Store.
func (m *Memory) Add(_ context.Context, cs []Counter) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep()
	for _, c := range cs {
		m.set(c, m.values[c.Key].n+c.Cost)
	}
	return nil
}

func (m *Memory) set(c Counter, n int64) {
	v := m.values[c.Key]
	v.n = n
	if c.Expires.After(v.expires) {
		v.expires = c.Expires
	}
	m.values[c.Key] = v
}

// sweep forgets expired counters now and then. Caller holds m.mu.
func (m *Memory) sweep() {
	m.ops++
	if m.ops%1024 != 0 {
		return
	}
	now := m.now()
	for k, v := range m.values {
		if !v.expires.After(now) {
			delete(m.values, k)
		}
	}
}

// Close implements Store.
func (m *Memory) Close() error { return nil }
