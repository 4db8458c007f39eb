package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/testutil/fakemodel"
	"github.com/busdk/bus-integration-codex/internal/testutil/pgtest"
	"github.com/busdk/bus-integration-codex/internal/testutil/redistest"
)

// TestQuickRun runs every section in its tiny configuration (--quick) so
// the benchmark cannot rot: the whole path must work, both files must be
// written, and the Markdown must come from the JSON. It asserts nothing
// about speed.
func TestQuickRun(t *testing.T) {
	dir := t.TempDir()
	jsonPath, mdPath := filepath.Join(dir, "benchmarks.json"), filepath.Join(dir, "BENCHMARKS.md")
	var stdout, stderr bytes.Buffer
	io := cliutil.IO{Env: busconfig.OSEnv(), Stdout: &stdout, Stderr: &stderr}
	codex := defaultCodexCommand(io)
	if codex == "" && os.Getenv(fakemodel.EnvRequireCodex) == "1" {
		t.Fatalf("codex not found and %s=1", fakemodel.EnvRequireCodex)
	}
	args := []string{"--quick", "--json", jsonPath, "--md", mdPath, "--copy-dir", filepath.Join(dir, "copies"), "--log-level", "warn"}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if code := Run(ctx, args, io); code != cliutil.ExitOK {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, &stdout, &stderr)
	}

	data, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatalf("JSON: %v", err)
	}
	if copies, _ := filepath.Glob(filepath.Join(dir, "copies", "benchmarks-*.json")); len(copies) != 1 {
		t.Errorf("copies: %v", copies)
	}

	// Section 1: memory always; Redis and PostgreSQL when installed.
	requireServers := os.Getenv(redistest.RequireEnv) == "1" || os.Getenv(pgtest.RequireEnv) == "1"
	if rep.Events == nil || rep.Events.Skipped != "" || len(rep.Events.Backends) != 3 {
		t.Fatalf("events section: %+v", rep.Events)
	}
	for _, b := range rep.Events.Backends {
		switch {
		case b.Skipped != "" && (b.Backend == "memory" || requireServers || strings.HasPrefix(b.Skipped, "failed")):
			t.Errorf("backend %s: %s", b.Backend, b.Skipped)
		case b.Skipped == "":
			if len(b.Modes) != 2 || b.Modes[0].LatencyP50.Median <= 0 || b.Modes[0].Throughput.Median <= 0 {
				t.Errorf("backend %s: %+v", b.Backend, b.Modes)
			}
		}
	}
	// Section 2.
	if rep.Static == nil || rep.Static.Skipped != "" || len(rep.Static.Rows) != 6 {
		t.Fatalf("static section: %+v", rep.Static)
	}
	for _, row := range rep.Static.Rows {
		if row.Requests == 0 || row.P50.Median <= 0 || row.RPS.Median <= 0 || (row.Stream && row.FirstP50 == nil) {
			t.Errorf("static row %+v", row)
		}
	}
	// Sections 3 to 7 (codex parts only with codex).
	if codex != "" {
		if c := rep.Codex; c == nil || c.Skipped != "" || c.DirectP50.Median <= 0 || c.BusP50.Median <= 0 || c.Errors != 0 {
			t.Errorf("codex section: %+v", c)
		} else if c.DirectRequestBytes == 0 || c.DirectRequestBytes != c.BusRequestBytes {
			t.Errorf("codex section: the direct thread sent %d bytes, the bus %d", c.DirectRequestBytes, c.BusRequestBytes)
		}
		checkModes(t, rep.Modes)
		if s := rep.Scaling; s == nil || s.Skipped != "" || len(s.Pools) != 1 || len(s.Pools[0].Rows) != 2 {
			t.Errorf("scaling section: %+v", s)
		}
		if c := rep.Concurrency.config(configDefault); c == nil || len(c.Rows) != 3 || c.Concurrency <= 0 {
			t.Errorf("concurrency section: %+v", rep.Concurrency)
		} else {
			for _, row := range c.Rows {
				if row.Wall.Median <= 0 || row.Errors != 0 || row.CPUPerRequest.Median <= 0 {
					t.Errorf("concurrency row %+v", row)
				}
			}
		}
		if m := rep.Memory; m == nil || len(m.Threads) != 2 || m.ThreadsSkipped != "" {
			t.Errorf("thread memory: %+v", m)
		}
	} else if rep.Codex.Skipped == "" || rep.Modes.Skipped == "" || rep.Scaling.Skipped == "" || rep.Concurrency.Skipped == "" {
		t.Errorf("codex sections ran without codex")
	}
	if m := rep.Memory; m == nil || m.Skipped != "" {
		t.Errorf("memory section: %+v", m)
	} else {
		for _, w := range m.Workers {
			if w.Provider == "codex" && codex == "" {
				continue
			}
			if w.Skipped != "" || len(w.Processes) == 0 || w.Processes[0].IdleMiB <= 0 || w.Processes[0].Peak.Median <= 0 {
				t.Errorf("memory %s worker: %+v", w.Provider, w)
			}
			if w.Provider == "codex" && len(w.Processes) < 3 {
				t.Errorf("codex worker: no App Server processes found: %+v", w.Processes)
			}
		}
	}
	if len(rep.Goals) != 10 || rep.Machine.Cores == 0 || rep.Machine.GoVersion == "" || len(rep.Commands) != 2 {
		t.Errorf("report: goals %+v machine %+v commands %v", rep.Goals, rep.Machine, rep.Commands)
	}

	// The Markdown is rendered from the JSON: re-rendering the parsed JSON
	// gives the same document.
	md, err := os.ReadFile(mdPath)
	if err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := RenderMarkdown(&again, &rep); err != nil {
		t.Fatal(err)
	}
	if again.String() != string(md) {
		t.Error("BENCHMARKS.md differs from the rendering of benchmarks.json")
	}
	for _, want := range []string{"## Machine", "## Commands", "## Goals", "## 1. Events API", "## 2. Static provider round trip",
		"## 3. Codex", "## 4. Codex modes", "## 5. Pool scaling", "## 6. A waiting model", "## 7. Memory", "Quick mode", "make bench"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("BENCHMARKS.md lacks %q", want)
		}
	}
}

