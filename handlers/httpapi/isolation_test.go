package httpapi

import (
	"strings"
	"testing"
)

// isolationCase says how tenant "attacker" tries to reach tenant "victim"
// through one route, and what must happen instead.
type isolationCase struct {
	path func(victim *tenantWorld) string
	body func(attacker, victim *tenantWorld) any
	// want is the status the attacker gets. For lists (200) the answer must
	// hold nothing of the victim's.
	want int
}

func victimID(kind string) func(v *tenantWorld) string {
	return func(v *tenantWorld) string {
		switch kind {
		case "integrations":
			return v.integration
		case "webhooks":
			return v.webhook
		case "sync-tasks":
			return v.syncTask
		case "conflicts":
			return v.conflict
		case "executions":
			return v.execution
		}
		panic("unknown kind " + kind)
	}
}

// pathWithVictim fills the route's {id} with the victim's resource of the
// route's collection.
func pathWithVictim(rt route) func(v *tenantWorld) string {
	rest := strings.TrimPrefix(rt.path, v1+"/")
	kind, _, _ := strings.Cut(rest, "/")
	return func(v *tenantWorld) string {
		return strings.Replace(rt.path, "{id}", victimID(kind)(v), 1)
	}
}

func isolationCases() map[string]isolationCase {
	fixed := func(p string) func(*tenantWorld) string { return func(*tenantWorld) string { return p } }
	// A tenant field in a body is an unknown field: the tenant never comes from the body.
	withVictimTenant := func(body map[string]any) func(a, v *tenantWorld) any {
		return func(_, v *tenantWorld) any {
			out := map[string]any{"tenantId": victimTenantOf(v)}
			for k, val := range body {
				out[k] = val
			}
			return out
		}
	}
	return map[string]isolationCase{
		"POST /api/v1/integrations": {path: fixed(v1 + "/integrations"), want: 400,
			body: withVictimTenant(map[string]any{"catalogEntryId": "acme-crm-entry", "name": "x"})},
		"GET /api/v1/integrations":                 {path: fixed(v1 + "/integrations"), want: 200},
		"GET /api/v1/integrations/{id}":            {want: 404},
		"PATCH /api/v1/integrations/{id}":          {want: 404, body: func(_, _ *tenantWorld) any { return map[string]any{"name": "taken over"} }},
		"DELETE /api/v1/integrations/{id}":         {want: 404},
		"PUT /api/v1/integrations/{id}/connection": {want: 404, body: func(_, _ *tenantWorld) any { return map[string]any{"credentials": map[string]string{"apiKey": "x"}} }},
		"GET /api/v1/integrations/{id}/connection": {want: 404},
		"POST /api/v1/webhooks":                    {path: fixed(v1 + "/webhooks"), want: 400, body: withVictimTenant(map[string]any{"url": "https://hooks.example.com/x", "eventTypes": []string{"*"}})},
		"GET /api/v1/webhooks":                     {path: fixed(v1 + "/webhooks"), want: 200},
		"GET /api/v1/webhooks/{id}":                {want: 404},
		"PATCH /api/v1/webhooks/{id}":              {want: 404, body: func(_, _ *tenantWorld) any { return map[string]any{"url": "https://evil.example.com/x"} }},
		"DELETE /api/v1/webhooks/{id}":             {want: 404},
		"POST /api/v1/webhooks/{id}/rotate-secret": {want: 404},
		"POST /api/v1/webhooks/{id}/enable":        {want: 404},
		"POST /api/v1/webhooks/{id}/replay":        {want: 404, body: func(_, _ *tenantWorld) any { return map[string]any{"since": "2000-01-01T00:00:00Z"} }},
		"POST /api/v1/sync-tasks":                  {path: fixed(v1 + "/sync-tasks"), want: 422, body: func(_, v *tenantWorld) any { return validSyncTask(v.integration) }},
		"GET /api/v1/sync-tasks":                   {path: func(v *tenantWorld) string { return v1 + "/sync-tasks?integrationId=" + v.integration }, want: 200},
		"GET /api/v1/sync-tasks/{id}":              {want: 404},
		"PUT /api/v1/sync-tasks/{id}":              {want: 404, body: func(a, _ *tenantWorld) any { return validSyncTask(a.integration) }},
		"DELETE /api/v1/sync-tasks/{id}":           {want: 404},
		"POST /api/v1/sync-tasks/{id}/runs":        {want: 404},
		"POST /api/v1/sync-tasks/{id}/reset":       {want: 404},
		"POST /api/v1/events":                      {path: fixed(v1 + "/events"), want: 400, body: withVictimTenant(map[string]any{"type": "contact.updated", "data": map[string]any{}})},
		"GET /api/v1/conflicts":                    {path: fixed(v1 + "/conflicts?status=pending"), want: 200},
		"GET /api/v1/conflicts/{id}":               {want: 404},
		"POST /api/v1/conflicts/{id}/resolution":   {want: 404, body: func(_, _ *tenantWorld) any { return map[string]any{"side": "external"} }},
		"GET /api/v1/executions":                   {path: func(v *tenantWorld) string { return v1 + "/executions?webhookId=" + v.webhook }, want: 200},
		"GET /api/v1/executions/{id}":              {want: 404},
	}
}

