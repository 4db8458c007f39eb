// Command bus-bench benchmarks the bus path side by side with the direct
// App Server and writes docs/benchmarks.json and docs/BENCHMARKS.md
// (make bench).
package main

import (
	"github.com/busdk/bus-integration-codex/internal/bench"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
)

func main() { cliutil.Main(bench.Run) }
