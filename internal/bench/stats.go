package bench

import (
	"context"
	"math"
	"slices"
	"sync"
	"time"
)

// Summary is one metric measured over several runs: the median run, the
// fastest and slowest runs, and every run's value.
type Summary struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	Runs   []float64 `json:"runs"`
}

// summarize returns the Summary of vals (zero when empty). The median of
// an even count is the mean of the two middle values.
func summarize(vals []float64) Summary {
	if len(vals) == 0 {
		return Summary{}
	}
	vals = slices.Clone(vals)
	for i, v := range vals {
		vals[i] = math.Round(v*1e4) / 1e4
	}
	s := slices.Clone(vals)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Summary{Median: med, Min: s[0], Max: s[len(s)-1], Runs: vals}
}

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of
// sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// ms converts d to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sample is one measured operation: its full latency and, for streams,
// the time to the first chunk.
type sample struct {
	total, first time.Duration
}

// loopResult is what a closed loop measured.
type loopResult struct {
	total, first []time.Duration // sorted
	ok, errs     int
	elapsed      time.Duration
	firstErr     error
}

func (r loopResult) rate() float64 {
	if r.elapsed <= 0 {
		return 0
	}
	return float64(r.ok) / r.elapsed.Seconds()
}

// closedLoop runs op from conc goroutines, each starting its next
// operation as soon as the last one ends, until dur has passed (and at
// least one operation per goroutine finished) or ctx ends.
func closedLoop(ctx context.Context, conc int, dur time.Duration, op func(context.Context) (sample, error)) loopResult {
	var (
		mu  sync.Mutex
		res loopResult
		wg  sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(dur)
	for range conc {
		wg.Go(func() {
			var total, first []time.Duration
			ok, errs := 0, 0
			var firstErr error
			for ctx.Err() == nil && (ok+errs == 0 || time.Now().Before(deadline)) {
				s, err := op(ctx)
				if err != nil {
					errs++
					if firstErr == nil {
						firstErr = err
					}
					continue
				}
				ok++
				total = append(total, s.total)
				if s.first > 0 {
					first = append(first, s.first)
				}
			}
			mu.Lock()
			res.total = append(res.total, total...)
			res.first = append(res.first, first...)
			res.ok += ok
			res.errs += errs
			if res.firstErr == nil {
				res.firstErr = firstErr
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	slices.Sort(res.total)
	slices.Sort(res.first)
	return res
}
