package domain

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestCatalogEntry_Validate(t *testing.T) {
	runFieldCases(t, validCatalogEntry, CatalogEntry.Validate, []fieldCase[CatalogEntry]{
		{"bad id", func(c *CatalogEntry) { c.ID = "" }, "id"},
		{"bad category", func(c *CatalogEntry) { c.Category = "Crm" }, "category"},
		{"bad provider", func(c *CatalogEntry) { c.ProviderID = "a b" }, "providerId"},
		{"no name", func(c *CatalogEntry) { c.Name = "" }, "name"},
		{"long description", func(c *CatalogEntry) { c.Description = strings.Repeat("x", MaxDescriptionLength+1) }, "description"},
		{"control character", func(c *CatalogEntry) { c.Description = "bell\a" }, "description"},
		{"multi-line description", func(c *CatalogEntry) { c.Description = "line 1\nline 2" }, ""},
		{"bad tag", func(c *CatalogEntry) { c.Tags = []string{"ok", "Not Ok"} }, "tags[1]"},
		{"unknown status", func(c *CatalogEntry) { c.Status = "draft" }, "status"},
		{"deprecated", func(c *CatalogEntry) { c.Status = CatalogDeprecated }, ""},
	})
}

func TestVisibility_Validate(t *testing.T) {
	runFieldCases(t, validVisibility, Visibility.Validate, []fieldCase[Visibility]{
		{"bad tenant", func(v *Visibility) { v.TenantID = "" }, "tenantId"},
		{"bad catalog entry", func(v *Visibility) { v.CatalogEntryID, v.ID = "a/b", "a/b" }, "catalogEntryId"},
		{"id differs from catalog entry", func(v *Visibility) { v.ID = "other" }, "id"},
		{"hidden and disabled", func(v *Visibility) { v.Visible, v.Enabled = false, false }, ""},
	})
}

func TestIntegration_Validate(t *testing.T) {
	runFieldCases(t, validIntegration, Integration.Validate, []fieldCase[Integration]{
		{"bad id", func(i *Integration) { i.ID = "-x" }, "id"},
		{"missing tenant", func(i *Integration) { i.TenantID = "" }, "tenantId"},
		{"missing catalog entry", func(i *Integration) { i.CatalogEntryID = "" }, "catalogEntryId"},
		{"missing provider", func(i *Integration) { i.ProviderID = "" }, "providerId"},
		{"bad provider category", func(i *Integration) { i.ProviderCategory = "" }, "providerCategory"},
		{"no name", func(i *Integration) { i.Name = "" }, "name"},
		{"bad setting key", func(i *Integration) { i.Settings = map[string]string{"a b": "x"} }, `settings["a b"]`},
		{"long setting", func(i *Integration) { i.Settings["portalId"] = strings.Repeat("x", MaxSettingValueLength+1) }, `settings["portalId"]`},
		{"unknown status", func(i *Integration) { i.Status = "broken" }, "status"},
		{"raw secret instead of ref", func(i *Integration) { i.IngressSecretRef = "whsec_abc" }, "ingressSecretRef"},
		{"ref with spaces", func(i *Integration) { i.IngressSecretRef = "my secret" }, "ingressSecretRef"},
		{"no ingress secret", func(i *Integration) { i.IngressSecretRef = "" }, ""},
	})
}

func TestConnection_Validate(t *testing.T) {
	runFieldCases(t, validConnection, Connection.Validate, []fieldCase[Connection]{
		{"missing integration", func(c *Connection) { c.IntegrationID = "" }, "integrationId"},
		{"unknown status", func(c *Connection) { c.Status = "ok" }, "status"},
		{"connected without credentials", func(c *Connection) { c.CredentialRef = "" }, "credentialRef"},
		{"pending without credentials", func(c *Connection) { c.Status, c.CredentialRef = ConnectionPending, "" }, ""},
	})
}

