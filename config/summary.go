package config

import (
	"net/url"
	"time"
)

// LogSummary returns the effective configuration for a start-up log line, keyed by
// configuration key: secrets show as "[redacted]" (or "[unset]"), URLs lose any
// password. With zerolog: logger.Info().Fields(cfg.LogSummary()).Msg("configuration loaded").
func (c *Config) LogSummary() map[string]any {
	keys := make([]map[string]any, len(c.Auth.StaticKeys))
	for i, k := range c.Auth.StaticKeys {
		keys[i] = map[string]any{"key": secretState(k.Key), "tenantId": k.TenantID, "roles": k.Roles}
	}
	m := map[string]any{
		"service":                                    c.Service,
		"profile":                                    c.Profile,
		"log.level":                                  c.Log.Level,
		"log.format":                                 c.Log.Format,
		"http.api.addr":                              c.HTTP.API.Addr,
		"http.api.maxBodyBytes":                      c.HTTP.API.MaxBodyBytes,
		"http.api.readTimeout":                       dur(c.HTTP.API.ReadTimeout),
		"http.api.writeTimeout":                      dur(c.HTTP.API.WriteTimeout),
		"http.api.shutdownTimeout":                   dur(c.HTTP.API.ShutdownTimeout),
		"http.admin.addr":                            c.HTTP.Admin.Addr,
		"broker.kind":                                c.Broker.Kind,
		"broker.gochannel.maxBacklog":                c.Broker.GoChannel.MaxBacklog,
		"broker.gochannel.publishTimeout":            dur(c.Broker.GoChannel.PublishTimeout),
		"broker.amqp.url":                            redactURL(c.Broker.AMQP.URL.Reveal()),
		"broker.amqp.exchangePrefix":                 c.Broker.AMQP.ExchangePrefix,
		"broker.amqp.prefetch":                       c.Broker.AMQP.Prefetch,
		"broker.amqp.consumersPerQueue":              c.Broker.AMQP.ConsumersPerQueue,
		"broker.amqp.channelPoolSize":                c.Broker.AMQP.ChannelPoolSize,
		"broker.amqp.quorumQueues":                   c.Broker.AMQP.QuorumQueues,
		"broker.handlerTimeout":                      dur(c.Broker.HandlerTimeout),
		"broker.retry.initialInterval":               dur(c.Broker.Retry.InitialInterval),
		"broker.retry.maxInterval":                   dur(c.Broker.Retry.MaxInterval),
		"broker.retry.maxElapsed":                    dur(c.Broker.Retry.MaxElapsed),
		"store.kind":                                 c.Store.Kind,
		"store.embedded.path":                        c.Store.Embedded.Path,
		"store.cosmos.endpoint":                      redactURL(c.Store.Cosmos.Endpoint),
		"store.cosmos.key":                           secretState(c.Store.Cosmos.Key),
		"store.cosmos.database":                      c.Store.Cosmos.Database,
		"store.cosmos.insecureSkipVerify":            c.Store.Cosmos.InsecureSkipVerify,
		"store.cosmos.maxRetries":                    c.Store.Cosmos.MaxRetries,
		"store.cosmos.requestTimeout":                dur(c.Store.Cosmos.RequestTimeout),
		"store.executionsTTL":                        dur(c.Store.ExecutionsTTL),
		"services.secretManagement.url":              redactURL(c.Services.SecretManagement.URL),
		"services.shardManager.url":                  redactURL(c.Services.ShardManager.URL),
		"services.userManagement.url":                redactURL(c.Services.UserManagement.URL),
		"services.userManagement.jwksUrl":            redactURL(c.Services.UserManagement.JWKSURL),
		"services.aiService.url":                     redactURL(c.Services.AIService.URL),
		"services.loggingService.url":                redactURL(c.Services.LoggingService.URL),
		"auth.issuer":                                c.Auth.Issuer,
		"auth.audience":                              c.Auth.Audience,
		"auth.jwksRefresh":                           dur(c.Auth.JWKSRefresh),
		"auth.staticKeys":                            keys,
		"secrets.encryptionKey":                      secretState(c.Secrets.EncryptionKey),
		"webhooks.requireHttps":                      c.Webhooks.RequireHTTPS,
		"webhooks.allowedHttpHosts":                  c.Webhooks.AllowedHTTPHosts,
		"webhooks.secretRotationOverlap":             dur(c.Webhooks.SecretRotationOverlap),
		"webhooks.dispatcher.consumers":              c.Webhooks.Dispatcher.Consumers,
		"webhooks.dispatcher.fanOutConsumers":        c.Webhooks.Dispatcher.FanOutConsumers,
		"webhooks.dispatcher.inlineAttempts":         c.Webhooks.Dispatcher.InlineAttempts,
		"webhooks.dispatcher.inlineHandoff":          dur(c.Webhooks.Dispatcher.InlineHandoff),
		"webhooks.dispatcher.inFlightWait":           dur(c.Webhooks.Dispatcher.InFlightWait),
		"webhooks.dispatcher.timeout":                dur(c.Webhooks.Dispatcher.Timeout),
		"webhooks.dispatcher.responseBodyCap":        c.Webhooks.Dispatcher.ResponseBodyCap,
		"webhooks.dispatcher.schedule":               durs(c.Webhooks.Dispatcher.Schedule),
		"webhooks.dispatcher.retryAfterCap":          dur(c.Webhooks.Dispatcher.RetryAfterCap),
		"webhooks.dispatcher.breakerFailures":        c.Webhooks.Dispatcher.BreakerFailures,
		"webhooks.dispatcher.breakerCooldown":        dur(c.Webhooks.Dispatcher.BreakerCooldown),
		"webhooks.dispatcher.disableAfter":           dur(c.Webhooks.Dispatcher.DisableAfter),
		"webhooks.dispatcher.maxInFlightPerEndpoint": c.Webhooks.Dispatcher.MaxInFlightPerEndpoint,
		"webhooks.dispatcher.cacheTTL":               dur(c.Webhooks.Dispatcher.CacheTTL),
		"webhooks.dispatcher.deferDelay":             dur(c.Webhooks.Dispatcher.DeferDelay),
		"webhooks.dispatcher.allowHosts":             c.Webhooks.Dispatcher.AllowHosts,
		"shutdown.timeout":                           dur(c.Shutdown.Timeout),
	}
	if len(c.ignoredEnv) > 0 {
		m["ignoredEnv"] = c.ignoredEnv
	}
	return m
}

func dur(d time.Duration) string { return d.String() }

func durs(ds []time.Duration) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.String()
	}
	return out
}

func secretState(s Secret) string {
	if s.IsSet() {
		return redacted
	}
	return "[unset]"
}

// redactURL masks a password in a URL's user info; a URL that does not parse is
// replaced whole, since it cannot be known which part is sensitive.
func redactURL(s string) string {
	if s == "" {
		return ""
	}
	u, err := url.Parse(s)
	if err != nil {
		return redacted
	}
	return u.Redacted()
}
