// Command webhook-dispatcher fans events out to tenants' webhook endpoints and
// delivers them, signed, with durable retries. Run any number of replicas: they
// compete for the same queues.
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
	app.Exit(app.Main(ctx, config.ProcessOptions("webhook-dispatcher", config.ProfileFleet), os.Stderr, app.RunWebhookDispatcher))
}
