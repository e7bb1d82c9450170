// Command sync-worker runs sync tasks between external REST APIs and Castiel's
// shards, and the runs triggered by ingress webhooks. Run any number of
// replicas: one run per task holds a lease.
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
	app.Exit(app.Main(ctx, config.ProcessOptions("sync-worker", config.ProfileFleet), os.Stderr, app.RunSyncWorker))
}
