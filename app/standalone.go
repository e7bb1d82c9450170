package app

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
)

// RunStandalone runs the whole product in one process on the configured
// (by default embedded) backends.
func RunStandalone(ctx context.Context, cfg *config.Config, logger zerolog.Logger) error {
	backend, err := OpenStore(ctx, cfg.Store, logger)
	if err != nil {
		return err
	}
	defer backend.Close()
	if err := backend.Ping(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	logger.Info().Str("store", cfg.Store.Kind).Str("path", cfg.Store.Embedded.Path).Msg("ready")
	<-ctx.Done()
	return nil
}
