package webhook

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
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

// The fan-out makes first attempts itself while it has inline slots and
// publishes the rest to the delivery queue: every endpoint gets the event
// exactly once, signed with its delivery's webhook-id, whichever path it took.
func TestFanOut_InlineAndQueuedFirstAttemptsDeliverEachOnce(t *testing.T) {
	for _, tc := range []struct {
		name           string
		inlineAttempts int
		inline, queued float64
	}{
		{"all inline", 64, 4, 0},
		{"inline slots run out", 1, 1, 3},
		{"inline off", -1, 0, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := fastOptions()
			opts.InlineAttempts = tc.inlineAttempts
			h := newHarness(t, harnessConfig{opts: opts})
			var rcs []*receiver
			var eps []domain.WebhookEndpoint
			for i := range 4 {
				rc := newReceiver(t, nil)
				ep, _ := h.endpoint(fmt.Sprintf("wh-%d", i), rc.srv.URL, []string{"*"})
				rcs, eps = append(rcs, rc), append(eps, ep)
			}

			h.publishEvent("evt-paths", "contact.updated", `{"id":7}`)
			eventually(t, 5*time.Second, "not every endpoint got its delivery", func() bool {
				return len(h.events.ofType(domain.TypeWebhookDelivered)) == 4
			})
			time.Sleep(100 * time.Millisecond)
			for i, rc := range rcs {
				if rc.count() != 1 {
					t.Fatalf("endpoint %d got %d requests, want 1", i, rc.count())
				}
				if id := rc.requests()[0].header.Get("webhook-id"); id != domain.DeliveryID("evt-paths", eps[i].ID) {
					t.Errorf("endpoint %d got webhook-id %q, want its delivery id", i, id)
				}
			}
			if got := h.metric("webhook_fanout_deliveries_total", pathInline); got != tc.inline {
				t.Errorf("first attempts made inline: %v, want %v", got, tc.inline)
			}
			if got := h.metric("webhook_fanout_deliveries_total", pathQueue); got != tc.queued {
				t.Errorf("first attempts through the delivery queue: %v, want %v", got, tc.queued)
			}
		})
	}
}

// An endpoint that hangs holds at most its in-flight bound of inline
// attempts (and so of events); the fan-out defers the rest of its deliveries
// and the healthy endpoint beside it gets every event at once.
func TestFanOut_HangingEndpointDoesNotHoldTheOthersInline(t *testing.T) {
	opts := fastOptions()
	opts.MaxInFlightPerEndpoint = 2
	opts.Timeout = 10 * time.Second
	opts.DeferDelay = 50 * time.Millisecond
	h := newHarness(t, harnessConfig{opts: opts})
	slow, release := newStuckReceiver(t)
	fast := newReceiver(t, nil)
	h.endpoint("wh-slow", slow.srv.URL, []string{"*"})
	h.endpoint("wh-fast", fast.srv.URL, []string{"*"})

	start := time.Now()
	for i := range 6 {
		h.publishEvent(fmt.Sprintf("evt-hang-%d", i), "contact.updated", `{}`)
	}
	eventually(t, 3*time.Second, "healthy deliveries waited behind the hanging endpoint", func() bool { return fast.count() == 6 })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("6 healthy deliveries took %v beside a hanging endpoint", took)
	}
	time.Sleep(200 * time.Millisecond)
	if n := slow.count(); n != 2 {
		t.Errorf("the hanging endpoint holds %d attempts, want MaxInFlightPerEndpoint=2", n)
	}
	release()
	eventually(t, 10*time.Second, "the hanging endpoint's deferred deliveries were lost", func() bool { return slow.count() == 6 })
}

// A slow inline attempt is handed off: the event is acked before the endpoint
// answers, and the safety copy scheduled for after the attempt's deadline
// finds it settled, so the endpoint is called once and one result published.
func TestFanOut_HandedOffAttemptIsNotRepeatedByItsSafetyCopy(t *testing.T) {
	opts := fastOptions()
	opts.Timeout = time.Second
	opts.InlineHandoff = 100 * time.Millisecond
	h := newHarness(t, harnessConfig{opts: opts})
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header, string) {
		time.Sleep(400 * time.Millisecond)
		return 204, nil, ""
	})
	ep, _ := h.endpoint("wh-slowish", rc.srv.URL, []string{"*"})

	h.publishEvent("evt-handoff", "contact.updated", `{}`)
	eventually(t, 5*time.Second, "no safety copy was scheduled", func() bool { return len(h.delayer.all()) == 1 })
	if got := h.metric("webhook_fanout_handoffs_total", ""); got != 1 {
		t.Errorf("handoffs metric %v, want 1", got)
	}
	copyDue := h.delayer.all()[0].at.Add(h.delayer.all()[0].delay)
	eventually(t, 10*time.Second, "the safety copy never ran", func() bool {
		return time.Now().After(copyDue.Add(300 * time.Millisecond))
	})
	if n := rc.count(); n != 1 {
		t.Errorf("endpoint called %d times, want 1", n)
	}
	if n := len(h.events.ofType(domain.TypeWebhookDelivered)); n != 1 {
		t.Errorf("%d delivered events, want 1: the safety copy published the follow-ups again", n)
	}
	rec, _, err := h.attempts.Get(context.Background(), testTenant, domain.AttemptExecutionID(domain.DeliveryID("evt-handoff", ep.ID), 1))
	if err != nil || rec.Status != domain.ExecDelivered || !rec.Settled {
		t.Errorf("attempt record %+v settled=%v (err %v), want delivered and settled", rec.Execution, rec.Settled, err)
	}
}

