package domain

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// t0 is a fixed UTC instant; UTC keeps JSON round trips reflect.DeepEqual.
var t0 = time.Date(2025, 11, 25, 12, 30, 45, 123456789, time.UTC)

func ptrTime(t time.Time) *time.Time { return &t }

// fieldCase is one row of a validation table: mutate a valid fixture and name
// the field that must then be reported ("" when the result must stay valid).
type fieldCase[T any] struct {
	name      string
	mutate    func(*T)
	wantField string
}

func runFieldCases[T any](t *testing.T, valid func() T, validate func(T) error, cases []fieldCase[T]) {
	t.Helper()
	if err := validate(valid()); err != nil {
		t.Fatalf("the valid fixture was rejected: %v", err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := valid()
			tc.mutate(&v)
			err := validate(v)
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

func assertFieldError(t *testing.T, err error, field string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error on %q, got none", field)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want errors.Is(err, ErrInvalid) for %v", err)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want a *ValidationError, got %T: %v", err, err)
	}
	var got []string
	for _, f := range ve.Fields {
		if f.Field == field {
			if f.Message == "" {
				t.Fatalf("error on %q has no message", field)
			}
			return
		}
		got = append(got, f.Field)
	}
	t.Fatalf("want an error on field %q, got errors on [%s]: %v", field, strings.Join(got, ", "), err)
}

// roundTrip checks v survives JSON encoding unchanged.
func roundTrip[T any](t *testing.T, v T) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal %T: %v", v, err)
	}
	var back T
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("unmarshal %T: %v", v, err)
	}
	if !reflect.DeepEqual(v, back) {
		t.Fatalf("%T changed in a JSON round trip:\n before %#v\n after  %#v\n json   %s", v, v, back, b)
	}
}

func validProvider() Provider {
	return Provider{
		ID:       "hubspot",
		Category: "crm",
		Name:     "HubSpot",
		Auth:     AuthSpec{Kind: AuthOAuth2RefreshToken, TokenURL: "https://api.hubapi.com/oauth/v1/token", Scopes: []string{"crm.objects.contacts.read"}},
		BaseURL:  "https://api.hubapi.com",
		Pagination: PaginationSpec{
			Kind: PaginationCursor, Param: "after", SizeParam: "limit", PageSize: 100,
			ItemsPath: "results", NextCursorPath: "paging.next.after",
		},
		RateLimit: RateLimit{RequestsPerSecond: 10, Burst: 20},
		Entities: []EntityDef{{
			Name: "contacts", ListPath: "/crm/v3/objects/contacts", PrimaryKey: "id",
			CursorParam: "updated_since", CursorField: "properties.lastmodifieddate", CursorFormat: TimeRFC3339,
			DeletedFlagField: "archived", DeletedPath: "/crm/v3/objects/contacts/archived",
			Get:    &RequestSpec{Method: "GET", Path: "/crm/v3/objects/contacts/{id}"},
			Create: &RequestSpec{Method: "POST", Path: "/crm/v3/objects/contacts"},
			Update: &RequestSpec{Method: "PATCH", Path: "/crm/v3/objects/contacts/{id}"},
			Delete: &RequestSpec{Method: "DELETE", Path: "/crm/v3/objects/contacts/{id}"},
		}, {
			Name: "companies", ListPath: "/crm/v3/objects/companies", PrimaryKey: "id",
		}},
		Ingress: &SignatureSpec{
			Header: "X-Signature", Scheme: SchemeHMACSHA256, Encoding: EncodingHex,
			Prefix: "sha256=", TimestampHeader: "X-Timestamp", Tolerance: "5m",
		},
		CreatedAt: t0, UpdatedAt: t0,
	}
}

func validCatalogEntry() CatalogEntry {
	return CatalogEntry{
		ID: "cat-hubspot", Category: "crm", ProviderID: "hubspot", Name: "HubSpot CRM",
		Description: "Contacts and companies.", Tags: []string{"crm", "sales"},
		VisibleByDefault: true, Status: CatalogPublished, CreatedAt: t0, UpdatedAt: t0,
	}
}

func validVisibility() Visibility {
	return Visibility{ID: VisibilityID("tenant-1", "cat-hubspot"), TenantID: "tenant-1", CatalogEntryID: "cat-hubspot", Visible: true, Enabled: true, CreatedAt: t0, UpdatedAt: t0}
}

func validIntegration() Integration {
	return Integration{
		ID: "int-1", TenantID: "tenant-1", CatalogEntryID: "cat-hubspot", ProviderID: "hubspot",
		ProviderCategory: "crm", Name: "Sales HubSpot", Settings: map[string]string{"portalId": "12345"},
		Status: IntegrationActive, IngressSecretRef: "secrets/tenant-1/int-1/ingress", CreatedAt: t0, UpdatedAt: t0,
	}
}

