package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Report is everything one run measured; it is the JSON file, and the
// Markdown report is rendered from it.
type Report struct {
	Tool        string    `json:"tool"`
	GeneratedAt time.Time `json:"generated_at"`
	DurationS   float64   `json:"duration_s"`
	// Invocation is the command line of this run.
	Invocation string `json:"invocation"`
	// Commands reproduce the run.
	Commands []string `json:"commands"`
	Settings Settings `json:"settings"`
	Machine  Machine  `json:"machine"`

	Events  *EventsReport  `json:"events_api"`
	Static  *StaticReport  `json:"static_round_trip"`
	Codex   *CodexReport   `json:"codex_direct_vs_bus"`
	Scaling *ScalingReport `json:"pool_scaling"`
	Memory  *MemoryReport  `json:"memory"`

	Goals []Goal `json:"goals"`
	// Notes are skipped sections and failures.
	Notes []string `json:"notes"`
}

// Settings are the run's parameters.
type Settings struct {
	Runs                    int      `json:"runs"`
	Duration                string   `json:"duration"`
	Warmup                  string   `json:"warmup"`
	Pairs                   int      `json:"pairs"`
	Rounds                  int      `json:"rounds"`
	MemoryLoad              string   `json:"memory_load"`
	Quick                   bool     `json:"quick"`
	Sections                []string `json:"sections"`
	Backends                []string `json:"backends"`
	Concurrencies           []int    `json:"concurrencies"`
	PoolSizes               []int    `json:"pool_sizes"`
	ScalingN                []int    `json:"scaling_n"`
	StaticWorkerConcurrency int      `json:"static_worker_concurrency"`
}

// Goal is one of the targets, reported (never asserted).
type Goal struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	// Met is nil when the goal was not measured in this run.
	Met *bool `json:"met"`
}

// Status is "met", "MISSED" or "not measured".
func (g Goal) Status() string {
	switch {
	case g.Met == nil:
		return "not measured"
	case *g.Met:
		return "met"
	}
	return "MISSED"
}

// Goal ids.
const (
	goalBusOverhead  = "bus_overhead_p50"
	goalStaticP50    = "static_p50"
	goalStaticRPS    = "static_rps"
	goalMemoryLatP50 = "memory_publish_deliver_p50"
)

func goals(r *Report) []Goal {
	met := func(ok bool) *bool { return &ok }
	g1 := Goal{ID: goalBusOverhead, Name: "Bus overhead over the direct App Server turn, p50", Target: "≤ 5 ms"}
	if c := r.Codex; c != nil && c.Skipped == "" {
		g1.Measured = fmtMs(c.AddedP50) + " ms"
		g1.Met = met(c.AddedP50.Median <= 5)
	}
	g2 := Goal{ID: goalStaticP50, Name: "Static round trip p50 (concurrency 1)", Target: "≤ 2 ms"}
	g3 := Goal{ID: goalStaticRPS, Name: "Static round trip throughput", Target: "≥ 3,000 req/s"}
	if s := r.Static; s != nil && s.Skipped == "" {
		var best *StaticRow
		for i, row := range s.Rows {
			if row.Stream {
				continue
			}
			if row.Concurrency == 1 {
				g2.Measured = fmtMs(row.P50) + " ms"
				g2.Met = met(row.P50.Median <= 2)
			}
			if best == nil || row.RPS.Median > best.RPS.Median {
				best = &s.Rows[i]
			}
		}
		if best != nil {
			g3.Measured = fmt.Sprintf("%s req/s (concurrency %d)", fmtRate(best.RPS), best.Concurrency)
			g3.Met = met(best.RPS.Median >= 3000)
		}
	}
	g4 := Goal{ID: goalMemoryLatP50, Name: "Memory backend publish→deliver p50", Target: "≤ 0.5 ms"}
	if e := r.Events; e != nil {
		for _, b := range e.Backends {
			if b.Backend != "memory" {
				continue
			}
			for _, m := range b.Modes {
				if m.Delivery == "broadcast" {
					g4.Measured = fmtMs(m.LatencyP50) + " ms"
					g4.Met = met(m.LatencyP50.Median <= 0.5)
				}
			}
		}
	}
	return []Goal{g1, g2, g3, g4}
}

