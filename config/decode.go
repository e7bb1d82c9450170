package config

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// decoder reads typed values from the merged settings. It is written out key by key,
// instead of using viper's Unmarshal, so that a bad value yields a one-line error
// naming the key (and never echoing a secret), and so "30" is not silently taken as
// 30ns or "abc" as 0.
type decoder struct {
	v        *viper.Viper
	used     map[string]bool // lower-cased keys read, so a test can prove none is forgotten
	problems []Problem
}

func newDecoder(v *viper.Viper) *decoder {
	return &decoder{v: v, used: make(map[string]bool)}
}

func (d *decoder) decode() *Config {
	return &Config{
		Profile: d.str("profile"),
		Log: LogConfig{
			Level:  d.str("log.level"),
			Format: d.str("log.format"),
		},
		HTTP: HTTPConfig{
			API: APIServerConfig{
				Addr:            d.str("http.api.addr"),
				MaxBodyBytes:    int64(d.integer("http.api.maxBodyBytes")),
				ReadTimeout:     d.duration("http.api.readTimeout"),
				WriteTimeout:    d.duration("http.api.writeTimeout"),
				ShutdownTimeout: d.duration("http.api.shutdownTimeout"),
			},
			Admin: AdminServerConfig{Addr: d.str("http.admin.addr")},
		},
		Broker: BrokerConfig{
			Kind: d.str("broker.kind"),
			GoChannel: GoChannelConfig{
				MaxBacklog:     d.integer("broker.gochannel.maxBacklog"),
				PublishTimeout: d.duration("broker.gochannel.publishTimeout"),
			},
			AMQP: AMQPConfig{
				URL:               d.secret("broker.amqp.url"),
				ExchangePrefix:    d.str("broker.amqp.exchangePrefix"),
				Prefetch:          d.integer("broker.amqp.prefetch"),
				ConsumersPerQueue: d.integer("broker.amqp.consumersPerQueue"),
				ChannelPoolSize:   d.integer("broker.amqp.channelPoolSize"),
				QuorumQueues:      d.boolean("broker.amqp.quorumQueues"),
			},
			HandlerTimeout: d.duration("broker.handlerTimeout"),
			Retry: RetryConfig{
				InitialInterval: d.duration("broker.retry.initialInterval"),
				MaxInterval:     d.duration("broker.retry.maxInterval"),
				MaxElapsed:      d.duration("broker.retry.maxElapsed"),
			},
		},
		Store: StoreConfig{
			Kind:     d.str("store.kind"),
			Embedded: EmbeddedStoreConfig{Path: d.str("store.embedded.path")},
			Cosmos: CosmosConfig{
				Endpoint:           d.str("store.cosmos.endpoint"),
				Key:                d.secret("store.cosmos.key"),
				Database:           d.str("store.cosmos.database"),
				InsecureSkipVerify: d.boolean("store.cosmos.insecureSkipVerify"),
				MaxRetries:         d.integer("store.cosmos.maxRetries"),
				RequestTimeout:     d.duration("store.cosmos.requestTimeout"),
			},
			ExecutionsTTL: d.duration("store.executionsTTL"),
		},
		Services: ServicesConfig{
			SecretManagement: ServiceEndpoint{URL: d.str("services.secretManagement.url")},
			ShardManager:     ServiceEndpoint{URL: d.str("services.shardManager.url")},
			UserManagement: UserManagementConfig{
				URL:     d.str("services.userManagement.url"),
				JWKSURL: d.str("services.userManagement.jwksUrl"),
			},
			AIService:      ServiceEndpoint{URL: d.str("services.aiService.url")},
			LoggingService: ServiceEndpoint{URL: d.str("services.loggingService.url")},
		},
		Auth: AuthConfig{
			Issuer:      d.str("auth.issuer"),
			Audience:    d.str("auth.audience"),
			JWKSRefresh: d.duration("auth.jwksRefresh"),
			StaticKeys:  d.staticKeys("auth.staticKeys"),
		},
		Secrets: SecretsConfig{EncryptionKey: d.secret("secrets.encryptionKey")},
		Webhooks: WebhooksConfig{
			RequireHTTPS:          d.boolean("webhooks.requireHttps"),
			AllowedHTTPHosts:      d.strings("webhooks.allowedHttpHosts"),
			SecretRotationOverlap: d.duration("webhooks.secretRotationOverlap"),
			Dispatcher: DispatcherConfig{
				Consumers:              d.integer("webhooks.dispatcher.consumers"),
				FanOutConsumers:        d.integer("webhooks.dispatcher.fanOutConsumers"),
				InlineAttempts:         d.integer("webhooks.dispatcher.inlineAttempts"),
				InlineHandoff:          d.duration("webhooks.dispatcher.inlineHandoff"),
				InFlightWait:           d.duration("webhooks.dispatcher.inFlightWait"),
				Timeout:                d.duration("webhooks.dispatcher.timeout"),
				ResponseBodyCap:        d.integer("webhooks.dispatcher.responseBodyCap"),
				Schedule:               d.durations("webhooks.dispatcher.schedule"),
				RetryAfterCap:          d.duration("webhooks.dispatcher.retryAfterCap"),
				BreakerFailures:        d.integer("webhooks.dispatcher.breakerFailures"),
				BreakerCooldown:        d.duration("webhooks.dispatcher.breakerCooldown"),
				DisableAfter:           d.duration("webhooks.dispatcher.disableAfter"),
				MaxInFlightPerEndpoint: d.integer("webhooks.dispatcher.maxInFlightPerEndpoint"),
				CacheTTL:               d.duration("webhooks.dispatcher.cacheTTL"),
				DeferDelay:             d.duration("webhooks.dispatcher.deferDelay"),
				AllowHosts:             d.strings("webhooks.dispatcher.allowHosts"),
			},
		},
		Shutdown: ShutdownConfig{Timeout: d.duration("shutdown.timeout")},
	}
}

