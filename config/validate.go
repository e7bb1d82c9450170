package config

import (
	"encoding/base64"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Problem is one bad or missing value.
type Problem struct {
	Key    string // the configuration key, e.g. "store.cosmos.endpoint"
	Reason string // why it is refused; never contains a secret value
	Source string // where the value came from (file or IM_* variable); empty for defaults
}

func (p Problem) String() string {
	s := p.Key + ": " + p.Reason
	if p.Source != "" {
		s += " (from " + p.Source + ")"
	}
	return s
}

// ValidationError lists every problem found, so an operator fixes them in one go.
// Its message is a single line:
// config: store.cosmos.endpoint: "not a url" is not an absolute http(s) URL
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = oneLine(p.String())
	}
	return "config: " + strings.Join(parts, "; ")
}

func profiles() []string    { return []string{ProfileStandalone, ProfileFleet} }
func logLevels() []string   { return []string{"debug", "info", "warn", "error"} }
func logFormats() []string  { return []string{FormatAuto, FormatJSON, FormatConsole} }
func brokerKinds() []string { return []string{BrokerGoChannel, BrokerAMQP} }
func storeKinds() []string  { return []string{StoreEmbedded, StoreCosmos} }

// Validate checks the configuration the way Load does. It is exported for code that
// builds or adjusts a Config by hand (tests, tools); Load has already called it.
func (c *Config) Validate() error {
	if problems := c.validate(devSecrets()); len(problems) > 0 {
		return &ValidationError{Problems: problems}
	}
	return nil
}

// EncryptionKeyBytes decodes secrets.encryptionKey (32 bytes once validated).
func (s SecretsConfig) EncryptionKeyBytes() ([]byte, error) {
	key, err := base64.StdEncoding.DecodeString(s.EncryptionKey.Reveal())
	if err != nil {
		return nil, fmt.Errorf("config: secrets.encryptionKey: not valid base64: %w", err)
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("config: secrets.encryptionKey: decodes to %d bytes, want 32", len(key))
	}
	return key, nil
}

