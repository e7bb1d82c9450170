package httpapi

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
)

// seedDelivery stores attempt records 1..len(statuses) of one delivery, the
// first holding the event, attempt i started at base + i minutes.
func (h *harness) seedDelivery(tenant, webhookID, eventID string, base time.Time, statuses ...domain.ExecutionStatus) string {
	h.t.Helper()
	dlv := domain.DeliveryID(eventID, webhookID)
	for i, s := range statuses {
		n := i + 1
		rec := domain.DeliveryAttempt{Execution: domain.Execution{
			ID: domain.AttemptExecutionID(dlv, n), TenantID: tenant, Kind: domain.ExecutionWebhookDelivery, Status: s,
			WebhookID: webhookID, DeliveryID: dlv, EventID: eventID, EventType: "contact.updated", Attempt: n,
			StartedAt: base.Add(time.Duration(n) * time.Minute), CreatedAt: base, UpdatedAt: base,
		}}
		if n == 1 {
			rec.Event = &domain.DeliveredEvent{Data: json.RawMessage(`{"event":"` + eventID + `"}`), OccurredAt: base, FirstAttemptAt: base}
		}
		if _, err := h.api.deliveries.Create(context.Background(), rec); err != nil {
			h.t.Fatalf("seed attempt %d of %s: %v", n, dlv, err)
		}
	}
	return dlv
}

func (h *harness) createWebhook(token string) string {
	h.t.Helper()
	var wh webhookCreated
	h.must(201, "POST", v1+"/webhooks", token, map[string]any{"url": "https://hooks.example.com/x", "eventTypes": []string{"*"}}).json(h.t, &wh)
	return wh.ID
}

func (h *harness) replayed() []domain.DeliverWebhook {
	var out []domain.DeliverWebhook
	for _, s := range h.sender.all() {
		if cmd, ok := s.msg.(domain.DeliverWebhook); ok {
			out = append(out, cmd)
		}
	}
	return out
}

func TestReplay_OneDeliveryContinuesAfterItsLastAttempt(t *testing.T) {
	h := newHarness(t)
	wh := h.createWebhook(tokAdminA)
	base := h.clock().Add(-time.Hour)
	dlv := h.seedDelivery(tenantA, wh, "evt-1", base, domain.ExecFailedRetrying, domain.ExecFailedRetrying, domain.ExecExhausted)

	var got replayAccepted
	h.must(202, "POST", v1+"/webhooks/"+wh+"/replay", tokAdminA, map[string]any{"deliveryId": dlv}).json(t, &got)
	if got.Replayed != 1 {
		t.Fatalf("replayed %d, want 1", got.Replayed)
	}
	cmds := h.replayed()
	if len(cmds) != 1 {
		t.Fatalf("%d commands sent, want 1", len(cmds))
	}
	c := cmds[0]
	if c.DeliveryID != dlv || c.Attempt != 4 || c.WebhookID != wh || c.TenantID != tenantA || c.EventID != "evt-1" ||
		string(c.Data) != `{"event":"evt-1"}` || !c.FirstAttemptAt.Equal(base) {
		t.Errorf("replay command %+v: want attempt 4 of the same delivery with its event", c)
	}
	if s := h.sender.all()[0]; s.tenantID != tenantA {
		t.Errorf("sent for tenant %q", s.tenantID)
	}
}

func TestReplay_BulkReplaysFailedAndExhaustedDeliveriesSince(t *testing.T) {
	h := newHarness(t)
	wh, other := h.createWebhook(tokAdminA), h.createWebhook(tokAdminA)
	since := h.clock().Add(-time.Hour)
	exhausted := h.seedDelivery(tenantA, wh, "evt-ex", since, domain.ExecFailedRetrying, domain.ExecExhausted)
	retrying := h.seedDelivery(tenantA, wh, "evt-rt", since.Add(time.Minute), domain.ExecFailedRetrying)
	h.seedDelivery(tenantA, wh, "evt-ok", since, domain.ExecFailedRetrying, domain.ExecDelivered) // recovered by itself
	h.seedDelivery(tenantA, wh, "evt-old", since.Add(-2*time.Hour), domain.ExecExhausted)         // before since
	h.seedDelivery(tenantA, other, "evt-other", since, domain.ExecExhausted)                      // another endpoint
	h.seedDelivery(tenantB, wh, "evt-b", since, domain.ExecExhausted)                             // another tenant's records

	var got replayAccepted
	h.must(202, "POST", v1+"/webhooks/"+wh+"/replay", tokAdminA, map[string]any{"since": since}).json(t, &got)
	if got.Replayed != 2 || got.Truncated {
		t.Fatalf("answer %+v, want 2 replayed", got)
	}
	byDelivery := map[string]int{}
	for _, c := range h.replayed() {
		byDelivery[c.DeliveryID] = c.Attempt
		if c.TenantID != tenantA || c.WebhookID != wh {
			t.Errorf("replayed %s of tenant %s webhook %s", c.DeliveryID, c.TenantID, c.WebhookID)
		}
	}
	if byDelivery[exhausted] != 3 || byDelivery[retrying] != 2 || len(byDelivery) != 2 {
		t.Errorf("replayed %v, want %s as attempt 3 and %s as attempt 2", byDelivery, exhausted, retrying)
	}

	before := len(h.sender.all())
	h.must(202, "POST", v1+"/webhooks/"+wh+"/replay", tokAdminA, map[string]any{"since": since, "status": "exhausted"}).json(t, &got)
	if got.Replayed != 1 || h.replayed()[before].DeliveryID != exhausted {
		t.Errorf("status=exhausted replayed %d (%+v), want only %s", got.Replayed, h.replayed()[before:], exhausted)
	}
}

