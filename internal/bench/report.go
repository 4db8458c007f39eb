package bench

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/busdk/bus-integration-codex/internal/catalog"
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

	Events      *EventsReport      `json:"events_api"`
	Static      *StaticReport      `json:"static_round_trip"`
	Codex       *CodexReport       `json:"codex_direct_vs_bus"`
	Modes       *ModesReport       `json:"codex_modes"`
	Scaling     *ScalingReport     `json:"pool_scaling"`
	Concurrency *ConcurrencyReport `json:"concurrency"`
	Memory      *MemoryReport      `json:"memory"`
	// Sizing is what the run says about the worker's default
	// concurrency (from the concurrency, modes and memory sections).
	Sizing *Sizing `json:"sizing"`

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
	ModeIterations          int      `json:"mode_iterations"`
	ModeConversations       int      `json:"mode_conversations"`
	WaitModel               string   `json:"wait_model"`
	WaitRounds              int      `json:"wait_rounds"`
	WaitN                   []int    `json:"wait_n"`
	FinishedThreads         int      `json:"finished_threads"`
	LiveThreads             int      `json:"live_threads"`
}

// Goal is one of an issue's targets, reported (never asserted).
type Goal struct {
	ID string `json:"id"`
	// Issue is the issue that set the goal (6: the bus path, 16: lean
	// Codex).
	Issue    int    `json:"issue"`
	Name     string `json:"name"`
	Target   string `json:"target"`
	Measured string `json:"measured"`
	// Before is the same measure, in the same run, with the behaviour
	// before the issue (agent mode, or the previous default), where the
	// run has it.
	Before string `json:"before,omitempty"`
	// Met is nil when the goal was not measured in this run.
	Met *bool `json:"met"`
}

// Issues that set the goals.
const (
	issueBusPath   = 6
	issueLeanCodex = 16
)

// goalsOf returns the goals of one issue, in order.
func goalsOf(gs []Goal, issue int) []Goal {
	var out []Goal
	for _, g := range gs {
		if g.Issue == issue {
			out = append(out, g)
		}
	}
	return out
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
	goalPlainBytes   = "model_plain_request_bytes"
	goalFunctionCost = "model_function_extra_bytes"
	goalCacheKeys    = "model_conversation_cache_keys"
	goalToolStep     = "model_tool_step_added_p50"
	goalCodexCPU     = "model_codex_cpu_per_request"
	goalWaiting      = "waiting_8_vs_1"
)

// Targets of the goals of issue 16 (KB read as 1,000 bytes).
const (
	targetPlainBytes   = 2500
	targetFunctionCost = 1000
	targetToolStepMs   = 20
	targetCodexCPUMs   = 50
	targetWaitingRatio = 1.3
	waitingN           = 8
)

func goals(r *Report) []Goal {
	met := func(ok bool) *bool { return &ok }
	g1 := Goal{ID: goalBusOverhead, Issue: issueBusPath, Name: "Bus overhead over the direct App Server turn, p50", Target: "≤ 5 ms"}
	if c := r.Codex; c != nil && c.Skipped == "" {
		g1.Measured = fmtMs(c.AddedP50) + " ms"
		g1.Met = met(c.AddedP50.Median <= 5)
	}
	g2 := Goal{ID: goalStaticP50, Issue: issueBusPath, Name: "Static round trip p50 (concurrency 1)", Target: "≤ 2 ms"}
	g3 := Goal{ID: goalStaticRPS, Issue: issueBusPath, Name: "Static round trip throughput", Target: "≥ 3,000 req/s"}
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
	g4 := Goal{ID: goalMemoryLatP50, Issue: issueBusPath, Name: "Memory backend publish→deliver p50", Target: "≤ 0.5 ms"}
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
	return append(modeGoals(r), g1, g2, g3, g4)
}

