// Package bench is the bus-bench command (make bench): benchmarks of the
// bus path side by side with the direct App Server, on the current
// machine.
//
// Seven sections, each skippable (--sections) and skipped with a note when
// its prerequisites are missing:
//
//  1. events: the Events API alone, per backend (memory; Redis and
//     PostgreSQL when their servers are installed): publish→deliver
//     latency one event at a time, and sustained events/s.
//  2. static: the static provider's round trip through the front door, the
//     Events API and an in-process worker, at several client concurrencies,
//     plain and streaming (time to first chunk).
//  3. codex: the same codex request directly on the App Server client (A)
//     and through the whole bus path (B), interleaved A B A B on one pool,
//     real codex binary, zero-latency fake model.
//  4. modes: the codex provider's model mode beside agent mode (Codex as a
//     coding agent, the behaviour before model mode), through the bus:
//     what the model receives (from the fake model's log), prompt-cache
//     keys of a conversation, tool steps against plain answers, and the
//     App Server's CPU per request.
//  5. scaling: wall time of N concurrent codex requests through the bus.
//  6. concurrency: N requests at once through the bus to a worker process
//     (the real command with its defaults) whose model takes a second.
//  7. memory: peak RSS of the worker (run as a separate process) and of
//     its App Server processes, idle and under load, and the App Server's
//     growth per finished and per live thread.
//
// The results go to a JSON file and to docs/BENCHMARKS.md, rendered from
// the same data by a template, so the document always matches the JSON.
//
// It may import anything, the test support under internal/testutil included; only tools/bus-bench imports it, so no shipped binary links it.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/provider/codex"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
)

// Name is the command name.
const Name = "bus-bench"

// Sections, in the order they run.
func sectionNames() []string {
	return []string{"events", "static", "codex", "modes", "scaling", "concurrency", "memory"}
}

// Options are the parsed command-line options.
type Options struct {
	runs                    int
	duration                time.Duration
	warmup                  time.Duration
	pairs                   int
	codexWarmup             int
	rounds                  int
	memoryLoad              time.Duration
	quick                   bool
	sections                []string
	backends                []string
	concurrencies           []int
	poolSizes               []int
	scalingN                []int
	staticWorkerConcurrency int
	modeIterations          int
	modeConversations       int
	waitModel               time.Duration
	waitRounds              int
	waitN                   []int
	finishedThreads         int
	liveThreads             int
	jsonPath, mdPath        string
	copyDir                 string
	codexCommand            string
	workerBinary            string
	cpuProfile              string
	render                  string
	logLevel                string
	args                    []string
}

