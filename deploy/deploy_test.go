package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/messaging"
)

const (
	manifestsDir = "kubernetes"
	baseDir      = "kubernetes/base"
	// secretName is the one Secret every secret value comes from.
	secretName = "integration-manager-secrets"
	// minGracePeriod is the SIGTERM-to-SIGKILL time docs/operations.md asks for:
	// HTTP drain (15s) plus router close (25s), with a margin.
	minGracePeriod = 45
)

// binaries are the fleet's binaries (cmd/<name>), one Deployment each.
var binaries = []string{"api", "webhook-dispatcher", "sync-worker", "conflict-resolver", "scheduler"}

// workerRoles says which consumer role each worker binary runs and the topics
// it consumes, first its main one, from app.Consumption (what every process
// declares at start-up).
func workerRoles() map[string]workerRole {
	byRole := app.Consumption()
	out := map[string]workerRole{}
	for binary, role := range map[string]string{
		"webhook-dispatcher": app.RoleWebhookDispatcher,
		"sync-worker":        app.RoleSyncWorker,
		"conflict-resolver":  app.RoleConflictResolver,
	} {
		out[binary] = workerRole{role, byRole[role]}
	}
	return out
}

type workerRole struct {
	role   string
	topics []string
}

// KEDA and kustomize types: only the fields these manifests use, decoded strictly
// so a misspelt field fails here instead of being ignored by the cluster.

type scaledObject struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		Triggers        []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef *struct {
				Name string `json:"name"`
			} `json:"authenticationRef,omitempty"`
		} `json:"triggers,omitempty"`
	} `json:"spec"`
}

type triggerAuthentication struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   metav1.ObjectMeta `json:"metadata"`
	Spec       struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
	Patches []struct {
		Path string `json:"path"`
	} `json:"patches,omitempty"`
}

// manifests is every object of one set of documents, decoded into its type.
type manifests struct {
	deployments  []*appsv1.Deployment
	services     []*corev1.Service
	configMaps   []*corev1.ConfigMap
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	ingresses    []*networkingv1.Ingress
	scaled       []*scaledObject
	triggerAuths []*triggerAuthentication
	kustomize    []*kustomization
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeDocuments decodes every YAML document of data strictly by apiVersion and kind;
// where names the source in error messages.
func decodeDocuments(where string, data []byte, into *manifests) error {
	var errs []error
	for i, doc := range docSeparator.Split(string(data), -1) {
		docWhere := fmt.Sprintf("%s (document %d)", where, i+1)
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			errs = append(errs, fmt.Errorf("%s: not YAML: %w", docWhere, err))
			continue
		}
		if head.APIVersion == "" && head.Kind == "" {
			continue // comments only
		}
		var err error
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 Deployment":
			err = strictAppend(doc, &into.deployments)
		case "v1 Service":
			err = strictAppend(doc, &into.services)
		case "v1 ConfigMap":
			err = strictAppend(doc, &into.configMaps)
		case "policy/v1 PodDisruptionBudget":
			err = strictAppend(doc, &into.pdbs)
		case "autoscaling/v2 HorizontalPodAutoscaler":
			err = strictAppend(doc, &into.hpas)
		case "networking.k8s.io/v1 Ingress":
			err = strictAppend(doc, &into.ingresses)
		case "keda.sh/v1alpha1 ScaledObject":
			err = strictAppend(doc, &into.scaled)
		case "keda.sh/v1alpha1 TriggerAuthentication":
			err = strictAppend(doc, &into.triggerAuths)
		case "kustomize.config.k8s.io/v1beta1 Kustomization":
			err = strictAppend(doc, &into.kustomize)
		default:
			err = fmt.Errorf("apiVersion %q kind %q is not one this test knows; add it to decodeDocuments", head.APIVersion, head.Kind)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", docWhere, err))
		}
	}
	return errors.Join(errs...)
}

func strictAppend[T any](doc string, list *[]*T) error {
	obj := new(T)
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		return err
	}
	*list = append(*list, obj)
	return nil
}

// yamlFiles lists the .yaml files under root, sorted.
func yamlFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listing %s: %v", root, err)
	}
	sort.Strings(files)
	return files
}

