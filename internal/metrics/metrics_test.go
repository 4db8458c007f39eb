package metrics_test

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// scrape serves reg over HTTP and parses the text format with the
// Prometheus parser.
func scrape(t *testing.T, h *httptest.Server) map[string]float64 {
	t.Helper()
	resp, err := h.Client().Get(h.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("not the Prometheus text format: %v\n%s", err, body)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			key := name
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				out[key+",count"] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	return out
}

func TestRequestsTokensAndCodexState(t *testing.T) {
	reg := metrics.NewRegistry()
	f := metrics.NewFrontDoor(reg)
	reset := time.Unix(1_900_000_000, 0)
	metrics.NewCodex(reg, func() metrics.CodexState {
		return metrics.CodexState{Processes: 2, Live: 2, Busy: 1, Starts: 3, Restarts: 1, LiveThreads: 5,
			Windows: []metrics.LimitWindow{{Name: "primary", UsedPercent: 42, ResetsAt: reset}}, ExhaustedUntil: reset}
	})
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	before := scrape(t, srv)
	f.Observe(llmapi.OpChatCompletions, "codex-chatgpt", 200, 0.3, &llmapi.Usage{PromptTokens: 100, CachedTokens: 10, CompletionTokens: 20, ReasoningTokens: 5})
	f.Observe(llmapi.OpChatCompletions, "codex-chatgpt", 429, 0.01, nil)
	after := scrape(t, srv)
	for key, want := range map[string]float64{
		"bus_llm_requests_total,model=codex-chatgpt,operation=chat.completions,status=200":                 1,
		"bus_llm_requests_total,model=codex-chatgpt,operation=chat.completions,status=429":                 1,
		"bus_llm_tokens_total,kind=input,model=codex-chatgpt":                                              100,
		"bus_llm_tokens_total,kind=cached,model=codex-chatgpt":                                             10,
		"bus_llm_tokens_total,kind=output,model=codex-chatgpt":                                             20,
		"bus_llm_tokens_total,kind=reasoning,model=codex-chatgpt":                                          5,
		"bus_llm_request_duration_seconds,model=codex-chatgpt,operation=chat.completions,status=200,count": 1,
		"bus_codex_pool_processes":                              2,
		"bus_codex_pool_processes_busy":                         1,
		"bus_codex_process_restarts_total":                      1,
		"bus_codex_live_threads":                                5,
		"bus_codex_rate_limit_used_percent,window=primary":      42,
		"bus_codex_rate_limit_resets_at_seconds,window=primary": float64(reset.Unix()),
		"bus_codex_login_exhausted":                             1,
	} {
		if after[key]-before[key] != want && !(strings.HasPrefix(key, "bus_codex") && after[key] == want) {
			t.Errorf("%s = %v (before %v), want %v", key, after[key], before[key], want)
		}
	}
	if _, ok := after["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
}

func TestNameClassBoundsLabels(t *testing.T) {
	for name, want := range map[string]string{
		"bus.llm.chat.completions.request": "bus.llm.chat.completions.request",
		"bus.llm.responses.chunk":          "bus.llm.responses.chunk",
		"example.ping":                     "other",
		"bus.llm.nope.request":             "other",
	} {
		if got := metrics.NameClass(name); got != want {
			t.Errorf("NameClass(%q) = %q, want %q", name, got, want)
		}
	}
}
