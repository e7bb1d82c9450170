package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
)

func TestDelivery_SignatureVerifiesWithTheOfficialLibrary(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	rc := newReceiver(t, nil)
	ep, secret := h.endpoint("wh-1", rc.srv.URL+"/hooks", []string{"contact.*"})

	h.publishEvent("evt-1", "contact.updated", `{"id":42,"name":"Ada"}`)
	eventually(t, 5*time.Second, "the receiver never got the delivery", func() bool { return rc.count() == 1 })

	got := rc.requests()[0]
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(got.body, got.header); err != nil {
		t.Fatalf("the official Standard Webhooks library rejects our signature: %v\nheaders: %v", err, got.header)
	}
	if id := got.header.Get("webhook-id"); id != domain.DeliveryID("evt-1", ep.ID) {
		t.Errorf("webhook-id %q, want the delivery id %q", id, domain.DeliveryID("evt-1", ep.ID))
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	if ua := got.header.Get("User-Agent"); ua != DefaultUserAgent {
		t.Errorf("User-Agent %q", ua)
	}
	var payload struct {
		Type      string          `json:"type"`
		Timestamp time.Time       `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(got.body, &payload); err != nil || payload.Type != "contact.updated" ||
		string(payload.Data) != `{"id":42,"name":"Ada"}` || payload.Timestamp.IsZero() {
		t.Errorf("payload is not {type,timestamp,data} of the event: %s (%v)", got.body, err)
	}

	eventually(t, 2*time.Second, "no WebhookDelivered event", func() bool { return len(h.events.ofType(domain.TypeWebhookDelivered)) == 1 })
	recs := h.attemptsOf(domain.DeliveryID("evt-1", ep.ID))
	if len(recs) != 1 || recs[0].Status != domain.ExecDelivered || recs[0].ResponseStatus != 200 || recs[0].Event == nil {
		t.Fatalf("records %+v: want one delivered attempt 1 holding the event", recs)
	}
	if got := h.events.all()[0].correlationID; got != "corr-evt-1" {
		t.Errorf("the result event carries correlation id %q, want the event's corr-evt-1", got)
	}
}

func TestDelivery_SignsWithBothSecretsDuringRotation(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	rc := newReceiver(t, nil)
	oldSecret := newSecret()
	oldRef, err := h.secrets.Put(context.Background(), testTenant, []byte(oldSecret))
	if err != nil {
		t.Fatal(err)
	}
	overlapEnds := time.Now().Add(time.Hour)
	_, newSecretValue := h.endpoint("wh-rot", rc.srv.URL, []string{"*"}, func(ep *domain.WebhookEndpoint) {
		ep.PreviousSecretRef, ep.PreviousSecretExpiresAt = oldRef, &overlapEnds
	})

	h.publishEvent("evt-rot", "contact.updated", `{}`)
	eventually(t, 5*time.Second, "the receiver never got the delivery", func() bool { return rc.count() == 1 })
	got := rc.requests()[0]
	if sigs := strings.Fields(got.header.Get("webhook-signature")); len(sigs) != 2 {
		t.Fatalf("webhook-signature %q: want two space-separated signatures during the overlap", got.header.Get("webhook-signature"))
	}
	for name, secret := range map[string]string{"new": newSecretValue, "previous": oldSecret} {
		wh, _ := standardwebhooks.NewWebhook(secret)
		if err := wh.Verify(got.body, got.header); err != nil {
			t.Errorf("a receiver still on the %s secret cannot verify: %v", name, err)
		}
	}
}

func TestDelivery_RetriesOnTheScheduleThenExhausts(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	rc := newReceiver(t, always(500))
	ep, _ := h.endpoint("wh-down", rc.srv.URL, []string{"*"})
	dlv := domain.DeliveryID("evt-r", ep.ID)

	h.publishEvent("evt-r", "contact.updated", `{"n":1}`)
	eventually(t, 5*time.Second, "the delivery was not exhausted after 3 attempts", func() bool {
		return len(h.events.ofType(domain.TypeWebhookExhausted)) == 1
	})
	time.Sleep(100 * time.Millisecond) // nothing more may come
	reqs := rc.requests()
	if len(reqs) != 3 {
		t.Fatalf("the endpoint was called %d times, want 3 (the schedule's length)", len(reqs))
	}
	for i, r := range reqs {
		if id := r.header.Get("webhook-id"); id != dlv {
			t.Errorf("attempt %d carried webhook-id %q, want %q on every retry", i+1, id, dlv)
		}
		if string(r.body) != string(reqs[0].body) {
			t.Errorf("attempt %d sent another body: %s vs %s", i+1, r.body, reqs[0].body)
		}
		if i > 0 && r.at.Sub(reqs[i-1].at) < 30*time.Millisecond {
			t.Errorf("attempt %d came %v after the previous one, sooner than the schedule's 30ms", i+1, r.at.Sub(reqs[i-1].at))
		}
	}
	recs := h.attemptsOf(dlv)
	want := []domain.ExecutionStatus{domain.ExecFailedRetrying, domain.ExecFailedRetrying, domain.ExecExhausted}
	if got := statuses(recs); len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Fatalf("attempt records %v, want %v", got, want)
	}
	for i, r := range recs {
		if r.Attempt != i+1 || r.ResponseStatus != 500 || r.ErrorClass != domain.ErrorClassHTTPStatus ||
			r.ResponseBody != "status 500" || r.RequestHeaders["webhook-id"] != dlv || r.ID != domain.AttemptExecutionID(dlv, i+1) {
			t.Errorf("record %d incomplete: %+v", i+1, r.Execution)
		}
		if (i < 2) != (r.NextAttemptAt != nil) {
			t.Errorf("record %d: nextAttemptAt %v (set only while retrying)", i+1, r.NextAttemptAt)
		}
		if (i == 0) != (r.Event != nil) {
			t.Errorf("record %d: the event is kept on attempt 1 only", i+1)
		}
	}
	if n := len(h.events.ofType(domain.TypeWebhookAttemptFailed)); n != 2 {
		t.Errorf("%d WebhookAttemptFailed events, want 2", n)
	}
	if n := h.metric("webhook_delivery_retries_scheduled_total", ""); n != 2 {
		t.Errorf("webhook_delivery_retries_scheduled_total = %v, want 2", n)
	}
	if n := h.metric("webhook_delivery_attempts_total", "5xx"); n != 3 {
		t.Errorf("webhook_delivery_attempts_total{status_class=5xx} = %v, want 3", n)
	}
	ex := h.events.ofType(domain.TypeWebhookExhausted)[0].(domain.WebhookExhausted)
	if ex.Attempts != 3 || ex.LastResponseStatus != 500 || ex.DeliveryID != dlv {
		t.Errorf("exhausted event %+v", ex)
	}
	for _, c := range h.delayer.all() {
		// The wait counts from the failed attempt's end: what remains of it is requested.
		due := *recs[c.cmd.Attempt-2].NextAttemptAt
		if c.topic != messaging.TopicCmdWebhookDeliver || c.at.Add(c.delay).Sub(due).Abs() > 5*time.Millisecond {
			t.Errorf("attempt %d scheduled on %s for %v, want the deliver topic at the record's nextAttemptAt %v",
				c.cmd.Attempt, c.topic, c.at.Add(c.delay), due)
		}
	}
	if ep := h.storedEndpoint("wh-down"); ep.Status != domain.WebhookActive || ep.FailingSince == nil {
		t.Errorf("endpoint after failures: status %s failingSince %v; want active and failing", ep.Status, ep.FailingSince)
	}
}

func TestDelivery_410DisablesTheEndpoint(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	rc := newReceiver(t, always(410))
	ep, _ := h.endpoint("wh-gone", rc.srv.URL, []string{"*"})

	h.publishEvent("evt-g", "contact.updated", `{}`)
	eventually(t, 5*time.Second, "no endpoint_disabled event after a 410", func() bool {
		return len(h.events.ofType(domain.TypeWebhookEndpointDisabled)) == 1
	})
	stored := h.storedEndpoint(ep.ID)
	if stored.Status != domain.WebhookDisabled || stored.DisabledReason != domain.ReasonGone {
		t.Errorf("endpoint after 410: %s (%q), want disabled with the reason", stored.Status, stored.DisabledReason)
	}
	recs := h.attemptsOf(domain.DeliveryID("evt-g", ep.ID))
	if len(recs) != 1 || recs[0].Status != domain.ExecExhausted || recs[0].ErrorClass != domain.ErrorClassGone {
		t.Fatalf("records %+v: want one exhausted attempt of class gone", statuses(recs))
	}
	if len(h.delayer.all()) != 0 {
		t.Errorf("a 410 scheduled another attempt: %+v", h.delayer.all())
	}

	// The next event's delivery is not attempted on the disabled endpoint.
	h.publishEvent("evt-g2", "contact.updated", `{}`)
	time.Sleep(200 * time.Millisecond)
	if rc.count() != 1 {
		t.Errorf("the disabled endpoint was called %d times", rc.count())
	}
}

func TestDelivery_HonoursRetryAfter(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	rc := newReceiver(t, func(n int, _ *http.Request) (int, http.Header, string) {
		if n == 1 {
			return 429, http.Header{"Retry-After": {"1"}}, "slow down"
		}
		return 200, nil, "ok"
	})
	ep, _ := h.endpoint("wh-429", rc.srv.URL, []string{"*"})

	h.publishEvent("evt-429", "contact.updated", `{}`)
	eventually(t, 5*time.Second, "not delivered after the Retry-After", func() bool { return rc.count() == 2 })
	reqs := rc.requests()
	if gap := reqs[1].at.Sub(reqs[0].at); gap < time.Second {
		t.Errorf("second attempt came %v after a 429 with Retry-After: 1", gap)
	}
	calls := h.delayer.all()
	if len(calls) != 1 || calls[0].cmd.Attempt != 2 {
		t.Fatalf("delays %+v: want attempt 2 scheduled", calls)
	}
	recs := h.attemptsOf(domain.DeliveryID("evt-429", ep.ID))
	first := recs[0]
	if first.ErrorClass != domain.ErrorClassThrottled || !first.NotBefore || first.NextAttemptAt.Sub(*first.FinishedAt) != time.Second {
		t.Errorf("first record %+v: want throttled, next attempt 1s after it", first.Execution)
	}
	// Even shortened by the Delayer's jitter (up to -10%), the delay must not end before the Retry-After.
	if earliest := calls[0].at.Add(calls[0].delay * 9 / 10); earliest.Before(*first.NextAttemptAt) {
		t.Errorf("requested %v at %v: with -10%% jitter it could run at %v, before the Retry-After's %v",
			calls[0].delay, calls[0].at, earliest, first.NextAttemptAt)
	}
}

func TestDelivery_BreakerOpensAndDefersWithoutBurningAttempts(t *testing.T) {
	opts := fastOptions()
	opts.Schedule = []time.Duration{0, time.Hour} // retries out of the way: only first attempts run
	opts.BreakerFailures = 2
	opts.BreakerCooldown = time.Second
	h := newHarness(t, harnessConfig{opts: opts, deliverers: 1})
	var healthy atomic.Bool
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header, string) {
		if healthy.Load() {
			return 200, nil, "ok"
		}
		return 503, nil, "down"
	})
	ep, _ := h.endpoint("wh-brk", rc.srv.URL, []string{"*"})

	for _, id := range []string{"evt-b1", "evt-b2", "evt-b3", "evt-b4"} {
		h.publishDeliver(deliverCmd(id, ep, `{}`))
	}
	eventually(t, 5*time.Second, "the open breaker did not defer the two deliveries after the failures", func() bool {
		n := 0
		for _, c := range h.delayer.all() {
			if c.delay == opts.BreakerCooldown {
				n++
			}
		}
		return n == 2
	})
	if n := rc.count(); n != 2 {
		t.Errorf("endpoint called %d times before the breaker opened, want 2 (BreakerFailures)", n)
	}
	// Delivery order on the in-process broker is not fixed: find which two were deferred.
	var deferred []string
	for _, c := range h.delayer.all() {
		if c.delay != opts.BreakerCooldown {
			continue
		}
		deferred = append(deferred, c.cmd.DeliveryID)
		if c.cmd.Attempt != 1 {
			t.Errorf("a deferred delivery moved to attempt %d: deferrals must not use attempts", c.cmd.Attempt)
		}
		if recs := h.attemptsOf(c.cmd.DeliveryID); len(recs) != 0 {
			t.Errorf("deferred delivery %s has attempt records %v", c.cmd.EventID, statuses(recs))
		}
	}
	if len(deferred) != 2 {
		t.Fatalf("%d deliveries deferred by the open breaker, want 2", len(deferred))
	}
	if n := h.metric("webhook_endpoint_circuits", "open"); n != 1 {
		t.Errorf("webhook_endpoint_circuits{state=open} = %v while the breaker is open, want 1", n)
	}

	// After the cool-down the endpoint recovers and the deferred deliveries go through as attempt 1.
	healthy.Store(true)
	eventually(t, 5*time.Second, "deferred deliveries never delivered after the cool-down", func() bool {
		return len(h.attemptsOf(deferred[0])) == 1 && len(h.attemptsOf(deferred[1])) == 1
	})
	for _, id := range deferred {
		if r := h.attemptsOf(id)[0]; r.Attempt != 1 || r.Status != domain.ExecDelivered {
			t.Errorf("%s: attempt %d %s, want attempt 1 delivered", r.EventID, r.Attempt, r.Status)
		}
	}
	if n := h.metric("webhook_endpoint_circuits", ""); n != 0 {
		t.Errorf("webhook_endpoint_circuits = %v after the endpoint recovered, want 0", n)
	}
}

func TestDelivery_RateLimitDefersInsteadOfWaiting(t *testing.T) {
	opts := fastOptions()
	opts.DeferDelay = 100 * time.Millisecond
	h := newHarness(t, harnessConfig{opts: opts})
	rc := newReceiver(t, nil)
	ep, _ := h.endpoint("wh-rl", rc.srv.URL, []string{"*"}, func(ep *domain.WebhookEndpoint) { ep.RateLimitPerSecond = 2 })

	start := time.Now()
	for i := range 4 {
		h.publishDeliver(deliverCmd("evt-rl"+string(rune('a'+i)), ep, `{}`))
	}
	eventually(t, 10*time.Second, "rate-limited deliveries were not all delivered", func() bool {
		return len(h.events.ofType(domain.TypeWebhookDelivered)) == 4
	})
	reqs := rc.requests()
	// Burst 2 at once, then 2 per second: the 4th comes about 1s after the start.
	if spread := reqs[3].at.Sub(start); spread < 700*time.Millisecond {
		t.Errorf("4 deliveries at 2/s took %v: the limit was not enforced", spread)
	}
	var deferred int
	for _, c := range h.delayer.all() {
		if c.cmd.Attempt != 1 {
			t.Errorf("a rate-limited delivery moved to attempt %d", c.cmd.Attempt)
		}
		deferred++
	}
	if deferred == 0 {
		t.Error("no delivery was deferred: the handler must defer, not wait for a token")
	}
	for i := range 4 {
		recs := h.attemptsOf(domain.DeliveryID("evt-rl"+string(rune('a'+i)), ep.ID))
		if len(recs) != 1 || recs[0].Attempt != 1 {
			t.Errorf("delivery %d: records %v, want exactly attempt 1", i, statuses(recs))
		}
	}
}

func TestDelivery_SlowEndpointDoesNotDelayHealthyOnes(t *testing.T) {
	opts := fastOptions()
	opts.MaxInFlightPerEndpoint = 2
	opts.Timeout = 10 * time.Second
	opts.DeferDelay = 50 * time.Millisecond
	h := newHarness(t, harnessConfig{opts: opts, deliverers: 4})
	slow, release := newStuckReceiver(t)
	fast := newReceiver(t, nil)
	slowEp, _ := h.endpoint("wh-slow", slow.srv.URL, []string{"*"})
	fastEp, _ := h.endpoint("wh-fast", fast.srv.URL, []string{"*"})

	for i := range 6 {
		h.publishDeliver(deliverCmd("evt-s"+string(rune('a'+i)), slowEp, `{}`))
	}
	eventually(t, 5*time.Second, "the slow endpoint never got its bounded in-flight attempts", func() bool { return slow.count() == 2 })

	start := time.Now()
	for i := range 10 {
		h.publishDeliver(deliverCmd("evt-f"+string(rune('a'+i)), fastEp, `{}`))
	}
	eventually(t, 3*time.Second, "healthy deliveries waited behind the slow endpoint", func() bool { return fast.count() == 10 })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("10 healthy deliveries took %v beside a stuck endpoint", took)
	}
	if n := slow.count(); n != 2 {
		t.Errorf("the stuck endpoint holds %d attempts, want at most MaxInFlightPerEndpoint=2", n)
	}
	release()
	eventually(t, 10*time.Second, "the slow endpoint's deferred deliveries were lost", func() bool { return slow.count() == 6 })
}

func TestDelivery_RedeliveredAttemptDoesNotCallTheEndpointAgain(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	rc := newReceiver(t, nil)
	ep, _ := h.endpoint("wh-dup", rc.srv.URL, []string{"*"})
	cmd := deliverCmd("evt-dup", ep, `{}`)

	h.publishDeliver(cmd)
	eventually(t, 5*time.Second, "not delivered", func() bool { return len(h.events.ofType(domain.TypeWebhookDelivered)) == 1 })
	h.publishDeliver(cmd) // the broker redelivers the same attempt
	eventually(t, 5*time.Second, "the redelivery did not re-publish the follow-ups", func() bool {
		return len(h.events.ofType(domain.TypeWebhookDelivered)) == 2
	})
	if n := rc.count(); n != 1 {
		t.Errorf("the endpoint was called %d times for one recorded attempt, want 1", n)
	}
	if recs := h.attemptsOf(cmd.DeliveryID); len(recs) != 1 {
		t.Errorf("%d records for one attempt", len(recs))
	}
}

// racingBackend hides an attempt record from the first read, as when two
// copies of one message run at once and both read before either records.
type racingBackend struct {
	store.Backend
	hide string
}

func (b racingBackend) Container(name string) (store.Container, error) {
	c, err := b.Backend.Container(name)
	if name != domain.ContainerExecutions || err != nil {
		return c, err
	}
	return &racingContainer{Container: c, hide: b.hide}, nil
}

type racingContainer struct {
	store.Container
	hide   string
	hidden atomic.Bool
}

func (c *racingContainer) Read(ctx context.Context, pk, id string) (store.Item, error) {
	if id == c.hide && c.hidden.CompareAndSwap(false, true) {
		return store.Item{}, store.ErrNotFound
	}
	return c.Container.Read(ctx, pk, id)
}

func TestDelivery_DuplicateThatLosesTheRecordRacePublishesNoFollowUps(t *testing.T) {
	var rc *receiver
	dlv := domain.DeliveryID("evt-race", "wh-race")
	h := newHarness(t, harnessConfig{noRouter: true, backend: func(b store.Backend) store.Backend {
		return racingBackend{Backend: b, hide: domain.AttemptExecutionID(dlv, 1)}
	}})
	rc = newReceiver(t, always(500))
	ep, _ := h.endpoint("wh-race", rc.srv.URL, []string{"*"})
	cmd := deliverCmd("evt-race", ep, `{}`)
	// The winning copy's record is already there.
	if _, err := h.attempts.Create(context.Background(), domain.DeliveryAttempt{Execution: domain.Execution{
		ID: domain.AttemptExecutionID(dlv, 1), TenantID: testTenant, Kind: domain.ExecutionWebhookDelivery,
		Status: domain.ExecFailedRetrying, DeliveryID: dlv, WebhookID: ep.ID, Attempt: 1, StartedAt: time.Now(),
	}}); err != nil {
		t.Fatal(err)
	}
	msg, _ := messaging.NewMessage(context.Background(), domain.TypeDeliverWebhook, "test", testTenant, cmd)
	if err := h.d.HandleDeliver(msg); err != nil {
		t.Fatalf("the losing copy failed: %v (it must be acked)", err)
	}
	if len(h.events.all()) != 0 || len(h.delayer.all()) != 0 {
		t.Errorf("the losing copy published follow-ups: events %d, delays %d", len(h.events.all()), len(h.delayer.all()))
	}
}

func TestDelivery_BrokerFailureAfterRecordingDoesNotRepeatTheAttempt(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	rc := newReceiver(t, func(n int, _ *http.Request) (int, http.Header, string) {
		if n == 1 {
			return 500, nil, "once"
		}
		return 200, nil, "ok"
	})
	ep, _ := h.endpoint("wh-crash", rc.srv.URL, []string{"*"})
	h.delayer.failNext(2) // scheduling attempt 2 fails twice, as if the broker blinked after the record

	h.publishDeliver(deliverCmd("evt-crash", ep, `{}`))
	eventually(t, 5*time.Second, "attempt 2 never happened", func() bool { return len(h.events.ofType(domain.TypeWebhookDelivered)) == 1 })
	if n := rc.count(); n != 2 {
		t.Errorf("endpoint called %d times, want 2: the retried message must not repeat attempt 1", n)
	}
	recs := h.attemptsOf(domain.DeliveryID("evt-crash", ep.ID))
	if got := statuses(recs); len(got) != 2 || got[0] != domain.ExecFailedRetrying || got[1] != domain.ExecDelivered {
		t.Errorf("records %v, want [failed_retrying delivered]", got)
	}
}

func TestDelivery_SecretStoreOutageUsesNoAttempt(t *testing.T) {
	var flaky *flakySecrets
	h := newHarness(t, harnessConfig{secrets: func(s SecretGetter) SecretGetter {
		flaky = &flakySecrets{next: s}
		flaky.fails.Store(3)
		return flaky
	}})
	rc := newReceiver(t, nil)
	ep, _ := h.endpoint("wh-sec", rc.srv.URL, []string{"*"})

	h.publishDeliver(deliverCmd("evt-sec", ep, `{}`))
	eventually(t, 5*time.Second, "not delivered once the secret store came back", func() bool { return rc.count() == 1 })
	eventually(t, time.Second, "no record", func() bool { return len(h.attemptsOf(domain.DeliveryID("evt-sec", ep.ID))) == 1 })
	r := h.attemptsOf(domain.DeliveryID("evt-sec", ep.ID))[0]
	if r.Attempt != 1 || r.Status != domain.ExecDelivered {
		t.Errorf("record attempt %d %s: our outage must not use up an attempt", r.Attempt, r.Status)
	}
	if ep := h.storedEndpoint(ep.ID); ep.FailingSince != nil {
		t.Errorf("our outage marked the endpoint failing since %v", ep.FailingSince)
	}
}

func TestDelivery_BlockedAddressIsRecordedAndNotRetried(t *testing.T) {
	opts := fastOptions()
	opts.AllowHosts = nil // production: loopback is refused
	h := newHarness(t, harnessConfig{opts: opts})
	rc := newReceiver(t, nil)
	ep, _ := h.endpoint("wh-ssrf", rc.srv.URL, []string{"*"})

	h.publishDeliver(deliverCmd("evt-ssrf", ep, `{}`))
	eventually(t, 5*time.Second, "no exhausted event for a blocked address", func() bool {
		return len(h.events.ofType(domain.TypeWebhookExhausted)) == 1
	})
	if rc.count() != 0 {
		t.Fatalf("the guard let %d requests reach a loopback receiver", rc.count())
	}
	recs := h.attemptsOf(domain.DeliveryID("evt-ssrf", ep.ID))
	if len(recs) != 1 || recs[0].ErrorClass != domain.ErrorClassBlocked || recs[0].Status != domain.ExecExhausted ||
		!strings.Contains(recs[0].Error, "loopback") {
		t.Fatalf("record %+v: want exhausted, class blocked, with the reason", recs)
	}
	if len(h.delayer.all()) != 0 {
		t.Error("a blocked delivery was scheduled for a retry")
	}
}

// countingBackend counts writes to the webhooks container.
type countingBackend struct {
	store.Backend
	writes *atomic.Int32
}

func (b countingBackend) Container(name string) (store.Container, error) {
	c, err := b.Backend.Container(name)
	if name != domain.ContainerWebhooks || err != nil {
		return c, err
	}
	return countingContainer{Container: c, writes: b.writes}, nil
}

type countingContainer struct {
	store.Container
	writes *atomic.Int32
}

func (c countingContainer) Replace(ctx context.Context, pk, id string, body []byte, ifMatch string) (string, error) {
	etag, err := c.Container.Replace(ctx, pk, id, body, ifMatch)
	if err == nil { // a lost optimistic race writes nothing
		c.writes.Add(1)
	}
	return etag, err
}

func TestDelivery_FailingSinceIsWrittenOnTransitionsOnly(t *testing.T) {
	writes := &atomic.Int32{}
	opts := fastOptions()
	opts.Schedule = []time.Duration{0, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}
	opts.BreakerFailures = 100 // this test is about the document, not the breaker
	h := newHarness(t, harnessConfig{opts: opts, backend: func(b store.Backend) store.Backend { return countingBackend{b, writes} }})
	var healthy atomic.Bool
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header, string) {
		if healthy.Load() {
			return 200, nil, ""
		}
		return 500, nil, ""
	})
	ep, _ := h.endpoint("wh-trans", rc.srv.URL, []string{"*"})

	h.publishDeliver(deliverCmd("evt-t1", ep, `{}`))
	eventually(t, 5*time.Second, "not exhausted", func() bool { return len(h.events.ofType(domain.TypeWebhookExhausted)) == 1 })
	stored := h.storedEndpoint(ep.ID)
	first := h.attemptsOf(domain.DeliveryID("evt-t1", ep.ID))[0]
	if stored.FailingSince == nil || !stored.FailingSince.Equal(first.StartedAt) {
		t.Errorf("failingSince %v, want the first failed attempt's time %v", stored.FailingSince, first.StartedAt)
	}
	if n := writes.Load(); n != 1 {
		t.Errorf("5 failed attempts wrote the endpoint %d times, want 1 (the transition)", n)
	}

	healthy.Store(true)
	h.publishDeliver(deliverCmd("evt-t2", ep, `{}`))
	h.publishDeliver(deliverCmd("evt-t3", ep, `{}`))
	eventually(t, 5*time.Second, "not delivered", func() bool { return len(h.events.ofType(domain.TypeWebhookDelivered)) == 2 })
	stored = h.storedEndpoint(ep.ID)
	if stored.FailingSince != nil || stored.LastSuccessAt == nil {
		t.Errorf("after a success: failingSince %v lastSuccessAt %v; want cleared and set", stored.FailingSince, stored.LastSuccessAt)
	}
	if n := writes.Load(); n != 2 {
		t.Errorf("the endpoint was written %d times in all, want 2 (failing, then recovered)", n)
	}
}

func TestDelivery_AutoDisablesAfterFailingTooLong(t *testing.T) {
	opts := fastOptions()
	opts.Schedule = []time.Duration{0, 150 * time.Millisecond, 150 * time.Millisecond, 150 * time.Millisecond, 150 * time.Millisecond}
	opts.DisableAfter = 200 * time.Millisecond
	h := newHarness(t, harnessConfig{opts: opts})
	rc := newReceiver(t, always(500))
	ep, _ := h.endpoint("wh-auto", rc.srv.URL, []string{"*"})

	h.publishDeliver(deliverCmd("evt-auto", ep, `{}`))
	eventually(t, 5*time.Second, "the endpoint failing for longer than DisableAfter was not disabled", func() bool {
		return len(h.events.ofType(domain.TypeWebhookEndpointDisabled)) == 1
	})
	stored := h.storedEndpoint(ep.ID)
	if stored.Status != domain.WebhookDisabled || !strings.Contains(stored.DisabledReason, "failed continuously") {
		t.Errorf("endpoint %s (%q), want disabled for failing too long", stored.Status, stored.DisabledReason)
	}
	ev := h.events.ofType(domain.TypeWebhookEndpointDisabled)[0].(domain.WebhookEndpointDisabled)
	if ev.FailingSince == nil || ev.WebhookID != ep.ID {
		t.Fatalf("disabled event %+v lacks failingSince", ev)
	}
	// Every attempt within DisableAfter of the first failure retried; the first one past it disabled and ended the delivery.
	recs := h.attemptsOf(domain.DeliveryID("evt-auto", ep.ID))
	for i, r := range recs {
		past := r.StartedAt.Sub(*ev.FailingSince) > opts.DisableAfter
		last := i == len(recs)-1
		if last != past || last != (r.Status == domain.ExecExhausted) || last != (r.DisablesEndpoint != "") {
			t.Errorf("attempt %d, %v after the first failure: %s (disables %q)", r.Attempt, r.StartedAt.Sub(*ev.FailingSince), r.Status, r.DisablesEndpoint)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := rc.count(); n != len(recs) {
		t.Errorf("endpoint called %d times for %d attempts: none may follow the disabling", n, len(recs))
	}
}

func TestDelivery_RecordsResponsesCappedAndRedirectsAsFailures(t *testing.T) {
	opts := fastOptions()
	opts.ResponseBodyCap = 16
	opts.Schedule = []time.Duration{0}
	h := newHarness(t, harnessConfig{opts: opts})
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header, string) {
		return 302, http.Header{"Location": {"http://169.254.169.254/latest"}}, strings.Repeat("x", 1000)
	})
	ep, _ := h.endpoint("wh-redir", rc.srv.URL, []string{"*"})

	h.publishDeliver(deliverCmd("evt-redir", ep, `{}`))
	eventually(t, 5*time.Second, "no exhausted event", func() bool { return len(h.events.ofType(domain.TypeWebhookExhausted)) == 1 })
	r := h.attemptsOf(domain.DeliveryID("evt-redir", ep.ID))[0]
	if r.ResponseStatus != 302 || r.ErrorClass != domain.ErrorClassRedirect || len(r.ResponseBody) != 16 {
		t.Errorf("record: status %d class %s body %d bytes; want 302, redirect, 16 bytes", r.ResponseStatus, r.ErrorClass, len(r.ResponseBody))
	}
	if rc.count() != 1 {
		t.Errorf("the redirect was followed (%d requests)", rc.count())
	}
	for _, k := range []string{"webhook-id", "webhook-timestamp", "webhook-signature", "Content-Type", "User-Agent"} {
		if r.RequestHeaders[k] == "" {
			t.Errorf("recorded request headers lack %s: %v", k, r.RequestHeaders)
		}
	}
}

func TestDelivery_TimeoutIsAFailedAttempt(t *testing.T) {
	opts := fastOptions()
	opts.Timeout = 100 * time.Millisecond
	opts.Schedule = []time.Duration{0}
	h := newHarness(t, harnessConfig{opts: opts})
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header, string) {
		time.Sleep(400 * time.Millisecond)
		return 200, nil, ""
	})
	ep, _ := h.endpoint("wh-slowest", rc.srv.URL, []string{"*"})
	h.publishDeliver(deliverCmd("evt-to", ep, `{}`))
	eventually(t, 5*time.Second, "no exhausted event after a timeout", func() bool { return len(h.events.ofType(domain.TypeWebhookExhausted)) == 1 })
	r := h.attemptsOf(domain.DeliveryID("evt-to", ep.ID))[0]
	if r.ErrorClass != domain.ErrorClassTimeout || r.DurationMs < 90 || r.DurationMs > 1000 {
		t.Errorf("record: class %s after %dms, want timeout after ~100ms", r.ErrorClass, r.DurationMs)
	}
}

func TestDelivery_DisabledEndpointIsRecordedWithoutACall(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	rc := newReceiver(t, nil)
	ep, _ := h.endpoint("wh-off", rc.srv.URL, []string{"*"}, func(ep *domain.WebhookEndpoint) {
		ep.Status, ep.DisabledReason = domain.WebhookDisabled, "by the tenant"
	})
	h.publishDeliver(deliverCmd("evt-off", ep, `{}`))
	eventually(t, 5*time.Second, "no exhausted event", func() bool { return len(h.events.ofType(domain.TypeWebhookExhausted)) == 1 })
	r := h.attemptsOf(domain.DeliveryID("evt-off", ep.ID))[0]
	if rc.count() != 0 || r.ErrorClass != domain.ErrorClassEndpointDisabled || r.Status != domain.ExecExhausted || r.Event == nil {
		t.Errorf("%d calls; record %+v: want no call, exhausted endpoint_disabled keeping the event for a replay", rc.count(), r.Execution)
	}
}

func TestDelivery_PoisonsWhatNoRetryCanFix(t *testing.T) {
	h := newHarness(t, harnessConfig{noRouter: true})
	ep := domain.WebhookEndpoint{ID: "wh-missing", TenantID: testTenant}
	cases := map[string]*message.Message{
		"unknown webhook": mustMessage(t, domain.TypeDeliverWebhook, deliverCmd("evt-p", ep, `{}`)),
		"undecodable":     message.NewMessage("m1", []byte("not json")),
		"invalid command": mustMessage(t, domain.TypeDeliverWebhook, domain.DeliverWebhook{DeliveryID: "x"}),
		"wrong type":      mustMessage(t, domain.TypeRunSync, deliverCmd("evt-p", ep, `{}`)),
	}
	cases["undecodable"].Metadata.Set(messaging.MetaType, domain.TypeDeliverWebhook)
	for name, msg := range cases {
		if err := h.d.HandleDeliver(msg); !messaging.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent error (poison queue)", name, err)
		}
	}
	bad := mustMessage(t, domain.TypePublishEvent, domain.PublishEvent{EventID: "e"})
	if err := h.d.HandlePublishEvent(bad); !messaging.IsPermanent(err) {
		t.Errorf("invalid PublishEvent: %v, want permanent", err)
	}
}

func mustMessage(t *testing.T, ceType string, payload any) *message.Message {
	t.Helper()
	m, err := messaging.NewMessage(context.Background(), ceType, "test", testTenant, payload)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDelivery_NoSecretInLogsRecordsOrEvents(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	// Each delivery fails once, then is delivered: every attempt kind is
	// recorded, whatever order the concurrent deliveries arrive in.
	var seen sync.Map
	rc := newReceiver(t, func(_ int, r *http.Request) (int, http.Header, string) {
		if _, again := seen.LoadOrStore(r.Header.Get("webhook-id"), true); !again {
			return 500, nil, "nope"
		}
		return 200, nil, "ok"
	})
	oldSecret := newSecret()
	oldRef, _ := h.secrets.Put(context.Background(), testTenant, []byte(oldSecret))
	until := time.Now().Add(time.Hour)
	_, secret := h.endpoint("wh-s", rc.srv.URL, []string{"*"}, func(ep *domain.WebhookEndpoint) {
		ep.PreviousSecretRef, ep.PreviousSecretExpiresAt = oldRef, &until
	})
	gone := newReceiver(t, always(410))
	_, goneSecret := h.endpoint("wh-g", gone.srv.URL, []string{"*"})

	for _, id := range []string{"evt-s1", "evt-s2", "evt-s3"} {
		h.publishEvent(id, "contact.updated", `{"k":"v"}`)
	}
	eventually(t, 5*time.Second, "deliveries did not finish", func() bool {
		return len(h.events.ofType(domain.TypeWebhookDelivered)) == 3 && len(h.events.ofType(domain.TypeWebhookEndpointDisabled)) == 1
	})

	var events strings.Builder
	for _, e := range h.events.all() {
		b, _ := json.Marshal(e.msg)
		events.Write(b)
	}
	haystacks := map[string]string{
		"logs":              h.logs.String(),
		"execution records": h.rawDocuments(domain.ContainerExecutions),
		"webhook documents": h.rawDocuments(domain.ContainerWebhooks),
		"events":            events.String(),
	}
	if !strings.Contains(haystacks["logs"], "delivery attempt recorded") {
		t.Fatalf("the log capture is empty; the test would prove nothing:\n%s", haystacks["logs"])
	}
	for where, text := range haystacks {
		for name, s := range map[string]string{"current secret": secret, "previous secret": oldSecret, "other secret": goneSecret} {
			key := strings.TrimPrefix(s, "whsec_")
			if strings.Contains(text, key) {
				t.Errorf("the %s appears in the %s", name, where)
			}
		}
		if strings.Contains(text, "whsec_") {
			t.Errorf("something shaped like a signing secret appears in the %s", where)
		}
	}
	if !strings.Contains(haystacks["execution records"], "webhook-signature") {
		t.Error("records lack the signature header (which reveals no secret and helps receivers debug)")
	}
}

func TestOptions_RejectUnusableValues(t *testing.T) {
	cases := map[string]func(*Options){
		"Timeout":                func(o *Options) { o.Timeout = -1 },
		"Schedule":               func(o *Options) { o.Schedule = []time.Duration{0, -time.Second} },
		"BreakerFailures":        func(o *Options) { o.BreakerFailures = -1 },
		"MaxInFlightPerEndpoint": func(o *Options) { o.MaxInFlightPerEndpoint = -2 },
		"DelayJitter":            func(o *Options) { o.DelayJitter = 1 },
		"DeferDelay":             func(o *Options) { o.DeferDelay = -time.Second },
	}
	for field, mutate := range cases {
		o := Options{}
		mutate(&o)
		err := o.WithDefaults().Validate()
		if err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v, want an error naming it", field, err)
		}
	}
	if err := (Options{}).WithDefaults().Validate(); err != nil {
		t.Errorf("defaults are invalid: %v", err)
	}
	if _, err := New(Deps{}, Options{}); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Errorf("New without dependencies: %v", err)
	}
}

// A busy but quick endpoint at its in-flight bound gets its deliveries in
// turn: each waits in process for a place (InFlightWait) instead of being
// deferred through the delay queue; with no wait they bounce.
// A slow endpoint's backlog must not bounce through the delay queue every
// DeferDelay for as long as it lasts (a broker round trip per waiting delivery
// each time): deliveries deferred at the in-flight bound are spread over the
// turns the endpoint will have, as its attempts' duration tells.
func TestDelivery_SlowEndpointsBacklogComesBackInTurnsNotEveryDeferDelay(t *testing.T) {
	const deliveries, answerAfter = 8, 250 * time.Millisecond
	opts := fastOptions()
	opts.MaxInFlightPerEndpoint = 1
	opts.InFlightWait = -1
	opts.DeferDelay = 20 * time.Millisecond
	opts.BreakerCooldown = 10 * time.Second
	h := newHarness(t, harnessConfig{opts: opts, deliverers: 8})
	var inFlight, most atomic.Int32
	rc := newReceiver(t, func(int, *http.Request) (int, http.Header, string) {
		n := inFlight.Add(1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(answerAfter)
		inFlight.Add(-1)
		return 204, nil, ""
	})
	ep, _ := h.endpoint("wh-slow-backlog", rc.srv.URL, []string{"*"})

	for i := range deliveries {
		h.publishDeliver(deliverCmd(fmt.Sprintf("evt-slow-%d", i), ep, `{}`))
	}
	eventually(t, 15*time.Second, "not every delivery arrived", func() bool { return rc.count() == deliveries })
	if m := most.Load(); m > 1 {
		t.Errorf("%d calls in flight at once, want at most MaxInFlightPerEndpoint=1", m)
	}
	// Bouncing every DeferDelay, the waiting deliveries came back about 350
	// times in all (each every 20 ms for up to 2 s); in turns, a few times each.
	if deferred := h.metric("webhook_delivery_deferrals_total", deferInFlight); deferred > 6*deliveries {
		t.Errorf("%v deferrals for the in-flight bound while %d deliveries waited for a %v endpoint; want at most %d",
			deferred, deliveries, answerAfter, 6*deliveries)
	}
}

func TestDelivery_BusyQuickEndpointTakesItsTurnInsteadOfBouncing(t *testing.T) {
	for _, tc := range []struct {
		name      string
		wait      time.Duration
		deferrals bool
	}{
		{"waits for a place", 500 * time.Millisecond, false},
		{"no wait", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := fastOptions()
			opts.MaxInFlightPerEndpoint = 2
			opts.InFlightWait = tc.wait
			opts.DeferDelay = 50 * time.Millisecond
			h := newHarness(t, harnessConfig{opts: opts, deliverers: 8})
			var inFlight, most atomic.Int32
			rc := newReceiver(t, func(int, *http.Request) (int, http.Header, string) {
				n := inFlight.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(20 * time.Millisecond)
				inFlight.Add(-1)
				return 204, nil, ""
			})
			ep, _ := h.endpoint("wh-busy", rc.srv.URL, []string{"*"})

			for i := range 12 {
				h.publishDeliver(deliverCmd(fmt.Sprintf("evt-busy-%d", i), ep, `{}`))
			}
			eventually(t, 10*time.Second, "not every delivery arrived", func() bool { return rc.count() == 12 })
			if m := most.Load(); m > 2 {
				t.Errorf("%d calls in flight at once, want at most MaxInFlightPerEndpoint=2", m)
			}
			deferred := h.metric("webhook_delivery_deferrals_total", deferInFlight)
			if got := deferred > 0; got != tc.deferrals {
				t.Errorf("%v deliveries deferred for the in-flight bound; want deferrals: %v", deferred, tc.deferrals)
			}
		})
	}
}
