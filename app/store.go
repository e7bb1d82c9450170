package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmos"
	"github.com/castiel/integration-manager/store/embedded"
)

// StoreOption adjusts OpenStore.
type StoreOption func(*storeOptions)

type storeOptions struct {
	metrics prometheus.Registerer
}

// StoreMetrics times every store request and counts the throttled and
// unavailable ones (store.Instrument) in reg.
func StoreMetrics(reg prometheus.Registerer) StoreOption {
	return func(o *storeOptions) { o.metrics = reg }
}

// OpenStore opens the configured backend with every container declared.
func OpenStore(ctx context.Context, cfg config.StoreConfig, logger zerolog.Logger, opts ...StoreOption) (store.Backend, error) {
	var o storeOptions
	for _, opt := range opts {
		opt(&o)
	}
	b, err := openStore(ctx, cfg, logger)
	if err != nil || o.metrics == nil {
		return b, err
	}
	instrumented, err := store.Instrument(b, o.metrics)
	if err != nil {
		_ = b.Close()
		return nil, err
	}
	return instrumented, nil
}

func openStore(ctx context.Context, cfg config.StoreConfig, logger zerolog.Logger) (store.Backend, error) {
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
		cc := cosmos.Config{
			Endpoint:           cfg.Cosmos.Endpoint,
			Key:                cfg.Cosmos.Key.Reveal(),
			Database:           cfg.Cosmos.Database,
			InsecureSkipVerify: cfg.Cosmos.InsecureSkipVerify,
			MaxRetries:         cfg.Cosmos.MaxRetries,
			RequestTimeout:     cfg.Cosmos.RequestTimeout,
		}
		// A fleet may start before its store answers: wait for it (with
		// backoff, until ctx ends) instead of exiting; other errors are final.
		wait := backoff.WithContext(backoff.NewExponentialBackOff(backoff.WithMaxInterval(10*time.Second), backoff.WithMaxElapsedTime(0)), ctx)
		b, err := backoff.RetryNotifyWithData(func() (*cosmos.Backend, error) {
			b, err := cosmos.Open(ctx, cc, specs, logger)
			if err != nil && !store.IsTransient(err) {
				return nil, backoff.Permanent(err)
			}
			return b, err
		}, wait, func(err error, next time.Duration) {
			logger.Warn().Err(err).Dur("retryIn", next).Msg("Cosmos DB is not reachable yet")
		})
		if err != nil {
			return nil, fmt.Errorf("store.cosmos: %w", err)
		}
		return b, nil
	default:
		return nil, fmt.Errorf("store.kind: unknown backend %q", cfg.Kind)
	}
}
