package respstore

import (
	"context"
	"sync"
	"time"
)

// Memory is an in-process Store for a single worker process. It holds at
// most its byte bound (WithMaxBytes), dropping the oldest records first.
type Memory struct {
	o options

	mu      sync.Mutex
	records map[memKey]*memRecord
	order   []memKey // insertion order, for the byte bound
	bytes   int64
	puts    int
}

type memKey struct{ identity, id string }

type memRecord struct {
	r       Record
	expires time.Time
	size    int64
}

// NewMemory returns an empty in-process store.
func NewMemory(opts ...Option) *Memory {
	return &Memory{o: newOptions(opts), records: map[memKey]*memRecord{}}
}

// Put implements Store.
func (m *Memory) Put(_ context.Context, r Record, ttl time.Duration) error {
	b, err := encode(r)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.o.now()
	k := memKey{r.Identity, r.ID}
	if old := m.records[k]; old != nil {
		m.bytes -= old.size
	}
	rec := &memRecord{r: r, expires: now.Add(ttl), size: int64(len(b))}
	m.records[k] = rec
	m.order = append(m.order, k)
	m.bytes += rec.size
	// Keep the conversation as long as its newest response.
	for p, depth := r.Previous, 0; p != "" && depth < m.o.maxDepth; depth++ {
		prev := m.records[memKey{r.Identity, p}]
		if prev == nil {
			break
		}
		if prev.expires.Before(rec.expires) {
			prev.expires = rec.expires
		}
		p = prev.r.Previous
	}
	m.puts++
	if m.puts%256 == 0 { // sweep expired records now and then
		for k, v := range m.records {
			if !v.expires.After(now) {
				m.drop(k)
			}
		}
	}
	for m.bytes > m.o.maxMemoryBytes && len(m.order) > 1 {
		m.drop(m.order[0])
		m.order = m.order[1:]
	}
	if len(m.order) > 2*len(m.records)+64 { // mostly dropped keys: compact
		live := make([]memKey, 0, len(m.records))
		seen := map[memKey]bool{}
		for _, k := range m.order {
			if m.records[k] != nil && !seen[k] {
				seen[k] = true
				live = append(live, k)
			}
		}
		m.order = live
	}
	return nil
}

// drop removes k. Caller holds m.mu.
func (m *Memory) drop(k memKey) {
	if v := m.records[k]; v != nil {
		m.bytes -= v.size
		delete(m.records, k)
	}
}

// live returns identity's unexpired record id (deleted ones too). Caller
// holds m.mu.
func (m *Memory) live(identity, id string) *memRecord {
	v := m.records[memKey{identity, id}]
	if v == nil || !v.expires.After(m.o.now()) {
		return nil
	}
	return v
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, identity, id string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.live(identity, id)
	if v == nil || v.r.Deleted {
		return Record{}, ErrNotFound
	}
	return v.r, nil
}

// Chain implements Store.
func (m *Memory) Chain(_ context.Context, identity, id string) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.live(identity, id)
	if v == nil || v.r.Deleted {
		return nil, ErrNotFound
	}
	var (
		chain []Record
		bytes int64
	)
	for {
		if len(chain) == m.o.maxDepth {
			return nil, tooLong(m.o)
		}
		if bytes += v.size; bytes > m.o.maxHistoryBytes {
			return nil, tooLong(m.o)
		}
		r := v.r
		r.Response = nil
		chain = append(chain, r)
		if r.Previous == "" {
			return chain, nil
		}
		if v = m.live(identity, r.Previous); v == nil {
			return nil, broken(id, r.Previous)
		}
	}
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, identity, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	v := m.live(identity, id)
	if v == nil || v.r.Deleted {
		return ErrNotFound
	}
	m.bytes -= int64(len(v.r.Response))
	v.size -= int64(len(v.r.Response))
	v.r.Response, v.r.Deleted = nil, true
	return nil
}

// Close implements Store.
func (m *Memory) Close() error { return nil }
