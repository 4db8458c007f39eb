// Command bus-api-provider-events serves the Bus Events API.
package main

import (
	"github.com/busdk/bus-integration-codex/internal/app/eventsapi"
	"github.com/busdk/bus-integration-codex/internal/cliutil"
)

func main() { cliutil.Main(eventsapi.Run) }