func TestWebhookEndpoint_Validate(t *testing.T) {
	policy := URLPolicy{RequireHTTPS: true}
	validate := func(w WebhookEndpoint) error { return w.Validate(policy) }
	filters := make([]string, MaxEventFilters+1)
	for i := range filters {
		filters[i] = "e" + strings.Repeat("x", i)
	}
	runFieldCases(t, validWebhook, validate, []fieldCase[WebhookEndpoint]{
		{"bad id", func(w *WebhookEndpoint) { w.ID = "" }, "id"},
		{"bad tenant", func(w *WebhookEndpoint) { w.TenantID = "t/1" }, "tenantId"},
		{"http url", func(w *WebhookEndpoint) { w.URL = "http://hooks.example.com" }, "url"},
		{"no filters", func(w *WebhookEndpoint) { w.EventTypes = nil }, "eventTypes"},
		{"too many filters", func(w *WebhookEndpoint) { w.EventTypes = filters }, "eventTypes"},
		{"bad filter", func(w *WebhookEndpoint) { w.EventTypes = []string{"ok.event", "Bad"} }, "eventTypes[1]"},
		{"duplicate filter", func(w *WebhookEndpoint) { w.EventTypes = []string{"sync.*", "sync.*"} }, "eventTypes[1]"},
		{"star", func(w *WebhookEndpoint) { w.EventTypes = []string{"*"} }, ""},
		{"long description", func(w *WebhookEndpoint) { w.Description = strings.Repeat("d", MaxDescriptionLength+1) }, "description"},
		{"raw secret", func(w *WebhookEndpoint) { w.SecretRef = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }, "secretRef"},
		{"previous secret without expiry", func(w *WebhookEndpoint) { w.PreviousSecretExpiresAt = nil }, "previousSecretExpiresAt"},
		{"no previous secret", func(w *WebhookEndpoint) { w.PreviousSecretRef, w.PreviousSecretExpiresAt = "", nil }, ""},
		{"negative rate", func(w *WebhookEndpoint) { w.RateLimitPerSecond = -0.5 }, "rateLimitPerSecond"},
		{"rate above max", func(w *WebhookEndpoint) { w.RateLimitPerSecond = MaxWebhookRatePerSecond + 1 }, "rateLimitPerSecond"},
		{"no rate limit", func(w *WebhookEndpoint) { w.RateLimitPerSecond = 0 }, ""},
		{"fractional rate", func(w *WebhookEndpoint) { w.RateLimitPerSecond = 0.5 }, ""},
		{"unknown status", func(w *WebhookEndpoint) { w.Status = "paused" }, "status"},
	})
}

func TestSyncTask_Validate(t *testing.T) {
	runFieldCases(t, validSyncTask, SyncTask.Validate, []fieldCase[SyncTask]{
		{"bad id", func(s *SyncTask) { s.ID = "" }, "id"},
		{"bad integration", func(s *SyncTask) { s.IntegrationID = "a b" }, "integrationId"},
		{"bad entity", func(s *SyncTask) { s.Entity = "" }, "entity"},
		{"unknown direction", func(s *SyncTask) { s.Direction = "sideways" }, "direction"},
		{"unknown mode", func(s *SyncTask) { s.Mode = "delta" }, "mode"},
		{"manual schedule", func(s *SyncTask) { s.Schedule = "" }, ""},
		{"one minute", func(s *SyncTask) { s.Schedule = "1m" }, ""},
		{"schedule too short", func(s *SyncTask) { s.Schedule = "59s" }, "schedule"},
		{"schedule negative", func(s *SyncTask) { s.Schedule = "-5m" }, "schedule"},
		{"cron schedule", func(s *SyncTask) { s.Schedule = "*/5 * * * *" }, ""},
		{"cron schedule with seconds", func(s *SyncTask) { s.Schedule = "0 */5 * * * *" }, "schedule"},
		{"duplicate target", func(s *SyncTask) {
			s.Mapping = append(s.Mapping, FieldMapping{Source: "properties.mail", Target: "email"})
		}, "mapping[4].target"},
		{"ignored fields do not claim targets", func(s *SyncTask) {
			s.Mapping = append(s.Mapping, FieldMapping{Source: "properties.email", Ignore: true})
		}, ""},
		{"missing source", func(s *SyncTask) { s.Mapping[0].Source = "" }, "mapping[0].source"},
		{"missing target", func(s *SyncTask) { s.Mapping[0].Target = "" }, "mapping[0].target"},
		{"bad target path", func(s *SyncTask) { s.Mapping[0].Target = "a..b" }, "mapping[0].target"},
		{"trailing dot", func(s *SyncTask) { s.Mapping[0].Source = "a." }, "mapping[0].source"},
		{"unknown convert", func(s *SyncTask) { s.Mapping[1].Convert = "float" }, "mapping[1].convert"},
		{"constant with source", func(s *SyncTask) { s.Mapping[2].Source = "x" }, "mapping[2].source"},
		{"constant false is a constant", func(s *SyncTask) { s.Mapping[2] = FieldMapping{Constant: false, Target: "active"} }, ""},
		{"ignore with target", func(s *SyncTask) { s.Mapping[3].Target = "x" }, "mapping[3].ignore"},
		{"ignore without source", func(s *SyncTask) { s.Mapping[3].Source = "" }, "mapping[3].source"},
		{"too many mappings", func(s *SyncTask) {
			s.Mapping = make([]FieldMapping, MaxMappings+1)
			for i := range s.Mapping {
				s.Mapping[i] = FieldMapping{Source: "s", Target: "t" + strings.Repeat("x", i%200) + "." + string(rune('a'+i%26))}
			}
		}, "mapping"},
		{"unknown strategy", func(s *SyncTask) { s.ConflictPolicy.Strategy = "coin_flip" }, "conflictPolicy.strategy"},
		{"missing strategy", func(s *SyncTask) { s.ConflictPolicy.Strategy = "" }, "conflictPolicy.strategy"},
		{"unknown field override", func(s *SyncTask) {
			s.ConflictPolicy.FieldOverrides = map[string]ConflictStrategy{"email": "loudest"}
		}, `conflictPolicy.fieldOverrides["email"]`},
		{"bad field override path", func(s *SyncTask) {
			s.ConflictPolicy.FieldOverrides = map[string]ConflictStrategy{"a b": StrategyMerge}
		}, `conflictPolicy.fieldOverrides["a b"]`},
		{"merge is not a delete-edit policy", func(s *SyncTask) { s.ConflictPolicy.DeleteEditPolicy = StrategyMerge }, "conflictPolicy.deleteEditPolicy"},
		{"default delete-edit policy", func(s *SyncTask) { s.ConflictPolicy.DeleteEditPolicy = "" }, ""},
		{"bad skew margin", func(s *SyncTask) { s.ConflictPolicy.ClockSkewMargin = "soon" }, "conflictPolicy.clockSkewMargin"},
		{"negative skew margin", func(s *SyncTask) { s.ConflictPolicy.ClockSkewMargin = "-1s" }, "conflictPolicy.clockSkewMargin"},
		{"skew margin too big", func(s *SyncTask) { s.ConflictPolicy.ClockSkewMargin = "2h" }, "conflictPolicy.clockSkewMargin"},
	})
}

