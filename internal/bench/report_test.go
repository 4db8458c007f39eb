package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/catalog"
	"github.com/busdk/bus-integration-codex/internal/cmd/workercmd"
)

// one is a Summary of a single run.
func one(x float64) Summary { return summarize([]float64{x}) }

func boolp(b bool) *bool { return &b }

// fullReport is a synthetic report with every section measured: the
// model mode meets every issue-16 goal but the CPU one.
func fullReport() *Report {
	modes := &ModesReport{
		Processes: 1, Iterations: 20, Conversations: 3, SchemaBytes: []int{290, 258, 277, 356},
		Received: []ReceivedMode{
			{Mode: catalog.ModeModel, ModelID: catalog.DefaultModelID,
				Plain:       RequestSize{Bytes: 1680, Tokens: 420, InputItems: 2, InputBytes: 293, ToolsBytes: 2},
				OneFunction: RequestSize{Bytes: 1972}, FourFunctions: RequestSize{Bytes: 2847},
				OneFunctionExtra: 2, FourFunctionsExtra: -3, CodexTools: []string{},
				Conversation:     []RequestSize{{Bytes: 1715}, {Bytes: 2074}, {Bytes: 2433}, {Bytes: 2792}},
				ConversationKeys: 1, ConversationPrefix: true},
			{Mode: catalog.ModeAgent, ModelID: catalog.AgentModelID,
				Plain:       RequestSize{Bytes: 40528, Tools: 9},
				OneFunction: RequestSize{Bytes: 40821}, FourFunctions: RequestSize{Bytes: 41696},
				OneFunctionExtra: 3, FourFunctionsExtra: -3, CodexTools: []string{"exec_command", "web_search"},
				Conversation:     []RequestSize{{Bytes: 40563}, {Bytes: 40922}},
				ConversationKeys: 2},
		},
		Timing: []ModeTiming{
			{Mode: catalog.ModeModel, PlainP50: one(60), ToolStepP50: one(61), ToolAddedP50: one(1), CPUPlain: one(70)},
			{Mode: catalog.ModeAgent, PlainP50: one(80), ToolStepP50: one(81), ToolAddedP50: one(1.5), CPUPlain: one(90)},
		},
		DirectP50: one(55), DirectCPU: one(65),
	}
	conc := &ConcurrencyReport{
		ModelDelayMS: 1000, Rounds: 3, Processes: 1, PerProcess: 16, WorkerBinary: "test",
		Configs: []ConcurrencyConfig{
			{Name: configDefault, Concurrency: 16, IdleRSSMiB: 190, Rows: []ConcurrencyRow{
				{N: 1, Client: 1, Wall: one(1100), Ratio: one(1), Throughput: one(0.9), CPUPerRequest: one(80), AddedRSSPerRequest: one(0)},
				{N: 8, Client: 8, Wall: one(1300), Ratio: one(1.2), Throughput: one(6.1), CPUPerRequest: one(90), AddedRSSPerRequest: one(300)},
				{N: 16, Client: 16, Wall: one(2000), Ratio: one(1.8), Throughput: one(8), CPUPerRequest: one(70), AddedRSSPerRequest: one(500)},
				{N: 40, Client: 8, Wall: one(7000), Ratio: one(6.4), IdealRatio: 5, CPUPerRequest: one(75)},
			}},
			{Name: configAdmitAll, Flags: "--concurrency 64", Concurrency: 64, Rows: []ConcurrencyRow{
				{N: 1, Client: 1, Wall: one(1100), Ratio: one(1), Throughput: one(0.9)},
				{N: 8, Client: 8, Wall: one(1400), Ratio: one(1.25), Throughput: one(5.7)},
				{N: 16, Client: 16, Wall: one(2200), Ratio: one(2), Throughput: one(7.3)},
				{N: 64, Client: 64, Wall: one(5800), Ratio: one(5.3), Throughput: one(11)},
			}},
			{Name: configPrevious, Flags: "--concurrency 2", Concurrency: 2, Rows: []ConcurrencyRow{
				{N: 1, Client: 1, Wall: one(1070), Ratio: one(1)},
				{N: 8, Client: 8, Wall: one(4500), Ratio: one(4.2)},
			}},
		},
	}
	r := &Report{
		Tool: Name, Settings: Settings{Runs: 5, Duration: "1.5s", ModeIterations: 20, ModeConversations: 3, WaitModel: "1s", WaitRounds: 3, WaitN: []int{1, 8, 16, 64}},
		Machine: Machine{Cores: 2, LoadAvgStart: "6.50 6.00 5.90", LoadAvgEnd: "7.10 6.20 6.00"},
		Events: &EventsReport{Publishers: 8, PayloadBytes: 256, Backends: []BackendResult{{Backend: "memory", Modes: []EventsMode{
			{Delivery: "broadcast", LatencyP50: one(0.2)}, {Delivery: "unicast+ack", LatencyP50: one(0.25)}}}}},
		Static: &StaticReport{WorkerConcurrency: 64, Rows: []StaticRow{
			{Concurrency: 1, P50: one(0.6), RPS: one(1200), CoresUsed: one(0.9), CPUPerRequest: one(700)},
			{Concurrency: 8, P50: one(4), RPS: one(1600), CoresUsed: one(0.95), CPUPerRequest: one(600)},
		}},
		Codex:       &CodexReport{Processes: 1, Pairs: 20, DirectP50: one(54), BusP50: one(57), AddedP50: one(3), BusProviderP50: one(55)},
		Modes:       modes,
		Scaling:     &ScalingReport{Rounds: 5, Pools: []ScalingPool{{Processes: 1, Rows: []ScalingRow{{N: 1, Throughput: one(16)}, {N: 8, Throughput: one(21.5)}}}, {Processes: 2, Rows: []ScalingRow{{N: 8, Throughput: one(30)}}}}},
		Concurrency: conc,
		Memory: &MemoryReport{MaxRSSMiB: 1024, Threads: []ThreadMemory{
			{Mode: catalog.ModeModel, Finished: 400, FinishedKiB: 3, Live: 200, LiveKiB: 400},
			{Mode: catalog.ModeAgent, Finished: 400, FinishedKiB: 4, Live: 200, LiveKiB: 450},
		}},
	}
	r.Sizing = sizing(r)
	r.Goals = goals(r)
	return r
}

