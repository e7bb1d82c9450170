// Command scheduler enqueues due sync runs. Several replicas are safe: each
// slot's run has a deterministic id created once (create-if-absent).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/config"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app.Exit(app.Main(ctx, config.ProcessOptions("scheduler", config.ProfileFleet), os.Stderr, app.RunScheduler))
}
