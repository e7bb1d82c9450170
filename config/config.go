// Package config loads the Integration Manager's configuration: embedded defaults,
// a profile overlay, an operator file and IM_* environment variables, decoded into a
// typed struct and validated once at start-up so a bad value stops the process with
// a message naming the key.
package config

import "time"

// Profiles.
const (
	ProfileStandalone = "standalone"
	ProfileFleet      = "fleet"
)

// Broker kinds (broker.kind).
const (
	BrokerGoChannel = "gochannel"
	BrokerAMQP      = "amqp"
)

// Store kinds (store.kind).
const (
	StoreEmbedded = "embedded"
	StoreCosmos   = "cosmos"
)

// Log formats (log.format). FormatAuto never survives Load: it is resolved to
// FormatConsole in standalone and FormatJSON in fleet.
const (
	FormatAuto    = "auto"
	FormatJSON    = "json"
	FormatConsole = "console"
)

// Config is the whole, validated configuration of one binary.
// Field comments name the key each field comes from; config/default.yaml documents them.
type Config struct {
	Service  string // LoadOptions.Service: "api", "standalone", "webhook-dispatcher", ...
	Profile  string // profile: ProfileStandalone or ProfileFleet
	Log      LogConfig
	HTTP     HTTPConfig
	Broker   BrokerConfig
	Store    StoreConfig
	Services ServicesConfig
	Auth     AuthConfig
	Secrets  SecretsConfig
	Webhooks WebhooksConfig
	Shutdown ShutdownConfig

	// ignoredEnv lists IM_* variables that match no key (names only, never values),
	// reported in the start-up summary so a misspelt override does not go unnoticed.
	ignoredEnv []string
}

// LogConfig is log.*.
type LogConfig struct {
	Level  string // log.level: debug, info, warn, error
	Format string // log.format resolved: FormatJSON or FormatConsole
}

// HTTPConfig is http.*.
type HTTPConfig struct {
	API   APIServerConfig
	Admin AdminServerConfig
}

// APIServerConfig is http.api.*.
type APIServerConfig struct {
	Addr            string        // http.api.addr
	MaxBodyBytes    int64         // http.api.maxBodyBytes
	ReadTimeout     time.Duration // http.api.readTimeout
	WriteTimeout    time.Duration // http.api.writeTimeout
	ShutdownTimeout time.Duration // http.api.shutdownTimeout
}

// AdminServerConfig is http.admin.*.
type AdminServerConfig struct {
	Addr string // http.admin.addr
}

// BrokerConfig is broker.*.
type BrokerConfig struct {
	Kind           string // broker.kind: BrokerGoChannel or BrokerAMQP
	GoChannel      GoChannelConfig
	AMQP           AMQPConfig
	HandlerTimeout time.Duration // broker.handlerTimeout
	Retry          RetryConfig
}

// GoChannelConfig is broker.gochannel.*.
type GoChannelConfig struct {
	MaxBacklog     int           // broker.gochannel.maxBacklog
	PublishTimeout time.Duration // broker.gochannel.publishTimeout
}

// AMQPConfig is broker.amqp.*.
type AMQPConfig struct {
	URL               Secret // broker.amqp.url; a Secret because it carries the password
	ExchangePrefix    string // broker.amqp.exchangePrefix
	Prefetch          int    // broker.amqp.prefetch
	ConsumersPerQueue int    // broker.amqp.consumersPerQueue
	ChannelPoolSize   int    // broker.amqp.channelPoolSize
	QuorumQueues      bool   // broker.amqp.quorumQueues
}

// RetryConfig is broker.retry.*.
type RetryConfig struct {
	InitialInterval time.Duration // broker.retry.initialInterval
	MaxInterval     time.Duration // broker.retry.maxInterval
	MaxElapsed      time.Duration // broker.retry.maxElapsed
}

// StoreConfig is store.*.
type StoreConfig struct {
	Kind          string // store.kind: StoreEmbedded or StoreCosmos
	Embedded      EmbeddedStoreConfig
	Cosmos        CosmosConfig
	ExecutionsTTL time.Duration // store.executionsTTL
}

