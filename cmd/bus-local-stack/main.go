// Command bus-local-stack runs the whole path on one machine: Events API
// (memory), worker and OpenAI-compatible front door (make run).
package main

import (
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/stackcmd"
)

func main() { cliutil.Main(stackcmd.Run) }
