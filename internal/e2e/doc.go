// Package e2e holds the end-to-end tests of the whole BusDK LLM path: the
// official OpenAI Go SDK (and a plain HTTP client) against the REST front
// door, through the in-process Events API, to the real worker on the static
// provider and on the real codex binary talking to a fake model; and the
// seed README's commands run as written against the built binaries.
//
// Run them with the codex binary available:
//
//	BUS_TEST_CODEX_COMMAND=/path/to/codex go test -race ./internal/e2e/
//
// Without it the codex tests are skipped (or fail when
// BUS_TEST_REQUIRE_CODEX=1) and the script test falls back to
// --provider static.
package e2e
