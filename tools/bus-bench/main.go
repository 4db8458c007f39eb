// Command bus-bench benchmarks the bus path side by side with the direct
// App Server and writes docs/benchmarks.json and docs/BENCHMARKS.md
// (make bench).
//
// It is a development tool, not a shipped command: it starts its own Redis
// and PostgreSQL servers and the fake model server from the test support
// packages, which is why it lives here and not under cmd/ (whose binaries
// never link test support; see cmd/imports_test.go).
package main

import (
	"github.com/busdk/bus-integration-codex/internal/bench"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
)

func main() { cliutil.Main(bench.Run) }
