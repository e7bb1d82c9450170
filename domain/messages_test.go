package domain

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleMessages holds one valid message per registered type.
func sampleMessages() map[string]Message {
	data := json.RawMessage(`{"contactId":"42","changes":["email"]}`)
	stats := SyncStats{Added: 1, Updated: 2, Deleted: 3, Unchanged: 4, Conflicts: 5, Failed: 6}
	dlv := DeliveryID("evt-1", "wh-1")
	return map[string]Message{
		TypePublishEvent: PublishEvent{EventID: "evt-1", TenantID: "tenant-1", Type: "contact.updated", Data: data, OccurredAt: t0},
		TypeDeliverWebhook: DeliverWebhook{DeliveryID: dlv, EventID: "evt-1", TenantID: "tenant-1", WebhookID: "wh-1",
			EventType: "contact.updated", Data: data, OccurredAt: t0, Attempt: 1, FirstAttemptAt: t0},
		TypeRunSync: RunSync{ExecutionID: ScheduledRunID("task-1", t0), TenantID: "tenant-1", SyncTaskID: "task-1", Trigger: TriggerSchedule, RequestedAt: t0},
		TypeResolveConflict: ResolveConflict{TenantID: "tenant-1", ConflictID: "cfl_1", Actor: "user-7", Side: SideExternal,
			Values: map[string]any{"email": "a@x.com", "address.city": "Oslo", "age": 3.0}},
		TypeIngressReceived: IngressReceived{IngressID: "ing-1", TenantID: "tenant-1", IntegrationID: "int-1",
			Headers: map[string]string{"Content-Type": "application/json", "X-Signature": "sha256=ab"}, Body: []byte("{\"a\":1}\x00\xff"), ReceivedAt: t0},
		TypeWebhookDelivered: WebhookDelivered{TenantID: "tenant-1", WebhookID: "wh-1", DeliveryID: dlv, EventID: "evt-1",
			EventType: "contact.updated", ExecutionID: AttemptExecutionID(dlv, 1), Attempt: 1, ResponseStatus: 204, DurationMs: 35, DeliveredAt: t0},
		TypeWebhookAttemptFailed: WebhookAttemptFailed{TenantID: "tenant-1", WebhookID: "wh-1", DeliveryID: dlv, EventID: "evt-1",
			EventType: "contact.updated", ExecutionID: AttemptExecutionID(dlv, 2), Attempt: 2, ResponseStatus: 503, ErrorClass: "http_5xx",
			Reason: "503 Service Unavailable", NextAttemptAt: t0.Add(time.Minute), FailedAt: t0},
		TypeWebhookExhausted: WebhookExhausted{TenantID: "tenant-1", WebhookID: "wh-1", DeliveryID: dlv, EventID: "evt-1",
			EventType: "contact.updated", ExecutionID: AttemptExecutionID(dlv, 8), Attempts: 8, LastResponseStatus: 500,
			ErrorClass: "http_5xx", Reason: "gave up after 8 attempts", ExhaustedAt: t0},
		TypeWebhookEndpointDisabled: WebhookEndpointDisabled{TenantID: "tenant-1", WebhookID: "wh-1", Reason: "failing for 5 days",
			FailingSince: ptrTime(t0.Add(-120 * time.Hour)), DisabledAt: t0},
		TypeSyncStarted: SyncStarted{TenantID: "tenant-1", ExecutionID: "run_1", SyncTaskID: "task-1", IntegrationID: "int-1",
			Entity: "contacts", Direction: DirectionPull, Mode: ModeIncremental, Trigger: TriggerAPI, StartedAt: t0},
		TypeSyncCompleted: SyncCompleted{TenantID: "tenant-1", ExecutionID: "run_1", SyncTaskID: "task-1", IntegrationID: "int-1",
			Status: ExecCompletedWithErrors, Stats: stats, StartedAt: t0, FinishedAt: t0.Add(time.Second)},
		TypeSyncFailed: SyncFailed{TenantID: "tenant-1", ExecutionID: "run_1", SyncTaskID: "task-1", IntegrationID: "int-1",
			ErrorClass: "auth", Reason: "401 from provider", Stats: stats, FailedAt: t0},
		TypeConflictDetected: ConflictDetected{TenantID: "tenant-1", ConflictID: ConflictID("run_1", "contacts", "42"), SyncTaskID: "task-1",
			IntegrationID: "int-1", ExecutionID: "run_1", Entity: "contacts", RecordKey: "42", Kind: ConflictDeleteUpdate, DetectedAt: t0},
		TypeConflictResolved: ConflictResolved{TenantID: "tenant-1", ConflictID: "cfl_1", SyncTaskID: "task-1", Strategy: StrategyMerge,
			Actor: ActorSystem, Outcome: OutcomeApplied, Fields: 3, ResolvedAt: t0},
		TypeConflictEscalated: ConflictEscalated{TenantID: "tenant-1", ConflictID: "cfl_1", SyncTaskID: "task-1", Strategy: StrategyNewestWins,
			Reason: "both sides changed within the clock skew margin", EscalatedAt: t0},
	}
}

