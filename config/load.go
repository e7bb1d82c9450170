package config

import (
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/viper"
)

// Environment variables with a meaning of their own; every other IM_* variable
// overrides the key it names.
const (
	envPrefix     = "IM_"
	envConfigFile = "IM_CONFIG"
)

const defaultsSource = "config/default.yaml"

//go:embed default.yaml profiles/standalone.yaml profiles/fleet.yaml
var embedded embed.FS

// LoadOptions says which binary is loading and where its overrides come from.
// Tests pass Args and Environ explicitly so they never depend on the process.
type LoadOptions struct {
	// Service names the binary ("api", "standalone", "webhook-dispatcher", ...);
	// it ends up in Config.Service and on every log line.
	Service string
	// DefaultProfile is the binary's profile when neither IM_PROFILE nor the operator
	// file chooses one: ProfileStandalone or ProfileFleet.
	DefaultProfile string
	// Args are the command-line arguments without the program name (os.Args[1:]).
	// The only flag is --config FILE.
	Args []string
	// Environ holds "NAME=value" pairs (os.Environ()). Nil means no environment.
	Environ []string
}

// ProcessOptions returns LoadOptions reading the real command line and environment:
// what a main function passes to Load.
func ProcessOptions(service, defaultProfile string) LoadOptions {
	return LoadOptions{
		Service:        service,
		DefaultProfile: defaultProfile,
		Args:           os.Args[1:],
		Environ:        os.Environ(),
	}
}

// Load builds the configuration from, lowest to highest: the embedded default.yaml,
// the profile overlay, the operator file (--config FILE or IM_CONFIG=FILE) and IM_*
// environment variables. It returns a *ValidationError naming every bad or missing
// key, or another error when the command line or the operator file cannot be read.
func Load(opts LoadOptions) (*Config, error) {
	if opts.Service == "" {
		return nil, errors.New("config: LoadOptions.Service is empty")
	}
	if !slices.Contains(profiles(), opts.DefaultProfile) {
		return nil, fmt.Errorf("config: LoadOptions.DefaultProfile %q must be %s", opts.DefaultProfile, oneOf(profiles()))
	}
	env := parseEnviron(opts.Environ)

	defaults, err := embeddedLayer(defaultsSource, "default.yaml")
	if err != nil {
		return nil, err
	}
	known := make(map[string]bool)
	for _, k := range defaults.v.AllKeys() {
		known[k] = true
	}

	operator, err := operatorLayer(opts.Service, opts.Args, env)
	if err != nil {
		return nil, err
	}

	profile := resolveProfile(opts.DefaultProfile, env, operator)
	if !slices.Contains(profiles(), profile) {
		return nil, &ValidationError{Problems: []Problem{{
			Key: "profile", Reason: fmt.Sprintf("%q must be %s", profile, oneOf(profiles())),
		}}}
	}
	overlay, err := embeddedLayer("config/profiles/"+profile+".yaml", "profiles/"+profile+".yaml")
	if err != nil {
		return nil, err
	}

	layers := []*layer{defaults, overlay}
	if operator != nil {
		layers = append(layers, operator)
	}
	var problems []Problem
	for _, l := range layers {
		problems = append(problems, l.unknownKeys(known)...)
	}
	if len(problems) > 0 {
		return nil, &ValidationError{Problems: problems}
	}

	v := viper.New()
	sources := make(map[string]string)
	for _, l := range layers {
		if err := v.MergeConfigMap(l.v.AllSettings()); err != nil {
			return nil, fmt.Errorf("config: merging %s: %w", l.source, err)
		}
		for _, k := range l.v.AllKeys() {
			sources[k] = l.source
		}
	}
	ignored := applyEnv(v, known, env, sources)
	v.Set("profile", profile)

	d := newDecoder(v)
	cfg := d.decode()
	cfg.Service = opts.Service
	cfg.ignoredEnv = ignored
	if cfg.Log.Format == FormatAuto {
		cfg.Log.Format = autoFormat(cfg.Profile)
	}
	// A value that did not parse is reported once, not again by the rule it then breaks.
	problems = d.problems
	for _, p := range cfg.validate(devSecrets()) {
		if !slices.ContainsFunc(d.problems, func(dp Problem) bool { return dp.Key == p.Key }) {
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		for i := range problems {
			key, _, _ := strings.Cut(problems[i].Key, "[") // auth.staticKeys[0].key → auth.staticKeys
			if src := sources[strings.ToLower(key)]; src != defaultsSource {
				problems[i].Source = src
			}
		}
		return nil, &ValidationError{Problems: problems}
	}
	return cfg, nil
}

func autoFormat(profile string) string {
	if profile == ProfileFleet {
		return FormatJSON
	}
	return FormatConsole
}

// layer is one parsed configuration source, kept apart so its keys can be checked
// and attributed before it is merged.
type layer struct {
	source string // shown in errors: a file name or an embedded path
	v      *viper.Viper
}

func embeddedLayer(source, name string) (*layer, error) {
	data, err := embedded.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", source, err)
	}
	return parseLayer(source, "yaml", data)
}

