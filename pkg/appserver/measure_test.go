package appserver_test

import (
	"context"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
	"github.com/busdk/bus-integration-codex/pkg/appserver"
)

// TestMeasureConcurrency prints throughput and latency of runs on one
// process vs a pool, for sizing (see doc.go). It only runs with
// BUS_APPSERVER_MEASURE=1; it asserts nothing about speed.
func TestMeasureConcurrency(t *testing.T) {
	if os.Getenv("BUS_APPSERVER_MEASURE") != "1" || runtime.GOOS != "linux" {
		t.Skip("set BUS_APPSERVER_MEASURE=1 (Linux) to measure")
	}
	e := newEnv(t)
	runsPerConfig := 32
	if s := os.Getenv("BUS_APPSERVER_MEASURE_RUNS"); s != "" {
		runsPerConfig, _ = strconv.Atoi(s)
	}
	for _, latency := range []time.Duration{0, 500 * time.Millisecond} {
		e.fm.SetHandler(func(r fakemodel.Request) fakemodel.Reply {
			return fakemodel.Reply{Text: "echo " + r.LastUserText(), DelayBefore: latency}
		})
		for _, procs := range []int{1, 2, 4} {
			for _, conc := range []int{1, 2, 4, 8} {
				if procs > conc {
					continue
				}
				measure(t, e, latency, procs, conc, runsPerConfig)
			}
		}
	}
	measureMemory(t, e)
}

func measure(t *testing.T, e *env, latency time.Duration, procs, conc, total int) {
	ctx := testCtx(t)
	pool, err := appserver.NewPool(context.Background(), appserver.PoolConfig{Process: e.cfg, Size: procs, Eager: true})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// Warm up each process once.
	for range procs {
		if _, err := pool.Run(ctx, appserver.RunRequest{Input: []appserver.UserInput{appserver.TextInput("warm")}}); err != nil {
			t.Fatal(err)
		}
	}
	cpu0 := poolCPU(pool)
	var (
		mu   sync.Mutex
		lats []time.Duration
		errs int
		next int
	)
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				mu.Lock()
				if next >= total {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				t0 := time.Now()
				res, err := pool.Run(ctx, appserver.RunRequest{Input: []appserver.UserInput{appserver.TextInput("m" + strconv.Itoa(i))}})
				d := time.Since(t0)
				mu.Lock()
				if err != nil || res.Text != "echo m"+strconv.Itoa(i) {
					errs++
				}
				lats = append(lats, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	cpu := poolCPU(pool) - cpu0
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	t.Logf("latency=%v procs=%d conc=%d runs=%d errs=%d wall=%v throughput=%.1f/s p50=%v p95=%v max=%v codexCPU/run=%v",
		latency, procs, conc, total, errs, wall.Round(time.Millisecond), float64(total)/wall.Seconds(),
		lats[len(lats)/2].Round(time.Millisecond), lats[len(lats)*95/100].Round(time.Millisecond),
		lats[len(lats)-1].Round(time.Millisecond), (cpu / time.Duration(total)).Round(time.Millisecond))
}

// measureMemory reports RSS growth of one process over many runs (finished
// ephemeral threads stay loaded in 0.169.0).
func measureMemory(t *testing.T, e *env) {
	e.fm.SetReply(fakemodel.Reply{Text: "ok"})
	p := e.start(t)
	ctx := testCtx(t)
	run := func(n int) {
		for range n {
			if _, err := p.Run(ctx, appserver.RunRequest{Input: []appserver.UserInput{appserver.TextInput("hi")}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	run(5)
	rss0 := groupRSS(p.PID())
	const n = 100
	run(n)
	rss1 := groupRSS(p.PID())
	t.Logf("memory: group RSS %d MiB after 5 runs, %d MiB after %d more (≈%d KiB/run)",
		rss0>>20, rss1>>20, n, (rss1-rss0)/n>>10)
}

func poolCPU(pool *appserver.Pool) time.Duration {
	var sum time.Duration
	for _, p := range pool.Processes() {
		for _, pid := range testproc.GroupMembers(p.PID()) {
			sum += procCPU(pid)
		}
	}
	return sum
}

// procCPU is utime+stime of pid (clock ticks of 10ms).
func procCPU(pid int) time.Duration {
	f := procStatFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.Atoi(f[11])
	s, _ := strconv.Atoi(f[12])
	return time.Duration(u+s) * 10 * time.Millisecond
}

func groupRSS(pgid int) int64 {
	var sum int64
	for _, pid := range testproc.GroupMembers(pgid) {
		f := procStatFields(pid)
		if len(f) < 22 {
			continue
		}
		pages, _ := strconv.ParseInt(f[21], 10, 64)
		sum += pages * int64(os.Getpagesize())
	}
	return sum
}

// procStatFields returns /proc/pid/stat fields after the comm field
// (index 0 = state).
func procStatFields(pid int) []string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}
