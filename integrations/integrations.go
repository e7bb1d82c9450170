// Package integrations builds a ready connector.Client for a tenant's
// integration: it loads the integration, its provider and its connection, and
// presents the connection's credentials from Secret Management. The sync
// worker and the conflict resolver both call the external API through it.
//
// One credentials object is shared per connection (and one client per
// connection while its definition is unchanged), so OAuth2 renewals are
// single-flight within a process and the provider's rate limit is one token
// bucket per connection, not one per run. A renewed token's expiry is written
// to Connection.TokenExpiresAt.
package integrations

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// Errors callers branch on with errors.Is. All of them are permanent for the
// request at hand: a retry cannot help until someone changes the configuration.
// Failures of the store itself stay transient (store.IsTransient).
var (
	// ErrNotFound: the integration, its provider or its connection does not exist.
	ErrNotFound = errors.New("integrations: not found")
	// ErrNotConnected: the provider needs credentials and the connection has none.
	ErrNotConnected = errors.New("integrations: the integration's connection has no credentials")
	// ErrInactive: the integration is paused or disabled.
	ErrInactive = errors.New("integrations: the integration is paused or disabled")
	// ErrInvalidProvider: the provider definition cannot be used (bad base URL, unknown auth kind).
	ErrInvalidProvider = errors.New("integrations: the provider definition cannot be used")
)

// IsPermanent reports whether err is one of this package's configuration errors.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotConnected) || errors.Is(err, ErrInactive) ||
		errors.Is(err, ErrInvalidProvider)
}

// Options tune a Factory; zero values take the defaults named.
type Options struct {
	// Connector is the template of every client. Its HTTPClient (default: one
	// pooled client shared by every client the factory builds) and retry
	// settings apply to all; PathVars are taken from the integration's settings.
	Connector connector.Options
	// Credentials is the template of every connection's credentials; the
	// factory sets OnRefresh (chaining to one given here).
	Credentials connector.SecretCredentialsOptions
	// IdleTTL drops a connection's cached client and credentials after this
	// long unused (default 15 min).
	IdleTTL time.Duration
	Logger  zerolog.Logger
	Now     func() time.Time
}

// DefaultIdleTTL is Options.IdleTTL's default.
const DefaultIdleTTL = 15 * time.Minute

// Factory builds clients; it is safe for concurrent use.
type Factory struct {
	integrations *store.Repository[domain.Integration]
	providers    *store.Repository[domain.Provider]
	connections  *store.Repository[domain.Connection]
	secrets      connector.SecretStore
	opts         Options
	log          zerolog.Logger

	mu    sync.Mutex
	cache map[connKey]*entry
}

// connKey names one connection's credentials: a new credential reference or
// auth spec (a reconnect, an edited provider) gets new credentials.
type connKey struct {
	tenantID, integrationID, credentialRef, auth string
}

type entry struct {
	creds    *connector.SecretCredentials // nil for auth kind none
	client   *connector.Client
	print    string // the provider and settings the client was built from
	lastUsed time.Time
}

// NewFactory reads integrations, providers and connections from backend and
// credentials from secrets (secrets.Store satisfies connector.SecretStore).
func NewFactory(backend store.Backend, secrets connector.SecretStore, opts Options) (*Factory, error) {
	if backend == nil || secrets == nil {
		return nil, errors.New("integrations: NewFactory needs a store and a secret store")
	}
	open := func(name string) (store.Container, error) {
		c, err := backend.Container(name)
		if err != nil {
			return nil, fmt.Errorf("integrations: %w", err)
		}
		return c, nil
	}
	ic, err := open(domain.ContainerIntegrations)
	if err != nil {
		return nil, err
	}
	pc, err := open(domain.ContainerProviders)
	if err != nil {
		return nil, err
	}
	cc, err := open(domain.ContainerConnections)
	if err != nil {
		return nil, err
	}
	if opts.Connector.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 64
		opts.Connector.HTTPClient = &http.Client{Transport: t}
	}
	if opts.Credentials.HTTPClient == nil {
		opts.Credentials.HTTPClient = opts.Connector.HTTPClient
	}
	if opts.IdleTTL <= 0 {
		opts.IdleTTL = DefaultIdleTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Connector.Now == nil {
		opts.Connector.Now = opts.Now
	}
	return &Factory{
		integrations: store.NewRepository[domain.Integration](ic),
		providers:    store.NewRepository[domain.Provider](pc),
		connections:  store.NewRepository[domain.Connection](cc),
		secrets:      secrets,
		opts:         opts,
		log:          opts.Logger.With().Str("component", "integrations").Logger(),
		cache:        map[connKey]*entry{},
	}, nil
}

