package app

import (
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/integrations"
	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

// shared holds the clients several parts of one process use, built once on
// first use: one secret store, one shard store, and one connector factory, so
// (for example) the sync worker and the resolver of a standalone process share
// one credential renewal per connection.
type shared struct {
	cfg     *config.Config
	backend store.Backend
	logger  zerolog.Logger

	secretStore secrets.Store
	shardStore  shards.Store
	factory     *integrations.Factory
}

func (s *shared) secrets() (secrets.Store, error) {
	if s.secretStore == nil {
		st, err := SecretStore(s.cfg, s.backend)
		if err != nil {
			return nil, err
		}
		s.secretStore = st
	}
	return s.secretStore, nil
}

func (s *shared) shards() (shards.Store, error) {
	if s.shardStore == nil {
		st, err := ShardStore(s.cfg, s.backend)
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
		f, err := integrations.NewFactory(s.backend, st, integrations.Options{Logger: s.logger})
		if err != nil {
			return nil, err
		}
		s.factory = f
	}
	return s.factory, nil
}
