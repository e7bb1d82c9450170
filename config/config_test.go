package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// emulatorKey is the Cosmos emulator's well-known, public account key.
const emulatorKey = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="

// fleetEnv holds the values the fleet profile requires.
func fleetEnv() map[string]string {
	return map[string]string{
		"IM_STORE_COSMOS_ENDPOINT":           "https://127.0.0.1:8081/",
		"IM_STORE_COSMOS_KEY":                emulatorKey,
		"IM_SERVICES_SECRETMANAGEMENT_URL":   "http://secret-management.castiel.svc:8080",
		"IM_SERVICES_SHARDMANAGER_URL":       "http://shard-manager.castiel.svc:8080",
		"IM_SERVICES_USERMANAGEMENT_URL":     "http://user-management.castiel.svc:8080",
		"IM_SERVICES_USERMANAGEMENT_JWKSURL": "http://user-management.castiel.svc:8080/.well-known/jwks.json",
		"IM_SERVICES_LOGGINGSERVICE_URL":     "http://logging.castiel.svc:8080",
		"IM_AUTH_ISSUER":                     "https://auth.castiel.example",
		"IM_AUTH_AUDIENCE":                   "integration-manager",
	}
}

func environ(env map[string]string) []string {
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	return out
}

func with(env map[string]string, kv ...string) map[string]string {
	out := make(map[string]string, len(env)+len(kv)/2)
	for k, v := range env {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func load(defaultProfile string, env map[string]string, args ...string) (*Config, error) {
	return Load(LoadOptions{Service: "test", DefaultProfile: defaultProfile, Args: args, Environ: environ(env)})
}

func mustLoad(t *testing.T, defaultProfile string, env map[string]string, args ...string) *Config {
	t.Helper()
	cfg, err := load(defaultProfile, env, args...)
	if err != nil {
		t.Fatalf("Load(%s) failed, the service would not start: %v", defaultProfile, err)
	}
	return cfg
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoad_DefaultsForEachProfile(t *testing.T) {
	tests := []struct {
		profile    string
		env        map[string]string
		broker     string
		store      string
		format     string
		staticKeys int
	}{
		{ProfileStandalone, nil, BrokerGoChannel, StoreEmbedded, FormatConsole, 1},
		{ProfileFleet, fleetEnv(), BrokerAMQP, StoreCosmos, FormatJSON, 0},
	}
	for _, tt := range tests {
		t.Run(tt.profile, func(t *testing.T) {
			cfg := mustLoad(t, tt.profile, tt.env)

			if cfg.Profile != tt.profile || cfg.Service != "test" {
				t.Errorf("profile/service = %q/%q, want %q/test", cfg.Profile, cfg.Service, tt.profile)
			}
			if cfg.Broker.Kind != tt.broker || cfg.Store.Kind != tt.store || cfg.Log.Format != tt.format {
				t.Errorf("broker/store/log format = %s/%s/%s, want %s/%s/%s",
					cfg.Broker.Kind, cfg.Store.Kind, cfg.Log.Format, tt.broker, tt.store, tt.format)
			}
			if len(cfg.Auth.StaticKeys) != tt.staticKeys {
				t.Errorf("got %d static API keys, want %d", len(cfg.Auth.StaticKeys), tt.staticKeys)
			}
			// Values both profiles take from default.yaml.
			want := Config{
				Log:  LogConfig{Level: "info"},
				HTTP: HTTPConfig{API: APIServerConfig{Addr: ":8080", MaxBodyBytes: 1 << 20, ReadTimeout: 15 * time.Second, WriteTimeout: 30 * time.Second, ShutdownTimeout: 15 * time.Second}, Admin: AdminServerConfig{Addr: ":9090"}},
				Broker: BrokerConfig{
					AMQP:           AMQPConfig{URL: "amqp://guest:guest@127.0.0.1:5672/", ExchangePrefix: "castiel.integration", Prefetch: 64, ConsumersPerQueue: 4, ChannelPoolSize: 4, QuorumQueues: true},
					HandlerTimeout: 30 * time.Second,
					Retry:          RetryConfig{InitialInterval: 200 * time.Millisecond, MaxInterval: 5 * time.Second, MaxElapsed: 30 * time.Second},
				},
				Store:    StoreConfig{Embedded: EmbeddedStoreConfig{Path: "./data/integration-manager.db"}, Cosmos: CosmosConfig{Database: "castiel", MaxRetries: 5, RequestTimeout: 10 * time.Second}, ExecutionsTTL: 720 * time.Hour},
				Auth:     AuthConfig{JWKSRefresh: 15 * time.Minute},
				Shutdown: ShutdownConfig{Timeout: 25 * time.Second},
			}
			if cfg.Log.Level != want.Log.Level || cfg.HTTP != want.HTTP || cfg.Broker.AMQP != want.Broker.AMQP ||
				cfg.Broker.HandlerTimeout != want.Broker.HandlerTimeout || cfg.Broker.Retry != want.Broker.Retry ||
				cfg.Store.Embedded != want.Store.Embedded ||
				cfg.Store.Cosmos.Database != want.Store.Cosmos.Database || cfg.Store.Cosmos.MaxRetries != want.Store.Cosmos.MaxRetries ||
				cfg.Store.Cosmos.RequestTimeout != want.Store.Cosmos.RequestTimeout || cfg.Store.Cosmos.InsecureSkipVerify ||
				cfg.Store.ExecutionsTTL != want.Store.ExecutionsTTL || cfg.Auth.JWKSRefresh != want.Auth.JWKSRefresh ||
				cfg.Shutdown != want.Shutdown {
				t.Errorf("defaults differ from default.yaml:\n got %s\nwant %s", summaryJSON(t, cfg), summaryJSON(t, &want))
			}
		})
	}
}

func TestLoad_StandaloneShipsDevCredentials(t *testing.T) {
	cfg := mustLoad(t, ProfileStandalone, nil)

	k := cfg.Auth.StaticKeys[0]
	if k.TenantID != "dev-tenant" || !slices.Equal(k.Roles, []string{"tenant_admin", "platform_admin"}) || !k.Key.IsSet() {
		t.Errorf("standalone dev key = tenant %q roles %v (set %v), want dev-tenant [tenant_admin platform_admin] with a key",
			k.TenantID, k.Roles, k.Key.IsSet())
	}
	if key, err := cfg.Secrets.EncryptionKeyBytes(); err != nil || len(key) != 32 {
		t.Errorf("standalone encryption key: %d bytes, err %v; the embedded secret store needs 32", len(key), err)
	}
	for _, u := range []string{cfg.Services.SecretManagement.URL, cfg.Services.ShardManager.URL, cfg.Services.UserManagement.URL, cfg.Services.AIService.URL, cfg.Services.LoggingService.URL} {
		if u != "" {
			t.Errorf("standalone service URL %q is set; standalone uses the embedded stand-ins", u)
		}
	}
}

func TestLoad_EnvOverridesNestedKey(t *testing.T) {
	cfg := mustLoad(t, ProfileStandalone, map[string]string{
		"IM_STORE_COSMOS_ENDPOINT":   "https://cosmos.example:443/",
		"IM_STORE_COSMOS_MAXRETRIES": "9",
		"IM_BROKER_RETRY_MAXELAPSED": "1m",
	})

	if cfg.Store.Cosmos.Endpoint != "https://cosmos.example:443/" || cfg.Store.Cosmos.MaxRetries != 9 || cfg.Broker.Retry.MaxElapsed != time.Minute {
		t.Errorf("env overrides not applied: endpoint %q maxRetries %d maxElapsed %s",
			cfg.Store.Cosmos.Endpoint, cfg.Store.Cosmos.MaxRetries, cfg.Broker.Retry.MaxElapsed)
	}
}

// Every key in default.yaml must be overridable from the environment: this table
// must name each of them, and each override must show in the loaded configuration.
func TestLoad_EveryKeyHasAWorkingEnvOverride(t *testing.T) {
	overrides := map[string]struct{ env, want string }{
		"profile":                                    {"standalone", "standalone"},
		"log.level":                                  {"debug", "debug"},
		"log.format":                                 {"console", "console"},
		"http.api.addr":                              {":8181", ":8181"},
		"http.api.maxBodyBytes":                      {"2048", "2048"},
		"http.api.readTimeout":                       {"3s", "3s"},
		"http.api.writeTimeout":                      {"4s", "4s"},
		"http.api.shutdownTimeout":                   {"20s", "20s"},
		"http.admin.addr":                            {"127.0.0.1:9191", "127.0.0.1:9191"},
		"broker.kind":                                {"gochannel", "gochannel"},
		"broker.gochannel.maxBacklog":                {"500", "500"},
		"broker.gochannel.publishTimeout":            {"2s", "2s"},
		"broker.amqp.url":                            {"amqps://u:p@rabbit.internal:5671/vh", "amqps://u:xxxxx@rabbit.internal:5671/vh"},
		"broker.amqp.exchangePrefix":                 {"tenant.x", "tenant.x"},
		"broker.amqp.prefetch":                       {"24", "24"},
		"broker.amqp.consumersPerQueue":              {"2", "2"},
		"broker.amqp.channelPoolSize":                {"3", "3"},
		"broker.amqp.quorumQueues":                   {"false", "false"},
		"broker.handlerTimeout":                      {"45s", "45s"},
		"broker.retry.initialInterval":               {"300ms", "300ms"},
		"broker.retry.maxInterval":                   {"7s", "7s"},
		"broker.retry.maxElapsed":                    {"2m", "2m0s"},
		"store.kind":                                 {"embedded", "embedded"},
		"store.embedded.path":                        {"/var/lib/im.db", "/var/lib/im.db"},
		"store.cosmos.endpoint":                      {"https://acct.documents.azure.com:443/", "https://acct.documents.azure.com:443/"},
		"store.cosmos.key":                           {"b3RoZXIta2V5", "[redacted]"},
		"store.cosmos.database":                      {"other", "other"},
		"store.cosmos.insecureSkipVerify":            {"true", "true"},
		"store.cosmos.maxRetries":                    {"1", "1"},
		"store.cosmos.requestTimeout":                {"2s", "2s"},
		"store.executionsTTL":                        {"48h", "48h0m0s"},
		"services.secretManagement.url":              {"https://sm.other", "https://sm.other"},
		"services.shardManager.url":                  {"https://shards.other", "https://shards.other"},
		"services.userManagement.url":                {"https://um.other", "https://um.other"},
		"services.userManagement.jwksUrl":            {"https://um.other/jwks", "https://um.other/jwks"},
		"services.aiService.url":                     {"https://ai.other", "https://ai.other"},
		"services.loggingService.url":                {"https://log.other", "https://log.other"},
		"auth.issuer":                                {"https://issuer.other", "https://issuer.other"},
		"auth.audience":                              {"other-audience", "other-audience"},
		"auth.jwksRefresh":                           {"1h", "1h0m0s"},
		"auth.staticKeys":                            {`[{"key":"0123456789abcdef-ops","tenantId":"t1","roles":["platform_admin"]}]`, "[map[key:[redacted] roles:[platform_admin] tenantId:t1]]"},
		"secrets.encryptionKey":                      {"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "[redacted]"},
		"webhooks.requireHttps":                      {"false", "false"},
		"webhooks.allowedHttpHosts":                  {"a.local,b.local", "[a.local b.local]"},
		"webhooks.secretRotationOverlap":             {"2h", "2h0m0s"},
		"webhooks.dispatcher.consumers":              {"8", "8"},
		"webhooks.dispatcher.fanOutConsumers":        {"3", "3"},
		"webhooks.dispatcher.inlineAttempts":         {"0", "0"},
		"webhooks.dispatcher.inlineHandoff":          {"3s", "3s"},
		"webhooks.dispatcher.inFlightWait":           {"0s", "0s"},
		"webhooks.dispatcher.timeout":                {"3s", "3s"},
		"webhooks.dispatcher.responseBodyCap":        {"100", "100"},
		"webhooks.dispatcher.schedule":               {"0s,1s,2s", "[0s 1s 2s]"},
		"webhooks.dispatcher.retryAfterCap":          {"10m", "10m0s"},
		"webhooks.dispatcher.breakerFailures":        {"3", "3"},
		"webhooks.dispatcher.breakerCooldown":        {"5s", "5s"},
		"webhooks.dispatcher.disableAfter":           {"24h", "24h0m0s"},
		"webhooks.dispatcher.maxInFlightPerEndpoint": {"2", "2"},
		"webhooks.dispatcher.cacheTTL":               {"1s", "1s"},
		"webhooks.dispatcher.deferDelay":             {"2s", "2s"},
		"webhooks.dispatcher.allowHosts":             {"10.0.0.0/8", "[10.0.0.0/8]"},
		"shutdown.timeout":                           {"26s", "26s"},
	}
	// Secrets show as "[redacted]" whatever their value, so check those directly.
	secretOf := map[string]func(*Config) Secret{
		"store.cosmos.key":      func(c *Config) Secret { return c.Store.Cosmos.Key },
		"secrets.encryptionKey": func(c *Config) Secret { return c.Secrets.EncryptionKey },
		"broker.amqp.url":       func(c *Config) Secret { return c.Broker.AMQP.URL },
	}
	defaults, err := embeddedLayer(defaultsSource, "default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var covered []string
	for key := range overrides {
		covered = append(covered, strings.ToLower(key))
	}
	slices.Sort(covered)
	if all := defaults.v.AllKeys(); !slices.Equal(covered, sorted(all)) {
		t.Fatalf("this test must list every key of default.yaml:\n keys %v\n test %v", sorted(all), covered)
	}

	// Fleet as the base: it leaves several values unset, so every override is visible.
	base := mustLoad(t, ProfileFleet, fleetEnv()).LogSummary()
	for key, o := range overrides {
		t.Run(key, func(t *testing.T) {
			name := envName(strings.ToLower(key))
			cfg := mustLoad(t, ProfileFleet, with(fleetEnv(), name, o.env))

			got := stringify(cfg.LogSummary()[key])
			if got != o.want {
				t.Errorf("%s=%s: %s is %s, want %s", name, o.env, key, got, o.want)
			}
			if secret, ok := secretOf[key]; ok {
				if secret(cfg).Reveal() != o.env {
					t.Errorf("%s=%s did not reach the loaded secret", name, o.env)
				}
			} else if got == stringify(base[key]) {
				t.Errorf("%s=%s left %s at its default %s; pick a test value that differs", name, o.env, key, got)
			}
		})
	}
}

func TestDecode_ReadsEveryKeyOfDefaultYAML(t *testing.T) {
	defaults, err := embeddedLayer(defaultsSource, "default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(defaults.v)
	d.decode()

	var read []string
	for k := range d.used {
		read = append(read, k)
	}
	if got, want := sorted(read), sorted(defaults.v.AllKeys()); !slices.Equal(got, want) {
		t.Errorf("the decoder and default.yaml disagree on the keys:\n decoder reads %v\n default.yaml  %v", got, want)
	}
}

func TestDefaultYAML_DocumentsEveryKey(t *testing.T) {
	data, err := embedded.ReadFile("default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	var undocumented []string
	var walk func(prefix string, n *yaml.Node)
	walk = func(prefix string, n *yaml.Node) {
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			key := prefix + k.Value
			if v.Kind == yaml.MappingNode {
				walk(key+".", v)
				continue
			}
			if k.HeadComment == "" && k.LineComment == "" && v.LineComment == "" {
				undocumented = append(undocumented, key)
			}
		}
	}
	walk("", doc.Content[0])
	if len(undocumented) > 0 {
		t.Errorf("default.yaml keys without a comment saying what they do: %v", undocumented)
	}
}

func TestLoad_OperatorFileLayering(t *testing.T) {
	file := writeFile(t, "im.yaml", "log:\n  level: debug\nstore:\n  cosmos:\n    maxRetries: 7\nbroker:\n  amqp:\n    prefetch: 32\n")
	other := writeFile(t, "other.yaml", "log:\n  level: error\n")

	tests := []struct {
		name         string
		args         []string
		env          map[string]string
		wantLevel    string
		wantRetries  int
		wantPrefetch int
	}{
		{"--config FILE over defaults", []string{"--config", file}, nil, "debug", 7, 32},
		{"--config=FILE", []string{"--config=" + file}, nil, "debug", 7, 32},
		{"IM_CONFIG over defaults", nil, map[string]string{"IM_CONFIG": file}, "debug", 7, 32},
		{"env over --config file", []string{"--config", file}, map[string]string{"IM_LOG_LEVEL": "warn"}, "warn", 7, 32},
		{"env over IM_CONFIG file", nil, map[string]string{"IM_CONFIG": file, "IM_BROKER_AMQP_PREFETCH": "8"}, "debug", 7, 8},
		{"--config wins over IM_CONFIG", []string{"--config", other}, map[string]string{"IM_CONFIG": file}, "error", 5, 64},
		{"empty env value keeps the file's", []string{"--config", file}, map[string]string{"IM_LOG_LEVEL": ""}, "debug", 7, 32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustLoad(t, ProfileStandalone, tt.env, tt.args...)

			if cfg.Log.Level != tt.wantLevel || cfg.Store.Cosmos.MaxRetries != tt.wantRetries || cfg.Broker.AMQP.Prefetch != tt.wantPrefetch {
				t.Errorf("log.level %q, store.cosmos.maxRetries %d, broker.amqp.prefetch %d; want %q, %d, %d",
					cfg.Log.Level, cfg.Store.Cosmos.MaxRetries, cfg.Broker.AMQP.Prefetch, tt.wantLevel, tt.wantRetries, tt.wantPrefetch)
			}
		})
	}
}

func TestLoad_ProfileSelection(t *testing.T) {
	fleetFile := writeFile(t, "fleet.yaml", "profile: fleet\n")
	jsonFile := writeFile(t, "fleet.json", `{"profile": "fleet", "log": {"level": "warn"}}`)
	tests := []struct {
		name           string
		defaultProfile string
		env            map[string]string
		args           []string
		want           string
	}{
		{"binary default", ProfileStandalone, nil, nil, ProfileStandalone},
		{"binary default fleet", ProfileFleet, fleetEnv(), nil, ProfileFleet},
		{"IM_PROFILE over binary default", ProfileStandalone, with(fleetEnv(), "IM_PROFILE", "fleet"), nil, ProfileFleet},
		{"operator file over binary default", ProfileStandalone, fleetEnv(), []string{"--config", fleetFile}, ProfileFleet},
		{"JSON operator file", ProfileStandalone, fleetEnv(), []string{"--config", jsonFile}, ProfileFleet},
		{"IM_PROFILE over operator file", ProfileFleet, map[string]string{"IM_PROFILE": "standalone"}, []string{"--config", fleetFile}, ProfileStandalone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustLoad(t, tt.defaultProfile, tt.env, tt.args...)

			if cfg.Profile != tt.want {
				t.Errorf("profile = %q, want %q", cfg.Profile, tt.want)
			}
			wantBroker := map[string]string{ProfileStandalone: BrokerGoChannel, ProfileFleet: BrokerAMQP}[tt.want]
			if cfg.Broker.Kind != wantBroker {
				t.Errorf("broker.kind = %q, want %q: the %s overlay was not applied", cfg.Broker.Kind, wantBroker, tt.want)
			}
		})
	}
}

func TestLoad_BadValueNamesItsKey(t *testing.T) {
	unknownKeyFile := writeFile(t, "typo.yaml", "store:\n  cosmos:\n    endpont: https://x\n")
	tests := []struct {
		name    string
		profile string
		env     map[string]string
		args    []string
		want    string // the whole message, or a prefix ending in the reason
	}{
		{"not a URL", ProfileStandalone, map[string]string{"IM_STORE_COSMOS_ENDPOINT": "not a url"},
			nil, `config: store.cosmos.endpoint: "not a url" is not an absolute http(s) URL (from IM_STORE_COSMOS_ENDPOINT)`},
		{"relative URL", ProfileStandalone, map[string]string{"IM_SERVICES_AISERVICE_URL": "/ai"},
			nil, `config: services.aiService.url: "/ai" is not an absolute http(s) URL`},
		{"non-http URL", ProfileStandalone, map[string]string{"IM_SERVICES_SHARDMANAGER_URL": "ftp://shards"},
			nil, `config: services.shardManager.url: "ftp://shards" is not an absolute http(s) URL`},
		{"unknown log level", ProfileStandalone, map[string]string{"IM_LOG_LEVEL": "loud"},
			nil, `config: log.level: "loud" must be one of "debug", "info", "warn" or "error"`},
		{"unknown log format", ProfileStandalone, map[string]string{"IM_LOG_FORMAT": "xml"},
			nil, `config: log.format: "xml" must be one of "auto", "json" or "console"`},
		{"unknown broker kind", ProfileStandalone, map[string]string{"IM_BROKER_KIND": "kafka"},
			nil, `config: broker.kind: "kafka" must be "gochannel" or "amqp"`},
		{"unknown store kind", ProfileStandalone, map[string]string{"IM_STORE_KIND": "postgres"},
			nil, `config: store.kind: "postgres" must be "embedded" or "cosmos"`},
		{"unknown profile", ProfileStandalone, map[string]string{"IM_PROFILE": "prod"},
			nil, `config: profile: "prod" must be "standalone" or "fleet"`},
		{"negative duration", ProfileStandalone, map[string]string{"IM_HTTP_API_READTIMEOUT": "-5s"},
			nil, `config: http.api.readTimeout: -5s must not be negative`},
		{"zero duration", ProfileStandalone, map[string]string{"IM_BROKER_HANDLERTIMEOUT": "0s"},
			nil, `config: broker.handlerTimeout: 0s must be greater than 0`},
		{"duration without unit", ProfileStandalone, map[string]string{"IM_BROKER_HANDLERTIMEOUT": "30"},
			nil, `config: broker.handlerTimeout: "30" is not a duration`},
		{"inline hand-off past the handler deadline", ProfileStandalone, map[string]string{"IM_WEBHOOKS_DISPATCHER_INLINEHANDOFF": "30s"},
			nil, `config: webhooks.dispatcher.inlineHandoff: 30s must be shorter than broker.handlerTimeout (30s): the fan-out hands slow attempts off within its handler's deadline`},
		{"TTL under a second", ProfileStandalone, map[string]string{"IM_STORE_EXECUTIONSTTL": "500ms"},
			nil, `config: store.executionsTTL: 500ms must be at least 1s`},
		{"addr without port", ProfileStandalone, map[string]string{"IM_HTTP_API_ADDR": "8080"},
			nil, `config: http.api.addr: "8080" is not a host:port address`},
		{"addr port out of range", ProfileStandalone, map[string]string{"IM_HTTP_ADMIN_ADDR": ":99999"},
			nil, `config: http.admin.addr: ":99999" has no valid port (0-65535)`},
		{"same addr twice", ProfileStandalone, map[string]string{"IM_HTTP_ADMIN_ADDR": ":8080"},
			nil, `config: http.admin.addr: ":8080" is also http.api.addr`},
		{"not an integer", ProfileStandalone, map[string]string{"IM_BROKER_AMQP_PREFETCH": "lots"},
			nil, `config: broker.amqp.prefetch: "lots" is not an integer`},
		{"integer out of range", ProfileStandalone, map[string]string{"IM_BROKER_AMQP_CONSUMERSPERQUEUE": "0"},
			nil, `config: broker.amqp.consumersPerQueue: 0 must be between 1 and 1024`},
		{"negative size", ProfileStandalone, map[string]string{"IM_HTTP_API_MAXBODYBYTES": "-1"},
			nil, `config: http.api.maxBodyBytes: -1 must be greater than 0`},
		{"not a boolean", ProfileStandalone, map[string]string{"IM_BROKER_AMQP_QUORUMQUEUES": "maybe"},
			nil, `config: broker.amqp.quorumQueues: "maybe" is not a boolean`},
		{"non-AMQP broker URL", ProfileStandalone, map[string]string{"IM_BROKER_AMQP_URL": "http://u:pw@rabbit"},
			nil, `config: broker.amqp.url: has scheme "http", want amqp:// or amqps://`},
		{"bad exchange prefix", ProfileStandalone, map[string]string{"IM_BROKER_AMQP_EXCHANGEPREFIX": "castiel integration"},
			nil, `config: broker.amqp.exchangePrefix: "castiel integration" may only contain`},
		{"retry max below initial", ProfileStandalone, map[string]string{"IM_BROKER_RETRY_MAXINTERVAL": "100ms"},
			nil, `config: broker.retry.maxInterval: 100ms is shorter than broker.retry.initialInterval (200ms)`},
		{"API shutdown beyond process shutdown", ProfileStandalone, map[string]string{"IM_HTTP_API_SHUTDOWNTIMEOUT": "1m"},
			nil, `config: http.api.shutdownTimeout: 1m0s is longer than shutdown.timeout (25s)`},
		{"encryption key too short", ProfileStandalone, map[string]string{"IM_SECRETS_ENCRYPTIONKEY": "MDEyMzQ1Njc4OWFiY2RlZg=="},
			nil, `config: secrets.encryptionKey: decodes to 16 bytes, want 32`},
		{"encryption key not base64", ProfileStandalone, map[string]string{"IM_SECRETS_ENCRYPTIONKEY": "not base64!"},
			nil, `config: secrets.encryptionKey: is not valid base64`},
		{"cosmos key not base64", ProfileStandalone, map[string]string{"IM_STORE_COSMOS_KEY": "not base64!"},
			nil, `config: store.cosmos.key: is not valid base64`},
		{"cosmos needs an endpoint", ProfileStandalone, map[string]string{"IM_STORE_KIND": "cosmos", "IM_STORE_COSMOS_KEY": emulatorKey},
			nil, `config: store.cosmos.endpoint: is required (an absolute http(s) URL)`},
		{"static keys not a list", ProfileStandalone, map[string]string{"IM_AUTH_STATICKEYS": "{[nope"},
			nil, `config: auth.staticKeys: is not a YAML or JSON list of {key, tenantId, roles} (from IM_AUTH_STATICKEYS)`},
		{"static key too short", ProfileStandalone, map[string]string{"IM_AUTH_STATICKEYS": `[{key: short, tenantId: t, roles: [a]}]`},
			nil, `config: auth.staticKeys[0].key: must be at least 16 characters (from IM_AUTH_STATICKEYS)`},
		{"static key without tenant", ProfileStandalone, map[string]string{"IM_AUTH_STATICKEYS": `[{key: 0123456789abcdef, roles: [a]}]`},
			nil, `config: auth.staticKeys[0].tenantId: is required`},
		{"static key unknown field", ProfileStandalone, map[string]string{"IM_AUTH_STATICKEYS": `[{key: 0123456789abcdef, tenant: t, roles: [a]}]`},
			nil, `config: auth.staticKeys[0]: unknown field "tenant" (want key, tenantId, roles)`},
		{"dev key in fleet", ProfileFleet, with(fleetEnv(), "IM_AUTH_STATICKEYS", `[{key: im-dev-key-218697cef8614dc32404f349bfd4e8d4, tenantId: t, roles: [a]}]`),
			nil, `config: auth.staticKeys[0].key: is the standalone development key`},
		{"dev encryption key in fleet", ProfileFleet, with(fleetEnv(), "IM_SECRETS_ENCRYPTIONKEY", "StkwZApTPnVVqmIodEuSeEKdP/95zH/hk15NQBsAhIc="),
			nil, `config: secrets.encryptionKey: is the standalone development key`},
		{"fleet without issuer", ProfileFleet, with(fleetEnv(), "IM_AUTH_ISSUER", ""),
			nil, `config: auth.issuer: is required`},
		{"unknown key in operator file", ProfileStandalone, nil,
			[]string{"--config", unknownKeyFile}, `config: store.cosmos.endpont: is not a configuration key (see config/default.yaml) (from ` + unknownKeyFile + `)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := load(tt.profile, tt.env, tt.args...)

			if err == nil {
				t.Fatalf("Load accepted the bad value (config %+v); want an error starting %q", cfg, tt.want)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) {
				t.Errorf("error %q is a %T, want *ValidationError", err, err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error message:\n got %s\nwant %s...", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error message spans lines, want one log line: %q", err)
			}
		})
	}
}

func TestLoad_FleetNamesEveryMissingRequiredKey(t *testing.T) {
	_, err := load(ProfileFleet, nil)

	if err == nil {
		t.Fatal("fleet loaded with no Cosmos, services or auth settings; want an error")
	}
	for _, key := range []string{
		"store.cosmos.endpoint", "store.cosmos.key", "services.secretManagement.url", "services.shardManager.url",
		"services.userManagement.url", "services.userManagement.jwksUrl", "services.loggingService.url",
		"auth.issuer", "auth.audience", "secrets.encryptionKey",
	} {
		if !strings.Contains(err.Error(), key+": ") {
			t.Errorf("error does not name required key %s: %v", key, err)
		}
	}
	if strings.Contains(err.Error(), "services.aiService.url") {
		t.Errorf("services.aiService.url is optional in fleet, but the error names it: %v", err)
	}
}

func TestLoad_CommandLineAndFileErrors(t *testing.T) {
	badYAML := writeFile(t, "bad.yaml", "log: [unclosed\n")
	txt := writeFile(t, "im.txt", "log: {}\n")
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--verbose"}, nil, "config: command line: flag provided but not defined: -verbose"},
		{"stray argument", []string{"serve"}, nil, `config: command line: unexpected argument "serve"`},
		{"missing --config file", []string{"--config", missing}, nil, "config: --config " + missing + ": open "},
		{"missing IM_CONFIG file", nil, map[string]string{"IM_CONFIG": missing}, "config: IM_CONFIG=" + missing + ": open "},
		{"unsupported extension", []string{"--config", txt}, nil, `config: --config ` + txt + `: unsupported extension ".txt"`},
		{"unparsable YAML", []string{"--config", badYAML}, nil, "config: " + badYAML + ": While parsing config: yaml:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := load(ProfileStandalone, tt.env, tt.args...)

			if err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error:\n got %v\nwant one line starting %s", err, tt.want)
			}
		})
	}
}

func TestLoad_RefusesBadOptions(t *testing.T) {
	tests := []LoadOptions{
		{Service: "", DefaultProfile: ProfileStandalone},
		{Service: "api", DefaultProfile: ""},
		{Service: "api", DefaultProfile: "prod"},
	}
	for _, opts := range tests {
		if _, err := Load(opts); err == nil {
			t.Errorf("Load(%+v) succeeded; want an error about the options", opts)
		}
	}
}

func TestLoad_IgnoresTheProcessEnvironment(t *testing.T) {
	t.Setenv("IM_LOG_LEVEL", "debug")

	cfg := mustLoad(t, ProfileStandalone, nil)

	if cfg.Log.Level != "info" {
		t.Errorf("log.level = %q: Load read the process environment although Environ was nil", cfg.Log.Level)
	}
}

func TestLogSummary_ReportsUnknownEnvVariables(t *testing.T) {
	cfg := mustLoad(t, ProfileStandalone, map[string]string{"IM_STORE_COSMOS_ENDPONT": "x", "IM_CONFIG": "", "HOME": "/root"})

	got := cfg.LogSummary()["ignoredEnv"]
	if !slices.Equal(got.([]string), []string{"IM_STORE_COSMOS_ENDPONT"}) {
		t.Errorf("ignoredEnv = %v, want [IM_STORE_COSMOS_ENDPONT] so the misspelling is visible at start-up", got)
	}
}

func TestConfig_NeverPrintsSecrets(t *testing.T) {
	const (
		cosmosKey  = "c3VwZXItc2VjcmV0LWNvc21vcy1rZXk=" // base64 of "super-secret-cosmos-key"
		encKey     = "c2VjcmV0LWVuY3J5cHRpb24ta2V5LTMyLWJ5dGVzISE="
		apiKey     = "api-key-that-must-never-be-logged"
		amqpSecret = "rabbit-password-never-logged"
	)
	cfg := mustLoad(t, ProfileStandalone, map[string]string{
		"IM_STORE_COSMOS_ENDPOINT": "https://acct.documents.azure.com:443/",
		"IM_STORE_COSMOS_KEY":      cosmosKey,
		"IM_SECRETS_ENCRYPTIONKEY": encKey,
		"IM_AUTH_STATICKEYS":       `[{key: ` + apiKey + `, tenantId: t1, roles: [tenant_admin]}]`,
		"IM_BROKER_AMQP_URL":       "amqp://im:" + amqpSecret + "@rabbit:5672/",
	})
	if cfg.Store.Cosmos.Key.Reveal() != cosmosKey || cfg.Auth.StaticKeys[0].Key.Reveal() != apiKey {
		t.Fatal("the secrets were not loaded; the test would prove nothing")
	}
	summary, err := json.Marshal(cfg.LogSummary())
	if err != nil {
		t.Fatal(err)
	}
	asJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	renderings := map[string]string{
		"LogSummary as JSON":   string(summary),
		"Sprintf %+v":          sprintf("%+v", cfg),
		"Sprintf %v of value":  sprintf("%v", *cfg),
		"Sprintf %#v":          sprintf("%#v", cfg),
		"Sprintf %s of secret": sprintf("%s", cfg.Store.Cosmos.Key),
		"Sprintf %q of secret": sprintf("%q", cfg.Store.Cosmos.Key),
		"Sprintf %x of secret": sprintf("%x", cfg.Store.Cosmos.Key),
		"json.Marshal(cfg)":    string(asJSON),
	}
	for name, text := range renderings {
		for _, secret := range []string{cosmosKey, encKey, apiKey, amqpSecret} {
			if strings.Contains(text, secret) {
				t.Errorf("%s leaks a secret (%s...): %s", name, secret[:6], text)
			}
		}
	}
	if !strings.Contains(renderings["Sprintf %+v"], "[redacted]") {
		t.Errorf("%%+v shows no [redacted] marker: %s", renderings["Sprintf %+v"])
	}
}

func TestLoad_ErrorsNeverEchoSecrets(t *testing.T) {
	const secret = "zz-secret-value-zz"
	for _, name := range []string{"IM_STORE_COSMOS_KEY", "IM_SECRETS_ENCRYPTIONKEY", "IM_BROKER_AMQP_URL"} {
		_, err := load(ProfileStandalone, map[string]string{name: secret + "!"})
		if err == nil || strings.Contains(err.Error(), secret) {
			t.Errorf("%s with a bad value: error %v must exist and not contain the value", name, err)
		}
	}
	_, err := load(ProfileStandalone, map[string]string{"IM_BROKER_AMQP_URL": "http://u:" + secret + "@h"})
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("bad broker URL: error %v must exist and not contain the password", err)
	}
}

func TestConfig_ValidateMatchesLoad(t *testing.T) {
	cfg := mustLoad(t, ProfileStandalone, nil)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("a loaded config fails Validate: %v", err)
	}

	cfg.Store.Cosmos.Endpoint = "not a url"
	cfg.Broker.AMQP.Prefetch = 0

	err := cfg.Validate()
	var verr *ValidationError
	if !errors.As(err, &verr) || len(verr.Problems) != 2 {
		t.Fatalf("Validate after two bad edits = %v, want a *ValidationError with 2 problems", err)
	}
	if verr.Problems[0].Key != "broker.amqp.prefetch" || verr.Problems[1].Key != "store.cosmos.endpoint" {
		t.Errorf("problems name %q and %q, want broker.amqp.prefetch and store.cosmos.endpoint", verr.Problems[0].Key, verr.Problems[1].Key)
	}
}

func sprintf(format string, v any) string { return fmt.Sprintf(format, v) }

func stringify(v any) string { return fmt.Sprint(v) }

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func summaryJSON(t *testing.T, c *Config) string {
	t.Helper()
	b, err := json.Marshal(c.LogSummary())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