func decodeDir(t *testing.T, dir string) *manifests {
	t.Helper()
	m := &manifests{}
	for _, f := range yamlFiles(t, dir) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeDocuments(f, data, m); err != nil {
			t.Errorf("%v", err)
		}
	}
	return m
}

func TestManifests_DecodeStrictlyIntoTheirKubernetesTypes(t *testing.T) {
	files := yamlFiles(t, manifestsDir)
	if len(files) == 0 {
		t.Fatalf("no YAML under deploy/%s", manifestsDir)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := decodeDocuments(f, data, &manifests{}); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestKustomizations_ListEveryFileOfTheirFolder(t *testing.T) {
	var dirs []string
	for _, f := range yamlFiles(t, manifestsDir) {
		if filepath.Base(f) == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(f))
		}
	}
	if len(dirs) < 3 {
		t.Fatalf("want kustomizations in base, overlays/dev and overlays/prod, found %v", dirs)
	}
	for _, f := range yamlFiles(t, manifestsDir) {
		if !slices.Contains(dirs, filepath.Dir(f)) {
			t.Errorf("%s is in a folder without kustomization.yaml: kustomize never applies it", f)
		}
	}
	for _, dir := range dirs {
		m := decodeDir(t, filepath.Join(dir, "kustomization.yaml"))
		if len(m.kustomize) != 1 {
			t.Fatalf("%s/kustomization.yaml: want one Kustomization document", dir)
		}
		k := m.kustomize[0]
		listed := map[string]bool{}
		for _, r := range k.Resources {
			p := filepath.Join(dir, r)
			info, err := os.Stat(p)
			switch {
			case err != nil:
				t.Errorf("%s/kustomization.yaml lists %q, which does not exist", dir, r)
			case info.IsDir():
				if _, err := os.Stat(filepath.Join(p, "kustomization.yaml")); err != nil {
					t.Errorf("%s/kustomization.yaml lists folder %q, which has no kustomization.yaml", dir, r)
				}
			default:
				listed[filepath.Base(r)] = true
			}
		}
		for _, p := range k.Patches {
			if _, err := os.Stat(filepath.Join(dir, p.Path)); err != nil {
				t.Errorf("%s/kustomization.yaml patches with %q, which does not exist", dir, p.Path)
			}
			listed[filepath.Base(p.Path)] = true
		}
		entries, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			name := e.Name()
			if e.IsDir() || name == "kustomization.yaml" || !strings.HasSuffix(name, ".yaml") {
				continue
			}
			if !listed[name] {
				t.Errorf("%s/%s is not listed in %s/kustomization.yaml (resources or patches)", dir, name, dir)
			}
		}
	}
}

func TestBase_RunsTheFleet(t *testing.T) {
	m := decodeDir(t, baseDir)
	checkFleet(t, m)

	// The base runs two schedulers; checkFleet only asks for at least one.
	for _, d := range m.deployments {
		if d.Name == "scheduler" && (d.Spec.Replicas == nil || *d.Spec.Replicas != 2) {
			t.Errorf("base Deployment scheduler: want 2 replicas (several are safe, one is a single point of failure)")
		}
	}
}

// TestOverlays_RenderTheFleet builds each overlay the way an operator applies it
// (kubectl kustomize) and checks the result like the base.
func TestOverlays_RenderTheFleet(t *testing.T) {
	build := kustomizeCommand(t)
	for _, overlay := range []string{"dev", "prod"} {
		t.Run(overlay, func(t *testing.T) {
			dir := filepath.Join(manifestsDir, "overlays", overlay)
			args := append(slices.Clone(build[1:]), dir)
			var stderr bytes.Buffer
			cmd := exec.Command(build[0], args...)
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s %s: %v\n%s", build[0], strings.Join(args, " "), err, stderr.String())
			}
			m := &manifests{}
			if err := decodeDocuments("rendered "+dir, out, m); err != nil {
				t.Fatalf("%v", err)
			}
			checkFleet(t, m)
		})
	}
}

// kustomizeCommand finds kubectl (kubectl kustomize) or a standalone kustomize.
func kustomizeCommand(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("kubectl"); err == nil {
		return []string{p, "kustomize"}
	}
	if p, err := exec.LookPath("kustomize"); err == nil {
		return []string{p, "build"}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("neither kubectl nor kustomize is on PATH: the overlays cannot be rendered")
	}
	t.Skip("neither kubectl nor kustomize is on PATH; install kubectl (https://kubernetes.io/docs/tasks/tools/) to render the overlays")
	return nil
}