// validate checks each value in key order. Values are checked whenever they are set,
// even if this profile does not use them; required-ness depends on the kinds chosen
// and on the profile.
func (c *Config) validate(dev devCredentials) []Problem {
	var v validator
	fleet := c.Profile == ProfileFleet

	v.oneOf("profile", c.Profile, profiles())
	v.oneOf("log.level", c.Log.Level, logLevels())
	v.oneOf("log.format", c.Log.Format, logFormats())

	v.addr("http.api.addr", c.HTTP.API.Addr)
	v.positiveInt("http.api.maxBodyBytes", c.HTTP.API.MaxBodyBytes)
	v.positiveDuration("http.api.readTimeout", c.HTTP.API.ReadTimeout)
	v.positiveDuration("http.api.writeTimeout", c.HTTP.API.WriteTimeout)
	v.positiveDuration("http.api.shutdownTimeout", c.HTTP.API.ShutdownTimeout)
	if c.HTTP.API.ShutdownTimeout > c.Shutdown.Timeout && c.Shutdown.Timeout > 0 {
		v.fail("http.api.shutdownTimeout", "%s is longer than shutdown.timeout (%s)", c.HTTP.API.ShutdownTimeout, c.Shutdown.Timeout)
	}
	v.addr("http.admin.addr", c.HTTP.Admin.Addr)
	if a := c.HTTP.Admin.Addr; a == c.HTTP.API.Addr && !strings.HasSuffix(a, ":0") {
		v.fail("http.admin.addr", "%q is also http.api.addr; they need different ports", a)
	}

	v.oneOf("broker.kind", c.Broker.Kind, brokerKinds())
	v.intRange("broker.gochannel.maxBacklog", c.Broker.GoChannel.MaxBacklog, 1, 10_000_000)
	v.positiveDuration("broker.gochannel.publishTimeout", c.Broker.GoChannel.PublishTimeout)
	v.amqpURL("broker.amqp.url", c.Broker.AMQP.URL, c.Broker.Kind == BrokerAMQP)
	v.exchangePrefix("broker.amqp.exchangePrefix", c.Broker.AMQP.ExchangePrefix)
	v.intRange("broker.amqp.prefetch", c.Broker.AMQP.Prefetch, 1, 65535) // AMQP prefetch-count is 16 bits
	v.intRange("broker.amqp.consumersPerQueue", c.Broker.AMQP.ConsumersPerQueue, 1, 1024)
	v.intRange("broker.amqp.channelPoolSize", c.Broker.AMQP.ChannelPoolSize, 1, 1024)
	v.positiveDuration("broker.handlerTimeout", c.Broker.HandlerTimeout)
	v.positiveDuration("broker.retry.initialInterval", c.Broker.Retry.InitialInterval)
	v.positiveDuration("broker.retry.maxInterval", c.Broker.Retry.MaxInterval)
	if c.Broker.Retry.MaxInterval > 0 && c.Broker.Retry.MaxInterval < c.Broker.Retry.InitialInterval {
		v.fail("broker.retry.maxInterval", "%s is shorter than broker.retry.initialInterval (%s)", c.Broker.Retry.MaxInterval, c.Broker.Retry.InitialInterval)
	}
	v.positiveDuration("broker.retry.maxElapsed", c.Broker.Retry.MaxElapsed)

	v.oneOf("store.kind", c.Store.Kind, storeKinds())
	if c.Store.Kind == StoreEmbedded {
		v.required("store.embedded.path", c.Store.Embedded.Path)
	}
	cosmos := c.Store.Kind == StoreCosmos
	v.httpURL("store.cosmos.endpoint", c.Store.Cosmos.Endpoint, cosmos)
	v.cosmosKey("store.cosmos.key", c.Store.Cosmos.Key, cosmos)
	v.required("store.cosmos.database", c.Store.Cosmos.Database)
	v.intRange("store.cosmos.maxRetries", c.Store.Cosmos.MaxRetries, 0, 100)
	v.positiveDuration("store.cosmos.requestTimeout", c.Store.Cosmos.RequestTimeout)
	v.minDuration("store.executionsTTL", c.Store.ExecutionsTTL, time.Second) // Cosmos TTL is in whole seconds

	v.httpURL("services.secretManagement.url", c.Services.SecretManagement.URL, fleet)
	v.httpURL("services.shardManager.url", c.Services.ShardManager.URL, fleet)
	v.httpURL("services.userManagement.url", c.Services.UserManagement.URL, fleet)
	v.httpURL("services.userManagement.jwksUrl", c.Services.UserManagement.JWKSURL, fleet)
	v.httpURL("services.aiService.url", c.Services.AIService.URL, false)
	v.httpURL("services.loggingService.url", c.Services.LoggingService.URL, fleet)

	if fleet {
		v.required("auth.issuer", c.Auth.Issuer)
		v.required("auth.audience", c.Auth.Audience)
	}
	v.positiveDuration("auth.jwksRefresh", c.Auth.JWKSRefresh)
	v.staticKeys("auth.staticKeys", c.Auth.StaticKeys, fleet, dev.apiKeys)

	// The embedded secret store needs the key; with Secret Management it is unused.
	v.encryptionKey("secrets.encryptionKey", c.Secrets.EncryptionKey, c.Services.SecretManagement.URL == "")
	if fleet && c.Secrets.EncryptionKey.IsSet() && c.Secrets.EncryptionKey.Reveal() == dev.encryptionKey {
		v.fail("secrets.encryptionKey", "is the standalone development key; generate one with: openssl rand -base64 32")
	}

	for i, h := range c.Webhooks.AllowedHTTPHosts {
		if h == "" || strings.ContainsAny(h, "/:@ ") {
			v.fail(fmt.Sprintf("webhooks.allowedHttpHosts[%d]", i), "%q is not a bare host name", h)
		}
	}
	v.positiveDuration("webhooks.secretRotationOverlap", c.Webhooks.SecretRotationOverlap)
	dc := c.Webhooks.Dispatcher
	v.intRange("webhooks.dispatcher.consumers", dc.Consumers, 1, 4096)
	v.intRange("webhooks.dispatcher.fanOutConsumers", dc.FanOutConsumers, 1, 4096)
	v.intRange("webhooks.dispatcher.inlineAttempts", dc.InlineAttempts, 0, 4096)
	if c.Broker.HandlerTimeout <= dc.Timeout {
		v.fail("broker.handlerTimeout", "%s must be longer than webhooks.dispatcher.timeout (%s): an attempt also records and publishes", c.Broker.HandlerTimeout, dc.Timeout)
	}
	v.positiveDuration("webhooks.dispatcher.timeout", dc.Timeout)
	v.intRange("webhooks.dispatcher.responseBodyCap", dc.ResponseBodyCap, 0, 1<<20)
	if len(dc.Schedule) == 0 {
		v.fail("webhooks.dispatcher.schedule", "needs at least one attempt (the first is usually 0s)")
	}
	for i, d := range dc.Schedule {
		if d < 0 {
			v.fail(fmt.Sprintf("webhooks.dispatcher.schedule[%d]", i), "%s is negative", d)
		}
	}
	v.positiveDuration("webhooks.dispatcher.retryAfterCap", dc.RetryAfterCap)
	v.intRange("webhooks.dispatcher.breakerFailures", dc.BreakerFailures, 1, 1000)
	v.positiveDuration("webhooks.dispatcher.breakerCooldown", dc.BreakerCooldown)
	v.positiveDuration("webhooks.dispatcher.disableAfter", dc.DisableAfter)
	v.intRange("webhooks.dispatcher.maxInFlightPerEndpoint", dc.MaxInFlightPerEndpoint, 1, 4096)
	v.positiveDuration("webhooks.dispatcher.cacheTTL", dc.CacheTTL)
	v.positiveDuration("webhooks.dispatcher.deferDelay", dc.DeferDelay)
	v.positiveDuration("webhooks.dispatcher.inlineHandoff", dc.InlineHandoff)
	if dc.InFlightWait >= c.Broker.HandlerTimeout {
		v.fail("webhooks.dispatcher.inFlightWait", "%s must be shorter than broker.handlerTimeout (%s): a delivery waits for a place within its handler's deadline", dc.InFlightWait, c.Broker.HandlerTimeout)
	}
	if dc.InlineHandoff >= c.Broker.HandlerTimeout {
		v.fail("webhooks.dispatcher.inlineHandoff", "%s must be shorter than broker.handlerTimeout (%s): the fan-out hands slow attempts off within its handler's deadline", dc.InlineHandoff, c.Broker.HandlerTimeout)
	}
	for i, h := range dc.AllowHosts {
		if h == "" || strings.ContainsAny(h, "@ ") {
			v.fail(fmt.Sprintf("webhooks.dispatcher.allowHosts[%d]", i), "%q is not a host name, IP or CIDR", h)
		}
	}

	v.positiveDuration("shutdown.timeout", c.Shutdown.Timeout)
	return v.problems
}

