package app_test

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// Operators and Kubernetes probe every process on its admin port.
func TestProcess_AdminPortServesHealthReadinessAndMetrics(t *testing.T) {
	s := start(t, environ(t))
	for path, want := range map[string]string{
		"/healthz": `"alive"`,
		"/readyz":  `"ready"`,
		"/metrics": "go_goroutines",
	} {
		resp, err := http.Get(s.adminURL + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s on the admin port: %d %q, want 200 containing %s", path, resp.StatusCode, body, want)
		}
	}
}