// If a handed-off attempt is never recorded (the process died, here: the
// record write failed), its safety copy makes the attempt: nothing is lost.
func TestFanOut_SafetyCopyMakesTheAttemptAHandedOffOneNeverRecorded(t *testing.T) {
	opts := fastOptions()
	opts.Timeout = time.Second
	opts.InlineHandoff = 100 * time.Millisecond
	dlv := domain.DeliveryID("evt-lost", "wh-lost")
	h := newHarness(t, harnessConfig{opts: opts, backend: func(b store.Backend) store.Backend {
		return failingCreateBackend{Backend: b, id: domain.AttemptExecutionID(dlv, 1), fails: new(atomic.Int32)}
	}})
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header, string) {
		time.Sleep(300 * time.Millisecond)
		return 204, nil, ""
	})
	h.endpoint("wh-lost", rc.srv.URL, []string{"*"})

	h.publishEvent("evt-lost", "contact.updated", `{}`)
	eventually(t, 10*time.Second, "the safety copy did not deliver", func() bool {
		return len(h.events.ofType(domain.TypeWebhookDelivered)) == 1
	})
	if n := rc.count(); n != 2 {
		t.Errorf("endpoint called %d times, want 2 (the unrecorded attempt, then the safety copy's)", n)
	}
	if recs := h.attemptsOf(dlv); len(recs) != 1 || recs[0].Status != domain.ExecDelivered {
		t.Errorf("records %v, want one delivered attempt", statuses(recs))
	}
}

// failingCreateBackend fails the first create of one execution id, as if
// the process had died before recording it.
type failingCreateBackend struct {
	store.Backend
	id    string
	fails *atomic.Int32
}

func (b failingCreateBackend) Container(name string) (store.Container, error) {
	c, err := b.Backend.Container(name)
	if name != domain.ContainerExecutions || err != nil {
		return c, err
	}
	return failingCreateContainer{Container: c, b: b}, nil
}

type failingCreateContainer struct {
	store.Container
	b failingCreateBackend
}

func (c failingCreateContainer) Create(ctx context.Context, pk, id string, body []byte) (string, error) {
	if id == c.b.id && c.b.fails.Add(1) == 1 {
		return "", fmt.Errorf("store unreachable (simulated)")
	}
	return c.Container.Create(ctx, pk, id, body)
}

// When the fan-out's handler deadline comes before the hand-off, the inline
// attempts still running are interrupted: our deadline is not the endpoint's
// failure, so nothing is recorded and the event is retried.
func TestFanOut_HandlerDeadlineInterruptsInlineAttemptsUnspent(t *testing.T) {
	opts := fastOptions()
	opts.Timeout = 5 * time.Second
	opts.InlineHandoff = 5 * time.Second // later than the handler's deadline
	h := newHarness(t, harnessConfig{opts: opts, retryPolicy: messaging.Policy{
		HandlerTimeout: 200 * time.Millisecond, RetryInitial: 50 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		RetryMaxElapsed: 500 * time.Millisecond, CloseTimeout: 5 * time.Second,
	}})
	rc := newReceiver(t, func(_ int, r *http.Request) (int, http.Header, string) {
		<-r.Context().Done() // hangs until the caller gives up
		return 204, nil, ""
	})
	ep, _ := h.endpoint("wh-deadline", rc.srv.URL, []string{"*"})

	h.publishEvent("evt-deadline", "contact.updated", `{}`)
	eventually(t, 5*time.Second, "the event was not retried after its handler's deadline", func() bool { return rc.count() >= 2 })
	if recs := h.attemptsOf(domain.DeliveryID("evt-deadline", ep.ID)); len(recs) != 0 {
		t.Errorf("interrupted attempts left records %v; want none (our deadline is not the endpoint's failure)", statuses(recs))
	}
}
