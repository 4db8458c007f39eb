package fakemodel

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
)

// Start starts a fake server on 127.0.0.1 outside a test (for benchmarks
// and tools). The caller must Close it. It behaves exactly like the server
// New returns.
func Start() *Server {
	s := &Server{done: make(chan struct{}), arrived: make(chan struct{})}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serveHTTP))
	return s
}

// ResetRequests forgets the requests recorded so far (a long benchmark
// calls it so the record does not grow without bound).
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = nil
}

// WriteCodexHomeDir writes into dir (which must exist) the config.toml
// that WriteCodexHome writes: Codex pointed at baseURL (an
// OpenAI-compatible base ending in /v1) with provider "fake", wire_api
// "responses" and no retries; extraTOML lines are added as top-level keys.
func WriteCodexHomeDir(dir, baseURL string, extraTOML ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "model = %q\n", ModelName)
	b.WriteString("model_provider = \"fake\"\n")
	for _, l := range extraTOML {
		b.WriteString(l)
		b.WriteString("\n")
	}
	b.WriteString("\n[model_providers.fake]\n")
	b.WriteString("name = \"fake\"\n")
	fmt.Fprintf(&b, "base_url = %q\n", baseURL)
	b.WriteString("wire_api = \"responses\"\n")
	b.WriteString("request_max_retries = 0\n")
	b.WriteString("stream_max_retries = 0\n")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("fakemodel: write config.toml: %w", err)
	}
	return nil
}