func TestMessageTypes_RegistryIsCompleteAndConsistent(t *testing.T) {
	samples := sampleMessages()
	seen := map[string]bool{}
	kinds := map[MessageKind]int{}
	for _, mt := range MessageTypes() {
		if seen[mt.Name] {
			t.Fatalf("ce-type %q registered twice", mt.Name)
		}
		seen[mt.Name] = true
		kinds[mt.Kind]++
		if !strings.HasPrefix(mt.Name, "com.castiel.integration.") || !strings.HasSuffix(mt.Name, ".v1") {
			t.Errorf("ce-type %q does not follow com.castiel.integration.<noun>.<verb>.v1", mt.Name)
		}
		m := mt.New()
		if m.CEType() != mt.Name {
			t.Errorf("%T.CEType() = %q, registered as %q", m, m.CEType(), mt.Name)
		}
		if reflect.ValueOf(m).Kind() != reflect.Pointer {
			t.Errorf("New for %q returns %T; it must return a pointer to decode into", mt.Name, m)
		}
		sample, ok := samples[mt.Name]
		if !ok {
			t.Errorf("no sample for %q: add one to sampleMessages", mt.Name)
			continue
		}
		if reflect.TypeOf(sample) != reflect.TypeOf(m).Elem() {
			t.Errorf("sample for %q is %T, registry builds %T", mt.Name, sample, m)
		}
		if got, ok := LookupMessageType(mt.Name); !ok || got.Name != mt.Name {
			t.Errorf("LookupMessageType(%q) failed", mt.Name)
		}
	}
	if kinds[KindCommand] != 5 || kinds[KindEvent] != 10 {
		t.Errorf("registry has %d commands and %d events, want 5 and 10", kinds[KindCommand], kinds[KindEvent])
	}
	if len(samples) != len(seen) {
		t.Errorf("%d samples for %d registered types", len(samples), len(seen))
	}
}

func TestMessages_SamplesAreValidAndSurviveJSONRoundTrip(t *testing.T) {
	for name, m := range sampleMessages() {
		t.Run(name, func(t *testing.T) {
			if err := m.Validate(); err != nil {
				t.Fatalf("valid sample rejected: %v", err)
			}
			payload, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			decoded, err := DecodeMessage(name, payload)
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if got := reflect.ValueOf(decoded).Elem().Interface(); !reflect.DeepEqual(got, m) {
				t.Fatalf("changed in a round trip:\n before %#v\n after  %#v\n json   %s", m, got, payload)
			}
		})
	}
}

func TestDecodeMessage_RejectsUnknownMalformedAndInvalid(t *testing.T) {
	valid, _ := json.Marshal(sampleMessages()[TypeRunSync])
	cases := []struct {
		name    string
		ceType  string
		payload string
		want    error
	}{
		{"unknown type", "com.castiel.integration.sync.run.v2", string(valid), ErrUnknownMessageType},
		{"empty type", "", string(valid), ErrUnknownMessageType},
		{"not JSON", TypeRunSync, "{", ErrMalformedMessage},
		{"wrong shape", TypeRunSync, `{"tenantId": 5}`, ErrMalformedMessage},
		{"empty payload", TypeRunSync, "", ErrMalformedMessage},
		{"invalid fields", TypeRunSync, `{"tenantId":"t","syncTaskId":"s"}`, ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := DecodeMessage(tc.ceType, []byte(tc.payload))
			if !errors.Is(err, tc.want) || m != nil {
				t.Fatalf("DecodeMessage = %v, %v; want error %v", m, err, tc.want)
			}
		})
	}
	// Newer producers may add fields; older consumers must still accept the message.
	extended := strings.Replace(string(valid), "{", `{"addedLater":true,`, 1)
	if _, err := DecodeMessage(TypeRunSync, []byte(extended)); err != nil {
		t.Fatalf("an unknown extra field was rejected: %v", err)
	}
}

// messageCase mutates the registered sample of ceType.
type messageCase struct {
	ceType    string
	name      string
	mutate    func(Message) Message
	wantField string
}

