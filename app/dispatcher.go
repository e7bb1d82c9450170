package app

import (
	"cmp"
	"context"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/handlers/webhook"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/sender"
	"github.com/castiel/integration-manager/store"
)

// RunWebhookDispatcher runs the webhook dispatcher (cmd/webhook-dispatcher).
func RunWebhookDispatcher(ctx context.Context, cfg *config.Config, logger zerolog.Logger) error {
	return startAndRun(ctx, cfg, logger, PartDispatcher)
}

// buildDispatcher wires the fan-out and delivery consumers.
func buildDispatcher(cfg *config.Config, logger zerolog.Logger, backend store.Backend, deps *shared,
	transport *messaging.Transport, router *message.Router, registry *prometheus.Registry) (*webhook.Dispatcher, error) {
	secretStore, err := deps.secrets()
	if err != nil {
		return nil, err
	}
	dc := cfg.Webhooks.Dispatcher
	source := "castiel/integration-manager/" + cfg.Service
	d, err := webhook.New(webhook.Deps{
		Store:     backend,
		Secrets:   secretStore,
		Publisher: deps.publisher,
		Delayer:   transport,
		Events:    sender.New(deps.publisher, source),
		Logger:    logger,
		Metrics:   registry,
		// Deliveries carry the trace to the tenant's endpoint.
		WrapTransport: deps.tracing.Transport,
	}, webhook.Options{
		Timeout:                dc.Timeout,
		ResponseBodyCap:        dc.ResponseBodyCap,
		Schedule:               dc.Schedule,
		RetryAfterCap:          dc.RetryAfterCap,
		BreakerFailures:        dc.BreakerFailures,
		BreakerCooldown:        dc.BreakerCooldown,
		DisableAfter:           dc.DisableAfter,
		MaxInFlightPerEndpoint: dc.MaxInFlightPerEndpoint,
		CacheTTL:               dc.CacheTTL,
		DeferDelay:             dc.DeferDelay,
		InlineAttempts:         cmp.Or(dc.InlineAttempts, -1), // 0 in config: none
		InlineHandoff:          dc.InlineHandoff,
		InFlightWait:           cmp.Or(dc.InFlightWait, -1), // 0 in config: defer at once
		AllowHosts:             dc.AllowHosts,
		Source:                 source,
	})
	if err != nil {
		return nil, fmt.Errorf("webhooks.dispatcher: %w", err)
	}
	if err := d.Register(router, transport, dc.FanOutConsumers, dc.Consumers); err != nil {
		return nil, fmt.Errorf("webhook dispatcher consumers: %w", err)
	}
	return d, nil
}