func parse(args []string, io cliutil.IO) (*Options, error) {
	o := &Options{args: args}
	fs := flag.NewFlagSet(Name, flag.ContinueOnError)
	fs.IntVar(&o.runs, "runs", 5, "runs of every measurement; the tables show their median and min–max")
	fs.DurationVar(&o.duration, "duration", 1500*time.Millisecond, "length of each timed window (Events API and static round trip)")
	fs.IntVar(&o.pairs, "pairs", 20, "codex: direct/bus request pairs per run")
	fs.IntVar(&o.rounds, "rounds", 5, "pool scaling: rounds of N = 1, 2, 4, 8")
	fs.DurationVar(&o.memoryLoad, "memory-load", 4*time.Second, "memory: length of each load phase (one per run)")
	fs.IntVar(&o.modeIterations, "mode-iterations", 20, "modes: plain requests and tool loops per mode and run")
	fs.IntVar(&o.modeConversations, "mode-conversations", 3, "modes: 4-turn conversations per mode and run")
	fs.DurationVar(&o.waitModel, "wait-model", time.Second, "concurrency: the fake model's delay before each answer")
	fs.IntVar(&o.waitRounds, "wait-rounds", 3, "concurrency: rounds of every load")
	waitN := fs.String("wait-n", "1,8,16,32,64", "concurrency: numbers of requests sent at once (the first should be 1)")
	fs.IntVar(&o.finishedThreads, "finished-threads", 400, "memory: threads run and closed per mode to measure the RSS per finished thread")
	fs.IntVar(&o.liveThreads, "live-threads", 200, "memory: conversations kept loaded per mode to measure the RSS per live thread (at most the provider's 256)")
	fs.BoolVar(&o.quick, "quick", false, "a tiny configuration of every section (seconds, for tests); numbers are not meaningful")
	sections := fs.String("sections", strings.Join(sectionNames(), ","), "sections to run: "+strings.Join(sectionNames(), ", "))
	backends := fs.String("backends", "memory,redis,postgres", "Events API backends to measure (redis and postgres only when their servers are installed)")
	concurrency := fs.String("concurrency", "1,8,64", "static round trip: client concurrencies")
	fs.IntVar(&o.staticWorkerConcurrency, "worker-concurrency", 64, "static round trip: the worker's concurrency (and prefetch)")
	fs.StringVar(&o.jsonPath, "json", "docs/benchmarks.json", "JSON results file")
	fs.StringVar(&o.mdPath, "md", "docs/BENCHMARKS.md", "Markdown report, rendered from the JSON results")
	fs.StringVar(&o.copyDir, "copy-dir", "bench-results", "directory for a timestamped copy of the JSON results (empty: none)")
	fs.StringVar(&o.codexCommand, "codex-command", "", "codex executable (default: $BUS_TEST_CODEX_COMMAND, else .tools/codex/node_modules/.bin/codex, else codex on PATH)")
	fs.StringVar(&o.workerBinary, "worker-binary", "", "bus-integration-codex executable for the memory section (default: go build it)")
	fs.StringVar(&o.render, "render", "", "only re-render --md from this JSON results file (after a template change); measures nothing")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	fs.StringVar(&o.logLevel, "log-level", "info", "progress log level: debug, info, warn, error")
	if err := cliutil.ParseFlags(fs, args, io.Stdout); err != nil {
		return nil, err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.warmup = 500 * time.Millisecond
	o.codexWarmup = 3
	o.scalingN = []int{1, 2, 4, 8}
	o.poolSizes = uniqueSorted([]int{1, runtime.NumCPU()})
	if o.quick {
		quick := map[string]func(){
			"runs":               func() { o.runs = 1 },
			"duration":           func() { o.duration = 150 * time.Millisecond },
			"pairs":              func() { o.pairs = 2 },
			"rounds":             func() { o.rounds = 1 },
			"memory-load":        func() { o.memoryLoad = 500 * time.Millisecond },
			"mode-iterations":    func() { o.modeIterations = 2 },
			"mode-conversations": func() { o.modeConversations = 1 },
			"wait-model":         func() { o.waitModel = 200 * time.Millisecond },
			"wait-rounds":        func() { o.waitRounds = 1 },
			"wait-n":             func() { *waitN = "1,2" },
			"finished-threads":   func() { o.finishedThreads = 10 },
			"live-threads":       func() { o.liveThreads = 5 },
		}
		for name, apply := range quick {
			if !set[name] {
				apply()
			}
		}
		o.warmup = 100 * time.Millisecond
		o.codexWarmup = 1
		o.scalingN = []int{1, 2}
		o.poolSizes = []int{1}
	}
	switch {
	case o.runs < 1:
		return nil, cliutil.Usagef("--runs must be at least 1")
	case o.duration <= 0 || o.memoryLoad <= 0:
		return nil, cliutil.Usagef("--duration and --memory-load must be positive")
	case o.pairs < 1 || o.rounds < 1:
		return nil, cliutil.Usagef("--pairs and --rounds must be at least 1")
	case o.staticWorkerConcurrency < 1:
		return nil, cliutil.Usagef("--worker-concurrency must be at least 1")
	case o.modeIterations < 1 || o.modeConversations < 1 || o.waitRounds < 1:
		return nil, cliutil.Usagef("--mode-iterations, --mode-conversations and --wait-rounds must be at least 1")
	case o.waitModel <= 0:
		return nil, cliutil.Usagef("--wait-model must be positive")
	case o.finishedThreads < 5 || o.liveThreads < 5 || o.liveThreads > codex.DefaultLiveThreads:
		return nil, cliutil.Usagef("--finished-threads must be at least 5, --live-threads from 5 to %d", codex.DefaultLiveThreads)
	}
	var err error
	if o.concurrencies, err = intsFlag("concurrency", *concurrency); err != nil {
		return nil, err
	}
	if o.waitN, err = intsFlag("wait-n", *waitN); err != nil {
		return nil, err
	}
	if o.sections, err = listFlag("sections", *sections, sectionNames()); err != nil {
		return nil, err
	}
	if o.backends, err = listFlag("backends", *backends, []string{"memory", "redis", "postgres"}); err != nil {
		return nil, err
	}
	o.logLevel = strings.ToLower(o.logLevel)
	return o, nil
}

func listFlag(name, v string, known []string) ([]string, error) {
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !slices.Contains(known, item) {
			return nil, cliutil.Usagef("--%s: unknown %q (known: %s)", name, item, strings.Join(known, ", "))
		}
		out = append(out, item)
	}
	return out, nil
}

