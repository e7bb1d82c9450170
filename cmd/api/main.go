// Command api runs the thin command API: it validates, authorises, writes
// configuration and enqueues work. Stateless; run any number of replicas.
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
	app.Exit(app.Main(ctx, config.ProcessOptions("api", config.ProfileFleet), os.Stderr, app.RunAPI))
}
