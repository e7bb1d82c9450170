// Command conflict-resolver applies resolution strategies and people's
// decisions to the conflicts sync runs find. Replicas compete; each
// resolution is claimed once.
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
	app.Exit(app.Main(ctx, config.ProcessOptions("conflict-resolver", config.ProfileFleet), os.Stderr, app.RunConflictResolver))
}
