package app

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
)

// RunStandalone runs the whole product in one process on the configured
// (by default embedded) backends: the API and every worker.
func RunStandalone(ctx context.Context, cfg *config.Config, logger zerolog.Logger) error {
	return startAndRun(ctx, cfg, logger, PartAPI, PartDispatcher, PartSyncWorker, PartScheduler, PartConflictResolver)
}
