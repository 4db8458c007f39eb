package workercmd

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/busdk/bus-integration-codex/internal/metrics"
	"github.com/busdk/bus-integration-codex/internal/worker"
)

// metricsMux is the worker's own HTTP surface: GET /healthz (the process is
// up), GET /readyz (subscribed, token accepted, provider ready) and GET
// /metrics (reg's metrics in the Prometheus text format).
func metricsMux(w *worker.Worker, reg *prometheus.Registry) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(reg))
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		writeStatus(rw, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if ready, reason := w.Readiness(); !ready {
			writeStatus(rw, http.StatusServiceUnavailable, map[string]string{"status": "unready", "reason": reason})
			return
		}
		writeStatus(rw, http.StatusOK, map[string]string{"status": "ready"})
	})
	return mux
}

func writeStatus(rw http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // maps of strings always encode
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(status)
	_, _ = rw.Write(b)
}

// serveMetrics serves metricsMux on addr (nothing when addr is empty)
// until stop is called.
func serveMetrics(addr string, w *worker.Worker, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	stop, err = metrics.Listen(addr, metricsMux(w, reg), log)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	return stop, nil
}
