package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPI_DocumentListsExactlyTheRegisteredRoutes compares /openapi.json
// with what the mux really serves, both ways.
func TestOpenAPI_DocumentListsExactlyTheRegisteredRoutes(t *testing.T) {
	h := newHarness(t)
	var doc struct {
		OpenAPI    string                               `json:"openapi"`
		Paths      map[string]map[string]map[string]any `json:"paths"`
		Components struct {
			Schemas map[string]any `json:"schemas"`
		} `json:"components"`
	}
	h.must(200, "GET", "/openapi.json", "", nil).json(t, &doc)
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi version %q, want 3.1.0", doc.OpenAPI)
	}

	var documented []string
	for path, ops := range doc.Paths {
		for method, op := range ops {
			pattern := strings.ToUpper(method) + " " + path
			documented = append(documented, pattern)
			// The mux must serve this exact pattern.
			req := httptest.NewRequest(strings.ToUpper(method), concretePath(route{path: path}), nil)
			if _, got := h.api.mux.Handler(req); got != pattern {
				t.Errorf("documented %s is served by %q", pattern, got)
			}
			if op["summary"] == "" || op["operationId"] == "" || op["responses"] == nil {
				t.Errorf("%s lacks summary, operationId or responses", pattern)
			}
		}
	}
	registered := slices.Clone(h.api.patterns)
	slices.Sort(documented)
	slices.Sort(registered)
	if !slices.Equal(documented, registered) {
		for _, p := range registered {
			if !slices.Contains(documented, p) {
				t.Errorf("registered but not documented: %s", p)
			}
		}
		for _, p := range documented {
			if !slices.Contains(registered, p) {
				t.Errorf("documented but not registered: %s", p)
			}
		}
	}
	if len(registered) < 40 {
		t.Errorf("only %d routes registered", len(registered))
	}

	// Every $ref resolves.
	raw := h.must(200, "GET", "/openapi.json", "", nil).body
	for _, part := range strings.Split(raw, `"$ref": "#/components/schemas/`)[1:] {
		name, _, _ := strings.Cut(part, `"`)
		if _, ok := doc.Components.Schemas[name]; !ok {
			t.Errorf("$ref to undefined schema %q", name)
		}
	}
	// Request schemas describe the fields the decoder accepts.
	var webhook struct {
		Properties map[string]any `json:"properties"`
	}
	b, _ := json.Marshal(doc.Components.Schemas["CreateWebhookRequest"])
	_ = json.Unmarshal(b, &webhook)
	for _, f := range []string{"url", "eventTypes", "description", "secret", "rateLimitPerSecond"} {
		if _, ok := webhook.Properties[f]; !ok {
			t.Errorf("CreateWebhookRequest schema lacks %q", f)
		}
	}
}

func TestProbes_HealthReadinessAndMetrics(t *testing.T) {
	brokerDown := errors.New("dial amqp://guest:hunter2@broker: refused")
	var broken bool
	h := newHarness(t, func(d *Deps, _ *Options) {
		d.Readiness = []ReadinessCheck{{Name: "broker", Check: func(context.Context) error {
			if broken {
				return brokerDown
			}
			return nil
		}}}
	})
	h.must(200, "GET", "/healthz", "", nil)
	var st status
	h.must(200, "GET", "/readyz", "", nil).json(t, &st)
	if st.Checks["store"] != "ok" || st.Checks["broker"] != "ok" {
		t.Errorf("readiness checks: %+v", st.Checks)
	}
	broken = true
	r := h.must(503, "GET", "/readyz", "", nil)
	if p := r.problem(t); !strings.Contains(p.Detail, "broker") || strings.Contains(r.body, "hunter2") {
		t.Errorf("not-ready answer should name the broker without its error text: %s", r.body)
	}

	h.must(200, "GET", v1+"/webhooks", tokViewerA, nil)
	m := h.must(200, "GET", "/metrics", "", nil).body
	for _, want := range []string{
		`http_requests_total{code="200",method="GET",route="/api/v1/webhooks"} 1`,
		`http_requests_total{code="503",method="GET",route="/readyz"} 1`,
		`http_request_duration_seconds_bucket{method="GET",route="/api/v1/webhooks"`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// One log line per request with the request's fields.
	var line map[string]any
	logs := strings.Split(strings.TrimSpace(h.logs.String()), "\n")
	for _, l := range logs {
		if strings.Contains(l, `"/api/v1/webhooks"`) {
			_ = json.Unmarshal([]byte(l), &line)
		}
	}
	for _, f := range []string{"tenantId", "correlationId", "route", "status", "duration"} {
		if _, ok := line[f]; !ok {
			t.Errorf("request log line lacks %q: %v", f, line)
		}
	}
}

func TestNew_RefusesMissingDependencies(t *testing.T) {
	if _, err := New(Deps{}, Options{}); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Errorf("New with no dependencies: %v", err)
	}
}
