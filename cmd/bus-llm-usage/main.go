// Command bus-llm-usage prints the usage ledger of a REST front door
// (GET /v1/usage) as a table, CSV or JSON; "bus llm usage" runs it through
// the bus dispatcher.
package main

import (
	"github.com/busdk/bus-integration-codex/internal/cliutil"
	"github.com/busdk/bus-integration-codex/internal/cmd/usagecmd"
)

func main() { cliutil.Main(usagecmd.Run) }