func validConnection() Connection {
	return Connection{
		ID: "conn-1", IntegrationID: "int-1", TenantID: "tenant-1", Status: ConnectionConnected,
		CredentialRef: "secrets/tenant-1/int-1/oauth", TokenExpiresAt: ptrTime(t0.Add(time.Hour)),
		LastError: "", CreatedAt: t0, UpdatedAt: t0,
	}
}

func validWebhook() WebhookEndpoint {
	return WebhookEndpoint{
		ID: "wh-1", TenantID: "tenant-1", URL: "https://hooks.example.com/castiel",
		EventTypes: []string{"contact.updated", "sync.*"}, Description: "CRM updates",
		SecretRef: "secrets/tenant-1/wh-1/v2", PreviousSecretRef: "secrets/tenant-1/wh-1/v1",
		PreviousSecretExpiresAt: ptrTime(t0.Add(24 * time.Hour)), RateLimitPerSecond: 50,
		Status: WebhookActive, FailingSince: ptrTime(t0), LastSuccessAt: ptrTime(t0.Add(-time.Hour)),
		CreatedAt: t0, UpdatedAt: t0,
	}
}

func validSyncTask() SyncTask {
	return SyncTask{
		ID: "task-1", TenantID: "tenant-1", IntegrationID: "int-1", Entity: "contacts",
		Direction: DirectionBidirectional, Mode: ModeIncremental, Schedule: "15m",
		Mapping: []FieldMapping{
			{Source: "properties.email", Target: "email"},
			{Source: "properties.createdate", Target: "createdAt", Convert: ConvertTime},
			{Constant: "hubspot", Target: "source"},
			{Source: "properties.hs_internal", Ignore: true},
		},
		ConflictPolicy: ConflictPolicy{
			Strategy:         StrategyNewestWins,
			FieldOverrides:   map[string]ConflictStrategy{"email": StrategyExternalWins},
			DeleteEditPolicy: StrategyManual,
			ClockSkewMargin:  "2s",
		},
		Checkpoint: Checkpoint{Cursor: "2025-11-25T12:00:00Z", UpdatedAt: t0},
		Enabled:    true, CreatedAt: t0, UpdatedAt: t0,
	}
}

func sampleExecutions() []Execution {
	return []Execution{{
		ID: AttemptExecutionID("dlv_x", 2), TenantID: "tenant-1", Kind: ExecutionWebhookDelivery, Status: ExecFailedRetrying,
		WebhookID: "wh-1", DeliveryID: "dlv_x", EventID: "evt-1", EventType: "contact.updated", Attempt: 2,
		RequestHeaders: map[string]string{"webhook-id": "dlv_x"}, ResponseStatus: 503, ResponseBody: "busy",
		NextAttemptAt: ptrTime(t0.Add(time.Minute)), DurationMs: 120, ErrorClass: "http_5xx", Error: "503 Service Unavailable",
		StartedAt: t0, FinishedAt: ptrTime(t0.Add(120 * time.Millisecond)), TTL: 2592000, CreatedAt: t0, UpdatedAt: t0,
	}, {
		ID: "run_abc", TenantID: "tenant-1", Kind: ExecutionSyncRun, Status: ExecCompletedWithErrors, SyncTaskID: "task-1",
		Stats:      &SyncStats{Added: 1, Updated: 2, Deleted: 3, Unchanged: 4, Conflicts: 5, Failed: 6},
		DurationMs: 4000, StartedAt: t0, FinishedAt: ptrTime(t0.Add(4 * time.Second)), CreatedAt: t0, UpdatedAt: t0,
	}}
}

func sampleConflict() Conflict {
	return Conflict{
		ID: ConflictID("run_abc", "contacts", "42"), TenantID: "tenant-1", SyncTaskID: "task-1", IntegrationID: "int-1",
		ExecutionID: "run_abc", Entity: "contacts", RecordKey: "42", Kind: ConflictUpdateUpdate,
		External:           map[string]any{"email": "a@x.com", "age": 31.0, "tags": []any{"a", "b"}},
		Internal:           map[string]any{"email": "b@x.com", "address": map[string]any{"city": "Oslo"}},
		Base:               map[string]any{"email": "old@x.com"},
		ExternalModifiedAt: ptrTime(t0), InternalModifiedAt: ptrTime(t0.Add(time.Second)),
		Status: ConflictStatusPending, DetectedAt: t0, CreatedAt: t0, UpdatedAt: t0,
	}
}

func sampleResolution() ConflictResolution {
	c := sampleConflict()
	return ConflictResolution{
		ID: c.ID, TenantID: c.TenantID, ConflictID: c.ID, Strategy: StrategyManual,
		Decisions: []FieldDecision{{Field: "email", Chosen: SideExternal, Value: "a@x.com"}, {Field: "age", Chosen: SideEdited, Value: 32.0}},
		Actor:     "user-7", Before: c.Internal, After: map[string]any{"email": "a@x.com", "age": 32.0},
		Outcome: OutcomeApplied, Reason: "picked by user", ResolvedAt: t0, CreatedAt: t0, UpdatedAt: t0,
	}
}
