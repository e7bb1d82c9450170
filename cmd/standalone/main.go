// Command standalone runs the API and every worker in one process on embedded
// defaults: the in-process broker and the single-file store.
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
	app.Exit(app.Main(ctx, config.ProcessOptions("standalone", config.ProfileStandalone), os.Stderr, app.RunStandalone))
}
