package app

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/handlers/conflicts"
	"github.com/castiel/integration-manager/handlers/scheduler"
	"github.com/castiel/integration-manager/handlers/syncrun"
	"github.com/castiel/integration-manager/integrations"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/sender"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/telemetry"
)

// RunSyncWorker runs sync runs and ingress-triggered runs (cmd/sync-worker).
func RunSyncWorker(ctx context.Context, cfg *config.Config, logger zerolog.Logger) error {
	return startAndRun(ctx, cfg, logger, PartSyncWorker)
}

// RunScheduler enqueues due sync runs (cmd/scheduler).
func RunScheduler(ctx context.Context, cfg *config.Config, logger zerolog.Logger) error {
	return startAndRun(ctx, cfg, logger, PartScheduler)
}

// RunConflictResolver resolves sync conflicts (cmd/conflict-resolver).
func RunConflictResolver(ctx context.Context, cfg *config.Config, logger zerolog.Logger) error {
	return startAndRun(ctx, cfg, logger, PartConflictResolver)
}

// ShardStore is the Shard Manager over HTTP (its calls traced by tracing,
// which may be nil) when its URL is set, else the embedded stand-in in the
// store.
func ShardStore(cfg *config.Config, backend store.Backend, tracing *telemetry.Tracing) (shards.Store, error) {
	if url := cfg.Services.ShardManager.URL; url != "" {
		s, err := shards.NewHTTP(url, &http.Client{Timeout: 10 * time.Second, Transport: tracing.Transport(nil)})
		if err != nil {
			return nil, fmt.Errorf("services.shardManager.url: %w", err)
		}
		return s, nil
	}
	c, err := backend.Container(store.LocalShardsContainer)
	if err != nil {
		return nil, err
	}
	return shards.NewLocal(c)
}

// buildSyncWorker wires the sync-run and ingress consumers; the returned
// closer flushes the audit trail.
func buildSyncWorker(cfg *config.Config, logger zerolog.Logger, backend store.Backend, deps *shared,
	transport *messaging.Transport, router *message.Router, registry *prometheus.Registry) (func() error, error) {
	factory, err := deps.clients()
	if err != nil {
		return nil, err
	}
	shardStore, err := deps.shards()
	if err != nil {
		return nil, err
	}
	var auditor syncrun.Auditor = syncrun.LogAuditor{Logger: logger}
	closeAudit := func() error { return nil }
	if url := cfg.Services.LoggingService.URL; url != "" {
		a, err := syncrun.NewHTTPAuditor(url, syncrun.HTTPAuditorOptions{})
		if err != nil {
			return nil, fmt.Errorf("services.loggingService.url: %w", err)
		}
		auditor, closeAudit = a, a.Close
	}
	h, err := syncrun.New(syncrun.Deps{
		Store:   backend,
		Clients: factory,
		Shards:  shardStore,
		Events:  sender.New(deps.publisher, "castiel/integration-manager/"+cfg.Service),
		Auditor: auditor,
		Logger:  logger,
		Metrics: registry,
	}, syncrun.Options{})
	if err != nil {
		return nil, fmt.Errorf("sync worker: %w", err)
	}
	n := cfg.Broker.AMQP.ConsumersPerQueue
	if err := h.Register(router, transport, n, n); err != nil {
		return nil, fmt.Errorf("sync worker consumers: %w", err)
	}
	return closeAudit, nil
}

// buildScheduler returns the scheduler loop, run for the life of the process.
func buildScheduler(cfg *config.Config, logger zerolog.Logger, backend store.Backend, deps *shared) (func(context.Context) error, error) {
	s, err := scheduler.New(scheduler.Deps{
		Store:    backend,
		Commands: sender.New(deps.publisher, "castiel/integration-manager/"+cfg.Service),
		Logger:   logger,
	}, scheduler.Options{})
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	return s.Run, nil
}

// buildConflictResolver wires the conflict.detected and resolve consumers.
func buildConflictResolver(cfg *config.Config, logger zerolog.Logger, backend store.Backend, deps *shared,
	transport *messaging.Transport, router *message.Router, registry *prometheus.Registry) error {
	factory, err := deps.clients()
	if err != nil {
		return err
	}
	shardStore, err := deps.shards()
	if err != nil {
		return err
	}
	external := integrations.NewExternal(factory)
	r, err := conflicts.New(conflicts.Deps{
		Store:    backend,
		Shards:   shardStore,
		External: external,
		Writer:   external,
		Events:   sender.New(deps.publisher, "castiel/integration-manager/"+cfg.Service),
		Logger:   logger,
		Metrics:  registry,
	}, conflicts.Options{})
	if err != nil {
		return fmt.Errorf("conflict resolver: %w", err)
	}
	n := cfg.Broker.AMQP.ConsumersPerQueue
	if err := r.Register(router, transport, n, n); err != nil {
		return fmt.Errorf("conflict resolver consumers: %w", err)
	}
	return nil
}
