package httpapi

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
)

// postIngress sends a raw post with the given headers and no bearer token.
func (h *harness) postIngress(integrationID string, body []byte, headers map[string]string) response {
	h.t.Helper()
	req := httptest.NewRequest("POST", "/ingress/"+integrationID, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer should-not-travel")
	req.Header.Set("Connection", "keep-alive, X-Hop")
	req.Header.Set("X-Hop", "hop-by-hop value")
	req.Header.Set("X-Delivery-Id", "d-1")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, req)
	return response{ResponseRecorder: rec, body: rec.Body.String()}
}

func TestIngress_GoodSignatureIsPublishedWithTheRawBody(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	sentBefore := h.sender.count()
	body := []byte(`{"event":"contact.updated",  "id": 7}`) // odd spacing: must travel byte for byte
	sig := ingressSpec.Sign([]byte(a.ingressSecret), body, h.clock())

	r := h.postIngress(a.integration, body, sig)
	if r.Code != 202 {
		t.Fatalf("signed post answered %d, want 202: %s", r.Code, r.body)
	}
	got := h.sender.all()[sentBefore:]
	if len(got) != 1 {
		t.Fatalf("%d messages published, want 1", len(got))
	}
	msg, ok := got[0].msg.(domain.IngressReceived)
	if !ok {
		t.Fatalf("published %T, want domain.IngressReceived", got[0].msg)
	}
	if got[0].tenantID != tenantA || msg.TenantID != tenantA || msg.IntegrationID != a.integration {
		t.Errorf("published for tenant %q/%q integration %q, want %s/%s", got[0].tenantID, msg.TenantID, msg.IntegrationID, tenantA, a.integration)
	}
	if !bytes.Equal(msg.Body, body) {
		t.Errorf("body changed on the way:\n got %q\nwant %q", msg.Body, body)
	}
	if msg.Headers["X-Signature"] == "" || msg.Headers["X-Delivery-Id"] != "d-1" {
		t.Errorf("end-to-end headers missing: %v", msg.Headers)
	}
	for _, h := range []string{"Authorization", "Connection", "X-Hop"} {
		if _, ok := msg.Headers[h]; ok {
			t.Errorf("header %s was forwarded: %v", h, msg.Headers)
		}
	}
	var acc accepted
	r.json(t, &acc)
	if acc.ID != msg.IngressID {
		t.Errorf("answered id %q, published %q", acc.ID, msg.IngressID)
	}
}

func TestIngress_BadSignaturesAreRefusedAndNothingIsPublished(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a, b := w.tenants[tenantA], w.tenants[tenantB]
	body := []byte(`{"event":"contact.updated"}`)
	now := h.clock()
	good := ingressSpec.Sign([]byte(a.ingressSecret), body, now)
	tampered := ingressSpec.Sign([]byte(a.ingressSecret), []byte(`{"event":"contact.deleted"}`), now)

	cases := []struct {
		name    string
		headers map[string]string
	}{
		{"missing signature", map[string]string{"X-Timestamp": good["X-Timestamp"]}},
		{"missing timestamp", map[string]string{"X-Signature": good["X-Signature"]}},
		{"signature of another body", tampered},
		{"another tenant's secret", ingressSpec.Sign([]byte(b.ingressSecret), body, now)},
		{"stale timestamp", ingressSpec.Sign([]byte(a.ingressSecret), body, now.Add(-10*time.Minute))},
		{"future timestamp", ingressSpec.Sign([]byte(a.ingressSecret), body, now.Add(10*time.Minute))},
		{"garbage signature", map[string]string{"X-Signature": "sha256=zz", "X-Timestamp": good["X-Timestamp"]}},
		{"no prefix", map[string]string{"X-Signature": strings.TrimPrefix(good["X-Signature"], "sha256="), "X-Timestamp": good["X-Timestamp"]}},
	}
	before := h.sender.count()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.postIngress(a.integration, body, tc.headers)
			if r.Code != 401 {
				t.Fatalf("answered %d, want 401: %s", r.Code, r.body)
			}
			r.problem(t)
		})
	}
	if n := h.sender.count() - before; n != 0 {
		t.Errorf("refused posts published %d messages", n)
	}
	if strings.Contains(h.logs.String(), a.ingressSecret) {
		t.Errorf("the log holds the ingress secret")
	}
}

func TestIngress_UnknownOrInactiveIntegration(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	body := []byte(`{}`)
	sig := ingressSpec.Sign([]byte(a.ingressSecret), body, h.clock())

	if r := h.postIngress("int_doesnotexist", body, sig); r.Code != 404 {
		t.Errorf("unknown integration answered %d, want 404: %s", r.Code, r.body)
	}
	h.must(200, "PATCH", v1+"/integrations/"+a.integration, tokAdminA, map[string]any{"status": "paused"})
	if r := h.postIngress(a.integration, body, sig); r.Code != 409 {
		t.Errorf("paused integration answered %d, want 409: %s", r.Code, r.body)
	}
	if n := h.sender.count(); n != 0 {
		t.Errorf("%d messages published for unknown or paused integrations", n)
	}
}

func TestIngress_BodyOverTheLimitIs413(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	body := bytes.Repeat([]byte("x"), 65<<10)
	r := h.postIngress(w.tenants[tenantA].integration, body, nil)
	if r.Code != 413 {
		t.Fatalf("oversized post answered %d, want 413", r.Code)
	}
}
