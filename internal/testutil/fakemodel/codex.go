package fakemodel

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Environment variables read by CodexCommand.
const (
	// EnvCodexCommand names the codex executable to test against.
	EnvCodexCommand = "BUS_TEST_CODEX_COMMAND"
	// EnvRequireCodex, when "1", turns a missing codex into a test failure
	// instead of a skip (set it in CI).
	EnvRequireCodex = "BUS_TEST_REQUIRE_CODEX"
)

// ModelName is the model name written into the fake CODEX_HOME.
const ModelName = "fake-model"

// WriteCodexHome writes a temporary CODEX_HOME whose config.toml points
// Codex at the fake server (provider "fake", wire_api "responses", no
// retries) and returns its path. extraTOML is appended verbatim before the
// provider table (top-level keys only).
func (s *Server) WriteCodexHome(t testing.TB, extraTOML ...string) string {
	t.Helper()
	return WriteCodexHome(t, s.URL(), extraTOML...)
}

// WriteCodexHome writes a temporary CODEX_HOME whose config.toml points
// Codex at baseURL (an OpenAI-compatible base ending in /v1) and returns
// its path. extraTOML lines are added as top-level keys.
func WriteCodexHome(t testing.TB, baseURL string, extraTOML ...string) string {
	t.Helper()
	dir := t.TempDir()
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
		t.Fatalf("fakemodel: write config.toml: %v", err)
	}
	return dir
}

// CodexCommand returns the codex executable for tests: $BUS_TEST_CODEX_COMMAND,
// else <repo>/.tools/codex/node_modules/.bin/codex. When neither exists the
// test is skipped, or fails when BUS_TEST_REQUIRE_CODEX=1.
func CodexCommand(t testing.TB) string {
	t.Helper()
	if c := os.Getenv(EnvCodexCommand); c != "" {
		return c
	}
	var tried string
	if root, ok := repoRoot(); ok {
		p := filepath.Join(root, ".tools", "codex", "node_modules", ".bin", "codex")
		tried = p
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	msg := fmt.Sprintf("codex binary not found: set %s or npm-install @openai/codex into .tools/codex (looked for %q)", EnvCodexCommand, tried)
	if os.Getenv(EnvRequireCodex) == "1" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

// repoRoot walks up from the working directory to the directory holding go.mod.
func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}
