package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CodexState is what the Codex provider reports at scrape time.
type CodexState struct {
	// Processes is the pool's size; Live how many run; Busy how many hold
	// a turn that runs now.
	Processes, Live, Busy int
	// Starts, Restarts and Retired count App Server processes started,
	// restarted after dying, and recycled.
	Starts, Restarts, Retired int
	// LiveThreads counts conversation threads kept loaded.
	LiveThreads int
	// Windows is the login's rate-limit state, when known.
	Windows []LimitWindow
	// ExhaustedUntil is set while the login's usage limit is exhausted.
	ExhaustedUntil time.Time
}

// LimitWindow is one rate-limit window of the login.
type LimitWindow struct {
	// Name is "primary" or "secondary".
	Name        string
	UsedPercent float64
	// ResetsAt is zero when unknown.
	ResetsAt time.Time
}

// Codex are the metrics of the worker's Codex App Server pool and login.
type Codex struct {
	// TurnDuration is the time of one request's turn on Codex, by mode
	// and outcome (ok, tool_step, error).
	TurnDuration *prometheus.HistogramVec
	state        func() CodexState

	processes, live, busy, threads     *prometheus.Desc
	starts, restarts, retired          *prometheus.Desc
	used, resets, exhausted, exhaustTo *prometheus.Desc
}

// NewCodex registers the Codex metrics on reg; state is read at every
// scrape.
func NewCodex(reg prometheus.Registerer, state func() CodexState) *Codex {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("bus_codex_"+name, help, labels, nil)
	}
	c := &Codex{
		TurnDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "bus", Subsystem: "codex", Name: "turn_duration_seconds",
			Help: "Time of one request's turn on Codex, by mode and outcome (ok, tool_step, error).", Buckets: latencyBuckets(),
		}, []string{"mode", "outcome"}),
		state:     state,
		processes: d("pool_processes", "App Server processes the pool runs (its size)."),
		live:      d("pool_processes_live", "App Server processes alive."),
		busy:      d("pool_processes_busy", "App Server processes with a turn running now."),
		threads:   d("live_threads", "Conversation threads kept loaded for later turns."),
		starts:    d("process_starts_total", "App Server processes started."),
		restarts:  d("process_restarts_total", "App Server processes started to replace one that died."),
		retired:   d("process_retirements_total", "App Server processes recycled (resident memory over the limit)."),
		used:      d("rate_limit_used_percent", "How much of the login's rate-limit window is used, as Codex reports it.", "window"),
		resets:    d("rate_limit_resets_at_seconds", "When the login's rate-limit window resets (Unix seconds).", "window"),
		exhausted: d("login_exhausted", "1 while the login's usage limit is exhausted."),
		exhaustTo: d("login_exhausted_until_seconds", "When the exhausted login resets (Unix seconds; 0 when not exhausted)."),
	}
	reg.MustRegister(c.TurnDuration, c)
	return c
}

// Describe implements prometheus.Collector.
func (c *Codex) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.processes, c.live, c.busy, c.threads, c.starts, c.restarts, c.retired, c.used, c.resets, c.exhausted, c.exhaustTo} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Codex) Collect(ch chan<- prometheus.Metric) {
	s := c.state()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(c.processes, float64(s.Processes))
	gauge(c.live, float64(s.Live))
	gauge(c.busy, float64(s.Busy))
	gauge(c.threads, float64(s.LiveThreads))
	counter(c.starts, s.Starts)
	counter(c.restarts, s.Restarts)
	counter(c.retired, s.Retired)
	for _, w := range s.Windows {
		gauge(c.used, w.UsedPercent, w.Name)
		if !w.ResetsAt.IsZero() {
			gauge(c.resets, float64(w.ResetsAt.Unix()), w.Name)
		}
	}
	exhausted, until := 0.0, 0.0
	if !s.ExhaustedUntil.IsZero() {
		exhausted, until = 1, float64(s.ExhaustedUntil.Unix())
	}
	gauge(c.exhausted, exhausted)
	gauge(c.exhaustTo, until)
}
