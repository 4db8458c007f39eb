// Command bus-operator-token issues local HS256 Bus API tokens.
//
// Run "bus-operator-token --help" for usage; the logic lives in
// internal/tokencmd.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/busdk/bus-integration-codex/internal/busconfig"
	"github.com/busdk/bus-integration-codex/internal/cmd/tokencmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := tokencmd.Run(ctx, os.Args[1:], busconfig.OSEnv(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