// fmtNum formats x with a precision that suits its size.
func fmtNum(x float64) string {
	a := math.Abs(x)
	switch {
	case a == 0:
		return "0"
	case a < 1:
		return strconv.FormatFloat(x, 'f', 3, 64)
	case a < 10:
		return strconv.FormatFloat(x, 'f', 2, 64)
	case a < 100:
		return strconv.FormatFloat(x, 'f', 1, 64)
	}
	return strconv.FormatFloat(x, 'f', 0, 64)
}

// fmtThousands formats a rate as an integer with thousands separators.
func fmtThousands(x float64) string {
	s := strconv.FormatInt(int64(math.Round(x)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// fmtSummary is "median (min–max)", or just the median for one run.
func fmtSummary(s Summary, f func(float64) string) string {
	if len(s.Runs) == 0 {
		return "–"
	}
	if len(s.Runs) == 1 || s.Min == s.Max {
		return f(s.Median)
	}
	return fmt.Sprintf("%s (%s–%s)", f(s.Median), f(s.Min), f(s.Max))
}

func fmtMs(s Summary) string   { return fmtSummary(s, fmtNum) }
func fmtRate(s Summary) string { return fmtSummary(s, fmtThousands) }
func fmtRatio(s Summary) string {
	return fmtSummary(s, func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) + "×" })
}
func fmtMiB(s Summary) string {
	return fmtSummary(s, func(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) })
}

// RenderMarkdown writes docs/BENCHMARKS.md for r.
func RenderMarkdown(w io.Writer, r *Report) error {
	t, err := template.New("benchmarks").Funcs(template.FuncMap{
		"ms":    fmtMs,
		"rate":  fmtRate,
		"ratio": fmtRatio,
		"mib":   fmtMiB,
		"num":   fmtNum,
		"mibf":  func(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) },
		"yesno": func(b bool) string {
			if b {
				return "stream"
			}
			return "plain"
		},
		"join":     strings.Join,
		"date":     func(t time.Time) string { return t.Format("2006-01-02 15:04 UTC") },
		"analysis": func() []string { return analysis(r) },
		"ints": func(xs []int) string {
			s := make([]string, len(xs))
			for i, x := range xs {
				s[i] = strconv.Itoa(x)
			}
			return strings.Join(s, ", ")
		},
	}).Parse(markdownTemplate)
	if err != nil {
		return err
	}
	return t.Execute(w, r)
}