func TestGoalStatus(t *testing.T) {
	for _, tc := range []struct {
		met  *bool
		want string
	}{{nil, "not measured"}, {boolp(true), "met"}, {boolp(false), "MISSED"}} {
		if got := (Goal{Met: tc.met}).Status(); got != tc.want {
			t.Errorf("Status(%v) = %q, want %q", tc.met, got, tc.want)
		}
	}
}

func TestPlural(t *testing.T) {
	for _, tc := range []struct {
		n    int
		want string
	}{{0, "0 runs"}, {1, "1 run"}, {5, "5 runs"}} {
		if got := plural(tc.n, "run"); got != tc.want {
			t.Errorf("plural(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestLoadOne(t *testing.T) {
	for in, want := range map[string]float64{"6.35 5.83 5.98": 6.35, "0.00 0.01 0.05": 0, "": 0, "x 1 2": 0, "12.5": 12.5} {
		if got := loadOne(in); got != want {
			t.Errorf("loadOne(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestGoals(t *testing.T) {
	full := fullReport()
	status := func(gs []Goal) map[string]string {
		out := map[string]string{}
		for _, g := range gs {
			out[g.ID] = g.Status()
		}
		return out
	}
	for _, tc := range []struct {
		name   string
		report *Report
		want   map[string]string
		before map[string]string // substrings of Before
	}{
		{
			name:   "nothing measured",
			report: &Report{},
			want: map[string]string{goalPlainBytes: "not measured", goalFunctionCost: "not measured", goalCacheKeys: "not measured",
				goalToolStep: "not measured", goalCodexCPU: "not measured", goalWaiting: "not measured",
				goalBusOverhead: "not measured", goalStaticP50: "not measured", goalStaticRPS: "not measured", goalMemoryLatP50: "not measured"},
		},
		{
			name:   "sections skipped",
			report: &Report{Modes: &ModesReport{Skipped: "x"}, Concurrency: &ConcurrencyReport{Skipped: "x"}, Codex: &CodexReport{Skipped: "x"}},
			want:   map[string]string{goalPlainBytes: "not measured", goalWaiting: "not measured", goalBusOverhead: "not measured"},
		},
		{
			name:   "full",
			report: full,
			want: map[string]string{goalPlainBytes: "met", goalFunctionCost: "met", goalCacheKeys: "met", goalToolStep: "met",
				goalCodexCPU: "MISSED", goalWaiting: "met", goalBusOverhead: "met", goalStaticP50: "met", goalStaticRPS: "MISSED", goalMemoryLatP50: "met"},
			before: map[string]string{goalPlainBytes: "40,528", goalCacheKeys: "agent mode: 2", goalCodexCPU: "90",
				goalWaiting: "previous default (--concurrency 2): 4.20×"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gs := goals(tc.report)
			if len(gs) != 10 || len(goalsOf(gs, issueLeanCodex)) != 6 || len(goalsOf(gs, issueBusPath)) != 4 {
				t.Fatalf("goals: %+v", gs)
			}
			got := status(gs)
			for id, want := range tc.want {
				if got[id] != want {
					t.Errorf("%s: %s, want %s", id, got[id], want)
				}
			}
			for _, g := range gs {
				if want, ok := tc.before[g.ID]; ok && !strings.Contains(g.Before, want) {
					t.Errorf("%s: before %q lacks %q", g.ID, g.Before, want)
				}
			}
		})
	}
}

func TestSizing(t *testing.T) {
	s := sizing(fullReport())
	if s.Skipped != "" {
		t.Fatalf("skipped: %s", s.Skipped)
	}
	// CPU per request: median of the default worker's bursts of 8 or more (90, 70).
	want := Sizing{
		PerProcess: workercmd.ConcurrencyPerProcess, Processes: workercmd.DefaultProcesses(), Cores: 2, ModelDelayMS: 1000,
		Carried: 8, CarriedRatio: 1.25, Tried: 64, CPUPerRequestMS: 80, InFlightKiB: 400, LiveKiB: 400, LiveMeasured: true,
		ModelCPUMS: 70, AgentCPUMS: 90, TurnsPerSecond: 21.5, TurnsN: 8,
	}
	if s.Carried != want.Carried || s.CarriedRatio != want.CarriedRatio || s.Tried != want.Tried ||
		s.CPUPerRequestMS != want.CPUPerRequestMS || s.InFlightKiB != want.InFlightKiB || s.LiveKiB != want.LiveKiB ||
		!s.LiveMeasured || s.ModelCPUMS != want.ModelCPUMS || s.AgentCPUMS != want.AgentCPUMS ||
		s.TurnsPerSecond != want.TurnsPerSecond || s.TurnsN != want.TurnsN {
		t.Errorf("sizing %+v\nwant (in part) %+v", s, want)
	}
	procs := float64(max(1, s.Processes))
	if wantCPU := int(1000 * 2 / procs / 80); s.CPUBound != wantCPU {
		t.Errorf("CPU bound %d, want %d", s.CPUBound, wantCPU)
	}
	if wantRate := math.Round(11/procs*10) / 10; s.WaitingRate != wantRate || s.WaitingRateN != 64 {
		t.Errorf("waiting rate %v at %d, want %v at 64", s.WaitingRate, s.WaitingRateN, wantRate)
	}
	// 1024 MiB − 190 MiB idle − 256 live threads × 400 KiB, over 400 KiB per request.
	if wantMem := (1024*1024 - 190*1024 - 256*400) / 400; s.MemoryBound != wantMem {
		t.Errorf("memory bound %d, want %d", s.MemoryBound, wantMem)
	}

	if s := sizing(&Report{}); s.Skipped == "" {
		t.Errorf("sizing without the concurrency section: %+v", s)
	}
}

func TestVerdict(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Sizing
		want string
	}{
		{"within both bounds", Sizing{PerProcess: 16, Processes: 1, CPUBound: 25, MemoryBound: 3000}, "supported: 16 per process"},
		{"CPU bound is the lower", Sizing{PerProcess: 16, Processes: 1, CPUBound: 25, MemoryBound: 3000}, "under the CPU bound (25) and the memory bound (3000); the lower, the CPU bound,"},
		{"memory bound is the lower", Sizing{PerProcess: 16, Processes: 1, CPUBound: 25, MemoryBound: 20}, "the CPU bound (25) and the memory bound (20); the lower, the memory bound,"},
		{"above the CPU bound", Sizing{PerProcess: 16, Processes: 1, CPUBound: 12, MemoryBound: 3000}, "too high: 16 per process is more than the CPU bound, 12"},
		{"above the memory bound", Sizing{PerProcess: 16, Processes: 1, CPUBound: 40, MemoryBound: 10}, "too high: 16 per process is more than the memory bound, 10"},
		{"below the waiting goal", Sizing{PerProcess: 4, Processes: 1, CPUBound: 25, MemoryBound: 3000}, "too low: 4 per process"},
		{"goal split over processes", Sizing{PerProcess: 4, Processes: 2, CPUBound: 25, MemoryBound: 3000}, "supported: 4 per process"},
		{"nothing measured", Sizing{PerProcess: 16, Processes: 1}, "unbounded"},
		{"a burst's ratio is no bound", Sizing{PerProcess: 16, Processes: 1, Carried: 1, CPUBound: 25, MemoryBound: 3000}, "supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := verdict(&tc.s); !strings.Contains(got, tc.want) {
				t.Errorf("verdict = %q, want it to contain %q", got, tc.want)
			}
		})
	}
}

func TestWaitingLimits(t *testing.T) {
	withLoad := func(start string, cpu float64) *Report {
		r := fullReport()
		r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd = start, start
		r.Concurrency.Configs[0].Rows[1].CPUPerRequest = one(cpu)
		return r
	}
	for _, tc := range []struct {
		name string
		r    *Report
		want string
	}{
		{"CPU-bound", withLoad("0.50 0.50 0.50", 200), "queueing for the cores"},
		{"oversubscribed machine", withLoad("6.00 5.00 5.00", 90), "oversubscribed by other work"},
		{"elsewhere", withLoad("0.50 0.50 0.50", 10), "not CPU-bound"},
		{"no concurrency section", &Report{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := waitingLimits(tc.r)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("waitingLimits = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestReceivedRows(t *testing.T) {
	m := fullReport().Modes
	rows := receivedRows(m)
	if len(rows) != 7 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, tc := range []struct {
		row          int
		name         string
		model, agent int // bytes; -1: no cell
	}{
		{0, "plain", 1680, 40528},
		{1, "1 function", 1972, 40821},
		{2, "4 functions", 2847, 41696},
		{3, "conversation turn 1", 1715, 40563},
		{4, "conversation turn 2", 2074, 40922},
		{5, "conversation turn 3", 2433, -1}, // agent mode recorded two turns only
		{6, "conversation turn 4", 2792, -1},
	} {
		r := rows[tc.row]
		bytesOf := func(s *RequestSize) int {
			if s == nil {
				return -1
			}
			return s.Bytes
		}
		if r.Name != tc.name || bytesOf(r.Model) != tc.model || bytesOf(r.Agent) != tc.agent {
			t.Errorf("row %d: %s %d %d, want %s %d %d", tc.row, r.Name, bytesOf(r.Model), bytesOf(r.Agent), tc.name, tc.model, tc.agent)
		}
	}
	for _, r := range receivedRows(&ModesReport{}) {
		if r.Model != nil || r.Agent != nil {
			t.Errorf("empty section: row %+v", r)
		}
	}
}

func TestExtendsExactly(t *testing.T) {
	raw := func(items ...string) []json.RawMessage {
		out := make([]json.RawMessage, len(items))
		for i, s := range items {
			out[i] = json.RawMessage(s)
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		prev, next []json.RawMessage
		want       bool
	}{
		{"extends", raw(`{"a":1}`), raw(`{"a":1}`, `{"b":2}`), true},
		{"from nothing", nil, raw(`{"a":1}`), true},
		{"same length", raw(`{"a":1}`), raw(`{"a":1}`), false},
		{"shorter", raw(`{"a":1}`, `{"b":2}`), raw(`{"a":1}`), false},
		{"a byte differs", raw(`{"a":1}`), raw(`{"a": 1}`, `{"b":2}`), false},
	} {
		if got := extendsExactly(tc.prev, tc.next); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSlope(t *testing.T) {
	for _, tc := range []struct {
		name   string
		xs, ys []float64
		want   float64
	}{
		{"line", []float64{0, 1, 2, 3}, []float64{10, 12, 14, 16}, 2},
		{"flat", []float64{0, 100, 200}, []float64{5, 5, 5}, 0},
		{"noisy", []float64{0, 1, 2}, []float64{0, 2, 1}, 0.5},
		{"one point", []float64{1}, []float64{1}, 0},
		{"one x", []float64{2, 2}, []float64{1, 3}, 0},
	} {
		if got := slope(tc.xs, tc.ys); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRenderFull renders a report with every section measured: every
// section and both goal tables appear, with the numbers of the report.
func TestRenderFull(t *testing.T) {
	r := fullReport()
	var md bytes.Buffer
	if err := RenderMarkdown(&md, r); err != nil {
		t.Fatal(err)
	}
	out := md.String()
	for _, want := range []string{
		"**Issue 16, lean Codex.**", "**Issue 6, the bus path.**",
		"| Plain \"Reply ONE\" request body the model receives | ≤ 2,500 bytes | 1,680 bytes | agent mode: 40,528 bytes | met |",
		"| Codex CPU per plain request | ≤ 50 ms | 70.0 ms | agent mode: 90.0 ms | MISSED |",
		"| 1 s model: 8 requests at once vs one, default worker | ≤ 1.3× | 1.20× (--concurrency 16) | previous default (--concurrency 2): 4.20× | met |",
		"(5 runs,", "load average\n6.50 6.00 5.90 at the start",
		"## 4. Codex modes", "| plain | 1,680 (420) |", "tools the model was offered on the plain request: none.",
		"## 6. A waiting model", "| 16 | 16 | 2000 | 1.80× | 0× | 8.00 |",
		"**Sizing the default.**", "the pool answered 8 at once within 1.25× of one request", "70.0 ms of CPU in model mode and 90.0 ms in agent mode",
		"at most 21.5 requests/s through the bus (8 at once, section 5)", "Verdict: supported",
		"| model | 400 | 3 | 200 | 400 |",
		"**Codex CPU per plain request** (70.0 ms; target ≤ 50 ms)", // the analysis of the missed goal
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	for _, bad := range []string{"<no value>", "%!"} {
		if strings.Contains(out, bad) {
			t.Errorf("the report contains %q", bad)
		}
	}
}

// TestRenderNoBurstCarried: when no burst came within 1.3× of one
// request, the sizing says so instead of "1 at once".
func TestRenderNoBurstCarried(t *testing.T) {
	r := fullReport()
	r.Sizing.Carried, r.Sizing.CarriedRatio = 1, 1
	var md bytes.Buffer
	if err := RenderMarkdown(&md, r); err != nil {
		t.Fatal(err)
	}
	if out := md.String(); !strings.Contains(out, "no burst of several requests came within 1.3× of one request") || strings.Contains(out, "answered 1 at once") {
		t.Errorf("sizing bursts:\n%s", out)
	}
}