// checkFleet checks one complete set of objects (the base, or an overlay rendered).
func checkFleet(t *testing.T, m *manifests) {
	t.Helper()

	if len(m.configMaps) != 1 {
		t.Fatalf("want one ConfigMap (the fleet's configuration), found %d", len(m.configMaps))
	}
	cm := m.configMaps[0]
	adminPort := addrPort(t, cm, "IM_HTTP_ADMIN_ADDR")
	apiPort := addrPort(t, cm, "IM_HTTP_API_ADDR")
	for _, secret := range []string{"IM_STORE_COSMOS_KEY", "IM_BROKER_AMQP_URL", "IM_SECRETS_ENCRYPTIONKEY", "IM_AUTH_STATICKEYS"} {
		if _, ok := cm.Data[secret]; ok {
			t.Errorf("ConfigMap %s holds %s, a secret: reference it from the Secret %s instead", cm.Name, secret, secretName)
		}
	}

	deployments := map[string]*appsv1.Deployment{}
	for _, d := range m.deployments {
		deployments[d.Name] = d
	}
	var names []string
	for n := range deployments {
		names = append(names, n)
	}
	sort.Strings(names)
	want := slices.Sorted(slices.Values(binaries))
	if !slices.Equal(names, want) {
		t.Fatalf("Deployments %v, want one per binary %v", names, want)
	}

	autoscaled := map[string]bool{}
	for _, h := range m.hpas {
		autoscaled[h.Spec.ScaleTargetRef.Name] = true
	}
	for _, s := range m.scaled {
		autoscaled[s.Spec.ScaleTargetRef.Name] = true
	}

	var cfgs = map[string]*config.Config{}
	for _, name := range binaries {
		d := deployments[name]
		cfgs[name] = checkDeployment(t, d, cm, adminPort, apiPort, autoscaled[name])
		checkPDB(t, d, m.pdbs)
	}

	checkAPI(t, deployments["api"], m)
	checkWorkers(t, m, cfgs)

	for name := range deployments {
		if _, worker := workerRoles()[name]; !worker && name != "api" && autoscaled[name] {
			t.Errorf("Deployment %s is autoscaled; only the api (CPU) and the workers (queue length) are", name)
		}
	}
}

// addrPort reads the port of a listen address (":9090") from the ConfigMap.
func addrPort(t *testing.T, cm *corev1.ConfigMap, key string) int32 {
	t.Helper()
	addr, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s: the probes' port must match it, so set it explicitly", cm.Name, key)
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("ConfigMap %s: %s=%q is not host:port: %v", cm.Name, key, addr, err)
	}
	n, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatalf("ConfigMap %s: %s=%q has no numeric port", cm.Name, key, addr)
	}
	return int32(n)
}

