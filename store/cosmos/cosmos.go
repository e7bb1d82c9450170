// Package cosmos is the Azure Cosmos DB backend of store (fleet mode), built
// on azcosmos. It creates its database and containers on start-up, maps the
// service's status codes onto the store's errors, retries what the service
// asks to be retried, and pages queries by id (keyset) so it needs no
// server-side continuation tokens.
package cosmos

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/store"
)

// Defaults applied to a zero Config field.
const (
	DefaultMaxRetries     = 5
	DefaultRequestTimeout = 10 * time.Second
)

// Config holds what Open needs to reach one database of a Cosmos DB account.
type Config struct {
	Endpoint string // e.g. https://<account>.documents.azure.com:443/
	Key      string // account key: never logged, never part of an error
	Database string
	// InsecureSkipVerify accepts any TLS certificate. Only for the emulator,
	// whose certificate is self-signed.
	InsecureSkipVerify bool
	// MaxRetries bounds the retries of throttled (429), unavailable (503) and
	// timed-out requests. 0 means DefaultMaxRetries, a negative value none.
	MaxRetries int
	// RequestTimeout bounds one HTTP attempt. 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
}

// String hides the key, so printing a Config (%v, %+v) cannot leak it.
func (c Config) String() string {
	key := ""
	if c.Key != "" {
		key = "[redacted]"
	}
	return fmt.Sprintf("{Endpoint:%s Database:%s Key:%s InsecureSkipVerify:%t MaxRetries:%d RequestTimeout:%s}",
		c.Endpoint, c.Database, key, c.InsecureSkipVerify, c.MaxRetries, c.RequestTimeout)
}

// GoString hides the key from %#v too.
func (c Config) GoString() string { return "cosmos.Config" + c.String() }

func (c Config) withDefaults() Config {
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
	} else if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	return c
}

// Backend is a store.Backend on one Cosmos DB database.
type Backend struct {
	client     *azcosmos.Client
	db         *azcosmos.DatabaseClient
	http       *http.Client
	log        zerolog.Logger
	database   string
	maxRetries int
	containers map[string]*container
}

var _ store.Backend = (*Backend)(nil)

// Open connects to the account, creates the database and every container of
// specs if they do not exist yet (so it is safe to call from every replica at
// every start-up), and returns the backend.
func Open(ctx context.Context, cfg Config, specs []store.ContainerSpec, logger zerolog.Logger) (*Backend, error) {
	return open(ctx, cfg, specs, logger, nil)
}

// open is Open with an optional wrapper around the HTTP transport, which tests
// use to inject faults and observe requests.
func open(ctx context.Context, cfg Config, specs []store.ContainerSpec, logger zerolog.Logger,
	wrap func(policy.Transporter) policy.Transporter) (*Backend, error) {
	cfg = cfg.withDefaults()
	if cfg.Endpoint == "" || cfg.Key == "" || cfg.Database == "" {
		return nil, errors.New("cosmos: endpoint, key and database are required")
	}
	if err := validateSpecs(specs); err != nil {
		return nil, err
	}
	cred, err := azcosmos.NewKeyCredential(cfg.Key)
	if err != nil {
		// The credential's own error never quotes the key, but say only what is needed.
		return nil, errors.New("cosmos: the account key is not valid base64")
	}

	httpClient := newHTTPClient(cfg.InsecureSkipVerify)
	var transport policy.Transporter = httpClient
	if wrap != nil {
		transport = wrap(transport)
	}
	client, err := azcosmos.NewClientWithKey(cfg.Endpoint, cred, &azcosmos.ClientOptions{
		ClientOptions: azcore.ClientOptions{
			Transport: transport,
			// azcore's retry loop is off: this package retries 429/503/timeouts
			// itself (honouring x-ms-retry-after-ms) so the two never multiply.
			// TryTimeout still bounds every attempt.
			Retry: policy.RetryOptions{MaxRetries: -1, TryTimeout: cfg.RequestTimeout},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cosmos: client for %s: %w", cfg.Endpoint, err)
	}
	db, err := client.NewDatabase(cfg.Database)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("cosmos: database %s: %w", cfg.Database, err)
	}

	b := &Backend{
		client:     client,
		db:         db,
		http:       httpClient,
		log:        logger.With().Str("component", "store.cosmos").Str("database", cfg.Database).Logger(),
		database:   cfg.Database,
		maxRetries: cfg.MaxRetries,
		containers: make(map[string]*container, len(specs)),
	}
	if err := b.ensureDatabase(ctx); err != nil {
		b.Close()
		return nil, err
	}
	for _, spec := range specs {
		cc, err := db.NewContainer(spec.Name)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("cosmos: container %s: %w", spec.Name, err)
		}
		if err := b.ensureContainer(ctx, spec); err != nil {
			b.Close()
			return nil, err
		}
		b.containers[spec.Name] = newContainer(b, spec, cc)
	}
	b.log.Debug().Int("containers", len(specs)).Msg("cosmos store ready")
	return b, nil
}