func TestMessages_Validate(t *testing.T) {
	cases := []messageCase{
		{TypePublishEvent, "bad event id", func(m Message) Message { e := m.(PublishEvent); e.EventID = "a b"; return e }, "eventId"},
		{TypePublishEvent, "missing tenant", func(m Message) Message { e := m.(PublishEvent); e.TenantID = ""; return e }, "tenantId"},
		{TypePublishEvent, "wildcard type", func(m Message) Message { e := m.(PublishEvent); e.Type = "contact.*"; return e }, "type"},
		{TypePublishEvent, "upper-case type", func(m Message) Message { e := m.(PublishEvent); e.Type = "Contact.Updated"; return e }, "type"},
		{TypePublishEvent, "no data", func(m Message) Message { e := m.(PublishEvent); e.Data = nil; return e }, "data"},
		{TypePublishEvent, "broken data", func(m Message) Message { e := m.(PublishEvent); e.Data = json.RawMessage(`{"a":`); return e }, "data"},
		{TypePublishEvent, "huge data", func(m Message) Message {
			e := m.(PublishEvent)
			e.Data = json.RawMessage(`"` + strings.Repeat("x", MaxPayloadBytes) + `"`)
			return e
		}, "data"},
		{TypePublishEvent, "no time", func(m Message) Message { e := m.(PublishEvent); e.OccurredAt = time.Time{}; return e }, "occurredAt"},
		{TypeDeliverWebhook, "attempt zero", func(m Message) Message { e := m.(DeliverWebhook); e.Attempt = 0; return e }, "attempt"},
		{TypeDeliverWebhook, "attempt too high", func(m Message) Message { e := m.(DeliverWebhook); e.Attempt = MaxAttempts + 1; return e }, "attempt"},
		{TypeDeliverWebhook, "missing webhook", func(m Message) Message { e := m.(DeliverWebhook); e.WebhookID = ""; return e }, "webhookId"},
		{TypeDeliverWebhook, "missing delivery", func(m Message) Message { e := m.(DeliverWebhook); e.DeliveryID = ""; return e }, "deliveryId"},
		{TypeDeliverWebhook, "bad event type", func(m Message) Message { e := m.(DeliverWebhook); e.EventType = "x..y"; return e }, "eventType"},
		{TypeDeliverWebhook, "no first attempt", func(m Message) Message { e := m.(DeliverWebhook); e.FirstAttemptAt = time.Time{}; return e }, "firstAttemptAt"},
		{TypeRunSync, "unknown trigger", func(m Message) Message { e := m.(RunSync); e.Trigger = "cron"; return e }, "trigger"},
		{TypeRunSync, "missing execution", func(m Message) Message { e := m.(RunSync); e.ExecutionID = ""; return e }, "executionId"},
		{TypeRunSync, "missing task", func(m Message) Message { e := m.(RunSync); e.SyncTaskID = ""; return e }, "syncTaskId"},
		{TypeRunSync, "no time", func(m Message) Message { e := m.(RunSync); e.RequestedAt = time.Time{}; return e }, "requestedAt"},
		{TypeResolveConflict, "base is not a choice", func(m Message) Message { e := m.(ResolveConflict); e.Side = SideBase; return e }, "side"},
		{TypeResolveConflict, "user without decision", func(m Message) Message {
			e := m.(ResolveConflict)
			e.Side, e.Values = "", nil
			return e
		}, "side"},
		{TypeResolveConflict, "system applies policy", func(m Message) Message {
			e := m.(ResolveConflict)
			e.Actor, e.Side, e.Values = ActorSystem, "", nil
			return e
		}, ""},
		{TypeResolveConflict, "edited values only", func(m Message) Message { e := m.(ResolveConflict); e.Side = ""; return e }, ""},
		{TypeResolveConflict, "bad actor", func(m Message) Message { e := m.(ResolveConflict); e.Actor = ""; return e }, "actor"},
		{TypeResolveConflict, "bad value path", func(m Message) Message {
			e := m.(ResolveConflict)
			e.Values = map[string]any{"a..b": 1.0}
			return e
		}, `values["a..b"]`},
		{TypeIngressReceived, "missing integration", func(m Message) Message { e := m.(IngressReceived); e.IntegrationID = ""; return e }, "integrationId"},
		{TypeIngressReceived, "body too large", func(m Message) Message {
			e := m.(IngressReceived)
			e.Body = make([]byte, MaxPayloadBytes+1)
			return e
		}, "body"},
		{TypeIngressReceived, "empty body is fine", func(m Message) Message { e := m.(IngressReceived); e.Body = nil; return e }, ""},
		{TypeIngressReceived, "bad header name", func(m Message) Message {
			e := m.(IngressReceived)
			e.Headers = map[string]string{"Bad Header": "x"}
			return e
		}, "headers"},
		{TypeWebhookDelivered, "missing execution", func(m Message) Message { e := m.(WebhookDelivered); e.ExecutionID = ""; return e }, "executionId"},
		{TypeWebhookDelivered, "no time", func(m Message) Message { e := m.(WebhookDelivered); e.DeliveredAt = time.Time{}; return e }, "deliveredAt"},
		{TypeWebhookAttemptFailed, "no error class", func(m Message) Message { e := m.(WebhookAttemptFailed); e.ErrorClass = ""; return e }, "errorClass"},
		{TypeWebhookAttemptFailed, "no next attempt", func(m Message) Message {
			e := m.(WebhookAttemptFailed)
			e.NextAttemptAt = time.Time{}
			return e
		}, "nextAttemptAt"},
		{TypeWebhookExhausted, "zero attempts", func(m Message) Message { e := m.(WebhookExhausted); e.Attempts = 0; return e }, "attempts"},
		{TypeWebhookEndpointDisabled, "no reason", func(m Message) Message { e := m.(WebhookEndpointDisabled); e.Reason = ""; return e }, "reason"},
		{TypeSyncStarted, "unknown mode", func(m Message) Message { e := m.(SyncStarted); e.Mode = ""; return e }, "mode"},
		{TypeSyncCompleted, "running is not completed", func(m Message) Message { e := m.(SyncCompleted); e.Status = ExecRunning; return e }, "status"},
		{TypeSyncCompleted, "negative counts", func(m Message) Message { e := m.(SyncCompleted); e.Stats.Failed = -1; return e }, "stats"},
		{TypeSyncFailed, "no reason", func(m Message) Message { e := m.(SyncFailed); e.Reason = " "; return e }, "reason"},
		{TypeConflictDetected, "unknown kind", func(m Message) Message { e := m.(ConflictDetected); e.Kind = "delete_delete"; return e }, "kind"},
		{TypeConflictDetected, "no record key", func(m Message) Message { e := m.(ConflictDetected); e.RecordKey = ""; return e }, "recordKey"},
		{TypeConflictResolved, "escalated is not resolved", func(m Message) Message {
			e := m.(ConflictResolved)
			e.Outcome = OutcomeEscalated
			return e
		}, "outcome"},
		{TypeConflictResolved, "unknown strategy", func(m Message) Message { e := m.(ConflictResolved); e.Strategy = "x"; return e }, "strategy"},
		{TypeConflictEscalated, "missing conflict", func(m Message) Message { e := m.(ConflictEscalated); e.ConflictID = ""; return e }, "conflictId"},
	}
	samples := sampleMessages()
	for _, tc := range cases {
		t.Run(tc.ceType+"/"+tc.name, func(t *testing.T) {
			err := tc.mutate(samples[tc.ceType]).Validate()
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

func TestEvents_CarryNoSecretFields(t *testing.T) {
	for _, mt := range MessageTypes() {
		if mt.Kind != KindEvent {
			continue
		}
		typ := reflect.TypeOf(mt.New()).Elem()
		for i := range typ.NumField() {
			name := strings.ToLower(typ.Field(i).Tag.Get("json"))
			for _, bad := range []string{"secret", "token", "password", "credential", "headers", "body", "data"} {
				if strings.Contains(name, bad) {
					t.Errorf("event %s has field %q; events must not carry secrets or payloads", mt.Name, name)
				}
			}
		}
	}
}

func TestRedactHeaders_HidesCredentialsKeepsTheRest(t *testing.T) {
	in := map[string]string{
		"Authorization":       "Bearer abc",
		"proxy-authorization": "Basic xyz",
		"Cookie":              "sid=1",
		"X-Api-Key":           "k",
		"X-Auth-Token":        "t",
		"X-Client-Secret":     "s",
		"Content-Type":        "application/json",
		"Webhook-Signature":   "v1,abc",
		"X-Signature":         "sha256=ab",
		"User-Agent":          "Castiel-Webhooks/1",
	}
	out := RedactHeaders(in)
	for k, v := range out {
		redacted := v == RedactedValue
		wantRedacted := k != "Content-Type" && k != "Webhook-Signature" && k != "X-Signature" && k != "User-Agent"
		if redacted != wantRedacted {
			t.Errorf("header %s: redacted=%v, want %v", k, redacted, wantRedacted)
		}
	}
	if in["Authorization"] != "Bearer abc" {
		t.Error("RedactHeaders modified its input")
	}
	if len(out) != len(in) {
		t.Errorf("RedactHeaders dropped headers: %d of %d", len(out), len(in))
	}
	if RedactHeaders(nil) != nil {
		t.Error("RedactHeaders(nil) should stay nil")
	}
}