func checkDeployment(t *testing.T, d *appsv1.Deployment, cm *corev1.ConfigMap, adminPort, apiPort int32, autoscaled bool) *config.Config {
	t.Helper()
	name := d.Name
	pod := d.Spec.Template.Spec

	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Deployment %s: its selector does not select its own pod template", name)
	}
	if autoscaled && d.Spec.Replicas != nil {
		t.Errorf("Deployment %s sets replicas although an autoscaler owns them: every apply would reset the count", name)
	}
	if !autoscaled && (d.Spec.Replicas == nil || *d.Spec.Replicas < 1) {
		t.Errorf("Deployment %s: not autoscaled, so it needs replicas >= 1", name)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < minGracePeriod {
		t.Errorf("Deployment %s: terminationGracePeriodSeconds must be at least %d (HTTP drain then router close, docs/operations.md)", name, minGracePeriod)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("Deployment %s: want one container, found %d", name, len(pod.Containers))
	}
	c := pod.Containers[0]

	if want := "/usr/local/bin/" + name; len(c.Command) == 0 || c.Command[0] != want {
		t.Errorf("Deployment %s: command %v, want [%s] (the image's ENTRYPOINT is standalone)", name, c.Command, want)
	}
	if _, err := os.Stat(filepath.Join("..", "cmd", name)); err != nil {
		t.Errorf("Deployment %s runs a binary with no cmd/%s in the repository", name, name)
	}
	if c.Image == "" {
		t.Errorf("Deployment %s: no image", name)
	}

	ports := map[string]int32{}
	var numbers []int32
	for _, p := range c.Ports {
		if p.Name != "" {
			ports[p.Name] = p.ContainerPort
		}
		numbers = append(numbers, p.ContainerPort)
	}
	if !slices.Contains(numbers, adminPort) {
		t.Errorf("Deployment %s declares ports %v, not the admin port %d of IM_HTTP_ADMIN_ADDR", name, numbers, adminPort)
	}
	if name == "api" && !slices.Contains(numbers, apiPort) {
		t.Errorf("Deployment api declares ports %v, not the API port %d of IM_HTTP_API_ADDR", numbers, apiPort)
	}

	probes := []struct {
		kind  string
		probe *corev1.Probe
		path  string
		must  bool
	}{
		{"livenessProbe", c.LivenessProbe, "/healthz", true},
		{"readinessProbe", c.ReadinessProbe, "/readyz", true},
		{"startupProbe", c.StartupProbe, "/healthz", false},
	}
	for _, p := range probes {
		if p.probe == nil {
			if p.must {
				t.Errorf("Deployment %s has no %s", name, p.kind)
			}
			continue
		}
		if p.probe.HTTPGet == nil {
			t.Errorf("Deployment %s: %s is not an HTTP GET", name, p.kind)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("Deployment %s: %s asks %q, want %q", name, p.kind, p.probe.HTTPGet.Path, p.path)
		}
		port, ok := resolvePort(p.probe.HTTPGet.Port, ports, numbers)
		switch {
		case !ok:
			t.Errorf("Deployment %s: %s port %s is not a declared containerPort", name, p.kind, p.probe.HTTPGet.Port.String())
		case port != adminPort:
			t.Errorf("Deployment %s: %s on port %d, want the admin port %d (every binary serves the probes there)", name, p.kind, port, adminPort)
		}
	}

	checkSecurity(t, name, pod, c)

	for _, list := range []corev1.ResourceList{c.Resources.Requests, c.Resources.Limits} {
		for r := range list {
			if r != corev1.ResourceCPU && r != corev1.ResourceMemory && r != corev1.ResourceEphemeralStorage {
				t.Errorf("Deployment %s: resource %q is not cpu, memory or ephemeral-storage (misspelt?)", name, r)
			}
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.Resources.Requests[r]
		limit, hasLimit := c.Resources.Limits[r]
		switch {
		case !hasReq || req.IsZero():
			t.Errorf("Deployment %s: no %s request", name, r)
		case !hasLimit || limit.IsZero():
			t.Errorf("Deployment %s: no %s limit", name, r)
		case req.Cmp(limit) > 0:
			t.Errorf("Deployment %s: %s request %s is above its limit %s", name, r, req.String(), limit.String())
		}
	}

	checkGoMemory(t, name, c)
	return checkEnv(t, name, c, cm)
}

// checkGoMemory holds a container's collector settings to its memory limit:
// a GOGC above the default needs a GOMEMLIMIT (or the heap grows with it
// until the container is killed), and a GOMEMLIMIT must sit below the limit,
// with room for what the Go runtime does not count, yet near enough that the
// collector does not run hard long before memory is short.
func checkGoMemory(t *testing.T, name string, c corev1.Container) {
	t.Helper()
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	gogc, hasGOGC := env["GOGC"]
	memLimit, hasMemLimit := env["GOMEMLIMIT"]
	if hasGOGC {
		n, err := strconv.Atoi(gogc)
		switch {
		case gogc != "off" && (err != nil || n <= 0):
			t.Errorf("Deployment %s: GOGC %q is not off or a positive percentage", name, gogc)
		case (gogc == "off" || n > 100) && !hasMemLimit:
			t.Errorf("Deployment %s: GOGC %s without GOMEMLIMIT lets the heap grow past the container's memory limit", name, gogc)
		}
	}
	if !hasMemLimit {
		return
	}
	soft, err := parseGoMemLimit(memLimit)
	if err != nil {
		t.Errorf("Deployment %s: GOMEMLIMIT: %v", name, err)
		return
	}
	limit, ok := c.Resources.Limits[corev1.ResourceMemory]
	if !ok {
		t.Errorf("Deployment %s: GOMEMLIMIT %s without a memory limit to keep it under", name, memLimit)
		return
	}
	if ratio := float64(soft) / float64(limit.Value()); ratio < 0.75 || ratio > 0.95 {
		t.Errorf("Deployment %s: GOMEMLIMIT %s is %.0f %% of the memory limit %s, want 75-95 %%", name, memLimit, 100*ratio, limit.String())
	}
}

// parseGoMemLimit reads GOMEMLIMIT as the Go runtime does: a byte count with
// an optional unit (B, KiB, MiB, GiB, TiB).
func parseGoMemLimit(s string) (int64, error) {
	units := []struct {
		suffix string
		shift  uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}
	shift := uint(0)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, shift = rest, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a byte count with an optional B, KiB, MiB, GiB or TiB", s)
	}
	return n << shift, nil
}