func (d *decoder) fail(key, format string, args ...any) {
	d.problems = append(d.problems, Problem{Key: key, Reason: fmt.Sprintf(format, args...)})
}

// value returns the raw value of key, or false (with a problem recorded) if it has none.
func (d *decoder) value(key string) (any, bool) {
	d.used[strings.ToLower(key)] = true
	if !d.v.IsSet(key) {
		d.fail(key, "has no value")
		return nil, false
	}
	return d.v.Get(key), true
}

func (d *decoder) str(key string) string {
	raw, ok := d.value(key)
	if !ok {
		return ""
	}
	s, ok := scalarString(raw)
	if !ok {
		d.fail(key, "must be a single value, not %s", shape(raw))
	}
	return s
}

// secret is str without the value in any error message.
func (d *decoder) secret(key string) Secret {
	raw, ok := d.value(key)
	if !ok {
		return ""
	}
	s, ok := scalarString(raw)
	if !ok {
		d.fail(key, "must be a single value, not %s", shape(raw))
	}
	return Secret(s)
}

func (d *decoder) integer(key string) int {
	raw, ok := d.value(key)
	if !ok {
		return 0
	}
	switch n := raw.(type) {
	case int:
		return n
	case int64:
		if n >= math.MinInt && n <= math.MaxInt {
			return int(n)
		}
	case uint64:
		if n <= math.MaxInt {
			return int(n)
		}
	case float64:
		if n == math.Trunc(n) && math.Abs(n) < 1<<53 {
			return int(n)
		}
	case string:
		if i, err := strconv.Atoi(strings.TrimSpace(n)); err == nil {
			return i
		}
	}
	d.fail(key, "%s is not an integer", describe(raw))
	return 0
}

func (d *decoder) boolean(key string) bool {
	raw, ok := d.value(key)
	if !ok {
		return false
	}
	switch b := raw.(type) {
	case bool:
		return b
	case string:
		if v, err := strconv.ParseBool(strings.TrimSpace(b)); err == nil {
			return v
		}
	}
	d.fail(key, "%s is not a boolean (true or false)", describe(raw))
	return false
}

func (d *decoder) duration(key string) time.Duration {
	raw, ok := d.value(key)
	if !ok {
		return 0
	}
	switch v := raw.(type) {
	case time.Duration:
		return v
	case string:
		if dur, err := time.ParseDuration(strings.TrimSpace(v)); err == nil {
			return dur
		}
	}
	// A bare number is refused rather than read as nanoseconds.
	d.fail(key, "%s is not a duration (write it with a unit: 200ms, 30s, 15m, 720h)", describe(raw))
	return 0
}