func TestReplay_RejectsWhatItCannotReplay(t *testing.T) {
	h := newHarness(t)
	wh := h.createWebhook(tokAdminA)
	base := h.clock().Add(-time.Hour)
	dlv := h.seedDelivery(tenantA, wh, "evt-1", base, domain.ExecExhausted)
	otherWH := h.createWebhook(tokAdminA)
	otherDlv := h.seedDelivery(tenantA, otherWH, "evt-2", base, domain.ExecExhausted)
	// A delivery whose first attempt record (with the event) has expired.
	expired := domain.DeliveryID("evt-3", wh)
	if _, err := h.api.deliveries.Create(context.Background(), domain.DeliveryAttempt{Execution: domain.Execution{
		ID: domain.AttemptExecutionID(expired, 5), TenantID: tenantA, Kind: domain.ExecutionWebhookDelivery, Status: domain.ExecExhausted,
		WebhookID: wh, DeliveryID: expired, EventID: "evt-3", EventType: "contact.updated", Attempt: 5, StartedAt: base,
	}}); err != nil {
		t.Fatal(err)
	}
	bDlv := h.seedDelivery(tenantB, "wh-b", "evt-b", base, domain.ExecExhausted)

	path := v1 + "/webhooks/" + wh + "/replay"
	cases := []struct {
		name  string
		token string
		path  string
		body  any
		want  int
		field string
	}{
		{"nothing selected", tokAdminA, path, map[string]any{}, 422, "since"},
		{"deliveryId with since", tokAdminA, path, map[string]any{"deliveryId": dlv, "since": base}, 422, "since"},
		{"deliveryId with status", tokAdminA, path, map[string]any{"deliveryId": dlv, "status": "exhausted"}, 422, "status"},
		{"status not replayable", tokAdminA, path, map[string]any{"since": base, "status": "delivered"}, 422, "status"},
		{"malformed deliveryId", tokAdminA, path, map[string]any{"deliveryId": "no/such id"}, 422, "deliveryId"},
		{"since not a time", tokAdminA, path, map[string]any{"since": "yesterday"}, 400, ""},
		{"unknown field", tokAdminA, path, map[string]any{"since": base, "tenantId": tenantB}, 400, "tenantId"},
		{"unknown delivery", tokAdminA, path, map[string]any{"deliveryId": "dlv_nope"}, 404, ""},
		{"another webhook's delivery", tokAdminA, path, map[string]any{"deliveryId": otherDlv}, 404, ""},
		{"another tenant's delivery", tokAdminA, path, map[string]any{"deliveryId": bDlv}, 404, ""},
		{"event no longer kept", tokAdminA, path, map[string]any{"deliveryId": expired}, 409, ""},
		{"unknown webhook", tokAdminA, v1 + "/webhooks/wh-nope/replay", map[string]any{"deliveryId": dlv}, 404, ""},
		{"viewer", tokViewerA, path, map[string]any{"deliveryId": dlv}, 403, ""},
		{"another tenant's admin", tokAdminB, path, map[string]any{"deliveryId": dlv}, 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do("POST", tc.path, tc.token, tc.body)
			if r.Code != tc.want {
				t.Fatalf("answered %d, want %d: %s", r.Code, tc.want, r.body)
			}
			p := r.problem(t)
			if tc.field != "" {
				found := false
				for _, f := range p.Errors {
					found = found || f.Field == tc.field
				}
				if !found {
					t.Errorf("the problem does not name %q: %s", tc.field, r.body)
				}
			}
		})
	}
	if n := len(h.replayed()); n != 0 {
		t.Errorf("%d commands sent by refused replays", n)
	}

	// A disabled webhook is not replayed to.
	if _, _, err := h.api.webhooks.Update(context.Background(), tenantA, wh, func(w *domain.WebhookEndpoint) error {
		w.Status, w.DisabledReason = domain.WebhookDisabled, "gone"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	r := h.must(409, "POST", path, tokAdminA, map[string]any{"deliveryId": dlv})
	if !strings.Contains(r.body, "enable") {
		t.Errorf("409 does not say to enable the webhook: %s", r.body)
	}
}

func TestExecutions_FilterByDeliveryShowsItsStateWithoutTheEvent(t *testing.T) {
	h := newHarness(t)
	wh := h.createWebhook(tokAdminA)
	dlv := h.seedDelivery(tenantA, wh, "evt-1", h.clock().Add(-time.Hour), domain.ExecFailedRetrying, domain.ExecDelivered)
	h.seedDelivery(tenantA, wh, "evt-2", h.clock(), domain.ExecExhausted)

	var page struct {
		Items []map[string]any `json:"items"`
	}
	r := h.must(200, "GET", v1+"/executions?deliveryId="+dlv, tokViewerA, nil)
	r.json(t, &page)
	if len(page.Items) != 2 {
		t.Fatalf("%d attempts of %s listed, want 2: %s", len(page.Items), dlv, r.body)
	}
	for _, it := range page.Items {
		if it["deliveryId"] != dlv {
			t.Errorf("listed another delivery's attempt: %v", it)
		}
	}
	if strings.Contains(r.body, `"event"`) || strings.Contains(r.body, "evt-1\"}") {
		t.Errorf("the listing carries the stored event payload: %s", r.body)
	}
	if r := h.must(200, "GET", v1+"/executions?deliveryId="+dlv, tokViewerB, nil); strings.Contains(r.body, dlv) {
		t.Errorf("tenant B sees tenant A's delivery: %s", r.body)
	}
	h.must(400, "GET", v1+"/executions?deliveryId=bad/id", tokViewerA, nil)
}
