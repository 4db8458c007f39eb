package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
)

// ThreadMemory is how the resident memory of one App Server process
// (never recycled) grows with the threads it has served, in one mode,
// through the bus.
type ThreadMemory struct {
	Mode string `json:"mode"`
	// Finished is how many threads ran and were closed: the same request
	// over and over, each on a fresh thread, the previous one closed when
	// the next ends on the same transcript (thread_unload_delay_secs 0
	// unloads it at once). FinishedKiB is the RSS growth per finished
	// thread: the least-squares slope of RSS over the threads served.
	Finished    int     `json:"finished_threads"`
	FinishedKiB float64 `json:"rss_per_finished_thread_kib"`
	// Live is how many distinct conversations then stayed loaded (each a
	// live thread a later turn can continue on, up to the provider's
	// LiveThreads); LiveKiB is the RSS growth per live thread.
	Live    int     `json:"live_threads"`
	LiveKiB float64 `json:"rss_per_live_thread_kib"`
	// StartMiB, AfterFinishedMiB and AfterLiveMiB are the group RSS of
	// the App Server process (launcher and native binary) before, between
	// and after the two series.
	StartMiB         float64 `json:"start_rss_mib"`
	AfterFinishedMiB float64 `json:"after_finished_rss_mib"`
	AfterLiveMiB     float64 `json:"after_live_rss_mib"`
	// Seconds is how long the measurement took.
	Seconds float64 `json:"seconds"`
}

// threadMemory measures ThreadMemory for one mode on a fresh provider.
func (b *bencher) threadMemory(ctx context.Context, e *codexEnv, mode benchMode) (*ThreadMemory, error) {
	start := time.Now()
	prov, err := codex.New(ctx, codex.Config{
		Command: e.command, Workdir: e.workdir, Processes: 1, MaxRSS: -1, Env: e.env(), Logger: b.quiet,
	})
	if err != nil {
		return nil, err
	}
	defer func() { _ = prov.Close() }()
	const conc = 4
	st, err := startStack(ctx, stackConfig{provider: prov, catalog: catalog.Default(), concurrency: conc, timeout: codexRequestTimeout, log: b.quiet})
	if err != nil {
		return nil, err
	}
	defer st.Close()
	e.fake.SetReply(fakemodel.Reply{Text: "ONE"})
	defer e.fake.SetReply(fakemodel.Reply{Text: fakemodel.DefaultText})
	client := newHTTPClient(conc)
	defer client.CloseIdleConnections()
	procs := prov.Pool().Processes()
	if len(procs) != 1 {
		return nil, fmt.Errorf("%d App Server processes, want 1", len(procs))
	}
	pgid := procs[0].PID()
	rss := func() (int64, error) {
		// Let the last closes (thread/unsubscribe) land first.
		if err := sleepCtx(ctx, 300*time.Millisecond); err != nil {
			return 0, err
		}
		if !procs[0].Alive() {
			return 0, fmt.Errorf("the App Server process exited")
		}
		return rssOf(groupMembers(pgid)), nil
	}
	body := func(content string) map[string]any {
		return map[string]any{"model": mode.modelID, "messages": []any{map[string]any{"role": "user", "content": content}}}
	}
	// series sends n requests (content(i) for the i-th), conc at a time,
	// reading the RSS at 5 points, and returns the slope in KiB/request.
	series := func(n int, content func(int) string) (float64, int64, error) {
		var xs, ys []float64
		kb, err := rss()
		if err != nil {
			return 0, 0, err
		}
		xs, ys = append(xs, 0), append(ys, float64(kb))
		done := 0
		for part := 1; part <= 5; part++ {
			upto := n * part / 5
			if err := sendMany(ctx, conc, done, upto, func(ctx context.Context, i int) error {
				_, _, err := chat(ctx, client, st, body(content(i)))
				return err
			}); err != nil {
				return 0, 0, err
			}
			done = upto
			if kb, err = rss(); err != nil {
				return 0, 0, err
			}
			xs, ys = append(xs, float64(done)), append(ys, float64(kb))
		}
		return slope(xs, ys), kb, nil
	}
	// Warm-up: the process's first threads allocate for good.
	if err := sendMany(ctx, conc, 0, 20, func(ctx context.Context, i int) error {
		_, _, err := chat(ctx, client, st, body(modesPlain))
		return err
	}); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	t := &ThreadMemory{Mode: mode.name, Finished: b.opts.finishedThreads, Live: b.opts.liveThreads}
	kb0, err := rss()
	if err != nil {
		return nil, err
	}
	t.StartMiB = mib(kb0)
	finished, kb1, err := series(t.Finished, func(int) string { return modesPlain })
	if err != nil {
		return nil, fmt.Errorf("finished threads: %w", err)
	}
	t.FinishedKiB, t.AfterFinishedMiB = roundTo(finished, 1), mib(kb1)
	live, kb2, err := series(t.Live, func(i int) string { return fmt.Sprintf("Conversation %d: reply ONE", i) })
	if err != nil {
		return nil, fmt.Errorf("live threads: %w", err)
	}
	t.LiveKiB, t.AfterLiveMiB = roundTo(live, 1), mib(kb2)
	if n := prov.LiveThreads(); n < t.Live {
		b.note(fmt.Sprintf("thread memory (%s mode): %d live threads after %d distinct conversations", mode.name, n, t.Live))
	}
	t.Seconds = roundTo(time.Since(start).Seconds(), 1)
	b.log.Info("thread memory", "mode", mode.name, "finished_kib", t.FinishedKiB, "live_kib", t.LiveKiB,
		"start_mib", t.StartMiB, "after_finished_mib", t.AfterFinishedMiB, "after_live_mib", t.AfterLiveMiB)
	return t, nil
}

// sendMany runs op(i) for i in [from, to), conc at a time, and returns
// the first error.
func sendMany(ctx context.Context, conc, from, to int, op func(context.Context, int) error) error {
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		next     = from
		firstErr error
	)
	for range conc {
		wg.Go(func() {
			for {
				mu.Lock()
				if next >= to || firstErr != nil || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				rctx, cancel := context.WithTimeout(ctx, codexRequestTimeout)
				err := op(rctx, i)
				cancel()
				if err != nil {
					mu.Lock()
					firstErr = cmpErr(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return firstErr
}

// slope is the least-squares slope of ys over xs.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if d == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}