// staticKeys reads a list of {key, tenantId, roles}. From a file it is a YAML list;
// from an environment variable, a string holding a YAML or JSON list.
func (d *decoder) staticKeys(key string) []StaticKey {
	raw, ok := d.value(key)
	if !ok {
		return nil
	}
	if s, isString := raw.(string); isString {
		if strings.TrimSpace(s) == "" {
			return nil
		}
		var parsed any
		if err := yaml.Unmarshal([]byte(s), &parsed); err != nil {
			d.fail(key, "is not a YAML or JSON list of {key, tenantId, roles}")
			return nil
		}
		raw = parsed
	}
	items, ok := raw.([]any)
	if !ok {
		if raw == nil {
			return nil
		}
		d.fail(key, "must be a list of {key, tenantId, roles}, not %s", shape(raw))
		return nil
	}
	keys := make([]StaticKey, 0, len(items))
	for i, item := range items {
		at := fmt.Sprintf("%s[%d]", key, i)
		fields, ok := stringMap(item)
		if !ok {
			d.fail(at, "must be a map with key, tenantId and roles, not %s", shape(item))
			continue
		}
		var sk StaticKey
		for _, name := range slices.Sorted(maps.Keys(fields)) {
			val := fields[name]
			switch strings.ToLower(name) {
			case "key":
				s, ok := scalarString(val)
				if !ok {
					d.fail(at+".key", "must be a single value, not %s", shape(val))
				}
				sk.Key = Secret(s)
			case "tenantid":
				s, ok := scalarString(val)
				if !ok {
					d.fail(at+".tenantId", "must be a single value, not %s", shape(val))
				}
				sk.TenantID = s
			case "roles":
				sk.Roles = d.stringList(at+".roles", val)
			default:
				d.fail(at, "unknown field %q (want key, tenantId, roles)", name)
			}
		}
		keys = append(keys, sk)
	}
	return keys
}

// durations reads a list of durations ("0s, 5s, 5m" from the environment).
func (d *decoder) durations(key string) []time.Duration {
	raw, ok := d.value(key)
	if !ok {
		return nil
	}
	var out []time.Duration
	for i, s := range d.stringList(key, raw) {
		dur, err := time.ParseDuration(s)
		if err != nil {
			d.fail(fmt.Sprintf("%s[%d]", key, i), "%q is not a duration (write it with a unit: 0s, 5s, 5m, 2h)", s)
			continue
		}
		out = append(out, dur)
	}
	return out
}

// strings reads a list-of-strings key.
func (d *decoder) strings(key string) []string {
	raw, ok := d.value(key)
	if !ok {
		return nil
	}
	return d.stringList(key, raw)
}

func (d *decoder) stringList(key string, raw any) []string {
	switch v := raw.(type) {
	case nil:
		return nil
	case string: // "a,b" as a convenience for hand-written environment values
		var out []string
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		return out
	case []any:
		out := make([]string, 0, len(v))
		for i, item := range v {
			s, ok := scalarString(item)
			if !ok {
				d.fail(fmt.Sprintf("%s[%d]", key, i), "must be a string, not %s", shape(item))
				continue
			}
			out = append(out, s)
		}
		return out
	}
	d.fail(key, "must be a list of strings, not %s", shape(raw))
	return nil
}

// scalarString renders a YAML scalar as a trimmed string (a number given for a
// string key is accepted as written).
func scalarString(raw any) (string, bool) {
	switch v := raw.(type) {
	case nil:
		return "", true
	case string:
		return strings.TrimSpace(v), true
	case bool, int, int64, uint64, float64:
		return fmt.Sprint(v), true
	}
	return "", false
}

func stringMap(raw any) (map[string]any, bool) {
	switch m := raw.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}

// describe quotes a scalar for an error message. Only used for non-secret keys.
func describe(raw any) string {
	if s, ok := scalarString(raw); ok {
		return strconv.Quote(s)
	}
	return shape(raw)
}

func shape(raw any) string {
	switch raw.(type) {
	case []any:
		return "a list"
	case map[string]any, map[any]any:
		return "a map"
	}
	return fmt.Sprintf("a %T", raw)
}