func resolvePort(p intstr.IntOrString, named map[string]int32, numbers []int32) (int32, bool) {
	if p.Type == intstr.String {
		n, ok := named[p.StrVal]
		return n, ok
	}
	return p.IntVal, slices.Contains(numbers, p.IntVal)
}

func checkSecurity(t *testing.T, name string, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	nonRoot := false
	if pod.SecurityContext != nil && pod.SecurityContext.RunAsNonRoot != nil {
		nonRoot = *pod.SecurityContext.RunAsNonRoot
	}
	sc := c.SecurityContext
	if sc != nil && sc.RunAsNonRoot != nil {
		nonRoot = *sc.RunAsNonRoot
	}
	if !nonRoot {
		t.Errorf("Deployment %s: runAsNonRoot is not true", name)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("Deployment %s: readOnlyRootFilesystem is not true", name)
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("Deployment %s: allowPrivilegeEscalation is not false", name)
	}
}

// checkEnv checks where the container's environment comes from and that it loads as
// a valid fleet configuration for the binary; it returns that configuration.
func checkEnv(t *testing.T, name string, c corev1.Container, cm *corev1.ConfigMap) *config.Config {
	t.Helper()
	environ := []string{}
	fromConfigMap := false
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == cm.Name:
			fromConfigMap = true
			for k, v := range cm.Data {
				environ = append(environ, ef.Prefix+k+"="+v)
			}
		case ef.ConfigMapRef != nil:
			t.Errorf("Deployment %s: envFrom ConfigMap %q does not exist (want %q)", name, ef.ConfigMapRef.Name, cm.Name)
		case ef.SecretRef != nil:
			t.Errorf("Deployment %s: envFrom Secret %q; reference each secret key with secretKeyRef instead", name, ef.SecretRef.Name)
		}
	}
	if !fromConfigMap {
		t.Errorf("Deployment %s does not take its environment from ConfigMap %s", name, cm.Name)
	}

	fromSecret := map[string]bool{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != secretName {
				t.Errorf("Deployment %s: %s comes from Secret %q, want the one Secret %q", name, e.Name, ref.Name, secretName)
			}
			fromSecret[e.Name] = true
			// A placeholder stands for the secret's value when loading the configuration.
			environ = append(environ, e.Name+"="+placeholderSecrets()[e.Name])
			continue
		}
		if e.ValueFrom == nil {
			environ = append(environ, e.Name+"="+e.Value)
		}
	}
	for _, required := range []string{"IM_STORE_COSMOS_KEY", "IM_BROKER_AMQP_URL"} {
		if !fromSecret[required] {
			t.Errorf("Deployment %s: %s must come from Secret %s (secretKeyRef)", name, required, secretName)
		}
	}
	for _, e := range c.Env {
		if _, secret := placeholderSecrets()[e.Name]; secret && !fromSecret[e.Name] {
			t.Errorf("Deployment %s: %s is a secret and must come from Secret %s, not a literal", name, e.Name, secretName)
		}
	}

	cfg, err := config.Load(config.LoadOptions{Service: name, DefaultProfile: config.ProfileFleet, Environ: environ})
	if err != nil {
		t.Errorf("Deployment %s: its environment does not load as a configuration: %v", name, err)
		return nil
	}
	if cfg.Profile != config.ProfileFleet {
		t.Errorf("Deployment %s runs profile %q, want %q", name, cfg.Profile, config.ProfileFleet)
	}
	if ignored, ok := cfg.LogSummary()["ignoredEnv"]; ok {
		t.Errorf("Deployment %s: variables that name no configuration key (misspelt?): %v", name, ignored)
	}
	return cfg
}

