package eventstore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/pkg/events"
)

// gatedRead is a ReadFunc that blocks until released (or its ctx ends) and
// then returns the next queued result.
type gatedRead struct {
	started chan struct{}   // a read began
	release chan ReadResult // what the next reads return, in order
	ended   chan struct{}   // a read returned
	calls   atomic.Int32
}

func newGatedRead() *gatedRead {
	return &gatedRead{started: make(chan struct{}, 8), release: make(chan ReadResult, 8), ended: make(chan struct{}, 8)}
}

func (g *gatedRead) read(ctx context.Context) ReadResult {
	g.calls.Add(1)
	g.started <- struct{}{}
	defer func() { g.ended <- struct{}{} }()
	select {
	case r := <-g.release:
		return r
	case <-ctx.Done():
		return ReadResult{Err: ctx.Err()}
	}
}

func recv(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

func TestReaderKeepsResultOfCancelledNext(t *testing.T) {
	var g ReadGroup
	defer g.Close()
	gr := newGatedRead()
	r := g.NewReader(context.Background(), gr.read, nil)
	defer r.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Next with a short ctx: err = %v, want DeadlineExceeded", err)
	}
	recv(t, gr.started, "the read to start")
	want := events.Envelope{ID: "evt_1", Name: "a"}
	gr.release <- ReadResult{Envs: []events.Envelope{want}} // the read claimed it after Next gave up

	got, err := r.Next(context.Background())
	if err != nil || got.ID != want.ID {
		t.Fatalf("next Next = %v, %v; want %s", got, err, want.ID)
	}
	if n := gr.calls.Load(); n != 1 {
		t.Fatalf("reads started = %d, want 1 (the first read's result is reused)", n)
	}
}

func TestReaderEndAndError(t *testing.T) {
	var g ReadGroup
	defer g.Close()
	gr := newGatedRead()
	r := g.NewReader(context.Background(), gr.read, nil)
	defer r.Close()
	boom := errors.New("boom")

	gr.release <- ReadResult{Err: boom}
	gr.release <- ReadResult{Envs: []events.Envelope{{ID: "evt_1"}, {ID: "evt_2"}}, End: true}
	if _, err := r.Next(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Next after a failed read: err = %v, want boom", err)
	}
	for _, id := range []string{"evt_1", "evt_2"} {
		got, err := r.Next(context.Background())
		if err != nil || got.ID != id {
			t.Fatalf("Next = %v, %v; want %s", got, err, id)
		}
	}
	if _, err := r.Next(context.Background()); !errors.Is(err, ErrEndOfSnapshot) {
		t.Fatalf("Next after the end: err = %v, want ErrEndOfSnapshot", err)
	}
	if n := gr.calls.Load(); n != 2 {
		t.Fatalf("reads started = %d, want 2", n)
	}
}

func TestReaderCloseUnblocksNext(t *testing.T) {
	var g ReadGroup
	defer g.Close()
	gr := newGatedRead()
	r := g.NewReader(context.Background(), gr.read, nil)

	errc := make(chan error, 1)
	go func() {
		_, err := r.Next(context.Background())
		errc <- err
	}()
	recv(t, gr.started, "the read to start")
	r.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close: err = %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Next")
	}
	recv(t, gr.ended, "the read to see its ctx end")
	if _, err := r.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next on a closed Reader: err = %v, want ErrClosed", err)
	}
}

func TestReadGroupCloseWaitsForReads(t *testing.T) {
	var g ReadGroup
	parent, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	var finished atomic.Bool
	r := g.NewReader(parent, func(ctx context.Context) ReadResult {
		close(done)
		<-ctx.Done()
		time.Sleep(20 * time.Millisecond) // cleanup after the ctx ended
		finished.Store(true)
		return ReadResult{}
	}, nil)
	defer r.Close()

	nextCtx, stop := context.WithCancel(context.Background())
	go func() {
		<-done
		stop()
	}()
	if _, err := r.Next(nextCtx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Next: err = %v, want Canceled", err)
	}
	cancel() // the backend ends its context, then closes the group
	if !g.Close() {
		t.Fatal("first Close reported the group already closed")
	}
	if !finished.Load() {
		t.Fatal("Close returned before the read in flight finished")
	}
	if g.Close() {
		t.Fatal("second Close reported closing the group")
	}
	r2 := g.NewReader(context.Background(), func(context.Context) ReadResult {
		t.Error("a read started on a closed group")
		return ReadResult{}
	}, nil)
	defer r2.Close()
	if _, err := r2.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next on a closed group: err = %v, want ErrClosed", err)
	}
}

// TestReaderCloseReleasesLeftovers: Close gives what reads took but Next
// never returned to the ReleaseFunc: events an earlier read queued, and
// what the read in flight claims even though its context ended.
func TestReaderCloseReleasesLeftovers(t *testing.T) {
	released := func(t *testing.T, ch <-chan []events.Envelope, want string) {
		t.Helper()
		select {
		case envs := <-ch:
			if len(envs) != 1 || envs[0].ID != want {
				t.Fatalf("released %v, want %s", envs, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s was not released", want)
		}
	}
	t.Run("queued", func(t *testing.T) {
		var g ReadGroup
		defer g.Close()
		gr := newGatedRead()
		ch := make(chan []events.Envelope, 1)
		r := g.NewReader(context.Background(), gr.read, func(_ context.Context, envs []events.Envelope) { ch <- envs })
		gr.release <- ReadResult{Envs: []events.Envelope{{ID: "evt_1"}, {ID: "evt_2"}}}
		if got, err := r.Next(context.Background()); err != nil || got.ID != "evt_1" {
			t.Fatalf("Next = %v, %v; want evt_1", got, err)
		}
		r.Close()
		released(t, ch, "evt_2")
	})
	t.Run("in flight", func(t *testing.T) {
		var g ReadGroup
		defer g.Close()
		claim := make(chan struct{})
		started := make(chan struct{}, 1)
		ch := make(chan []events.Envelope, 1)
		// The store completes the claim whatever the context says.
		r := g.NewReader(context.Background(), func(context.Context) ReadResult {
			started <- struct{}{}
			<-claim
			return ReadResult{Envs: []events.Envelope{{ID: "evt_3"}}}
		}, func(_ context.Context, envs []events.Envelope) { ch <- envs })
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			<-started
			cancel()
		}()
		if _, err := r.Next(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Next: err = %v, want Canceled", err)
		}
		r.Close()
		close(claim)
		released(t, ch, "evt_3")
	})
	t.Run("nothing left", func(t *testing.T) {
		var g ReadGroup
		gr := newGatedRead()
		r := g.NewReader(context.Background(), gr.read, func(_ context.Context, envs []events.Envelope) {
			t.Errorf("released %v although Next returned everything", envs)
		})
		gr.release <- ReadResult{Envs: []events.Envelope{{ID: "evt_1"}}}
		if got, err := r.Next(context.Background()); err != nil || got.ID != "evt_1" {
			t.Fatalf("Next = %v, %v; want evt_1", got, err)
		}
		r.Close()
		g.Close() // waits for the release goroutine
	})
}