func intsFlag(name, v string) ([]int, error) {
	var out []int
	for item := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(item))
		if err != nil || n < 1 {
			return nil, cliutil.Usagef("--%s: %q is not a positive integer", name, item)
		}
		out = append(out, n)
	}
	return out, nil
}

func uniqueSorted(xs []int) []int {
	slices.Sort(xs)
	return slices.Compact(xs)
}

// Run runs the command.
func Run(ctx context.Context, args []string, io cliutil.IO) int {
	return cliutil.Run(ctx, args, io, Name, parse, run)
}

func run(ctx context.Context, o *Options, io cliutil.IO) error {
	log, err := cliutil.Logger(io.Stderr, o.logLevel)
	if err != nil {
		return err
	}
	if o.render != "" {
		return renderFile(o.render, o.mdPath)
	}
	if o.codexCommand == "" {
		o.codexCommand = defaultCodexCommand(io)
	}
	rep, err := Execute(ctx, o, log)
	if err != nil {
		return err
	}
	if err := rep.write(o); err != nil {
		return err
	}
	fmt.Fprintf(io.Stdout, "bus-bench: wrote %s and %s in %.0fs\n", o.jsonPath, o.mdPath, rep.DurationS)
	for _, g := range rep.Goals {
		fmt.Fprintf(io.Stdout, "  issue %-2d %-66s %-14s %-7s %s%s\n", g.Issue, g.Name, g.Target, g.Status(), g.Measured, ifNotEmpty(" (before: "+g.Before+")", g.Before))
	}
	return nil
}