// placeholderSecrets stands for the Secret's values: what the process needs to load,
// never real credentials.
func placeholderSecrets() map[string]string {
	return map[string]string{
		"IM_STORE_COSMOS_KEY":      "cGxhY2Vob2xkZXIta2V5LWZvci10aGUtZGVwbG95LXRlc3Q=",
		"IM_BROKER_AMQP_URL":       "amqp://user:password@rabbitmq:5672/",
		"IM_SECRETS_ENCRYPTIONKEY": "",
		"IM_AUTH_STATICKEYS":       "",
	}
}

// checkPDB wants exactly one PodDisruptionBudget selecting d's pods, that lets a
// drain evict at least one pod and keeps the rest.
func checkPDB(t *testing.T, d *appsv1.Deployment, pdbs []*policyv1.PodDisruptionBudget) {
	t.Helper()
	podLabels := labels.Set(d.Spec.Template.Labels)
	var found []*policyv1.PodDisruptionBudget
	for _, p := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil {
			t.Errorf("PodDisruptionBudget %s: selector: %v", p.Name, err)
			continue
		}
		if !sel.Empty() && sel.Matches(podLabels) {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		t.Errorf("Deployment %s: want one PodDisruptionBudget selecting its pods, found %d", d.Name, len(found))
		return
	}
	p := found[0]
	if p.Spec.MaxUnavailable == nil && p.Spec.MinAvailable == nil {
		t.Errorf("PodDisruptionBudget %s sets neither maxUnavailable nor minAvailable", p.Name)
	}
}

func checkAPI(t *testing.T, api *appsv1.Deployment, m *manifests) {
	t.Helper()
	podLabels := labels.Set(api.Spec.Template.Labels)
	named := map[string]bool{}
	for _, p := range api.Spec.Template.Spec.Containers[0].Ports {
		named[p.Name] = true
	}

	services := map[string]*corev1.Service{}
	apiServed := false
	for _, s := range m.services {
		services[s.Name] = s
		if len(s.Spec.Selector) == 0 || !labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			continue
		}
		for _, p := range s.Spec.Ports {
			if p.TargetPort.Type == intstr.String && !named[p.TargetPort.StrVal] {
				t.Errorf("Service %s: targetPort %q is not a port of the api container", s.Name, p.TargetPort.StrVal)
			}
			if p.Name == "http" {
				apiServed = true
			}
		}
	}
	if !apiServed {
		t.Errorf("no Service with an http port selects the api pods")
	}

	for _, ing := range m.ingresses {
		for _, r := range ing.Spec.Rules {
			if r.HTTP == nil {
				continue
			}
			for _, p := range r.HTTP.Paths {
				b := p.Backend.Service
				if b == nil {
					t.Errorf("Ingress %s %s: no service backend", ing.Name, p.Path)
					continue
				}
				s, ok := services[b.Name]
				if !ok {
					t.Errorf("Ingress %s %s: Service %q does not exist", ing.Name, p.Path, b.Name)
					continue
				}
				if !slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool {
					return (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number)
				}) {
					t.Errorf("Ingress %s %s: Service %s has no port %+v", ing.Name, p.Path, b.Name, b.Port)
				}
				if p.Path == "/" || strings.HasPrefix(p.Path, "/metrics") {
					t.Errorf("Ingress %s routes %q: that exposes /metrics (the API port serves it); route /api and /openapi.json only", ing.Name, p.Path)
				}
			}
		}
	}

	var cpuHPA bool
	for _, h := range m.hpas {
		if h.Spec.ScaleTargetRef.Kind != "Deployment" || h.Spec.ScaleTargetRef.Name != "api" {
			continue
		}
		for _, metric := range h.Spec.Metrics {
			if metric.Type == autoscalingv2.ResourceMetricSourceType && metric.Resource != nil && metric.Resource.Name == corev1.ResourceCPU {
				cpuHPA = true
			}
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || *h.Spec.MinReplicas > h.Spec.MaxReplicas {
			t.Errorf("HorizontalPodAutoscaler %s: minReplicas must be between 1 and maxReplicas %d", h.Name, h.Spec.MaxReplicas)
		}
	}
	if !cpuHPA {
		t.Errorf("no HorizontalPodAutoscaler scales Deployment api on CPU")
	}
}

