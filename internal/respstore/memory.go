package respstore

import (
	"context"
	"sync"
	"time"
)

// Memory is an in-process Store for a single worker process.
type Memory struct {
	now func() time.Time

	mu      sync.Mutex
	records map[memKey]memRecord
	puts    int
}

type memKey struct{ identity, id string }

type memRecord struct {
	r       Record
	expires time.Time
}

// NewMemory returns an empty in-process store.
func NewMemory() *Memory { return &Memory{now: time.Now, records: map[memKey]memRecord{}} }

// Put implements Store.
func (m *Memory) Put(_ context.Context, r Record, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.records[memKey{r.Identity, r.ID}] = memRecord{r: r, expires: now.Add(ttl)}
	m.puts++
	if m.puts%256 == 0 { // sweep expired records now and then
		for k, v := range m.records {
			if !v.expires.After(now) {
				delete(m.records, k)
			}
		}
	}
	return nil
}

// Get implements Store.
func (m *Memory) Get(_ context.Context, identity, id string) (Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.records[memKey{identity, id}]
	if !ok || !v.expires.After(m.now()) {
		return Record{}, ErrNotFound
	}
	return v.r, nil
}

// Delete implements Store.
func (m *Memory) Delete(_ context.Context, identity, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := memKey{identity, id}
	v, ok := m.records[k]
	if !ok || !v.expires.After(m.now()) {
		return ErrNotFound
	}
	delete(m.records, k)
	return nil
}

// Close implements Store.
func (m *Memory) Close() error { return nil }