func parseLayer(source, format string, data []byte) (*layer, error) {
	v := viper.New()
	v.SetConfigType(format)
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("config: %s: %s", source, oneLine(err.Error()))
	}
	return &layer{source: source, v: v}, nil
}

// unknownKeys reports keys default.yaml does not define: a misspelt key in an
// operator file would otherwise be ignored without a word.
func (l *layer) unknownKeys(known map[string]bool) []Problem {
	var problems []Problem
	for _, k := range l.v.AllKeys() {
		if !known[k] {
			problems = append(problems, Problem{Key: k, Reason: "is not a configuration key (see config/default.yaml)", Source: l.source})
		}
	}
	return problems
}

// operatorLayer reads the file named by --config, or else by IM_CONFIG; nil if neither.
func operatorLayer(service string, args []string, env map[string]string) (*layer, error) {
	fs := flag.NewFlagSet(service, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", "", "configuration file (YAML or JSON)")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("config: command line: %w (usage: %s [--config FILE])", err, service)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("config: command line: unexpected argument %q (usage: %s [--config FILE])", fs.Arg(0), service)
	}
	source := "--config " + *path
	if *path == "" {
		*path = env[envConfigFile]
		source = envConfigFile + "=" + *path
	}
	if *path == "" {
		return nil, nil
	}

	var format string
	switch ext := strings.ToLower(filepath.Ext(*path)); ext {
	case ".yaml", ".yml":
		format = "yaml"
	case ".json":
		format = "json"
	default:
		return nil, fmt.Errorf("config: %s: unsupported extension %q (use .yaml, .yml or .json)", source, ext)
	}
	data, err := os.ReadFile(*path)
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", source, err)
	}
	return parseLayer(*path, format, data)
}

// resolveProfile picks the profile: IM_PROFILE, else the operator file's profile,
// else the binary's default.
func resolveProfile(def string, env map[string]string, operator *layer) string {
	if p := strings.TrimSpace(env[envName("profile")]); p != "" {
		return p
	}
	if operator != nil {
		if p := strings.TrimSpace(operator.v.GetString("profile")); p != "" {
			return p
		}
	}
	return def
}

// applyEnv overrides every known key that has a non-empty IM_* variable, and returns
// the names of IM_* variables that match no key. Values stay strings here; the
// decoder parses them (lists as YAML or JSON) and names the variable if they are bad.
func applyEnv(v *viper.Viper, known map[string]bool, env map[string]string, sources map[string]string) []string {
	for key := range known {
		name := envName(key)
		if val := env[name]; val != "" {
			v.Set(key, val)
			sources[key] = name
		}
	}
	var ignored []string
	for name := range env {
		if !strings.HasPrefix(name, envPrefix) || name == envConfigFile {
			continue
		}
		if !known[keyForEnv(name)] {
			ignored = append(ignored, name)
		}
	}
	slices.Sort(ignored)
	return ignored
}

// envName maps a key to its variable: store.cosmos.maxRetries → IM_STORE_COSMOS_MAXRETRIES.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// keyForEnv is envName's inverse for keys, which contain no underscores.
func keyForEnv(name string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(name, envPrefix), "_", "."))
}

// parseEnviron turns "NAME=value" pairs into a map; later pairs win, as in a shell.
func parseEnviron(environ []string) map[string]string {
	env := make(map[string]string, len(environ))
	for _, kv := range environ {
		if name, val, ok := strings.Cut(kv, "="); ok && name != "" {
			env[name] = val
		}
	}
	return env
}

// devSecrets returns the standalone profile's development credentials, which the
// fleet profile refuses.
func devSecrets() devCredentials {
	var dev devCredentials
	l, err := embeddedLayer("", "profiles/standalone.yaml")
	if err != nil {
		return dev
	}
	dev.encryptionKey = l.v.GetString("secrets.encryptionkey")
	d := newDecoder(l.v)
	for _, k := range d.staticKeys("auth.staticKeys") {
		dev.apiKeys = append(dev.apiKeys, k.Key.Reveal())
	}
	return dev
}

type devCredentials struct {
	encryptionKey string
	apiKeys       []string
}

// DevelopmentKey returns the configured static API key that is the standalone
// profile's published development key, if one is configured. It is no secret
// (it ships in the repository), so `make run` may print it for a newcomer.
func (c *Config) DevelopmentKey() (StaticKey, bool) {
	dev := devSecrets()
	for _, k := range c.Auth.StaticKeys {
		for _, d := range dev.apiKeys {
			if k.Key.Reveal() == d {
				return k, true
			}
		}
	}
	return StaticKey{}, false
}
