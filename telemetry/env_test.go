package telemetry_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/telemetry"
)

// cleanEnv blanks every OTEL_* variable FromEnv or the SDK reads, so the
// machine's environment does not leak into a test.
func cleanEnv(t *testing.T) {
	for _, k := range []string{
		"OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
		"OTEL_PROPAGATORS", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_EXPORTER_OTLP_HEADERS",
		"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_BSP_SCHEDULE_DELAY",
	} {
		t.Setenv(k, "")
	}
}

func TestTracing_FromEnvIsOffByDefault(t *testing.T) {
	cleanEnv(t)
	tr, err := telemetry.FromEnv(context.Background(), "api", zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Enabled() {
		t.Error("tracing is on with no OTEL_* variable set")
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
	t.Setenv("OTEL_SDK_DISABLED", "true")
	if tr, err = telemetry.FromEnv(context.Background(), "api", zerolog.New(io.Discard)); err != nil || tr.Enabled() {
		t.Errorf("OTEL_SDK_DISABLED=true: enabled %v, err %v; want off", tr.Enabled(), err)
	}
	t.Setenv("OTEL_SDK_DISABLED", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	if tr, err = telemetry.FromEnv(context.Background(), "api", zerolog.New(io.Discard)); err != nil || tr.Enabled() {
		t.Errorf("OTEL_TRACES_EXPORTER=none: enabled %v, err %v; want off", tr.Enabled(), err)
	}
}

// A value the process cannot use stops start-up with the variable named.
func TestTracing_FromEnvRefusesBadValuesNamingTheVariable(t *testing.T) {
	cases := []struct {
		key string
		env map[string]string
	}{
		{"OTEL_TRACES_EXPORTER", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}},
		{"OTEL_TRACES_SAMPLER", map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "jaeger_remote"}},
		{"OTEL_TRACES_SAMPLER_ARG", map[string]string{"OTEL_TRACES_EXPORTER": "console", "OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "1.5"}},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}},
		{"OTEL_PROPAGATORS", map[string]string{"OTEL_PROPAGATORS": "b3"}},
	}
	for _, c := range cases {
		t.Run(c.key, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			_, err := telemetry.FromEnv(context.Background(), "api", zerolog.New(io.Discard))
			if err == nil || !strings.HasPrefix(err.Error(), c.key+":") {
				t.Errorf("%v: error %v, want one starting with %q", c.env, err, c.key+":")
			}
		})
	}
}

// With an OTLP endpoint set, spans go to the collector over HTTP, and
// Shutdown flushes what the batcher still held (its delay is set to a
// minute here, so only the flush can deliver them).
func TestTracing_OTLPEndpointExportsAndShutdownFlushes(t *testing.T) {
	cleanEnv(t)
	var mu sync.Mutex
	var paths []string
	var bodies [][]byte
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		paths = append(paths, r.URL.Path)
		bodies = append(bodies, body)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(collector.Close)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_SERVICE_NAME", "im-under-test")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")

	tr, err := telemetry.FromEnv(context.Background(), "api", zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	if !tr.Enabled() {
		t.Fatal("an OTLP endpoint did not turn tracing on")
	}
	h := tr.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/api/v1/events", nil))
	mu.Lock()
	before := len(paths)
	mu.Unlock()
	if before != 0 {
		t.Fatalf("spans were exported before the flush (%d requests): the test proves nothing", before)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(paths) != 1 || paths[0] != "/v1/traces" {
		t.Fatalf("the collector got %v, want one POST to /v1/traces", paths)
	}
	if !bytes.Contains(bodies[0], []byte("im-under-test")) || !bytes.Contains(bodies[0], []byte("/api/v1/events")) {
		t.Errorf("the exported batch lacks the service name or the request's span")
	}
}