// defaultCodexCommand finds codex: $BUS_TEST_CODEX_COMMAND, the Makefile's
// project-local install, or codex on PATH ("" when none).
func defaultCodexCommand(io cliutil.IO) string {
	if c := io.Env.Getenv(fakemodel.EnvCodexCommand); c != "" {
		return c
	}
	if root, err := testproc.ModuleRoot(); err == nil {
		p := filepath.Join(root, ".tools", "codex", "node_modules", ".bin", "codex")
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if p, err := exec.LookPath("codex"); err == nil {
		return p
	}
	return ""
}

// bencher runs the sections of one run.
type bencher struct {
	opts  *Options
	log   *slog.Logger
	quiet *slog.Logger // for the components under test
	tmp   string

	mu          sync.Mutex
	notes       []string
	workerBuilt bool // the worker command is built in tmp
}

func (b *bencher) note(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.log.Warn(s)
	b.notes = append(b.notes, s)
}

// Execute runs the benchmark described by o and returns its report.
func Execute(ctx context.Context, o *Options, log *slog.Logger) (*Report, error) {
	start := time.Now()
	tmp, err := os.MkdirTemp("", "bus-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	b := &bencher{opts: o, log: log, quiet: slog.New(slog.DiscardHandler), tmp: tmp}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rep := &Report{
		Tool: Name, GeneratedAt: start.UTC().Truncate(time.Second),
		Invocation: invocation(o.args),
		Settings:   o.settings(),
		Machine:    describeMachine(ctx, o.codexCommand),
	}
	if o.codexCommand != "" && rep.Machine.CodexVersion == "" {
		b.note(fmt.Sprintf("codex command %q does not run (codex --version failed): the codex sections are skipped", o.codexCommand))
		o.codexCommand = ""
	}
	rep.Commands = commands(o, rep.Machine.CodexVersion != "")
	want := func(s string) bool { return slices.Contains(o.sections, s) }
	notRequested := "not requested (--sections)"
	noCodex := "codex is not available (set BUS_TEST_CODEX_COMMAND or run make codex)"

	var codexEnv *codexEnv
	if o.codexCommand != "" && (want("codex") || want("modes") || want("scaling") || want("concurrency") || want("memory")) {
		if codexEnv, err = newCodexEnv(o.codexCommand); err != nil {
			return nil, err
		}
		defer codexEnv.close()
	}
	section := func(name string, run func() error) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		t := time.Now()
		log.Info("section", "name", name)
		err := run()
		log.Info("section done", "name", name, "seconds", time.Since(t).Round(100*time.Millisecond).Seconds())
		return err
	}
	// Section failures are reported in the section; only a cancelled
	// context stops the run.
	failed := func(name string, err error) string {
		b.note(fmt.Sprintf("%s section failed: %v", name, err))
		return "failed: " + err.Error()
	}

	if err := section("events", func() error {
		if !want("events") {
			rep.Events = &EventsReport{Skipped: notRequested}
			return nil
		}
		rep.Events = b.eventsSection(ctx)
		return ctx.Err()
	}); err != nil {
		return nil, err
	}
	if err := section("static", func() error {
		if !want("static") {
			rep.Static = &StaticReport{Skipped: notRequested}
			return nil
		}
		r, err := b.staticSection(ctx)
		if err != nil {
			r = &StaticReport{Skipped: failed("static", err)}
		}
		rep.Static = r
		return ctx.Err()
	}); err != nil {
		return nil, err
	}
	if err := section("codex", func() error {
		switch {
		case !want("codex"):
			rep.Codex = &CodexReport{Skipped: notRequested}
		case codexEnv == nil:
			rep.Codex = &CodexReport{Skipped: noCodex}
			b.note("codex direct vs bus skipped: " + noCodex)
		default:
			r, err := b.codexSection(ctx, codexEnv)
			if err != nil {
				r = &CodexReport{Skipped: failed("codex", err)}
			}
			rep.Codex = r
		}
		return ctx.Err()
	}); err != nil {
		return nil, err
	}
	if err := section("modes", func() error {
		switch {
		case !want("modes"):
			rep.Modes = &ModesReport{Skipped: notRequested}
		case codexEnv == nil:
			rep.Modes = &ModesReport{Skipped: noCodex}
			b.note("codex modes skipped: " + noCodex)
		default:
			r, err := b.modesSection(ctx, codexEnv)
			if err != nil {
				r = &ModesReport{Skipped: failed("modes", err)}
			}
			rep.Modes = r
		}
		return ctx.Err()
	}); err != nil {
		return nil, err
	}
	if err := section("scaling", func() error {
		switch {
		case !want("scaling"):
			rep.Scaling = &ScalingReport{Skipped: notRequested}
		case codexEnv == nil:
			rep.Scaling = &ScalingReport{Skipped: noCodex}
			b.note("pool scaling skipped: " + noCodex)
		default:
			r, err := b.scalingSection(ctx, codexEnv)
			if err != nil {
				r = &ScalingReport{Skipped: failed("scaling", err)}
			}
			rep.Scaling = r
		}
		return ctx.Err()
	}); err != nil {
		return nil, err
	}
	if err := section("concurrency", func() error {
		switch {
		case !want("concurrency"):
			rep.Concurrency = &ConcurrencyReport{Skipped: notRequested}
		case codexEnv == nil:
			rep.Concurrency = &ConcurrencyReport{Skipped: noCodex}
			b.note("concurrency skipped: " + noCodex)
		default:
			r, err := b.concurrencySection(ctx, codexEnv)
			if err != nil {
				r = &ConcurrencyReport{Skipped: failed("concurrency", err)}
			}
			rep.Concurrency = r
		}
		return ctx.Err()
	}); err != nil {
		return nil, err
	}
	if err := section("memory", func() error {
		if !want("memory") {
			rep.Memory = &MemoryReport{Skipped: notRequested}
			return nil
		}
		if runtime.GOOS != "linux" {
			rep.Memory = &MemoryReport{Skipped: "needs Linux (/proc)"}
			return nil
		}
		r, err := b.memorySection(ctx, codexEnv)
		if err != nil {
			r = &MemoryReport{Skipped: failed("memory", err)}
		}
		rep.Memory = r
		return ctx.Err()
	}); err != nil {
		return nil, err
	}
	rep.Machine.LoadAvgEnd = loadAvg()
	rep.Sizing = sizing(rep)
	rep.Goals = goals(rep)
	rep.Notes = b.notes
	rep.DurationS = roundTo(time.Since(start).Seconds(), 1)
	return rep, nil
}