type validator struct {
	problems []Problem
}

func (v *validator) fail(key, format string, args ...any) {
	v.problems = append(v.problems, Problem{Key: key, Reason: fmt.Sprintf(format, args...)})
}

func (v *validator) required(key, val string) {
	if val == "" {
		v.fail(key, "is required")
	}
}

func (v *validator) oneOf(key, val string, allowed []string) {
	if !slices.Contains(allowed, val) {
		v.fail(key, "%q must be %s", val, oneOf(allowed))
	}
}

func (v *validator) addr(key, val string) {
	_, port, err := net.SplitHostPort(val)
	if err != nil {
		v.fail(key, "%q is not a host:port address like \":8080\"", val)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.fail(key, "%q has no valid port (0-65535)", val)
	}
}

func (v *validator) positiveInt(key string, n int64) {
	if n <= 0 {
		v.fail(key, "%d must be greater than 0", n)
	}
}

func (v *validator) intRange(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.fail(key, "%d must be between %d and %d", n, lo, hi)
	}
}

func (v *validator) positiveDuration(key string, d time.Duration) {
	v.minDuration(key, d, time.Nanosecond)
}

func (v *validator) minDuration(key string, d, least time.Duration) {
	switch {
	case d < 0:
		v.fail(key, "%s must not be negative", d)
	case d < least && least == time.Nanosecond:
		v.fail(key, "%s must be greater than 0", d)
	case d < least:
		v.fail(key, "%s must be at least %s", d, least)
	}
}

