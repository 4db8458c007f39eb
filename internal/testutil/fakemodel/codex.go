package fakemodel

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/busdk/bus-integration-codex/internal/testutil/testproc"
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
	if err := WriteCodexHomeDir(dir, baseURL, extraTOML...); err != nil {
		t.Fatal(err)
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
	if root, err := testproc.ModuleRoot(); err == nil {
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
