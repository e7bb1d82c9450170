package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmos"
	"github.com/castiel/integration-manager/store/embedded"
)

// OpenStore opens the configured backend with every container declared.
func OpenStore(ctx context.Context, cfg config.StoreConfig, logger zerolog.Logger) (store.Backend, error) {
	specs := store.Containers(cfg.ExecutionsTTL)
	switch cfg.Kind {
	case config.StoreEmbedded:
		if dir := filepath.Dir(cfg.Embedded.Path); dir != "" {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return nil, fmt.Errorf("store.embedded.path: %w", err)
			}
		}
		b, err := embedded.Open(cfg.Embedded.Path, specs)
		if err != nil {
			return nil, fmt.Errorf("store.embedded.path: open %s: %w", cfg.Embedded.Path, err)
		}
		return b, nil
	case config.StoreCosmos:
		b, err := cosmos.Open(ctx, cosmos.Config{
			Endpoint:           cfg.Cosmos.Endpoint,
			Key:                cfg.Cosmos.Key.Reveal(),
			Database:           cfg.Cosmos.Database,
			InsecureSkipVerify: cfg.Cosmos.InsecureSkipVerify,
			MaxRetries:         cfg.Cosmos.MaxRetries,
			RequestTimeout:     cfg.Cosmos.RequestTimeout,
		}, specs, logger)
		if err != nil {
			return nil, fmt.Errorf("store.cosmos: %w", err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("store.kind: unknown backend %q", cfg.Kind)
	}
}