func (o *Options) settings() Settings {
	return Settings{
		Runs: o.runs, Duration: o.duration.String(), Warmup: o.warmup.String(), Pairs: o.pairs, Rounds: o.rounds,
		MemoryLoad: o.memoryLoad.String(), Quick: o.quick, Sections: o.sections, Backends: o.backends,
		Concurrencies: o.concurrencies, PoolSizes: o.poolSizes, ScalingN: o.scalingN,
		StaticWorkerConcurrency: o.staticWorkerConcurrency,
		ModeIterations:          o.modeIterations, ModeConversations: o.modeConversations,
		WaitModel: o.waitModel.String(), WaitRounds: o.waitRounds, WaitN: o.waitN,
		FinishedThreads: o.finishedThreads, LiveThreads: o.liveThreads,
	}
}

// commands are the exact commands that reproduce the run.
func commands(o *Options, haveCodex bool) []string {
	extra := strings.TrimPrefix(invocation(o.args), Name)
	extra = strings.TrimSpace(extra)
	out := []string{"make bench" + ifNotEmpty(` ARGS="`+extra+`"`, extra)}
	direct := "go run ./tools/bus-bench" + ifNotEmpty(" "+extra, extra)
	if haveCodex {
		direct = "BUS_TEST_CODEX_COMMAND=" + shellQuote(o.codexCommand) + " " + direct
	}
	return append(out, direct)
}

func invocation(args []string) string {
	parts := []string{Name}
	for _, a := range args {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func ifNotEmpty(s, cond string) string {
	if cond == "" {
		return ""
	}
	return s
}

func shellQuote(s string) string {
	if s != "" && !strings.ContainsAny(s, " '\"$`\\*?;&|<>()") {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func roundTo(x float64, digits int) float64 {
	v, _ := strconv.ParseFloat(strconv.FormatFloat(x, 'f', digits, 64), 64)
	return v
}

// write writes the JSON file, its copy, and the Markdown report.
func (r *Report) write(o *Options) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	data = append(data, '\n')
	if err := writeFile(o.jsonPath, data); err != nil {
		return err
	}
	if o.copyDir != "" {
		name := "benchmarks-" + r.GeneratedAt.Format("20060102-150405") + ".json"
		if err := writeFile(filepath.Join(o.copyDir, name), data); err != nil {
			return err
		}
	}
	var md bytes.Buffer
	if err := RenderMarkdown(&md, r); err != nil {
		return err
	}
	return writeFile(o.mdPath, md.Bytes())
}

// renderFile renders the Markdown report of the JSON results in jsonPath.
func renderFile(jsonPath, mdPath string) error {
	data, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	var r Report
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", jsonPath, err)
	}
	var md bytes.Buffer
	if err := RenderMarkdown(&md, &r); err != nil {
		return err
	}
	return writeFile(mdPath, md.Bytes())
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// WriteJSON writes r as indented JSON (for tests and tools).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
