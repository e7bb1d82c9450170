package webhook

import (
	"context"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
)

func TestFanOut_OneDeliveryPerMatchingActiveEndpoint(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	exact, prefix, other, off := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)
	epExact, _ := h.endpoint("wh-exact", exact.srv.URL, []string{"contact.updated"})
	epPrefix, _ := h.endpoint("wh-prefix", prefix.srv.URL, []string{"contact.*"})
	h.endpoint("wh-other", other.srv.URL, []string{"sync.*", "contact"})
	h.endpoint("wh-off", off.srv.URL, []string{"*"}, func(ep *domain.WebhookEndpoint) { ep.Status = domain.WebhookDisabled })

	h.publishEvent("evt-fan", "contact.updated", `{"id":1}`)
	eventually(t, 5*time.Second, "matching endpoints did not both get the event", func() bool {
		return exact.count() == 1 && prefix.count() == 1
	})
	time.Sleep(100 * time.Millisecond)
	if other.count() != 0 || off.count() != 0 {
		t.Errorf("a non-matching (%d) or disabled (%d) endpoint got the event", other.count(), off.count())
	}
	for rc, ep := range map[*receiver]domain.WebhookEndpoint{exact: epExact, prefix: epPrefix} {
		if id := rc.requests()[0].header.Get("webhook-id"); id != domain.DeliveryID("evt-fan", ep.ID) {
			t.Errorf("%s got webhook-id %q, want DeliveryID(event, endpoint)", ep.ID, id)
		}
	}
}

func TestFanOut_NoMatchIsRecordedOnce(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	rc := newReceiver(t, nil)
	h.endpoint("wh-sync", rc.srv.URL, []string{"sync.*"})

	h.publishEvent("evt-none", "contact.deleted", `{}`)
	h.publishEvent("evt-none", "contact.deleted", `{}`) // redelivered
	id := domain.NoMatchExecutionID("evt-none")
	eventually(t, 5*time.Second, "no no_match record", func() bool {
		_, _, err := h.attempts.Get(context.Background(), testTenant, id)
		return err == nil
	})
	rec, _, _ := h.attempts.Get(context.Background(), testTenant, id)
	if rec.Status != domain.ExecNoMatch || rec.EventID != "evt-none" || rec.EventType != "contact.deleted" || rec.Kind != domain.ExecutionWebhookDelivery {
		t.Errorf("no_match record %+v", rec.Execution)
	}
	time.Sleep(100 * time.Millisecond)
	if rc.count() != 0 || len(h.events.all()) != 0 {
		t.Errorf("an unmatched event was sent (%d) or reported (%d)", rc.count(), len(h.events.all()))
	}
}

func TestFanOut_RedeliveredEventDoesNotMultiplyDeliveries(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	a, b := newReceiver(t, nil), newReceiver(t, nil)
	h.endpoint("wh-a", a.srv.URL, []string{"*"})
	h.endpoint("wh-b", b.srv.URL, []string{"*"})

	h.publishEvent("evt-twice", "contact.updated", `{}`)
	eventually(t, 5*time.Second, "first delivery missing", func() bool {
		return len(h.events.ofType(domain.TypeWebhookDelivered)) == 2
	})
	h.publishEvent("evt-twice", "contact.updated", `{}`) // the broker redelivers the event
	eventually(t, 5*time.Second, "the redelivered event was not handled", func() bool {
		return len(h.events.ofType(domain.TypeWebhookDelivered)) == 4
	})
	if a.count() != 1 || b.count() != 1 {
		t.Errorf("receivers got %d and %d requests for one event delivered twice, want 1 each", a.count(), b.count())
	}
}