// Client returns a client for the tenant's integration and the provider
// definition it was built from. Every call reads the integration, provider
// and connection (so a paused integration or an edited definition takes
// effect at once) and reuses the connection's client while they are unchanged.
func (f *Factory) Client(ctx context.Context, tenantID, integrationID string) (*connector.Client, domain.Provider, error) {
	in, _, err := f.integrations.Get(ctx, tenantID, integrationID)
	if err != nil {
		return nil, domain.Provider{}, notFound(err, "integration %s", integrationID)
	}
	if in.Status == domain.IntegrationPaused || in.Status == domain.IntegrationDisabled {
		return nil, domain.Provider{}, fmt.Errorf("%w: integration %s is %s", ErrInactive, integrationID, in.Status)
	}
	p, _, err := f.providers.Get(ctx, in.ProviderCategory, in.ProviderID)
	if err != nil {
		return nil, domain.Provider{}, notFound(err, "provider %s of integration %s", in.ProviderID, integrationID)
	}
	key := connKey{tenantID: tenantID, integrationID: integrationID, auth: authPrint(p.Auth)}
	if needsCredentials(p.Auth.Kind) {
		conn, _, err := f.connections.Get(ctx, integrationID, integrationID)
		if err != nil {
			return nil, domain.Provider{}, notFound(err, "connection of integration %s", integrationID)
		}
		if conn.TenantID != tenantID {
			return nil, domain.Provider{}, fmt.Errorf("%w: connection of integration %s", ErrNotFound, integrationID)
		}
		if conn.CredentialRef == "" {
			return nil, domain.Provider{}, fmt.Errorf("%w (integration %s, connection status %s)", ErrNotConnected, integrationID, conn.Status)
		}
		key.credentialRef = conn.CredentialRef
	}
	print := clientPrint(p, in.Settings)

	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.opts.Now()
	f.evictLocked(now)
	e := f.cache[key]
	if e == nil {
		e = &entry{}
		if key.credentialRef != "" {
			if e.creds, err = f.newCredentials(key, p.Auth); err != nil {
				return nil, domain.Provider{}, err
			}
		}
		f.cache[key] = e
	}
	e.lastUsed = now
	if e.client == nil || e.print != print {
		opts := f.opts.Connector
		opts.PathVars = in.Settings
		opts.Logger = f.opts.Logger
		var creds connector.Credentials
		if e.creds != nil {
			creds = e.creds
		}
		c, err := connector.New(p, creds, opts)
		if err != nil {
			return nil, domain.Provider{}, fmt.Errorf("%w: %w", ErrInvalidProvider, err)
		}
		e.client, e.print = c, print
	}
	return e.client, p, nil
}

func (f *Factory) newCredentials(key connKey, auth domain.AuthSpec) (*connector.SecretCredentials, error) {
	opts := f.opts.Credentials
	next := opts.OnRefresh
	opts.OnRefresh = func(ctx context.Context, expiresAt time.Time) {
		f.recordExpiry(ctx, key, expiresAt)
		if next != nil {
			next(ctx, expiresAt)
		}
	}
	if opts.Now == nil {
		opts.Now = f.opts.Now
	}
	opts.Logger = f.opts.Logger
	c, err := connector.NewSecretCredentials(f.secrets, key.tenantID, key.credentialRef, auth, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotConnected, err)
	}
	return c, nil
}

// recordExpiry keeps Connection.TokenExpiresAt current. It runs inside the
// credentials' renewal, so it must not call them; a failure only costs the
// field's freshness and is logged.
func (f *Factory) recordExpiry(ctx context.Context, key connKey, expiresAt time.Time) {
	now := f.opts.Now().UTC()
	_, _, err := f.connections.Update(ctx, key.integrationID, key.integrationID, func(c *domain.Connection) error {
		if c.CredentialRef != key.credentialRef || c.TenantID != key.tenantID {
			return store.ErrSkipUpdate // reconnected meanwhile: not this credential's expiry
		}
		if expiresAt.IsZero() {
			c.TokenExpiresAt = nil
		} else {
			t := expiresAt.UTC()
			c.TokenExpiresAt = &t
		}
		c.Status, c.LastError, c.UpdatedAt = domain.ConnectionConnected, "", now
		return nil
	})
	if err != nil {
		f.log.Warn().Err(err).Str("tenantId", key.tenantID).Str("integrationId", key.integrationID).
			Msg("could not record the renewed token's expiry on the connection")
	}
}

// evictLocked drops entries unused for IdleTTL.
func (f *Factory) evictLocked(now time.Time) {
	for k, e := range f.cache {
		if now.Sub(e.lastUsed) > f.opts.IdleTTL {
			delete(f.cache, k)
		}
	}
}

func needsCredentials(k domain.AuthKind) bool { return k != domain.AuthNone && k != "" }

func authPrint(a domain.AuthSpec) string {
	b, _ := json.Marshal(a)
	return string(b)
}

// clientPrint fingerprints what a client is built from.
func clientPrint(p domain.Provider, settings map[string]string) string {
	b, _ := json.Marshal(struct {
		P domain.Provider
		S map[string]string
	}{p, settings})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func notFound(err error, format string, args ...any) error {
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("%w: %s", ErrNotFound, fmt.Sprintf(format, args...))
	}
	return fmt.Errorf("integrations: read %s: %w", fmt.Sprintf(format, args...), err)
}
