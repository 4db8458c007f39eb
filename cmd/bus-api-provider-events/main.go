// Command bus-api-provider-events serves the Bus Events API.
package main

import (
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/eventscmd"
)

func main() { cliutil.Main(eventscmd.Run) }