func validateSpecs(specs []store.ContainerSpec) error {
	seen := make(map[string]bool, len(specs))
	for _, s := range specs {
		switch {
		case s.Name == "":
			return errors.New("cosmos: a container spec has no name")
		case seen[s.Name]:
			return fmt.Errorf("cosmos: container %s is declared twice", s.Name)
		case !isIdentifier(s.PartitionKey):
			// Queries address the key as c["<key>"]: only plain names are safe there.
			return fmt.Errorf("cosmos: container %s: partition key %q must be a plain top-level property name", s.Name, s.PartitionKey)
		case s.TTL < 0:
			return fmt.Errorf("cosmos: container %s: negative TTL %v", s.Name, s.TTL)
		}
		seen[s.Name] = true
	}
	return nil
}

// newHTTPClient mirrors azcosmos' default transport (short dial timeout,
// generous connection reuse); only the emulator may skip verification.
func newHTTPClient(insecureSkipVerify bool) *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1000,
		MaxIdleConnsPerHost:   100,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		TLSClientConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: insecureSkipVerify, //nolint:gosec // opt-in, emulator only
		},
	}}
}

func (b *Backend) ensureDatabase(ctx context.Context) error {
	c := call{op: "create database", repeatable: true}
	err := b.run(ctx, c, func(ctx context.Context) error {
		_, err := b.client.CreateDatabase(ctx, azcosmos.DatabaseProperties{ID: b.database}, nil)
		return err
	})
	if err == nil {
		b.log.Info().Msg("cosmos database created")
		return nil
	}
	if errors.Is(err, store.ErrConflict) {
		return nil // it already exists: start-up is idempotent
	}
	return err
}

func (b *Backend) ensureContainer(ctx context.Context, spec store.ContainerSpec) error {
	props := azcosmos.ContainerProperties{
		ID: spec.Name,
		PartitionKeyDefinition: azcosmos.PartitionKeyDefinition{
			Kind:    azcosmos.PartitionKeyKindHash,
			Paths:   []string{"/" + spec.PartitionKey},
			Version: 2,
		},
	}
	if spec.TTL > 0 {
		perItem := int32(-1) // expiry on, each document's own "ttl" decides
		props.DefaultTimeToLive = &perItem
	}
	c := call{op: "create container", container: spec.Name, repeatable: true}
	err := b.run(ctx, c, func(ctx context.Context) error {
		_, err := b.db.CreateContainer(ctx, props, nil)
		return err
	})
	if err == nil {
		b.log.Info().Str("container", spec.Name).Str("partition_key", spec.PartitionKey).
			Bool("ttl", spec.TTL > 0).Msg("cosmos container created")
		return nil
	}
	if !errors.Is(err, store.ErrConflict) {
		return err
	}
	return b.checkExisting(ctx, spec)
}

// checkExisting compares a container that already existed with its spec: a
// different partition key would make every write fail, so it stops start-up;
// a missing TTL setting only means documents never expire, so it is reported.
func (b *Backend) checkExisting(ctx context.Context, spec store.ContainerSpec) error {
	props, err := b.containerProperties(ctx, spec.Name)
	if err != nil {
		return err
	}
	want := "/" + spec.PartitionKey
	if paths := props.PartitionKeyDefinition.Paths; len(paths) != 1 || paths[0] != want {
		return fmt.Errorf("cosmos: container %s exists with partition key %v, want [%s]; it cannot be changed in place",
			spec.Name, paths, want)
	}
	if spec.TTL > 0 && props.DefaultTimeToLive == nil {
		b.log.Warn().Str("container", spec.Name).
			Msg("cosmos container exists without DefaultTimeToLive: documents will not expire until it is set to -1")
	}
	return nil
}

func (b *Backend) containerProperties(ctx context.Context, name string) (*azcosmos.ContainerProperties, error) {
	cc, err := b.db.NewContainer(name)
	if err != nil {
		return nil, fmt.Errorf("cosmos: container %s: %w", name, err)
	}
	var resp azcosmos.ContainerResponse
	err = b.run(ctx, call{op: "read container", container: name, repeatable: true}, func(ctx context.Context) error {
		var err error
		resp, err = cc.Read(ctx, nil)
		return err
	})
	if err != nil {
		return nil, err
	}
	if resp.ContainerProperties == nil {
		return nil, fmt.Errorf("cosmos: container %s: the service returned no properties", name)
	}
	return resp.ContainerProperties, nil
}

// ContainerDefaultTTL returns the container's DefaultTimeToLive as the service
// reports it: nil when expiry is off, -1 when each document's "ttl" decides.
func (b *Backend) ContainerDefaultTTL(ctx context.Context, name string) (*int32, error) {
	props, err := b.containerProperties(ctx, name)
	if err != nil {
		return nil, err
	}
	return props.DefaultTimeToLive, nil
}

// Container returns the named container; the name must be one of the specs
// the backend was opened with.
func (b *Backend) Container(name string) (store.Container, error) {
	c, ok := b.containers[name]
	if !ok {
		return nil, fmt.Errorf("cosmos: container %q was not declared when the store was opened", name)
	}
	return c, nil
}

// Ping reads the database's properties: one cheap request that proves the
// endpoint answers and the key is accepted. It is not retried: a readiness
// probe asks again on its own schedule.
func (b *Backend) Ping(ctx context.Context) error {
	_, err := b.db.Read(ctx, nil)
	if err != nil {
		return b.failure(ctx, call{op: "ping"}, err)
	}
	return nil
}

// Close releases the client and its idle connections.
func (b *Backend) Close() error {
	b.client.Close()
	b.http.CloseIdleConnections()
	return nil
}