// victimTenantOf recovers the tenant of a world entry from its token.
func victimTenantOf(v *tenantWorld) string {
	if v.token == tokAdminA {
		return tenantA
	}
	return tenantB
}

// TestTenantIsolation_NoRouteReachesAnotherTenant walks every tenant route in
// both directions: tenant A cannot read, list, change, delete or act on tenant
// B's resources, and B cannot reach A's. Missing resources and other tenants'
// resources look the same (404), so existence does not leak.
func TestTenantIsolation_NoRouteReachesAnotherTenant(t *testing.T) {
	h := newHarness(t)
	w := h.seed()
	cases := isolationCases()

	// Every tenant route must have a case, so a new route cannot skip the check.
	for _, rt := range h.api.routes() {
		if _, ok := cases[rt.pattern()]; rt.tenant && !ok {
			t.Errorf("route %s acts on tenant data but has no isolation case", rt.pattern())
		}
	}

	snapshot := func(v *tenantWorld) map[string]string {
		out := make(map[string]string)
		for _, p := range []string{
			v1 + "/integrations/" + v.integration, v1 + "/integrations/" + v.integration + "/connection",
			v1 + "/webhooks/" + v.webhook, v1 + "/sync-tasks/" + v.syncTask,
			v1 + "/conflicts/" + v.conflict, v1 + "/executions/" + v.execution,
		} {
			out[p] = h.must(200, "GET", p, v.token, nil).body
		}
		return out
	}

	for _, dir := range []struct{ attacker, victim string }{{tenantA, tenantB}, {tenantB, tenantA}} {
		attacker, victim := w.tenants[dir.attacker], w.tenants[dir.victim]
		before := snapshot(victim)
		sentBefore := h.sender.count()
		victimIDs := []string{victim.integration, victim.webhook, victim.syncTask, victim.conflict, victim.execution, dir.victim}

		for _, rt := range h.api.routes() {
			tc, ok := cases[rt.pattern()]
			if !rt.tenant || !ok {
				continue
			}
			t.Run(dir.attacker+" on "+dir.victim+"/"+rt.pattern(), func(t *testing.T) {
				path := pathWithVictim(rt)
				if tc.path != nil {
					path = tc.path
				}
				var body any
				if tc.body != nil {
					body = tc.body(attacker, victim)
				}
				tokens := []string{attacker.token}
				if rt.method == "GET" {
					tokens = append(tokens, attacker.viewer)
				}
				for _, tok := range tokens {
					r := h.do(rt.method, path(victim), tok, body)
					if r.Code != tc.want {
						t.Fatalf("%s %s as %s answered %d, want %d: %s", rt.method, path(victim), dir.attacker, r.Code, tc.want, r.body)
					}
					if r.Code >= 400 {
						r.problem(t)
					}
					for _, id := range victimIDs {
						if strings.Contains(r.body, id) {
							t.Fatalf("%s %s as %s leaked %q of %s: %s", rt.method, path(victim), dir.attacker, id, dir.victim, r.body)
						}
					}
				}
			})
		}

		after := snapshot(victim)
		for p, b := range before {
			if after[p] != b {
				t.Errorf("%s's %s changed after %s's attempts:\nbefore %s\nafter  %s", dir.victim, p, dir.attacker, b, after[p])
			}
		}
		for _, s := range h.sender.all()[sentBefore:] {
			if s.tenantID == dir.victim {
				t.Errorf("%s's attempts enqueued a %s command for %s", dir.attacker, s.msg.CEType(), dir.victim)
			}
		}
		if got := h.sender.count() - sentBefore; got != 0 {
			t.Errorf("%s's attempts on %s enqueued %d commands, want none", dir.attacker, dir.victim, got)
		}
	}

	// Lists still show each tenant its own resources.
	for tenant, tw := range w.tenants {
		if r := h.must(200, "GET", v1+"/webhooks", tw.viewer, nil); !strings.Contains(r.body, tw.webhook) {
			t.Errorf("%s's webhook list lacks its own webhook: %s", tenant, r.body)
		}
	}
}