func TestSyncTask_ValidateForChecksTheProviderCanServeIt(t *testing.T) {
	readOnly := validProvider()
	readOnly.Entities[0].Create, readOnly.Entities[0].Update = nil, nil
	fullOnly := validProvider()
	fullOnly.Entities[0].CursorParam, fullOnly.Entities[0].CursorField = "", ""

	cases := []struct {
		name      string
		mutate    func(*SyncTask)
		provider  Provider
		wantField string
	}{
		{"served", func(*SyncTask) {}, validProvider(), ""},
		{"unknown entity", func(s *SyncTask) { s.Entity = "deals" }, validProvider(), "entity"},
		{"incremental without cursor", func(*SyncTask) {}, fullOnly, "mode"},
		{"full refresh without cursor", func(s *SyncTask) { s.Mode = ModeFullRefresh }, fullOnly, ""},
		{"push to read-only entity", func(*SyncTask) {}, readOnly, "direction"},
		{"pull from read-only entity", func(s *SyncTask) { s.Direction = DirectionPull }, readOnly, ""},
		{"task rules still apply", func(s *SyncTask) { s.Schedule = "1s" }, validProvider(), "schedule"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			task := validSyncTask()
			tc.mutate(&task)
			err := task.ValidateFor(tc.provider)
			if tc.wantField == "" {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			assertFieldError(t, err, tc.wantField)
		})
	}
}

func TestSyncTask_ParsedAccessors(t *testing.T) {
	s := validSyncTask()
	if s.Interval() != 15*time.Minute {
		t.Errorf("Interval = %v, want 15m", s.Interval())
	}
	s.Schedule = ""
	if s.Interval() != 0 {
		t.Errorf("a manual task has interval %v, want 0", s.Interval())
	}
	p := s.ConflictPolicy
	if p.StrategyFor("email") != StrategyExternalWins || p.StrategyFor("name") != StrategyNewestWins {
		t.Errorf("StrategyFor ignores overrides: email=%s name=%s", p.StrategyFor("email"), p.StrategyFor("name"))
	}
	if p.SkewMargin() != 2*time.Second {
		t.Errorf("SkewMargin = %v, want 2s", p.SkewMargin())
	}
	p.DeleteEditPolicy = StrategyExternalWins
	if p.DeleteEdit() != StrategyExternalWins {
		t.Errorf("DeleteEdit ignores the policy: %s", p.DeleteEdit())
	}
	p.DeleteEditPolicy = ""
	if p.DeleteEdit() != StrategyManual {
		t.Errorf("default delete-edit policy = %s, want manual", p.DeleteEdit())
	}
}

