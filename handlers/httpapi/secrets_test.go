package httpapi

import (
	"strings"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
)

// TestSecrets_NeverInReadsOrLogs creates every kind of secret, reads every
// route back, and greps the answers and the log for the secret values.
func TestSecrets_NeverInReadsOrLogs(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	var rotated secretRotated
	h.must(200, "POST", v1+"/webhooks/"+a.webhook+"/rotate-secret", tokAdminA, nil).json(t, &rotated)

	secrets := map[string]string{
		"webhook secret":         a.webhookSecret,
		"rotated webhook secret": rotated.Secret,
		"ingress secret":         a.ingressSecret,
		"credentials":            a.credentials,
	}
	for name, s := range secrets {
		if s == "" {
			t.Fatalf("the %s was never shown at creation", name)
		}
	}
	// The secret store holds them; the documents only refer to them.
	var wh domain.WebhookEndpoint
	h.must(200, "GET", v1+"/webhooks/"+a.webhook, tokAdminA, nil).json(t, &wh)
	if v, _ := h.secrets.value(tenantA, wh.SecretRef); v != rotated.Secret {
		t.Errorf("the webhook's secretRef does not lead to the current secret")
	}
	if v, _ := h.secrets.value(tenantA, wh.PreviousSecretRef); v != a.webhookSecret {
		t.Errorf("the webhook's previousSecretRef does not lead to the previous secret")
	}
	var conn domain.Connection
	h.must(200, "GET", v1+"/integrations/"+a.integration+"/connection", tokAdminA, nil).json(t, &conn)
	if v, _ := h.secrets.value(tenantA, conn.CredentialRef); !strings.Contains(v, a.credentials) {
		t.Errorf("the connection's credentialRef does not lead to the credentials")
	}

	for _, rt := range h.api.routes() {
		if rt.method != "GET" || rt.path == "/metrics" {
			continue
		}
		path := strings.NewReplacer(
			"{id}/connection", a.integration+"/connection",
			"integrations/{id}", "integrations/"+a.integration,
			"webhooks/{id}", "webhooks/"+a.webhook,
			"sync-tasks/{id}", "sync-tasks/"+a.syncTask,
			"conflicts/{id}", "conflicts/"+a.conflict,
			"executions/{id}", "executions/"+a.execution,
			"catalog/{id}", "catalog/"+w.catalogEntry,
			"providers/{id}", "providers/acme-crm",
			"{tenantId}", tenantA,
			"{catalogEntryId}", w.catalogEntry,
		).Replace(rt.path)
		token := tokAdminA
		if rt.access == accessPlatform {
			token = tokPlatform
		}
		r := h.do("GET", path, token, nil)
		for name, s := range secrets {
			if strings.Contains(r.body, s) {
				t.Errorf("GET %s shows the %s: %s", path, name, r.body)
			}
		}
	}
	logs := h.logs.String()
	if logs == "" {
		t.Fatal("nothing was logged")
	}
	for name, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the log holds the %s", name)
		}
	}
	for _, tok := range []string{tokAdminA, tokAdminB, tokViewerA, tokPlatform} {
		if strings.Contains(logs, tok) {
			t.Errorf("the log holds a bearer token")
		}
	}
}

func TestWebhooks_RotateKeepsThePreviousSecretForTheOverlapAndEnableClearsTheFailure(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	var before domain.WebhookEndpoint
	h.must(200, "GET", v1+"/webhooks/"+a.webhook, tokAdminA, nil).json(t, &before)

	var rotated secretRotated
	h.must(200, "POST", v1+"/webhooks/"+a.webhook+"/rotate-secret", tokAdminA, nil).json(t, &rotated)
	if !strings.HasPrefix(rotated.Secret, "whsec_") || rotated.Secret == a.webhookSecret {
		t.Fatalf("rotation returned %q", rotated.Secret)
	}
	var after domain.WebhookEndpoint
	h.must(200, "GET", v1+"/webhooks/"+a.webhook, tokAdminA, nil).json(t, &after)
	if after.PreviousSecretRef != before.SecretRef || after.SecretRef == before.SecretRef {
		t.Errorf("refs after rotation: current %q previous %q; before: current %q", after.SecretRef, after.PreviousSecretRef, before.SecretRef)
	}
	wantExpiry := h.clock().Add(time.Hour)
	if after.PreviousSecretExpiresAt == nil || !after.PreviousSecretExpiresAt.Equal(wantExpiry) || !rotated.PreviousSecretExpiresAt.Equal(wantExpiry) {
		t.Errorf("previous secret expires at %v (answer %v), want now + overlap = %v", after.PreviousSecretExpiresAt, rotated.PreviousSecretExpiresAt, wantExpiry)
	}

	// A second rotation drops the oldest secret from the store.
	h.must(200, "POST", v1+"/webhooks/"+a.webhook+"/rotate-secret", tokAdminA, map[string]any{"secret": "whsec_" + strings.Repeat("QUJD", 8)})
	if _, ok := h.secrets.value(tenantA, before.SecretRef); ok {
		t.Errorf("the secret two rotations ago is still stored")
	}

	// The dispatcher disabled the endpoint; enable brings it back.
	failing := h.clock()
	if _, _, err := h.api.webhooks.Update(t.Context(), tenantA, a.webhook, func(w *domain.WebhookEndpoint) error {
		w.Status, w.DisabledReason, w.FailingSince = domain.WebhookDisabled, "failed for 5 days", &failing
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var enabled domain.WebhookEndpoint
	h.must(200, "POST", v1+"/webhooks/"+a.webhook+"/enable", tokAdminA, nil).json(t, &enabled)
	if enabled.Status != domain.WebhookActive || enabled.DisabledReason != "" || enabled.FailingSince != nil {
		t.Errorf("after enable: status %q reason %q failingSince %v", enabled.Status, enabled.DisabledReason, enabled.FailingSince)
	}
}

func TestWebhooks_DeleteRemovesItsSecrets(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	var wh domain.WebhookEndpoint
	h.must(200, "GET", v1+"/webhooks/"+a.webhook, tokAdminA, nil).json(t, &wh)
	h.must(204, "DELETE", v1+"/webhooks/"+a.webhook, tokAdminA, nil)
	h.must(404, "GET", v1+"/webhooks/"+a.webhook, tokAdminA, nil)
	if _, ok := h.secrets.value(tenantA, wh.SecretRef); ok {
		t.Errorf("the deleted webhook's secret is still stored")
	}
}
