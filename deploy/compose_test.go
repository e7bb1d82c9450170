package deploy

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/castiel/integration-manager/config"
)

// No Docker engine runs where the tests run, so `docker compose up` itself cannot be
// tried here. What can be checked without one is checked: every fleet binary has a
// service that starts it once its dependencies are healthy and reports its own health;
// the environment the services get is a configuration the binaries accept, with no
// misspelt key; and the Dockerfile's build command yields static binaries.

type composeFile struct {
	Services map[string]composeService `json:"services"`
}

type composeService struct {
	Image       string                       `json:"image"`
	Build       any                          `json:"build"`
	Entrypoint  []string                     `json:"entrypoint"`
	Environment map[string]string            `json:"environment"`
	DependsOn   map[string]map[string]string `json:"depends_on"`
	Healthcheck *struct {
		Test []string `json:"test"`
	} `json:"healthcheck"`
}

func readCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

// fleetBinaries are the binaries of cmd/ that run as services (not standalone, not the
// healthcheck probe the images carry).
func fleetBinaries(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join("..", "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != "standalone" && e.Name() != "healthcheck" {
			names = append(names, e.Name())
		}
	}
	return names
}

func TestCompose_EveryBinaryStartsAfterItsDependenciesAndReportsItsHealth(t *testing.T) {
	c := readCompose(t)
	for _, infra := range []string{"rabbitmq", "cosmos"} {
		s, ok := c.Services[infra]
		if !ok || s.Healthcheck == nil || len(s.Healthcheck.Test) == 0 {
			t.Errorf("service %s missing or without a healthcheck", infra)
		}
	}
	for _, name := range fleetBinaries(t) {
		s, ok := c.Services[name]
		if !ok {
			t.Errorf("cmd/%s has no service in docker-compose.yml", name)
			continue
		}
		if want := "/usr/local/bin/" + name; !slices.Equal(s.Entrypoint, []string{want}) {
			t.Errorf("%s: entrypoint %v, want [%s]", name, s.Entrypoint, want)
		}
		if s.Build == nil {
			t.Errorf("%s: not built from the repository's Dockerfile", name)
		}
		if s.Healthcheck == nil || !slices.Contains(s.Healthcheck.Test, "/usr/local/bin/healthcheck") ||
			!slices.ContainsFunc(s.Healthcheck.Test, func(a string) bool { return strings.HasSuffix(a, "/readyz") }) {
			t.Errorf("%s: healthcheck %+v, want the healthcheck binary probing /readyz", name, s.Healthcheck)
		}
		// Started only once the broker and the store are healthy, directly or through
		// a service that waits for them.
		for _, infra := range []string{"rabbitmq", "cosmos"} {
			if !waitsFor(c, name, infra, map[string]bool{}) {
				t.Errorf("%s does not wait for %s to be healthy", name, infra)
			}
		}
	}
}

// waitsFor reports whether service from starts only after target is healthy.
func waitsFor(c composeFile, from, target string, seen map[string]bool) bool {
	if seen[from] {
		return false
	}
	seen[from] = true
	for dep, cond := range c.Services[from].DependsOn {
		if cond["condition"] != "service_healthy" {
			continue
		}
		if dep == target || waitsFor(c, dep, target, seen) {
			return true
		}
	}
	return false
}

func TestCompose_ServicesGetAConfigurationTheBinariesAccept(t *testing.T) {
	c := readCompose(t)
	for _, name := range fleetBinaries(t) {
		s := c.Services[name]
		env := make([]string, 0, len(s.Environment))
		for k, v := range s.Environment {
			env = append(env, k+"="+v)
		}
		cfg, err := config.Load(config.LoadOptions{Service: name, DefaultProfile: config.ProfileFleet, Environ: env}) // as cmd/<name> loads it
		if err != nil {
			t.Errorf("%s: the compose environment is refused: %v", name, err)
			continue
		}
		if ignored := cfg.LogSummary()["ignoredEnv"]; ignored != nil {
			t.Errorf("%s: IM_* variables that match no configuration key: %v", name, ignored)
		}
		if cfg.Broker.Kind != config.BrokerAMQP || cfg.Store.Kind != config.StoreCosmos {
			t.Errorf("%s: broker %q and store %q, want the fleet's amqp and cosmos", name, cfg.Broker.Kind, cfg.Store.Kind)
		}
	}
}

func TestDockerfile_BuildsStaticBinariesAndRunsAsNonRoot(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile := string(raw)
	if !regexp.MustCompile(`(?m)^USER nonroot`).MatchString(dockerfile) {
		t.Error("the image does not run as a non-root user")
	}
	build := regexp.MustCompile(`(?m)^RUN (CGO_ENABLED=0 go build .*) -o /out/ ./cmd/\.\.\.$`).FindStringSubmatch(dockerfile)
	if build == nil {
		t.Fatal("no `RUN CGO_ENABLED=0 go build ... -o /out/ ./cmd/...` line in the Dockerfile")
	}
	if testing.Short() {
		t.Skip("-short: not building the binaries")
	}
	// The same command, here: the final image has no libc, so every binary must be static.
	out := t.TempDir()
	args := shellWords(strings.TrimPrefix(build[1], "CGO_ENABLED=0 "))
	args = append(args, "-o", out+"/", "./cmd/...")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, msg)
	}
	for _, name := range append(fleetBinaries(t), "standalone", "healthcheck") {
		f, err := elf.Open(filepath.Join(out, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
				t.Errorf("%s is dynamically linked; the distroless static image cannot run it", name)
			}
		}
		f.Close()
	}
}

// shellWords splits a command line as a shell would for the Dockerfile's simple
// case: spaces separate words, double quotes group (and are removed).
func shellWords(line string) []string {
	var words []string
	var word strings.Builder
	quoted, inWord := false, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case r == ' ' && !quoted:
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, word.String())
	}
	return words
}
