package app

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/auth"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/handlers/webhook"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/delaystore"
	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/telemetry"
)

// OpenTransport connects the configured broker. RabbitMQ start-up retries
// until ctx ends, so a fleet started before its broker waits for it. In process,
// delayed messages are kept in backend so they survive a restart.
func OpenTransport(ctx context.Context, cfg *config.Config, backend store.Backend, logger zerolog.Logger) (*messaging.Transport, error) {
	switch cfg.Broker.Kind {
	case config.BrokerGoChannel:
		c, err := backend.Container(store.ScheduledContainer)
		if err != nil {
			return nil, err
		}
		return messaging.NewInProcessWithSchedule(ctx, logger, delaystore.New(c), messaging.WithDelayTiers(delayTiers(cfg)...),
			messaging.WithBacklog(cfg.Broker.GoChannel.MaxBacklog, cfg.Broker.GoChannel.PublishTimeout))
	case config.BrokerAMQP:
		t, err := messaging.NewRabbitMQ(ctx, MessagingConfig(cfg), logger)
		if err != nil {
			return nil, fmt.Errorf("broker.amqp: %w", err)
		}
		return t, nil
	default:
		return nil, fmt.Errorf("broker.kind: unknown broker %q", cfg.Broker.Kind)
	}
}

// MessagingConfig is the RabbitMQ transport configuration cfg gives (names of
// exchanges, work queues and delay-tier queues included).
func MessagingConfig(cfg *config.Config) messaging.Config {
	a := cfg.Broker.AMQP
	return messaging.Config{
		URL:               a.URL.Reveal(),
		Exchange:          a.ExchangePrefix,
		QueuePrefix:       a.ExchangePrefix + ".",
		QuorumQueues:      a.QuorumQueues,
		Prefetch:          a.Prefetch,
		ConsumersPerQueue: a.ConsumersPerQueue,
		PublishChannels:   a.ChannelPoolSize,
		ConnectionName:    "castiel-integration " + cfg.Service,
		DrainTimeout:      drainTimeout(cfg.Shutdown.Timeout),
		DelayTiers:        delayTiers(cfg),
	}
}

// delayTiers are the broker's delay queues: every wait of the retry schedule,
// the deferral delay, the breaker's cool-down and the safety copy of a
// handed-off inline attempt, so each lands on a tier of its own.
func delayTiers(cfg *config.Config) []time.Duration {
	d := cfg.Webhooks.Dispatcher
	tiers := []time.Duration{d.DeferDelay, d.BreakerCooldown}
	if d.InlineAttempts > 0 {
		tiers = append(tiers, webhook.SafetyDelay(d.Timeout, d.InlineHandoff))
	}
	for _, wait := range d.Schedule {
		if wait > 0 {
			tiers = append(tiers, wait)
		}
	}
	slices.Sort(tiers)
	return slices.Compact(tiers)
}

// messagingSystem names the broker in spans (messaging.system).
func messagingSystem(cfg *config.Config) string {
	if cfg.Broker.Kind == config.BrokerAMQP {
		return "rabbitmq"
	}
	return "gochannel"
}

// RouterPolicy is the shared router policy of every worker.
func RouterPolicy(cfg *config.Config) messaging.Policy {
	return messaging.Policy{
		HandlerTimeout:  cfg.Broker.HandlerTimeout,
		RetryInitial:    cfg.Broker.Retry.InitialInterval,
		RetryMax:        cfg.Broker.Retry.MaxInterval,
		RetryMaxElapsed: cfg.Broker.Retry.MaxElapsed,
		CloseTimeout:    cfg.Shutdown.Timeout,
	}
}

// Authenticator accepts the configured static API keys and, when User
// Management's JWKS is configured, its JWTs. ready reports whether the key set
// has been loaded (nil without JWKS), for /readyz.
func Authenticator(ctx context.Context, cfg *config.Config, logger zerolog.Logger) (_ auth.Authenticator, ready func(context.Context) error, err error) {
	var chain []auth.Authenticator
	if len(cfg.Auth.StaticKeys) > 0 {
		keys, err := auth.NewStaticKeys(cfg.Auth.StaticKeys)
		if err != nil {
			return nil, nil, fmt.Errorf("auth.staticKeys: %w", err)
		}
		chain = append(chain, keys)
	}
	if url := cfg.Services.UserManagement.JWKSURL; url != "" {
		jwks, err := auth.NewJWKS(ctx, auth.JWKSConfig{
			URL:        url,
			Issuer:     cfg.Auth.Issuer,
			Audience:   cfg.Auth.Audience,
			Refresh:    cfg.Auth.JWKSRefresh,
			HTTPClient: &http.Client{Timeout: 10 * time.Second},
		}, logger)
		if err != nil {
			return nil, nil, fmt.Errorf("services.userManagement.jwksUrl: %w", err)
		}
		chain = append(chain, jwks)
		ready = func(context.Context) error { return jwks.Ready() }
	}
	if len(chain) == 0 {
		return nil, nil, fmt.Errorf("auth: neither auth.staticKeys nor services.userManagement.jwksUrl is set; nobody could call the API")
	}
	return auth.Chain(chain...), ready, nil
}

// SecretStore is Secret Management over HTTP (its calls traced by tracing,
// which may be nil) when its URL is set, else the encrypted local stand-in in
// the store.
func SecretStore(cfg *config.Config, backend store.Backend, tracing *telemetry.Tracing) (secrets.Store, error) {
	if url := cfg.Services.SecretManagement.URL; url != "" {
		s, err := secrets.NewHTTP(url, &http.Client{Timeout: 10 * time.Second, Transport: tracing.Transport(nil)})
		if err != nil {
			return nil, fmt.Errorf("services.secretManagement.url: %w", err)
		}
		return s, nil
	}
	key, err := cfg.Secrets.EncryptionKeyBytes()
	if err != nil {
		return nil, fmt.Errorf("secrets.encryptionKey: %w", err)
	}
	c, err := backend.Container(store.LocalSecretsContainer)
	if err != nil {
		return nil, err
	}
	s, err := secrets.NewLocal(c, key)
	if err != nil {
		return nil, fmt.Errorf("secrets.encryptionKey: %w", err)
	}
	return s, nil
}
