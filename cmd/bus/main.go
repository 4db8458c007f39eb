// Command bus dispatches "bus a b c ARGS..." to the longest existing
// executable among bus-a-b-c, bus-a-b and bus-a, looked up next to bus and
// then on PATH. Run "bus --help" for usage; the logic lives in
// internal/buscmd.
package main

import (
	"os"

	"github.com/busdk/bus-integration-codex/internal/cmd/buscmd"
)

func main() {
	f := buscmd.SelfFinder(os.Getenv("PATH"))
	os.Exit(buscmd.Run(f, os.Args[1:], os.Stdout, os.Stderr))
}