// EmbeddedStoreConfig is store.embedded.*.
type EmbeddedStoreConfig struct {
	Path string // store.embedded.path
}

// CosmosConfig is store.cosmos.*.
type CosmosConfig struct {
	Endpoint           string        // store.cosmos.endpoint
	Key                Secret        // store.cosmos.key
	Database           string        // store.cosmos.database
	InsecureSkipVerify bool          // store.cosmos.insecureSkipVerify (emulator only)
	MaxRetries         int           // store.cosmos.maxRetries
	RequestTimeout     time.Duration // store.cosmos.requestTimeout
}

// ServicesConfig is services.*. An empty URL means the embedded stand-in.
type ServicesConfig struct {
	SecretManagement ServiceEndpoint      // services.secretManagement.url
	ShardManager     ServiceEndpoint      // services.shardManager.url
	UserManagement   UserManagementConfig // services.userManagement.*
	AIService        ServiceEndpoint      // services.aiService.url
	LoggingService   ServiceEndpoint      // services.loggingService.url
}

// ServiceEndpoint is services.<name>.url.
type ServiceEndpoint struct {
	URL string
}

// UserManagementConfig is services.userManagement.*.
type UserManagementConfig struct {
	URL     string // services.userManagement.url
	JWKSURL string // services.userManagement.jwksUrl
}

// AuthConfig is auth.*.
type AuthConfig struct {
	Issuer      string        // auth.issuer
	Audience    string        // auth.audience
	JWKSRefresh time.Duration // auth.jwksRefresh
	StaticKeys  []StaticKey   // auth.staticKeys
}

// StaticKey is one entry of auth.staticKeys: an API key bound to a tenant and roles.
type StaticKey struct {
	Key      Secret
	TenantID string
	Roles    []string
}

// SecretsConfig is secrets.*.
type SecretsConfig struct {
	EncryptionKey Secret // secrets.encryptionKey: base64 of 32 bytes
}

// ShutdownConfig is shutdown.*.
type ShutdownConfig struct {
	Timeout time.Duration // shutdown.timeout
}

// WebhooksConfig is webhooks.*: what tenants may register, how secrets rotate,
// and how the dispatcher delivers.
type WebhooksConfig struct {
	RequireHTTPS          bool          // webhooks.requireHttps
	AllowedHTTPHosts      []string      // webhooks.allowedHttpHosts
	SecretRotationOverlap time.Duration // webhooks.secretRotationOverlap
	Dispatcher            DispatcherConfig
}

// DispatcherConfig is webhooks.dispatcher.*.
type DispatcherConfig struct {
	Consumers              int             // webhooks.dispatcher.consumers
	FanOutConsumers        int             // webhooks.dispatcher.fanOutConsumers
	InlineAttempts         int             // webhooks.dispatcher.inlineAttempts
	InlineHandoff          time.Duration   // webhooks.dispatcher.inlineHandoff
	InFlightWait           time.Duration   // webhooks.dispatcher.inFlightWait
	Timeout                time.Duration   // webhooks.dispatcher.timeout
	ResponseBodyCap        int             // webhooks.dispatcher.responseBodyCap
	Schedule               []time.Duration // webhooks.dispatcher.schedule
	RetryAfterCap          time.Duration   // webhooks.dispatcher.retryAfterCap
	BreakerFailures        int             // webhooks.dispatcher.breakerFailures
	BreakerCooldown        time.Duration   // webhooks.dispatcher.breakerCooldown
	DisableAfter           time.Duration   // webhooks.dispatcher.disableAfter
	MaxInFlightPerEndpoint int             // webhooks.dispatcher.maxInFlightPerEndpoint
	CacheTTL               time.Duration   // webhooks.dispatcher.cacheTTL
	DeferDelay             time.Duration   // webhooks.dispatcher.deferDelay
	AllowHosts             []string        // webhooks.dispatcher.allowHosts
}
