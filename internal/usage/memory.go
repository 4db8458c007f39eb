package usage

import (
	"context"
	"sync"
	"time"
)

// DefaultMemoryRecords bounds a Memory ledger (about 300 MiB at most).
const DefaultMemoryRecords = 1 << 20

// Memory is a Ledger in the process's memory, for one front door. It keeps
// at most MaxRecords records (the oldest go first) for at most Retention.
type Memory struct {
	maxRecords int
	retention  time.Duration

	mu      sync.Mutex
	records []Record // in append order
	ids     map[string]struct{}
}

// MemoryOptions configure a Memory ledger.
type MemoryOptions struct {
	// MaxRecords bounds the records kept (DefaultMemoryRecords when 0).
	MaxRecords int
	// Retention bounds their age (DefaultRetention when 0).
	Retention time.Duration
}

// NewMemory returns an empty Memory ledger.
func NewMemory(o MemoryOptions) *Memory {
	if o.MaxRecords <= 0 {
		o.MaxRecords = DefaultMemoryRecords
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	return &Memory{maxRecords: o.MaxRecords, retention: o.Retention, ids: map[string]struct{}{}}
}

// Append implements Ledger.
func (m *Memory) Append(_ context.Context, records []Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range records {
		if _, dup := m.ids[r.RequestID]; dup {
			continue
		}
		m.ids[r.RequestID] = struct{}{}
		m.records = append(m.records, r.Normalize())
	}
	// Drop what is too old or too much, oldest first.
	cut := time.Now().Add(-m.retention)
	drop := 0
	for drop < len(m.records) && (len(m.records)-drop > m.maxRecords || m.records[drop].Time.Before(cut)) {
		delete(m.ids, m.records[drop].RequestID)
		drop++
	}
	if drop > 0 {
		m.records = append(m.records[:0:0], m.records[drop:]...)
	}
	return nil
}

// Query implements Ledger.
func (m *Memory) Query(_ context.Context, q Query) (Report, error) {
	a := newAggregator(q)
	m.mu.Lock()
	for _, r := range m.records {
		a.add(r)
	}
	m.mu.Unlock()
	return a.report(), nil
}

// Close implements Ledger.
func (m *Memory) Close() error { return nil }