// modeGoals are the goals of issue 16 (lean Codex), measured in model
// mode; Before is agent mode's figure (Codex as a coding agent, how every
// request ran before model mode), or the previous default --concurrency's
// for the waiting goal.
func modeGoals(r *Report) []Goal {
	met := func(ok bool) *bool { return &ok }
	goal := func(id, name, target string) Goal {
		return Goal{ID: id, Issue: issueLeanCodex, Name: name, Target: target}
	}
	plain := goal(goalPlainBytes, `Plain "Reply ONE" request body the model receives`, "≤ 2,500 bytes")
	fn := goal(goalFunctionCost, "Bytes per client function beyond its own schema", "≤ 1,000 bytes")
	keys := goal(goalCacheKeys, "Distinct prompt_cache_keys of a 4-turn conversation on one worker", "1")
	tool := goal(goalToolStep, "Tool step over a plain answer, p50", "≤ 20 ms")
	cpu := goal(goalCodexCPU, "Codex CPU per plain request", "≤ 50 ms")
	wait := goal(goalWaiting, "1 s model: 8 requests at once vs one, default worker", "≤ 1.3×")
	if m := r.Modes; m != nil && m.Skipped == "" {
		if model := m.received(catalog.ModeModel); model != nil {
			plain.Measured = fmtBytes(model.Plain.Bytes) + " bytes"
			plain.Met = met(model.Plain.Bytes <= targetPlainBytes)
			fn.Measured = fmt.Sprintf("%s (1 function); %s each (4 functions)", fmtBytes(model.OneFunctionExtra), fmtBytes(model.FourFunctionsExtra))
			fn.Met = met(max(model.OneFunctionExtra, model.FourFunctionsExtra) <= targetFunctionCost)
			keys.Measured = strconv.Itoa(model.ConversationKeys)
			keys.Met = met(model.ConversationKeys == 1)
		}
		if agent := m.received(catalog.ModeAgent); agent != nil {
			plain.Before = "agent mode: " + fmtBytes(agent.Plain.Bytes) + " bytes"
			fn.Before = fmt.Sprintf("agent mode: %s; %s each", fmtBytes(agent.OneFunctionExtra), fmtBytes(agent.FourFunctionsExtra))
			keys.Before = "agent mode: " + strconv.Itoa(agent.ConversationKeys)
		}
		if mt := m.timing(catalog.ModeModel); mt != nil {
			tool.Measured = fmtMs(mt.ToolAddedP50) + " ms"
			tool.Met = met(mt.ToolAddedP50.Median <= targetToolStepMs)
			cpu.Measured = fmtMs(mt.CPUPlain) + " ms"
			cpu.Met = met(mt.CPUPlain.Median <= targetCodexCPUMs)
		}
		if at := m.timing(catalog.ModeAgent); at != nil {
			tool.Before = "agent mode: " + fmtMs(at.ToolAddedP50) + " ms"
			cpu.Before = "agent mode: " + fmtMs(at.CPUPlain) + " ms"
		}
	}
	if c := r.Concurrency.config(configDefault); c != nil {
		if row := c.row(waitingN); row != nil {
			wait.Measured = fmt.Sprintf("%s (--concurrency %d)", fmtRatio(row.Ratio), c.Concurrency)
			wait.Met = met(row.Ratio.Median <= targetWaitingRatio)
		}
		if d := r.Concurrency.ModelDelayMS; d != 1000 {
			wait.Name = fmt.Sprintf("%s ms model: 8 requests at once vs one, default worker", fmtNum(d))
		}
	}
	if c := r.Concurrency.config(configPrevious); c != nil {
		if row := c.row(waitingN); row != nil {
			wait.Before = fmt.Sprintf("previous default (--concurrency %d): %s", c.Concurrency, fmtRatio(row.Ratio))
		}
	}
	return []Goal{plain, fn, keys, tool, cpu, wait}
}

// plural is "1 run", "2 runs": n and the noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// fmtBytes formats a byte count with thousands separators.
func fmtBytes(n int) string { return fmtThousands(float64(n)) }

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
		"ms":           fmtMs,
		"rate":         fmtRate,
		"ratio":        fmtRatio,
		"mib":          fmtMiB,
		"num":          fmtNum,
		"mibf":         func(x float64) string { return strconv.FormatFloat(x, 'f', 1, 64) },
		"rate1":        func(x float64) string { return fmtThousands(x) },
		"bytes":        fmtBytes,
		"receivedRows": receivedRows,
		"yesno": func(b bool) string {
			if b {
				return "stream"
			}
			return "plain"
		},
		"join":     strings.Join,
		"date":     func(t time.Time) string { return t.Format("2006-01-02 15:04 UTC") },
		"analysis": func() []string { return analysis(r) },
		"goalsOf":  func(issue int) []Goal { return goalsOf(r.Goals, issue) },
		"plural":   plural,
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

