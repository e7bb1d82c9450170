package httpapi

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/castiel/integration-manager/domain"
)

func TestETag_IfMatchGuardsEveryChange(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	path := v1 + "/webhooks/" + a.webhook

	etag := h.must(200, "GET", path, tokAdminA, nil).Header().Get("ETag")
	if !strings.HasPrefix(etag, `"`) {
		t.Fatalf("ETag %q is not a quoted entity tag", etag)
	}
	r := h.must(412, "PATCH", path, tokAdminA, map[string]any{"description": "x"}, "If-Match", `"stale"`)
	if p := r.problem(t); p.Type != ProblemPrecondition {
		t.Errorf("problem type %q, want %q", p.Type, ProblemPrecondition)
	}
	r = h.must(200, "PATCH", path, tokAdminA, map[string]any{"description": "changed"}, "If-Match", etag)
	newTag := r.Header().Get("ETag")
	if newTag == "" || newTag == etag {
		t.Fatalf("a change kept ETag %q (new %q)", etag, newTag)
	}
	// The old version no longer matches anything.
	h.must(412, "PATCH", path, tokAdminA, map[string]any{"description": "again"}, "If-Match", etag)
	h.must(412, "DELETE", path, tokAdminA, nil, "If-Match", etag)
	h.must(412, "POST", path+"/rotate-secret", tokAdminA, nil, "If-Match", etag)
	h.must(200, "GET", path, tokAdminA, nil)
	h.must(204, "DELETE", path, tokAdminA, nil, "If-Match", newTag)

	// The same rule on other resources.
	st := v1 + "/sync-tasks/" + a.syncTask
	h.must(412, "PUT", st, tokAdminA, validSyncTask(a.integration), "If-Match", `"nope"`)
	stTag := h.must(200, "GET", st, tokAdminA, nil).Header().Get("ETag")
	h.must(200, "PUT", st, tokAdminA, validSyncTask(a.integration), "If-Match", stTag)
	h.must(412, "PUT", v1+"/providers/acme-crm", tokPlatform, testProvider(), "If-Match", `"nope"`)
	h.must(412, "PUT", v1+"/integrations/"+a.integration+"/connection", tokAdminA, map[string]any{"credentials": map[string]string{"k": "v"}}, "If-Match", `"nope"`)
	h.must(200, "PUT", v1+"/integrations/"+a.integration+"/connection", tokAdminA, map[string]any{"credentials": map[string]string{"k": "v"}}, "If-Match", "*")
}

func TestSyncTasks_RunIsRecordedAndEnqueued(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	r := h.must(202, "POST", v1+"/sync-tasks/"+a.syncTask+"/runs", tokAdminA, nil, HeaderCorrelationID, "corr-run-1")
	var acc runAccepted
	r.json(t, &acc)
	if r.Header().Get(HeaderCorrelationID) != "corr-run-1" {
		t.Errorf("correlation id not echoed: %q", r.Header().Get(HeaderCorrelationID))
	}
	var exec domain.Execution
	h.must(200, "GET", v1+"/executions/"+acc.ExecutionID, tokViewerA, nil).json(t, &exec)
	if exec.Kind != domain.ExecutionSyncRun || exec.Status != domain.ExecPending || exec.SyncTaskID != a.syncTask {
		t.Errorf("execution %+v, want a pending sync_run of %s", exec, a.syncTask)
	}
	sentMsgs := h.sender.all()
	last := sentMsgs[len(sentMsgs)-1]
	run, ok := last.msg.(domain.RunSync)
	if !ok || run.ExecutionID != acc.ExecutionID || run.Trigger != domain.TriggerAPI || run.TenantID != tenantA {
		t.Fatalf("sent %#v, want RunSync{trigger api} for execution %s", last.msg, acc.ExecutionID)
	}
	if last.correlationID != "corr-run-1" {
		t.Errorf("the command carries correlation id %q, want corr-run-1", last.correlationID)
	}
	var list struct{ Items []domain.Execution }
	h.must(200, "GET", v1+"/executions?kind=sync_run&syncTaskId="+a.syncTask, tokViewerA, nil).json(t, &list)
	if len(list.Items) != 1 || list.Items[0].ID != acc.ExecutionID {
		t.Errorf("filtered executions: %+v", list.Items)
	}

	// A broker failure is retryable and leaves no pending execution behind.
	h.sender.mu.Lock()
	h.sender.err = errors.New("no confirm")
	h.sender.mu.Unlock()
	h.must(503, "POST", v1+"/sync-tasks/"+a.syncTask+"/runs", tokAdminA, nil)
	h.must(200, "GET", v1+"/executions?kind=sync_run", tokViewerA, nil).json(t, &list)
	if len(list.Items) != 1 {
		t.Errorf("a run that was not enqueued left an execution: %d runs listed", len(list.Items))
	}
}