// checkModes checks the modes section of a quick run: both modes measured,
// what the model received told apart (agent mode offers Codex's tools and
// sends more), every phase timed.
func checkModes(t *testing.T, m *ModesReport) {
	t.Helper()
	if m == nil || m.Skipped != "" || len(m.Received) != 2 || len(m.Timing) != 2 || len(m.SchemaBytes) != 4 {
		t.Fatalf("modes section: %+v", m)
	}
	model, agent := m.received("model"), m.received("agent")
	if model == nil || agent == nil {
		t.Fatalf("modes: %+v", m.Received)
	}
	for _, r := range []*ReceivedMode{model, agent} {
		if r.Plain.Bytes == 0 || r.OneFunction.Bytes <= r.Plain.Bytes || r.FourFunctions.Bytes <= r.OneFunction.Bytes ||
			len(r.Conversation) != 4 || r.ConversationKeys < 1 || r.Plain.Tokens != approxTokens(r.Plain.Bytes) {
			t.Errorf("%s mode received: %+v", r.Mode, r)
		}
		for i := 1; i < len(r.Conversation); i++ {
			if r.Conversation[i].Bytes <= r.Conversation[i-1].Bytes || r.Conversation[i].InputItems <= r.Conversation[i-1].InputItems {
				t.Errorf("%s mode conversation does not grow: %+v", r.Mode, r.Conversation)
			}
		}
	}
	if len(model.CodexTools) != 0 || len(agent.CodexTools) == 0 || agent.Plain.Bytes <= model.Plain.Bytes {
		t.Errorf("model mode offered %v (%d bytes), agent mode %v (%d bytes)", model.CodexTools, model.Plain.Bytes, agent.CodexTools, agent.Plain.Bytes)
	}
	for _, tm := range m.Timing {
		if tm.PlainP50.Median <= 0 || tm.ToolStepP50.Median <= 0 || tm.ToolNextP50.Median <= 0 || tm.ConversationP50.Median <= 0 || tm.Errors != 0 {
			t.Errorf("%s mode timing: %+v", tm.Mode, tm)
		}
	}
}

func TestSkipsWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	o, err := parse([]string{"--quick", "--sections", "events,codex,scaling", "--backends", "memory", "--codex-command", filepath.Join(dir, "no-codex")},
		cliutil.IO{Env: busconfig.OSEnv()})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := Execute(context.Background(), o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Codex.Skipped == "" || rep.Modes.Skipped == "" || rep.Scaling.Skipped == "" || rep.Concurrency.Skipped == "" || rep.Static.Skipped == "" || rep.Memory.Skipped == "" {
		t.Errorf("not skipped: codex %q modes %q scaling %q concurrency %q static %q memory %q",
			rep.Codex.Skipped, rep.Modes.Skipped, rep.Scaling.Skipped, rep.Concurrency.Skipped, rep.Static.Skipped, rep.Memory.Skipped)
	}
	if len(rep.Notes) == 0 {
		t.Error("no note about the missing codex")
	}
	var md bytes.Buffer
	if err := RenderMarkdown(&md, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "Skipped: codex is not available") {
		t.Errorf("markdown does not say codex was skipped:\n%s", md.String())
	}
}

func TestStats(t *testing.T) {
	s := summarize([]float64{3, 1, 2, 10})
	if s.Median != 2.5 || s.Min != 1 || s.Max != 10 || len(s.Runs) != 4 {
		t.Errorf("summarize: %+v", s)
	}
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if p := percentile(d, 50); p != 5 {
		t.Errorf("p50 = %d", p)
	}
	if p := percentile(d, 99); p != 10 {
		t.Errorf("p99 = %d", p)
	}
	for in, want := range map[float64]string{0: "0", 999: "999", 1234.4: "1,234", 3000000: "3,000,000"} {
		if got := fmtThousands(in); got != want {
			t.Errorf("fmtThousands(%v) = %q, want %q", in, got, want)
		}
	}
	if got := fmtMs(summarize([]float64{0.25, 0.5, 1.5})); got != "0.500 (0.250–1.50)" {
		t.Errorf("fmtMs = %q", got)
	}
}