This run: ` + "`{{.Invocation}}`" + ` ({{plural .Settings.Runs "run"}}, {{.Settings.Duration}} windows, {{plural .Settings.Pairs "codex pair"}} per run, {{plural .Settings.Rounds "scaling round"}},
{{plural .Settings.ModeIterations "plain request"}} and tool loops and {{plural .Settings.ModeConversations "conversation"}} per mode and run, a {{.Settings.WaitModel}} waiting model
in {{plural .Settings.WaitRounds "round"}} of {{ints .Settings.WaitN}} at once, {{.Settings.MemoryLoad}} memory load phases, {{.Settings.FinishedThreads}} finished and {{.Settings.LiveThreads}} live threads per mode).
` + "`make bench`" + ` installs the pinned codex and the Redis/PostgreSQL server packages
first (` + "`make test-deps`" + `). ` + "`go run ./tools/bus-bench -h`" + ` lists the flags; ` + "`--quick`" + `
runs a tiny configuration, ` + "`--sections`" + ` picks sections, ` + "`--cpuprofile FILE`" + `
profiles the run for ` + "`go tool pprof`" + ` (what limits a missed goal is explained after the goals).

## Goals

Reported against, not asserted; *met* or *MISSED* is this run's median
against the target. The machine is shared (load average
{{.Machine.LoadAvgStart}} at the start, {{.Machine.LoadAvgEnd}} at the end on {{.Machine.Cores}} cores), so the
CPU and latency figures include time spent waiting for cores that other
work held.
{{- with goalsOf 16}}

**Issue 16, lean Codex.** *Measured* is model mode, the default (` + "`codex-chatgpt`" + `);
*before* is the same measure in the same run in agent mode (` + "`codex-agent`" + `: Codex as a
coding agent, how every request ran before issue 16) or, for the waiting goal, with
the previous default ` + "`--concurrency`" + ` (one per CPU). The 500 ms tool-call settle window
that issue 16 replaced is gone in both modes, so agent mode's tool step does not show it.

| Goal | Target | Measured | Before | |
| --- | --- | --- | --- | --- |
{{range .}}| {{.Name}} | {{.Target}} | {{if .Measured}}{{.Measured}}{{else}}–{{end}} | {{if .Before}}{{.Before}}{{else}}–{{end}} | {{.Status}} |
{{end}}{{end}}
{{- with goalsOf 6}}
**Issue 6, the bus path.**

| Goal | Target | Measured | |
| --- | --- | --- | --- |
{{range .}}| {{.Name}} | {{.Target}} | {{if .Measured}}{{.Measured}}{{else}}–{{end}} | {{.Status}} |
{{end}}{{end}}
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
direct**: a thread with the parameters the codex provider sends in model mode,
one turn, the thread closed, on ` + "`appserver.Pool`" + `; and **(b) bus**: a chat completion through the front door,
the Events API, the worker and the codex provider, on the same pool of
{{.Processes}} App Server process{{if gt .Processes 1}}es{{end}}. Interleaved A B A B, {{.Pairs}} pairs per run.
The model received {{.DirectRequestBytes}} bytes from (a) and {{.BusRequestBytes}} from (b){{if eq .DirectRequestBytes .BusRequestBytes}} (the same request){{end}}.

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
## 4. Codex modes: what the model receives, tool steps, CPU

{{with .Modes}}{{if .Skipped}}Skipped: {{.Skipped}}.{{else -}}
Chat completions through the whole bus path (front door, Events API, worker,
codex provider on {{.Processes}} App Server process{{if gt .Processes 1}}es{{end}}) against the zero-latency fake model, in
**model mode** (catalog id ` + "`codex-chatgpt`" + `, the default: the model sees only what the
caller sent) and **agent mode** (` + "`codex-agent`" + `: Codex as a coding agent with its own
tools, which is how every request ran before model mode existed).

**What the model receives**, read from the fake model's log (the body Codex
POSTs to ` + "`/v1/responses`" + `; ≈ tokens = bytes / 4). *Plain* is a system message
("You are a helpful assistant.") and "Reply ONE"; the function rows add one and four
client functions (their own sizes, as the client sent them: {{ints .SchemaBytes}} bytes);
the conversation is a 4-turn chat, each request the whole history plus a new
question. Input and tools are the bytes of those two arrays of the body.