// checkWorkers wants a ScaledObject per worker on its role's queues, named as the
// code names them (messaging.Config.QueueName with the configured exchange prefix).
func checkWorkers(t *testing.T, m *manifests, cfgs map[string]*config.Config) {
	t.Helper()
	auths := map[string]*triggerAuthentication{}
	for _, a := range m.triggerAuths {
		auths[a.Metadata.Name] = a
		var host bool
		for _, ref := range a.Spec.SecretTargetRef {
			if ref.Name != secretName {
				t.Errorf("TriggerAuthentication %s reads Secret %q, want %q", a.Metadata.Name, ref.Name, secretName)
			}
			if ref.Parameter == "host" && ref.Key == "broker.amqp.url" {
				host = true
			}
		}
		if !host {
			t.Errorf("TriggerAuthentication %s: want parameter host from key broker.amqp.url (the workers' own AMQP URL)", a.Metadata.Name)
		}
	}

	byTarget := map[string][]*scaledObject{}
	for _, s := range m.scaled {
		byTarget[s.Spec.ScaleTargetRef.Name] = append(byTarget[s.Spec.ScaleTargetRef.Name], s)
	}
	for worker, wr := range workerRoles() {
		cfg := cfgs[worker]
		if cfg == nil {
			continue // its configuration did not load; reported already
		}
		mc := messaging.Config{QueuePrefix: cfg.Broker.AMQP.ExchangePrefix + "."}
		queues := map[string]bool{}
		for _, topic := range wr.topics {
			queues[mc.QueueName(topic, wr.role)] = true
		}
		mainQueue := mc.QueueName(wr.topics[0], wr.role)

		sos := byTarget[worker]
		if len(sos) != 1 {
			t.Errorf("worker %s: want one ScaledObject targeting it, found %d", worker, len(sos))
			continue
		}
		so := sos[0]
		if k := so.Spec.ScaleTargetRef.Kind; k != "" && k != "Deployment" {
			t.Errorf("ScaledObject %s targets a %s, want the Deployment", so.Metadata.Name, k)
		}
		minR, maxR := so.Spec.MinReplicaCount, so.Spec.MaxReplicaCount
		if minR == nil || maxR == nil || *minR < 1 || *minR > *maxR {
			t.Errorf("ScaledObject %s: want 1 <= minReplicaCount <= maxReplicaCount (a worker also declares the topology and its delay queues have no consumer to wake it)", so.Metadata.Name)
		}
		seen := map[string]bool{}
		for i, tr := range so.Spec.Triggers {
			where := fmt.Sprintf("ScaledObject %s trigger %d", so.Metadata.Name, i+1)
			if tr.Type != "rabbitmq" {
				t.Errorf("%s: type %q, want rabbitmq", where, tr.Type)
				continue
			}
			q := tr.Metadata["queueName"]
			if !queues[q] {
				t.Errorf("%s: queueName %q is not a queue of role %s; the code names them %v", where, q, wr.role, slices.Sorted(maps.Keys(queues)))
			}
			seen[q] = true
			if tr.Metadata["mode"] != "QueueLength" {
				t.Errorf("%s: mode %q, want QueueLength", where, tr.Metadata["mode"])
			}
			if v, err := strconv.Atoi(tr.Metadata["value"]); err != nil || v < 1 {
				t.Errorf("%s: value %q, want a positive number of messages per replica", where, tr.Metadata["value"])
			}
			if tr.Metadata["host"] != "" || tr.Metadata["hostFromEnv"] != "" {
				t.Errorf("%s: the broker URL holds a password; take it from the TriggerAuthentication, not metadata", where)
			}
			if tr.AuthenticationRef == nil || auths[tr.AuthenticationRef.Name] == nil {
				t.Errorf("%s: authenticationRef must name a TriggerAuthentication of these manifests", where)
			}
		}
		if !seen[mainQueue] {
			t.Errorf("ScaledObject %s does not watch the role's main queue %s", so.Metadata.Name, mainQueue)
		}
	}
}