func TestExecutionStatus_TerminalAndKind(t *testing.T) {
	cases := []struct {
		status   ExecutionStatus
		kind     ExecutionKind
		terminal bool
	}{
		{ExecPending, ExecutionWebhookDelivery, false},
		{ExecFailedRetrying, ExecutionWebhookDelivery, false},
		{ExecDelivered, ExecutionWebhookDelivery, true},
		{ExecExhausted, ExecutionWebhookDelivery, true},
		{ExecNoMatch, ExecutionWebhookDelivery, true},
		{ExecRunning, ExecutionSyncRun, false},
		{ExecCompleted, ExecutionSyncRun, true},
		{ExecCompletedWithErrors, ExecutionSyncRun, true},
		{ExecFailed, ExecutionSyncRun, true},
	}
	for _, tc := range cases {
		if tc.status.Terminal() != tc.terminal {
			t.Errorf("%s.Terminal() = %v, want %v", tc.status, !tc.terminal, tc.terminal)
		}
		if !tc.status.ValidFor(tc.kind) {
			t.Errorf("%s is not valid for %s", tc.status, tc.kind)
		}
		other := ExecutionSyncRun
		if tc.kind == ExecutionSyncRun {
			other = ExecutionWebhookDelivery
		}
		if tc.status.ValidFor(other) {
			t.Errorf("%s is valid for %s too", tc.status, other)
		}
	}
}

// keyed is what the store needs from every entity.
type keyed interface {
	Key() (partitionKey, id string)
	Container() string
}

func allEntities() []keyed {
	var out []keyed
	out = append(out, validProvider(), validCatalogEntry(), validVisibility(), validIntegration(),
		validConnection(), validWebhook(), validSyncTask(), sampleConflict(), sampleResolution())
	for _, e := range sampleExecutions() {
		out = append(out, e)
	}
	return out
}

// seedPartitionKeys is the seed architecture's table: container → partition key field.
var seedPartitionKeys = map[string]string{
	ContainerProviders:     PartitionKeyCategory,
	ContainerIntegrations:  PartitionKeyTenantID,
	ContainerConnections:   PartitionKeyIntegration,
	ContainerWebhooks:      PartitionKeyTenantID,
	ContainerSyncTasks:     PartitionKeyTenantID,
	ContainerExecutions:    PartitionKeyTenantID,
	ContainerConflicts:     PartitionKeyTenantID,
	ContainerCatalog:       PartitionKeyCategory,
	ContainerVisibility:    PartitionKeyTenantID,
	ContainerSyncConflicts: PartitionKeyTenantID,
}

func TestEntities_KeyMatchesContainerPartitionField(t *testing.T) {
	covered := map[string]bool{}
	for _, e := range allEntities() {
		field, ok := seedPartitionKeys[e.Container()]
		if !ok {
			t.Fatalf("%T names container %q which the seed does not list", e, e.Container())
		}
		covered[e.Container()] = true
		b, _ := json.Marshal(e)
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		pk, id := e.Key()
		if doc[field] != pk || pk == "" {
			t.Errorf("%T: Key() partition %q but JSON field %q is %v", e, pk, field, doc[field])
		}
		if doc["id"] != id || id == "" {
			t.Errorf("%T: Key() id %q but JSON id is %v", e, id, doc["id"])
		}
		if _, hasTTL := doc["ttl"]; hasTTL && e.Container() != ContainerExecutions {
			t.Errorf("%T carries a ttl but only executions expire", e)
		}
	}
	if len(covered) != len(seedPartitionKeys) {
		t.Errorf("entities cover %d containers, want all %d", len(covered), len(seedPartitionKeys))
	}
}

func TestEntities_SurviveJSONRoundTrip(t *testing.T) {
	roundTrip(t, validProvider())
	roundTrip(t, validCatalogEntry())
	roundTrip(t, validVisibility())
	roundTrip(t, validIntegration())
	roundTrip(t, validConnection())
	roundTrip(t, validWebhook())
	roundTrip(t, validSyncTask())
	for _, e := range sampleExecutions() {
		roundTrip(t, e)
	}
	roundTrip(t, sampleConflict())
	roundTrip(t, sampleResolution())
	roundTrip(t, Provider{}) // zero values too: omitempty must not lose anything
	roundTrip(t, Execution{})
}

func TestEntities_UseCamelCaseJSONNames(t *testing.T) {
	b, _ := json.Marshal(sampleExecutions()[0])
	for _, want := range []string{`"id":`, `"tenantId":`, `"deliveryId":`, `"nextAttemptAt":`, `"durationMs":`, `"ttl":2592000`, `"createdAt":`, `"updatedAt":`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("execution JSON lacks %s: %s", want, b)
		}
	}
	b, _ = json.Marshal(Execution{ID: "x"})
	if strings.Contains(string(b), `"ttl"`) {
		t.Errorf("a zero ttl must be omitted so the container default applies: %s", b)
	}
}