func TestSyncTasks_ValidatedAgainstTheProvider(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	task := validSyncTask(a.integration)
	task["entity"] = "invoices"
	r := h.must(422, "POST", v1+"/sync-tasks", tokAdminA, task)
	if !strings.Contains(r.body, `"entity"`) {
		t.Errorf("unknown entity not named: %s", r.body)
	}
	task = validSyncTask(a.integration)
	task["direction"] = "bidirectional"
	task["mode"] = "full_refresh"
	h.must(201, "POST", v1+"/sync-tasks", tokAdminA, task) // contacts can be created: writable
}

func TestConflicts_ResolutionIsEnqueuedOnlyForOpenConflicts(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	path := v1 + "/conflicts/" + a.conflict + "/resolution"
	h.must(422, "POST", path, tokAdminA, map[string]any{})
	h.must(202, "POST", path, tokAdminA, map[string]any{"side": "external", "values": map[string]any{"email": "a@b.c"}})
	sentMsgs := h.sender.all()
	rc, ok := sentMsgs[len(sentMsgs)-1].msg.(domain.ResolveConflict)
	if !ok || rc.ConflictID != a.conflict || rc.Side != domain.SideExternal || rc.Actor == "" || rc.TenantID != tenantA {
		t.Fatalf("sent %#v", sentMsgs[len(sentMsgs)-1].msg)
	}
	if err := rc.Validate(); err != nil {
		t.Errorf("the command would be poisoned: %v", err)
	}
	if _, _, err := h.api.conflicts.Update(t.Context(), tenantA, a.conflict, func(c *domain.Conflict) error {
		c.Status = domain.ConflictStatusResolved
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	h.must(409, "POST", path, tokAdminA, map[string]any{"side": "internal"})
	var list struct{ Items []domain.Conflict }
	h.must(200, "GET", v1+"/conflicts?status=pending", tokViewerA, nil).json(t, &list)
	if len(list.Items) != 0 {
		t.Errorf("resolved conflict listed as pending")
	}
}

func TestCatalog_TenantsSeeOnlyVisibleEntries(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	h.must(201, "POST", v1+"/catalog", tokPlatform, domain.CatalogEntry{ID: "beta-crm", Category: "crm", ProviderID: "acme-crm", Name: "Beta", VisibleByDefault: false})
	h.must(404, "GET", v1+"/catalog/beta-crm", tokViewerA, nil)
	h.must(422, "POST", v1+"/integrations", tokAdminA, map[string]any{"catalogEntryId": "beta-crm"})

	h.must(200, "PUT", v1+"/visibility/"+tenantA+"/beta-crm", tokPlatform, map[string]any{"visible": true, "enabled": false})
	if r := h.must(200, "GET", v1+"/catalog", tokViewerA, nil); !strings.Contains(r.body, "beta-crm") {
		t.Errorf("tenant A cannot see the entry made visible to it: %s", r.body)
	}
	if r := h.must(200, "GET", v1+"/catalog", tokViewerB, nil); strings.Contains(r.body, "beta-crm") {
		t.Errorf("tenant B sees an entry made visible to A only: %s", r.body)
	}
	r := h.must(422, "POST", v1+"/integrations", tokAdminA, map[string]any{"catalogEntryId": "beta-crm"})
	if !strings.Contains(r.body, "not enabled") {
		t.Errorf("visible but disabled entry: %s", r.body)
	}
	h.must(200, "PUT", v1+"/visibility/"+tenantA+"/beta-crm", tokPlatform, map[string]any{"visible": true, "enabled": true})
	h.must(201, "POST", v1+"/integrations", tokAdminA, map[string]any{"catalogEntryId": "beta-crm"})

	// Hiding a default-visible entry from one tenant.
	h.must(200, "PUT", v1+"/visibility/"+tenantB+"/"+w.catalogEntry, tokPlatform, map[string]any{"visible": false})
	h.must(404, "GET", v1+"/catalog/"+w.catalogEntry, tokViewerB, nil)
	h.must(200, "GET", v1+"/catalog/"+w.catalogEntry, tokViewerA, nil)
	var vis struct{ Items []domain.Visibility }
	h.must(200, "GET", v1+"/visibility/"+tenantB, tokPlatform, nil).json(t, &vis)
	if len(vis.Items) != 1 || vis.Items[0].Visible {
		t.Errorf("tenant B's overrides: %+v", vis.Items)
	}
	h.must(204, "DELETE", v1+"/visibility/"+tenantB+"/"+w.catalogEntry, tokPlatform, nil)
	h.must(200, "GET", v1+"/catalog/"+w.catalogEntry, tokViewerB, nil)
	// The platform admin sees everything.
	if r := h.must(200, "GET", v1+"/catalog", tokPlatform, nil); !strings.Contains(r.body, "beta-crm") {
		t.Errorf("platform admin's catalog lacks an entry: %s", r.body)
	}
}

func TestProviders_LookedUpAcrossCategoriesAndProtected(t *testing.T) {
	h := newHarness(t)
	h.seed()
	h.must(409, "POST", v1+"/providers", tokPlatform, func() domain.Provider { p := testProvider(); p.Category = "support"; return p }())
	var p domain.Provider
	h.must(200, "GET", v1+"/providers/acme-crm", tokPlatform, nil).json(t, &p)
	if p.Category != "crm" {
		t.Errorf("provider read back in category %q", p.Category)
	}
	moved := testProvider()
	moved.Category = "support"
	h.must(422, "PUT", v1+"/providers/acme-crm", tokPlatform, moved)
	renamed := testProvider()
	renamed.Name = "Acme CRM v2"
	var got domain.Provider
	h.must(200, "PUT", v1+"/providers/acme-crm", tokPlatform, renamed).json(t, &got)
	if got.Name != "Acme CRM v2" || got.CreatedAt.IsZero() {
		t.Errorf("replaced provider: %+v", got)
	}
	h.must(409, "DELETE", v1+"/providers/acme-crm", tokPlatform, nil) // the catalog uses it
	var list struct{ Items []domain.Provider }
	h.must(200, "GET", v1+"/providers?category=crm", tokPlatform, nil).json(t, &list)
	if len(list.Items) != 1 {
		t.Errorf("providers in crm: %d", len(list.Items))
	}
}

func TestIntegrations_InstallCreatesAPendingConnectionAndPatchDeleteWork(t *testing.T) {
	h := newHarness(t)
	h.must(201, "POST", v1+"/providers", tokPlatform, testProvider())
	h.must(201, "POST", v1+"/catalog", tokPlatform, domain.CatalogEntry{ID: "acme", Category: "crm", ProviderID: "acme-crm", Name: "Acme", VisibleByDefault: true})
	var in integrationCreated
	r := h.must(201, "POST", v1+"/integrations", tokAdminA, map[string]any{"catalogEntryId": "acme", "settings": map[string]string{"region": "eu"}})
	r.json(t, &in)
	if in.IngressSecret == "" || in.IngressSecretRef == "" || in.Name != "Acme" || in.ProviderCategory != "crm" {
		t.Fatalf("created integration: %s", r.body)
	}
	// Ingress finds the tenant by a point read on (integrationId, integrationId).
	conn, _, err := h.api.connections.Get(t.Context(), in.ID, in.ID)
	if err != nil || conn.TenantID != tenantA || conn.Status != domain.ConnectionPending {
		t.Fatalf("connection after install: %+v, %v", conn, err)
	}
	var got domain.Connection
	h.must(200, "GET", v1+"/integrations/"+in.ID+"/connection", tokViewerA, nil).json(t, &got)
	if got.Status != domain.ConnectionPending || got.CredentialRef != "" {
		t.Errorf("connection before credentials: %+v", got)
	}
	h.must(422, "PUT", v1+"/integrations/"+in.ID+"/connection", tokAdminA, map[string]any{"credentials": "just a string"})
	h.must(200, "PUT", v1+"/integrations/"+in.ID+"/connection", tokAdminA, map[string]any{"credentials": map[string]string{"token": "t1"}}).json(t, &got)
	ref := got.CredentialRef
	h.must(200, "PUT", v1+"/integrations/"+in.ID+"/connection", tokAdminA, map[string]any{"credentials": map[string]string{"token": "t2"}}).json(t, &got)
	if got.Status != domain.ConnectionConnected || got.CredentialRef != ref {
		t.Errorf("second PUT should replace the same secret: %+v (first ref %q)", got, ref)
	}
	if v, _ := h.secrets.value(tenantA, ref); !strings.Contains(v, "t2") {
		t.Errorf("stored credentials %q, want the second ones", v)
	}

	var patched domain.Integration
	h.must(200, "PATCH", v1+"/integrations/"+in.ID, tokAdminA, map[string]any{"name": "Renamed", "status": "paused"}).json(t, &patched)
	if patched.Name != "Renamed" || patched.Status != domain.IntegrationPaused || patched.Settings["region"] != "eu" {
		t.Errorf("patched: %+v", patched)
	}
	h.must(422, "PATCH", v1+"/integrations/"+in.ID, tokAdminA, map[string]any{"status": "exploded"})

	h.must(204, "DELETE", v1+"/integrations/"+in.ID, tokAdminA, nil)
	h.must(404, "GET", v1+"/integrations/"+in.ID, tokAdminA, nil)
	if _, _, err := h.api.connections.Get(t.Context(), in.ID, in.ID); !isNotFound(err) {
		t.Errorf("connection survived its integration: %v", err)
	}
	if _, ok := h.secrets.value(tenantA, ref); ok {
		t.Errorf("credentials survived their integration")
	}
	if _, ok := h.secrets.value(tenantA, in.IngressSecretRef); ok {
		t.Errorf("ingress secret survived its integration")
	}
}

func TestLists_PagesFollowTheCursor(t *testing.T) {
	h := newHarness(t)
	for i := 0; i < 5; i++ {
		h.must(201, "POST", v1+"/webhooks", tokAdminA, map[string]any{"url": "https://hooks.example.com/p", "eventTypes": []string{"*"}})
	}
	seen := map[string]bool{}
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("the cursor never ends")
		}
		var page struct {
			Items      []domain.WebhookEndpoint
			NextCursor string
		}
		h.must(200, "GET", v1+"/webhooks?limit=2&cursor="+cursor, tokViewerA, nil).json(t, &page)
		if len(page.Items) > 2 {
			t.Fatalf("page of %d items, limit 2", len(page.Items))
		}
		for _, w := range page.Items {
			if seen[w.ID] {
				t.Fatalf("webhook %s on two pages", w.ID)
			}
			seen[w.ID] = true
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if len(seen) != 5 {
		t.Errorf("paging saw %d webhooks, want 5", len(seen))
	}
	// An empty list is [] rather than null.
	if r := h.must(200, "GET", v1+"/webhooks", tokViewerB, nil); !strings.Contains(r.body, `"items":[]`) {
		t.Errorf("empty list: %s", r.body)
	}
}

func TestPoison_ListAndRepublishForOperators(t *testing.T) {
	h := newHarness(t)
	h.poison.items = []PoisonMessage{{ID: "p1", Topic: "im.commands.sync", Handler: "sync", Reason: "undecodable", Payload: json.RawMessage(`{}`)}}
	var page struct{ Items []PoisonMessage }
	h.must(200, "GET", v1+"/poison", tokPlatform, nil).json(t, &page)
	if len(page.Items) != 1 || page.Items[0].Reason != "undecodable" {
		t.Errorf("poison list: %+v", page.Items)
	}
	h.must(202, "POST", v1+"/poison/p1/republish", tokPlatform, nil)
	h.must(404, "POST", v1+"/poison/p2/republish", tokPlatform, nil)
	if len(h.poison.republished) != 1 {
		t.Errorf("republished %v", h.poison.republished)
	}
}

// A person deciding a conflict sees, field by field, the base and both sides.
func TestConflicts_ShowAFieldByFieldDiff(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]
	if _, _, err := h.api.conflicts.Update(t.Context(), tenantA, a.conflict, func(c *domain.Conflict) error {
		c.Base = map[string]any{"email": "old@x.io", "name": "Ada"}
		c.External = map[string]any{"email": "ext@x.io", "name": "Ada"}
		c.Internal = map[string]any{"email": "int@x.io", "name": "Ada"}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Diff []struct {
			Field                            string
			ExternalChanged, InternalChanged bool
		}
	}
	h.must(200, "GET", v1+"/conflicts/"+a.conflict, tokViewerA, nil).json(t, &got)
	if len(got.Diff) != 1 || got.Diff[0].Field != "email" || !got.Diff[0].ExternalChanged || !got.Diff[0].InternalChanged {
		t.Errorf("diff %+v, want only email, changed on both sides", got.Diff)
	}
	var list struct{ Items []struct{ Diff []any } }
	h.must(200, "GET", v1+"/conflicts?status=pending", tokViewerA, nil).json(t, &list)
	if len(list.Items) != 1 || len(list.Items[0].Diff) != 1 {
		t.Errorf("the pending list does not carry the diff: %+v", list.Items)
	}
}
