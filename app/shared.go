package app

import (
	"net/http"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/integrations"
	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/telemetry"
)

// shared holds the clients several parts of one process use, built once on
// first use: one secret store, one shard store, and one connector factory, so
// (for example) the sync worker and the resolver of a standalone process share
// one credential renewal per connection.
type shared struct {
	cfg     *config.Config
	backend store.Backend
	logger  zerolog.Logger
	// tracing wraps the API and every outbound HTTP client; publisher is the
	// transport's, carrying the trace into every message.
	tracing   *telemetry.Tracing
	publisher message.Publisher

	secretStore secrets.Store
	shardStore  shards.Store
	factory     *integrations.Factory
}

func (s *shared) secrets() (secrets.Store, error) {
	if s.secretStore == nil {
		st, err := SecretStore(s.cfg, s.backend, s.tracing)
		if err != nil {
			return nil, err
		}
		s.secretStore = st
	}
	return s.secretStore, nil
}

func (s *shared) shards() (shards.Store, error) {
	if s.shardStore == nil {
		st, err := ShardStore(s.cfg, s.backend, s.tracing)
		if err != nil {
			return nil, err
		}
		s.shardStore = st
	}
	return s.shardStore, nil
}

// clients builds connector clients for integrations, credentials from Secret Management.
func (s *shared) clients() (*integrations.Factory, error) {
	if s.factory == nil {
		st, err := s.secrets()
		if err != nil {
			return nil, err
		}
		// The factory's default pool (64 idle connections per host), traced.
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		f, err := integrations.NewFactory(s.backend, st, integrations.Options{
			Connector: connector.Options{HTTPClient: &http.Client{Transport: s.tracing.Transport(t)}},
			Logger:    s.logger,
		})
		if err != nil {
			return nil, err
		}
		s.factory = f
	}
	return s.factory, nil
}