const markdownTemplate = `# Benchmarks

<!-- Generated by bus-bench (make bench) from docs/benchmarks.json. Do not edit: rerun make bench. -->

The bus path measured side by side with the direct App Server, on the
machine below, by ` + "`bus-bench`" + ` on {{date .GeneratedAt}} in {{printf "%.0f" .DurationS}} s.
Every number here comes from that run and is also in
[benchmarks.json](benchmarks.json). Cells read **median (min–max)** over
{{.Settings.Runs}} run{{if gt .Settings.Runs 1}}s{{end}} unless a section says otherwise; latencies are in milliseconds.
{{- if .Settings.Quick}}

> **Quick mode**: a tiny configuration for tests. These numbers are not meaningful.
{{- end}}

The machine is shared: other engineers' builds and tests may have been
loading its CPU during the run (load average {{.Machine.LoadAvgStart}} at the
start, {{.Machine.LoadAvgEnd}} at the end). The medians of several
interleaved runs damp that; the min–max ranges show it.

## Machine

| | |
| --- | --- |
| CPU | {{.Machine.CPU}} |
| Cores | {{.Machine.Cores}} (GOMAXPROCS {{.Machine.GOMAXPROCS}}) |
| RAM | {{.Machine.MemTotalMiB}} MiB |
| Kernel | {{.Machine.Kernel}} |
| OS | {{.Machine.OS}} |
| Go | {{.Machine.GoVersion}} ({{.Machine.Platform}}) |
| Code | {{if .Machine.Commit}}commit {{.Machine.Commit}}{{else}}unknown{{end}} |
| Codex | {{if .Machine.CodexVersion}}{{.Machine.CodexVersion}}{{else}}not available{{end}} |
| Load average (1, 5, 15 min) | start {{.Machine.LoadAvgStart}}; end {{.Machine.LoadAvgEnd}} |

## Commands

` + "```sh" + `
{{range .Commands}}{{.}}
{{end}}` + "```" + `

This run: ` + "`{{.Invocation}}`" + ` ({{.Settings.Runs}} runs, {{.Settings.Duration}} windows, {{.Settings.Pairs}} codex pairs per run, {{.Settings.Rounds}} scaling rounds, {{.Settings.MemoryLoad}} memory load phases).
` + "`make bench`" + ` installs the pinned codex and the Redis/PostgreSQL server packages
first (` + "`make test-deps`" + `). ` + "`go run ./tools/bus-bench -h`" + ` lists the flags; ` + "`--quick`" + `
runs a tiny configuration, ` + "`--sections`" + ` picks sections, ` + "`--cpuprofile FILE`" + `
profiles the run for ` + "`go tool pprof`" + ` (what limits a missed goal is explained after the goals).

## Goals

Reported against, not asserted.

| Goal | Target | Measured | |
| --- | --- | --- | --- |
{{range .Goals}}| {{.Name}} | {{.Target}} | {{if .Measured}}{{.Measured}}{{else}}–{{end}} | {{.Status}} |
{{end}}
{{- with analysis}}

## What limits the missed goals
{{range .}}
{{.}}
{{end}}
{{- end}}

## 1. Events API: publish→deliver

{{with .Events}}{{if .Skipped}}Skipped: {{.Skipped}}.{{else -}}
The Events API alone over HTTP on loopback, in this process: one client
publishes (POST /api/v1/events), another holds an NDJSON stream.
**Latency**: one {{.PayloadBytes}}-byte event at a time, from the start of the publish call
until the event is read from the stream (for unicast+ack the acknowledgement
follows, untimed). **Sustained**: {{.Publishers}} publishers as fast as they can for
one window; events delivered per second, and publish→deliver latency under
that load (the rate counts events until the last one arrived; *undelivered*
are events still missing 20 s after the publishers stopped; where the
publishers outrun delivery, latency under load is mostly queueing). Broadcast is how
the front door receives responses; unicast with acknowledgement (in batches,
by a second goroutine) is how the worker takes requests.

| Backend | Delivery | p50 | p99 | Sustained events/s | p50 under load | p99 under load | Failed publishes / undelivered |
| --- | --- | --- | --- | --- | --- | --- | --- |
{{range .Backends}}{{$b := .}}{{if .Skipped}}| {{.Backend}} | skipped: {{.Skipped}} | | | | | | |
{{else}}{{range .Modes}}| {{$b.Backend}} | {{.Delivery}} | {{ms .LatencyP50}} | {{ms .LatencyP99}} | {{rate .Throughput}} | {{ms .LoadP50}} | {{ms .LoadP99}} | {{.Errors}} / {{.Undelivered}} |
{{end}}{{end}}{{end}}{{end}}{{end}}
## 2. Static provider round trip

{{with .Static}}{{if .Skipped}}Skipped: {{.Skipped}}.{{else -}}
client → front door → Events API → worker → Events API → front door →
client, all in this process on loopback (Events API on the memory backend,
worker concurrency {{.WorkerConcurrency}}), driven by a tight ` + "`net/http`" + ` loop: each of
*concurrency* clients sends its next chat completion as soon as the last one
answered. The load generator shares the cores with the stack. Streaming
rows time the whole stream (until ` + "`data: [DONE]`" + `) and the first chunk.
*Max* is the slowest request of a run; requests time out after 10 s (the
stack's timeout here, so a stuck request cannot hold the run for the default
minute) and count as errors. *CPU µs/request* is this process's CPU time
(client and stack together) per request; *cores used* is that CPU time over
the run's wall time, i.e. how much of the {{$.Machine.Cores}} cores the run actually got.

| Mode | Concurrency | p50 | p99 | Max | First chunk p50 | First chunk p99 | Requests/s | CPU µs/request | Cores used | Errors |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{{range .Rows}}| {{yesno .Stream}} | {{.Concurrency}} | {{ms .P50}} | {{ms .P99}} | {{ms .Max}} | {{with .FirstP50}}{{ms .}}{{else}}–{{end}} | {{with .FirstP99}}{{ms .}}{{else}}–{{end}} | {{rate .RPS}} | {{rate .CPUPerRequest}} | {{ms .CoresUsed}} | {{.Errors}} |
{{end}}{{end}}{{end}}
## 3. Codex: direct App Server vs the bus path

{{with .Codex}}{{if .Skipped}}Skipped: {{.Skipped}}.{{else -}}
The same request ("Say hello", one user message) on the real codex binary
against the zero-latency fake model (internal/testutil/fakemodel): **(a)
direct** with ` + "`appserver.Pool.Run`" + ` (the thread and turn parameters the codex
provider sends), and **(b) bus**: a chat completion through the front door,
the Events API, the worker and the codex provider, on the same pool of
{{.Processes}} App Server process{{if gt .Processes 1}}es{{end}}. Interleaved A B A B, {{.Pairs}} pairs per run.

| | p50 | p99 |
| --- | --- | --- |
| (a) direct App Server | {{ms .DirectP50}} | {{ms .DirectP99}} |
| (b) through the bus | {{ms .BusP50}} | {{ms .BusP99}} |

| p50 ratio (b)/(a) | Added ms (p50 b − p50 a) | Median of paired differences (b − a) | Errors |
| --- | --- | --- | --- |
| {{ratio .RatioP50}} | {{ms .AddedP50}} | {{ms .PairedAdded}} | {{.Errors}} |

Inside (b), the codex provider's own Run (timed in the worker) took p50 {{ms .BusProviderP50}} ms:
the bus transport (client, front door, Events API, worker) is roughly (b) − that, and the
provider's mapping around the turn roughly that − (a).

Pool counters at the end: {{.PoolStarts}} start{{if ne .PoolStarts 1}}s{{end}}, {{.PoolRestarts}} restarts, {{.PoolRetired}} retired.
{{end}}{{end}}
## 4. Pool scaling

{{with .Scaling}}{{if .Skipped}}Skipped: {{.Skipped}}.{{else -}}
N concurrent codex requests through the whole bus path (front door, Events
API, worker with concurrency ≥ N, codex provider) against the zero-latency
fake model; wall time until all N answered, {{.Rounds}} round{{if gt .Rounds 1}}s{{end}} (median, min–max).
A ratio of N would mean no parallelism at all; 1 would be perfect scaling.
{{range .Pools}}
**Pool of {{.Processes}} App Server process{{if gt .Processes 1}}es{{end}}**

| N | Wall time | Ratio to N = 1 | Requests/s | Errors |
| --- | --- | --- | --- | --- |
{{range .Rows}}| {{.N}} | {{ms .Wall}} | {{ratio .Ratio}} | {{with .Throughput}}{{num .Median}}{{end}} | {{.Errors}} |
{{end}}{{end}}{{end}}{{end}}
## 5. Memory

{{with .Memory}}{{if .Skipped}}Skipped: {{.Skipped}}.{{else -}}
The worker runs as its own process, {{.WorkerBinary}}, against an Events API
and front door in the bench process, so its RSS is its own (pool of 1 App
Server process; worker concurrency 8 on codex, {{$.Settings.StaticWorkerConcurrency}} on static). The App Server
processes are the worker's descendants, found through /proc: the npm
launcher (node), the native codex binary it spawns, and helpers codex runs
briefly (git, lsb_release, ...). **Idle**: VmRSS after start-up and a short
warm-up. **Peak under load**: the largest VmRSS sampled every 50 ms during
each load phase (median, min–max over phases; for several processes, of
their sum at one sample). **VmHWM**: the kernel's peak RSS over a process's
life, read at the end (for several processes, the sum over those still
alive). *At once (seen)*: the most processes of the row at one sample, and
how many distinct ones the load phases saw. MiB. A finished
thread is unloaded at once (thread_unload_delay_secs 0), so the App Server's
RSS stays flat; the pool retires a process only when its resident memory
passes {{.MaxRSSMiB}} MiB, and while the old one drains both are alive, which
the sampled peak of the total can catch.
{{range .Workers}}
**Worker on the {{.Provider}} provider**{{if .Skipped}}: skipped ({{.Skipped}}){{else}}: {{.Phases}} phase{{if gt .Phases 1}}s{{end}} of {{.Load}}; {{.Requests}} requests, {{.Errors}} errors

| Process | At once (seen) | Idle RSS | Peak RSS under load | VmHWM |
| --- | --- | --- | --- | --- |
{{range .Processes}}| {{.Role}} | {{.MaxCount}} ({{.Seen}}) | {{mibf .IdleMiB}} | {{mib .Peak}} | {{mibf .HWMMiB}} |
{{end}}{{end}}{{end}}{{end}}{{end}}
{{- with .Notes}}
## Notes

{{range .}}- {{.}}
{{end}}{{end}}`
