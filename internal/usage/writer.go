package usage

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of WriterOptions.
const (
	DefaultQueueSize     = 65536
	DefaultBatchSize     = 512
	DefaultFlushInterval = time.Second
	DefaultWriteTimeout  = 10 * time.Second
	// writeAttempts is how often a batch is tried before it is dropped.
	writeAttempts = 3
)

// WriterOptions configure a Writer.
type WriterOptions struct {
	// QueueSize bounds the records waiting to be written
	// (DefaultQueueSize when 0); Add drops what does not fit.
	QueueSize int
	// BatchSize is the most records one Append carries (DefaultBatchSize
	// when 0).
	BatchSize int
	// FlushInterval is the longest a record waits before it is written
	// (DefaultFlushInterval when 0).
	FlushInterval time.Duration
	// WriteTimeout bounds one Append (DefaultWriteTimeout when 0).
	WriteTimeout time.Duration
	// Logger receives write failures and drops (slog.Default when nil).
	Logger *slog.Logger
}

// Stats count what a Writer did.
type Stats struct {
	// Written counts records appended to the ledger.
	Written int64
	// Dropped counts records Add refused because the queue was full (or
	// the Writer closed).
	Dropped int64
	// Failed counts records lost because the ledger kept failing.
	Failed int64
}

// Writer appends records to a Ledger in batches from its own goroutine, so
// its callers never wait for the ledger. Create it with NewWriter; Close
// it to write what is queued and stop.
type Writer struct {
	ledger Ledger
	opts   WriterOptions
	log    *slog.Logger

	queue   chan Record
	flushes chan chan error
	stop    chan struct{}
	done    chan struct{}

	mu       sync.RWMutex // Add holds it shared; Close exclusively
	closed   bool
	closeCtx context.Context // bounds the final writes; set before stop closes

	written, dropped, failed atomic.Int64
}

// NewWriter starts a Writer on l.
func NewWriter(l Ledger, o WriterOptions) *Writer {
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.FlushInterval <= 0 {
		o.FlushInterval = DefaultFlushInterval
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = DefaultWriteTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	w := &Writer{
		ledger: l, opts: o, log: o.Logger,
		queue:   make(chan Record, o.QueueSize),
		flushes: make(chan chan error),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go w.run()
	return w
}

// Ledger is the ledger the Writer appends to.
func (w *Writer) Ledger() Ledger { return w.ledger }

// Add queues r without waiting. It returns false, counting r as dropped,
// when the queue is full or the Writer is closed.
func (w *Writer) Add(r Record) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if !w.closed {
		select {
		case w.queue <- r:
			return true
		default:
		}
	}
	if n := w.dropped.Add(1); n&(n-1) == 0 { // 1, 2, 4, 8, ...: never a log line per record
		w.log.Warn("usage record dropped: the ledger queue is full or closed", "dropped_total", n, "queue_size", w.opts.QueueSize)
	}
	return false
}

// Flush waits until every record added before it has been written (or
// given up on), or ctx ends. It returns the last write error, if any.
func (w *Writer) Flush(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case w.flushes <- reply:
	case <-w.done:
		return errors.New("usage: writer closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops taking records, writes the queued ones (giving up when ctx
// ends) and stops the Writer's goroutine. It does not close the ledger.
// It may be called more than once.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		w.closeCtx = ctx
		close(w.stop)
	}
	w.mu.Unlock()
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Stats returns the Writer's counters.
func (w *Writer) Stats() Stats {
	return Stats{Written: w.written.Load(), Dropped: w.dropped.Load(), Failed: w.failed.Load()}
}

// run is the Writer's goroutine.
func (w *Writer) run() {
	defer close(w.done)
	ticker := time.NewTicker(w.opts.FlushInterval)
	defer ticker.Stop()
	var (
		batch    []Record
		attempts int
		lastErr  error
	)
	// write appends batch; a failed batch is kept for the next tick until
	// it has failed writeAttempts times.
	base := context.Background()
	write := func(final bool) {
		for len(batch) > 0 {
			n := min(len(batch), w.opts.BatchSize)
			ctx, cancel := context.WithTimeout(base, w.opts.WriteTimeout)
			err := w.ledger.Append(ctx, batch[:n])
			cancel()
			if err == nil {
				w.written.Add(int64(n))
				batch, attempts, lastErr = batch[n:], 0, nil
				continue
			}
			attempts++
			lastErr = err
			if attempts < writeAttempts && !final {
				w.log.Warn("usage ledger write failed; retrying", "records", n, "attempt", attempts, "err", err)
				return
			}
			w.failed.Add(int64(n))
			w.log.Error("usage ledger write failed; records lost", "records", n, "err", err)
			batch, attempts = batch[n:], 0
		}
	}
	// drain moves what is queued now into the batch.
	drain := func() {
		for {
			select {
			case r := <-w.queue:
				batch = append(batch, r)
			default:
				return
			}
		}
	}
	for {
		in := w.queue
		if len(batch) >= w.opts.QueueSize {
			in = nil // the ledger is failing: let the queue fill and Add drop
		}
		select {
		case r := <-in:
			batch = append(batch, r)
			if len(batch) >= w.opts.BatchSize && attempts == 0 {
				write(false)
			}
		case <-ticker.C:
			write(false)
		case reply := <-w.flushes:
			drain()
			attempts, lastErr = 0, nil
			write(false)
			if len(batch) > 0 {
				write(true) // the caller waits: try once more, then give up
			}
			reply <- lastErr
		case <-w.stop:
			w.mu.RLock()
			base = w.closeCtx
			w.mu.RUnlock()
			drain()
			write(true)
			return
		}
	}
}