// httpURL checks an absolute http(s) URL; empty is fine unless required.
func (v *validator) httpURL(key, val string, required bool) {
	if val == "" {
		if required {
			v.fail(key, "is required (an absolute http(s) URL)")
		}
		return
	}
	u, err := url.Parse(val)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.fail(key, "%q is not an absolute http(s) URL", val)
	}
}

// amqpURL is httpURL for the broker URL, which carries a password: the message never
// shows the value, since a mangled URL may be mostly password.
func (v *validator) amqpURL(key string, val Secret, required bool) {
	if !val.IsSet() {
		if required {
			v.fail(key, "is required when broker.kind is amqp")
		}
		return
	}
	u, err := url.Parse(val.Reveal())
	switch {
	case err != nil:
		v.fail(key, "is not a URL")
	case u.Scheme != "amqp" && u.Scheme != "amqps":
		v.fail(key, "has scheme %q, want amqp:// or amqps://", u.Scheme)
	case u.Host == "":
		v.fail(key, "has no host")
	}
}

// exchangePrefix allows what RabbitMQ allows in exchange and queue names.
func (v *validator) exchangePrefix(key, val string) {
	if val == "" {
		v.fail(key, "is required")
		return
	}
	if len(val) > 200 {
		v.fail(key, "is %d bytes; at most 200 leave room for the topic in a 255-byte name", len(val))
		return
	}
	for _, r := range val {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r)
		if !ok {
			v.fail(key, "%q may only contain letters, digits and - _ . :", val)
			return
		}
	}
}

func (v *validator) cosmosKey(key string, val Secret, required bool) {
	if !val.IsSet() {
		if required {
			v.fail(key, "is required when store.kind is cosmos")
		}
		return
	}
	if _, err := base64.StdEncoding.DecodeString(val.Reveal()); err != nil {
		v.fail(key, "is not valid base64 (copy the account's primary key)")
	}
}

func (v *validator) encryptionKey(key string, val Secret, required bool) {
	if !val.IsSet() {
		if required {
			v.fail(key, "is required when services.secretManagement.url is empty (the embedded secret store uses it); generate one with: openssl rand -base64 32")
		}
		return
	}
	raw, err := base64.StdEncoding.DecodeString(val.Reveal())
	switch {
	case err != nil:
		v.fail(key, "is not valid base64; generate one with: openssl rand -base64 32")
	case len(raw) != 32:
		v.fail(key, "decodes to %d bytes, want 32; generate one with: openssl rand -base64 32", len(raw))
	}
}

// minStaticKeyLen keeps guessable API keys out.
const minStaticKeyLen = 16

func (v *validator) staticKeys(key string, keys []StaticKey, fleet bool, devKeys []string) {
	seen := make(map[string]bool, len(keys))
	for i, k := range keys {
		at := fmt.Sprintf("%s[%d]", key, i)
		switch {
		case len(k.Key.Reveal()) < minStaticKeyLen:
			v.fail(at+".key", "must be at least %d characters", minStaticKeyLen)
		case seen[k.Key.Reveal()]:
			v.fail(at+".key", "repeats an earlier key")
		case fleet && slices.Contains(devKeys, k.Key.Reveal()):
			v.fail(at+".key", "is the standalone development key; the fleet profile refuses it")
		}
		seen[k.Key.Reveal()] = true
		if k.TenantID == "" {
			v.fail(at+".tenantId", "is required")
		}
		if len(k.Roles) == 0 {
			v.fail(at+".roles", "must list at least one role")
		}
		for j, r := range k.Roles {
			if r == "" {
				v.fail(fmt.Sprintf("%s.roles[%d]", at, j), "is empty")
			}
		}
	}
}

func oneOf(vals []string) string {
	quoted := make([]string, len(vals))
	for i, s := range vals {
		quoted[i] = strconv.Quote(s)
	}
	switch len(quoted) {
	case 1:
		return quoted[0]
	case 2:
		return quoted[0] + " or " + quoted[1]
	}
	return "one of " + strings.Join(quoted[:len(quoted)-1], ", ") + " or " + quoted[len(quoted)-1]
}

// oneLine keeps an error on one log line whatever a parser put in it.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
