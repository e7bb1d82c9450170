package httpapi

import (
	"net/http"
	"strings"
	"testing"
)

// concretePath fills every wildcard of a route with a plausible id; role
// checks happen before any lookup, so the ids need not exist.
func concretePath(rt route) string {
	p := rt.path
	for _, name := range rt.pathParams() {
		p = strings.Replace(p, "{"+name+"}", "some-"+strings.ToLower(name), 1)
	}
	return p
}

// TestRoles_EachRouteAdmitsOnlyItsRoles checks, for every route of the
// table, which principals get past authorisation: viewers only read, tenant
// admins never touch providers, catalog writes, visibility or the poison
// queue, and a caller without a valid token gets 401.
func TestRoles_EachRouteAdmitsOnlyItsRoles(t *testing.T) {
	h := newHarness(t)
	principals := []struct {
		name, token string
		may         func(access) bool
	}{
		{"viewer", tokViewerA, func(x access) bool { return x == accessPublic || x == accessRead }},
		{"tenant admin", tokAdminA, func(x access) bool { return x != accessPlatform }},
		{"platform admin", tokPlatform, func(access) bool { return true }},
	}
	for _, rt := range h.api.routes() {
		if rt.access == accessPublic {
			continue
		}
		path := concretePath(rt)
		t.Run(rt.pattern(), func(t *testing.T) {
			for _, p := range principals {
				r := h.do(rt.method, path, p.token, nil)
				forbidden := r.Code == http.StatusForbidden
				if p.may(rt.access) && forbidden {
					t.Errorf("%s was refused %s: %s", p.name, rt.pattern(), r.body)
				}
				if !p.may(rt.access) {
					if !forbidden {
						t.Errorf("%s got %d from %s, want 403", p.name, r.Code, rt.pattern())
					} else {
						r.problem(t)
					}
				}
			}
			if r := h.do(rt.method, path, "", nil); r.Code != http.StatusUnauthorized {
				t.Errorf("no token: %s answered %d, want 401", rt.pattern(), r.Code)
			} else if r.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("401 without WWW-Authenticate on %s", rt.pattern())
			}
			if r := h.do(rt.method, path, "not-a-known-key", nil); r.Code != http.StatusUnauthorized {
				t.Errorf("unknown token: %s answered %d, want 401", rt.pattern(), r.Code)
			} else {
				r.problem(t)
			}
		})
	}
}

func TestRoles_ViewerCannotWriteAndTenantAdminCannotManagePlatform(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	a := w.tenants[tenantA]

	// The viewer reads its tenant's data but every write is refused.
	h.must(200, "GET", v1+"/webhooks/"+a.webhook, tokViewerA, nil)
	h.must(403, "PATCH", v1+"/webhooks/"+a.webhook, tokViewerA, map[string]any{"description": "x"})
	h.must(403, "POST", v1+"/events", tokViewerA, map[string]any{"type": "contact.updated", "data": map[string]any{}})
	h.must(403, "DELETE", v1+"/integrations/"+a.integration, tokViewerA, nil)
	if n := h.sender.count(); n != 0 {
		t.Errorf("refused requests enqueued %d commands", n)
	}

	// The tenant admin cannot change what all tenants share.
	h.must(403, "POST", v1+"/providers", tokAdminA, testProvider())
	h.must(403, "PUT", v1+"/catalog/"+w.catalogEntry, tokAdminA, map[string]any{"name": "x"})
	h.must(403, "PUT", v1+"/visibility/"+tenantA+"/"+w.catalogEntry, tokAdminA, map[string]any{"visible": true})
	h.must(403, "GET", v1+"/poison", tokAdminA, nil)
	// ...but browses the catalog.
	if r := h.must(200, "GET", v1+"/catalog", tokViewerA, nil); !strings.Contains(r.body, w.catalogEntry) {
		t.Errorf("viewer's catalog lacks the visible entry: %s", r.body)
	}
}
