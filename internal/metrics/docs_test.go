package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/pkg/llmapi"
)

// seriesNames are the names of every series the metric sets expose (a
// histogram's _bucket, _sum and _count).
func seriesNames(t *testing.T) map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	f, w, e := metrics.NewFrontDoor(reg), metrics.NewWorker(reg), metrics.NewEvents(reg)
	at := time.Unix(1_900_000_000, 0)
	c := metrics.NewCodex(reg, func() metrics.CodexState {
		return metrics.CodexState{Windows: []metrics.LimitWindow{{Name: "primary", ResetsAt: at}}, ExhaustedUntil: at}
	})
	// Every vector gets a child, so that every family is gathered.
	f.Observe(llmapi.OpResponses, "m", 200, 1, &llmapi.Usage{})
	f.FirstChunk.WithLabelValues("responses", "m").Observe(1)
	f.Refused.WithLabelValues("x").Inc()
	f.InFlight.WithLabelValues("responses").Set(0)
	w.InFlight.WithLabelValues("responses").Set(0)
	w.Observe(llmapi.OpResponses, "m", 200, 1, &llmapi.Usage{})
	w.Paused.WithLabelValues("x").Set(0)
	e.Published.WithLabelValues("x").Inc()
	e.Delivered.WithLabelValues("x", "unicast").Inc()
	e.Redelivered.WithLabelValues("x").Inc()
	e.Lag.WithLabelValues("x").Observe(1)
	c.TurnDuration.WithLabelValues("model", "ok").Observe(1)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, fam := range fams {
		names[fam.GetName()] = true
		if fam.GetType() == dto.MetricType_HISTOGRAM {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[fam.GetName()+s] = true
			}
		}
	}
	return names
}

// The shipped Grafana dashboard is valid JSON whose every panel queries
// series the services expose, and the scrape example names the jobs the
// dashboard selects.
func TestDocsDashboardAndScrapeExample(t *testing.T) {
	names := seriesNames(t)
	raw, err := os.ReadFile("../../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name    string `json:"name"`
				Current struct {
					Value any `json:"value"`
				} `json:"current"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("docs/grafana-dashboard.json: %v", err)
	}
	series := regexp.MustCompile(`\bbus_[a-z_]+\b`)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, name := range series.FindAllString(tg.Expr, -1) {
				used[name] = true
				if !names[name] {
					t.Errorf("panel %q queries %s, which no service exposes", p.Title, name)
				}
			}
		}
	}
	for _, want := range []string{"bus_llm_requests_total", "bus_llm_time_to_first_chunk_seconds_bucket", "bus_llm_tokens_total",
		"bus_events_delivery_lag_seconds_bucket", "bus_events_redelivered_total", "bus_codex_pool_processes_busy",
		"bus_codex_process_restarts_total", "bus_codex_rate_limit_used_percent", "bus_codex_turn_duration_seconds_bucket"} {
		if !used[want] {
			t.Errorf("the dashboard has no panel over %s", want)
		}
	}
	scrape, err := os.ReadFile("../../docs/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	jobs := 0
	for _, v := range dash.Templating.List {
		values, _ := v.Current.Value.([]any)
		for _, job := range values {
			jobs++
			if !strings.Contains(string(scrape), "job_name: "+job.(string)+"\n") {
				t.Errorf("docs/prometheus.yml has no job %v (the dashboard's $%s)", job, v.Name)
			}
		}
	}
	if jobs != 3 {
		t.Errorf("the dashboard selects %d jobs, want the three services", jobs)
	}
}
