// Command bus-integration-codex is the Bus Events worker that runs
// OpenAI-compatible LLM requests through Codex App Server.
package main

import (
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/workercmd"
)

func main() { cliutil.Main(workercmd.Run) }
