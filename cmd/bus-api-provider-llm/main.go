// Command bus-api-provider-llm serves the OpenAI-compatible REST API and
// runs requests as bus.llm.* events over the Bus Events API
// (--execution-backend events).
package main

import (
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/frontdoorcmd"
)

func main() { cliutil.Main(frontdoorcmd.Run) }
