package workercmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/busdk/bus-integration-codex/internal/worker"
)

// metricsMux is the worker's own HTTP surface: GET /healthz (the process is
// up) and GET /readyz (subscribed, token accepted, provider ready).
func metricsMux(w *worker.Worker) *http.ServeMux {
	mux := http.NewServeMux()
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
func serveMetrics(addr string, w *worker.Worker, log *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: metricsMux(w), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics listener stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", l.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
