package usage_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/usage"
)

// waitLimit bounds every wait; reaching it is a failure.
const waitLimit = 30 * time.Second

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func rec(i int) usage.Record {
	return usage.Record{RequestID: fmt.Sprint("req_", i), Time: time.Now(), Identity: "alice", Model: "m", Operation: "chat.completions",
		Status: 200, Tokens: usage.Tokens{Input: int64(i), Output: 1, Total: int64(i) + 1}}
}

func count(t *testing.T, l usage.Ledger) int64 {
	t.Helper()
	rep, err := l.Query(context.Background(), usage.Query{Start: time.Now().Add(-time.Hour), End: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return rep.Rows[0].Requests
}

func TestWriterFlushWritesEverythingAdded(t *testing.T) {
	m := usage.NewMemory(usage.MemoryOptions{})
	// A long interval: only Flush (or a full batch) writes.
	w := usage.NewWriter(m, usage.WriterOptions{BatchSize: 7, FlushInterval: time.Hour, Logger: quiet()})
	defer w.Close(ctxT(t))
	for i := range 100 {
		if !w.Add(rec(i)) {
			t.Fatalf("record %d dropped", i)
		}
	}
	if err := w.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, m); n != 100 {
		t.Fatalf("ledger holds %d records, want 100", n)
	}
	if st := w.Stats(); st != (usage.Stats{Written: 100}) {
		t.Fatalf("stats %+v", st)
	}
}

// blockingLedger blocks every Append until released.
type blockingLedger struct {
	*usage.Memory
	started chan struct{}
	release chan struct{}
}

func (b *blockingLedger) Append(ctx context.Context, recs []usage.Record) error {
	select {
	case b.started <- struct{}{}:
	default:
	}
	select {
	case <-b.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Memory.Append(ctx, recs)
}

func TestWriterNeverBlocksAndDropsWhenFull(t *testing.T) {
	b := &blockingLedger{Memory: usage.NewMemory(usage.MemoryOptions{}), started: make(chan struct{}, 1), release: make(chan struct{})}
	w := usage.NewWriter(b, usage.WriterOptions{QueueSize: 2, BatchSize: 1, FlushInterval: time.Hour, WriteTimeout: time.Hour, Logger: quiet()})
	if !w.Add(rec(0)) {
		t.Fatal("first record dropped")
	}
	select { // the writer holds record 0 in a write that does not end
	case <-b.started:
	case <-time.After(waitLimit):
		t.Fatal("the writer never wrote")
	}
	if !w.Add(rec(1)) || !w.Add(rec(2)) {
		t.Fatal("a record that fits the queue was dropped")
	}
	// The queue is full and the ledger stuck: Add returns at once, false.
	if w.Add(rec(3)) || w.Add(rec(4)) {
		t.Fatal("Add accepted a record beyond the queue")
	}
	if st := w.Stats(); st.Dropped != 2 || st.Written != 0 {
		t.Fatalf("stats %+v", st)
	}
	close(b.release)
	if err := w.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, b.Memory); n != 3 {
		t.Fatalf("ledger holds %d records, want the 3 queued", n)
	}
	if st := w.Stats(); st != (usage.Stats{Written: 3, Dropped: 2}) {
		t.Fatalf("stats %+v", st)
	}
	if w.Add(rec(5)) {
		t.Fatal("Add after Close accepted a record")
	}
}

// failingLedger fails every Append.
type failingLedger struct {
	usage.Ledger
	mu    sync.Mutex
	calls int
}

func (f *failingLedger) Append(context.Context, []usage.Record) error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	return errors.New("ledger down")
}

func TestWriterGivesUpOnAFailingLedger(t *testing.T) {
	f := &failingLedger{Ledger: usage.NewMemory(usage.MemoryOptions{})}
	w := usage.NewWriter(f, usage.WriterOptions{FlushInterval: time.Hour, Logger: quiet()})
	for i := range 5 {
		w.Add(rec(i))
	}
	if err := w.Flush(ctxT(t)); err == nil {
		t.Fatal("Flush on a failing ledger returned no error")
	}
	if st := w.Stats(); st != (usage.Stats{Failed: 5}) {
		t.Fatalf("stats %+v", st)
	}
	if err := w.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls != 2 { // Flush tries twice, Close has nothing left
		t.Fatalf("%d appends", f.calls)
	}
}

func TestWriterCloseWritesWhatIsQueued(t *testing.T) {
	m := usage.NewMemory(usage.MemoryOptions{})
	w := usage.NewWriter(m, usage.WriterOptions{FlushInterval: time.Hour, Logger: quiet()})
	for i := range 50 {
		w.Add(rec(i))
	}
	if err := w.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(ctxT(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := count(t, m); n != 50 {
		t.Fatalf("ledger holds %d records, want 50", n)
	}
	if err := w.Flush(ctxT(t)); err == nil {
		t.Fatal("Flush after Close returned no error")
	}
}

func TestWriterConcurrentAdds(t *testing.T) {
	m := usage.NewMemory(usage.MemoryOptions{})
	w := usage.NewWriter(m, usage.WriterOptions{BatchSize: 16, FlushInterval: time.Millisecond, Logger: quiet()})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				w.Add(rec(g*1000 + i))
			}
		})
	}
	wg.Wait()
	if err := w.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, m); n != 1600 {
		t.Fatalf("ledger holds %d records, want 1600", n)
	}
}
