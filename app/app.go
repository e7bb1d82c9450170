// Package app is the composition root: it turns a loaded configuration into
// running parts (logger, store, broker, HTTP servers, workers). cmd/*/main.go
// only picks a role and calls Main, so every binary is wired the same way.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/logging"
)

// Runner runs one role until ctx ends (SIGTERM) and then shuts it down.
type Runner func(ctx context.Context, cfg *config.Config, logger zerolog.Logger) error

// Main loads the configuration for service, builds its logger and runs it.
// It returns an error for main to print and exit non-zero; a bad configuration
// value comes back as one line naming the key.
func Main(ctx context.Context, opts config.LoadOptions, stderr io.Writer, run Runner) error {
	cfg, err := config.Load(opts)
	if err != nil {
		return err
	}
	logger, err := logging.New(stderr, cfg.Log.Level, cfg.Log.Format, cfg.Service)
	if err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	logger.Info().Str("profile", cfg.Profile).Fields(cfg.LogSummary()).Msg("configuration loaded")
	if err := run(ctx, cfg, logger); err != nil && !errors.Is(err, context.Canceled) {
		logger.Error().Err(err).Msg("stopped with an error")
		return err
	}
	logger.Info().Msg("stopped")
	return nil
}

// Exit is main's last line: it prints err on one line and exits non-zero.
func Exit(err error) {
	if err == nil {
		os.Exit(0)
	}
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