| Request | Model mode: bytes (≈ tokens) | input items / bytes | tools / bytes | Agent mode: bytes (≈ tokens) | input items / bytes | tools / bytes |
| --- | --- | --- | --- | --- | --- | --- |
{{range receivedRows .}}| {{.Name}} | {{with .Model}}{{bytes .Bytes}} ({{bytes .Tokens}}) | {{.InputItems}} / {{bytes .InputBytes}} | {{.Tools}} / {{bytes .ToolsBytes}}{{else}}– | – | –{{end}} | {{with .Agent}}{{bytes .Bytes}} ({{bytes .Tokens}}) | {{.InputItems}} / {{bytes .InputBytes}} | {{.Tools}} / {{bytes .ToolsBytes}}{{else}}– | – | –{{end}} |
{{end}}
{{range .Received}}- **{{.Mode}} mode** ({{.ModelID}}): a client function costs {{bytes .OneFunctionExtra}} bytes beyond its own schema (one function), {{bytes .FourFunctionsExtra}} each (four);
  the 4-turn conversation used {{.ConversationKeys}} prompt_cache_key{{if ne .ConversationKeys 1}}s{{end}}, and {{if .ConversationPrefix}}each request repeated the one before it byte for byte{{else}}**not** every request repeated the one before it byte for byte{{end}};
  tools the model was offered on the plain request: {{if .CodexTools}}{{join .CodexTools ", "}}{{else}}none{{end}}.
{{end}}
**Tool steps, plain answers and CPU.** Per mode and run, one request at a time: {{.Iterations}} plain
requests; {{.Iterations}} tool loops (the weather question with ` + "`get_weather`" + ` comes back as one call,
finish_reason ` + "`tool_calls`" + `: the *tool step*; then the call's output gets the answer); {{.Conversations}}
4-turn conversation{{if gt .Conversations 1}}s{{end}}. *Added* is each run's tool step p50 − plain p50. *Codex CPU* is
the App Server processes' CPU time (user + system, from /proc, with the helpers they ran) over the phase, per request.

| Mode | Plain p50 | Plain p95 | Tool step p50 | Tool step p95 | Added p50 | Output → answer p50 | Conversation turn p50 | Codex CPU ms/request: plain | tool loop | conversation | Errors |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{{range .Timing}}| {{.Mode}} | {{ms .PlainP50}} | {{ms .PlainP95}} | {{ms .ToolStepP50}} | {{ms .ToolStepP95}} | {{ms .ToolAddedP50}} | {{ms .ToolNextP50}} | {{ms .ConversationP50}} | {{ms .CPUPlain}} | {{ms .CPUTool}} | {{ms .CPUConversation}} | {{.Errors}} |
{{end}}
The same model-mode plain request run directly on the App Server (section 3's direct path: thread/start
with the provider's model-mode parameters, one turn, the thread closed; no bus, no provider), one at a time:
p50 {{ms .DirectP50}} ms, codex CPU {{ms .DirectCPU}} ms per request. That is what Codex itself spends on the request.
{{end}}{{end}}
## 5. Pool scaling

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
## 6. A waiting model: requests in flight

{{with .Concurrency}}{{if .Skipped}}Skipped: {{.Skipped}}.{{else -}}
A real model takes seconds per turn, during which the turn costs Codex no CPU. Here the fake
model waits {{num .ModelDelayMS}} ms before each answer. The worker runs as its own process
({{.WorkerBinary}}) against an Events API and front door in the bench process; its flags are
only the connection's plus the ones shown, so *default* is what an operator gets: {{.Processes}}
App Server process{{if gt .Processes 1}}es{{end}} (one per two CPUs) and ` + "`--concurrency`" + ` {{.PerProcess}} per process. Each row sends
*N* plain chat completions ("Reply ONE", model mode), *client* at a time, and times them
until the last answered; *ratio* is that over the same round's single request, and *ideal*
the ratio if every wave of *client* requests took as long as one. {{.Rounds}} round{{if gt .Rounds 1}}s{{end}} (median, min–max).
*Codex CPU* is the App Server processes' CPU per request; *peak RSS* their largest
sampled total; *added RSS* that peak minus their RSS before the row, per request.
{{range .Configs}}
**{{.Name}}**{{if .Flags}} (` + "`{{.Flags}}`" + `){{end}}{{if .Skipped}}: skipped ({{.Skipped}}){{else}}: ` + "`--concurrency`" + ` {{.Concurrency}}; App Server RSS after warm-up {{mibf .IdleRSSMiB}} MiB

| N | Client | Wall time | Ratio to one | Ideal | Requests/s | Codex CPU ms/request | Peak RSS MiB | Added RSS KiB/request | Errors |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{{range .Rows}}| {{.N}} | {{.Client}} | {{ms .Wall}} | {{ratio .Ratio}} | {{.IdealRatio}}× | {{num .Throughput.Median}} | {{ms .CPUPerRequest}} | {{mib .PeakRSS}} | {{rate .AddedRSSPerRequest}} | {{.Errors}} |
{{end}}{{end}}{{end}}{{end}}{{end}}
{{- with .Sizing}}
**Sizing the default.** {{if .Skipped}}Not computed: {{.Skipped}}.{{else -}}
The worker admits ` + "`--concurrency`" + ` requests at once, by default {{.PerProcess}} per App Server process
({{plural .Processes "process"}} by default here: one per two CPUs). Measured per process, with a {{num .ModelDelayMS}} ms model:
- *bursts*: with every request admitted, {{if ge .Carried 2}}the pool answered {{.Carried}} at once within {{num .CarriedRatio}}× of one request{{if eq .Carried .Tried}} (the most tried){{end}}{{else}}no burst of several requests came within 1.3× of one request (see the table){{end}}, and at most {{num .WaitingRate}} requests/s per process ({{.WaitingRateN}} at once). A burst's thread starts all queue for the cores at once, so on a shared machine this measures the other work too; it is reported, not used as a bound;
- *CPU*: {{num .CPUPerRequestMS}} ms of App Server CPU per request, so {{.CPUBound}} requests waiting {{num .ModelDelayMS}} ms each keep the process's share of the {{.Cores}} cores busy (delay × cores per process / CPU per request; the bound grows with the model's latency);
- *memory*: {{rate1 .InFlightKiB}} KiB of App Server RSS per request in flight and {{if .LiveMeasured}}{{rate1 .LiveKiB}} KiB per live conversation thread (section 7){{else}}live conversation threads not measured (section 7 did not run){{end}}; beside {{mibf .IdleMiB}} MiB idle{{if .LiveMeasured}} and {{.LiveThreads}} live threads{{end}}, {{.MemoryBound}} requests in flight fit under the {{.MaxRSSMiB}} MiB at which a process is recycled.
{{- if or .ModelCPUMS .TurnsPerSecond}}

For comparison: one request at a time, a plain request costs the App Server {{if .ModelCPUMS}}{{num .ModelCPUMS}} ms of CPU in model mode and {{num .AgentCPUMS}} ms in agent mode (section 4){{else}}an unmeasured amount of CPU (section 4 did not run){{end}};
{{if .TurnsPerSecond}}with a model that answers at once, one App Server process answered at most {{num .TurnsPerSecond}} requests/s through the bus ({{.TurnsN}} at once, section 5), the rate at which the CPU it gets runs out{{else}}section 5 did not run{{end}}.
{{- end}}

Verdict: {{.Verdict}}.
{{end}}
{{end}}
## 7. Memory

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
{{end}}{{end}}{{end}}
**App Server memory per thread.** {{if .ThreadsSkipped}}Skipped: {{.ThreadsSkipped}}.{{else -}}
One App Server process that is never recycled, through the bus, 4 requests at a time. *Finished*:
the same request over and over, each on a fresh thread that is closed (and, with
thread_unload_delay_secs 0, unloaded) when the next one ends on the same transcript.
*Live*: distinct one-message conversations, each thread kept loaded for a later turn (the
provider keeps up to 256). Per thread is the least-squares slope of the process group's RSS,
read at six points of each series.

| Mode | Finished threads | RSS per finished thread (KiB) | Live threads | RSS per live thread (KiB) | RSS: start → after finished → after live (MiB) |
| --- | --- | --- | --- | --- | --- |
{{range .Threads}}| {{.Mode}} | {{.Finished}} | {{rate1 .FinishedKiB}} | {{.Live}} | {{rate1 .LiveKiB}} | {{mibf .StartMiB}} → {{mibf .AfterFinishedMiB}} → {{mibf .AfterLiveMiB}} |
{{end}}{{end}}{{end}}{{end}}
{{- with .Notes}}
## Notes

{{range .}}- {{.}}
{{end}}{{end}}`

// receivedRow is one row of the "what the model receives" table.
type receivedRow struct {
	Name         string
	Model, Agent *RequestSize
}

// receivedRows lays the two modes' requests side by side.
func receivedRows(m *ModesReport) []receivedRow {
	names := []string{"plain", "1 function", "4 functions", "conversation turn 1", "conversation turn 2", "conversation turn 3", "conversation turn 4"}
	pick := func(r *ReceivedMode, i int) *RequestSize {
		if r == nil {
			return nil
		}
		switch i {
		case 0:
			return &r.Plain
		case 1:
			return &r.OneFunction
		case 2:
			return &r.FourFunctions
		}
		if j := i - 3; j < len(r.Conversation) {
			return &r.Conversation[j]
		}
		return nil
	}
	model, agent := m.received(catalog.ModeModel), m.received(catalog.ModeAgent)
	rows := make([]receivedRow, len(names))
	for i, n := range names {
		rows[i] = receivedRow{Name: n, Model: pick(model, i), Agent: pick(agent, i)}
	}
	return rows
}
