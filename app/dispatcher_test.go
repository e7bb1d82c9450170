package app_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/castiel/integration-manager/app"
)

// hookReceiver is a tenant endpoint that answers each attempt as a test says
// and keeps what it received.
type hookReceiver struct {
	t      *testing.T
	url    string
	answer func(n int) (status int, headers map[string]string)

	mu       sync.Mutex
	attempts []receivedAttempt
}

type receivedAttempt struct {
	at     time.Time
	header http.Header
	body   []byte
}

func newHookReceiver(t *testing.T, answer func(n int) (int, map[string]string)) *hookReceiver {
	r := &hookReceiver{t: t, answer: answer}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.attempts = append(r.attempts, receivedAttempt{at: time.Now(), header: req.Header.Clone(), body: body})
		n := len(r.attempts)
		r.mu.Unlock()
		status, headers := r.answer(n)
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
	})}
	ln, err := listenLoopback()
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	r.url = "http://" + ln.Addr().String() + "/hook"
	return r
}

func (r *hookReceiver) received() []receivedAttempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedAttempt(nil), r.attempts...)
}

func always(status int) func(int) (int, map[string]string) {
	return func(int) (int, map[string]string) { return status, nil }
}

// shortSchedule keeps retry tests fast: attempts at 0 s, +1 s, +2 s.
const shortSchedule = "IM_WEBHOOKS_DISPATCHER_SCHEDULE=0s,1s,2s"

// subscribe creates a webhook for the receiver and returns its id and secret.
func subscribe(t *testing.T, s *started, url string) (id, secret string) {
	t.Helper()
	var created struct{ ID, Secret string }
	if code := s.do(t, "POST", "/api/v1/webhooks", fmt.Sprintf(`{"url":%q,"eventTypes":["contact.*"]}`, url), &created); code != 201 {
		t.Fatalf("create webhook: %d", code)
	}
	return created.ID, created.Secret
}

func publish(t *testing.T, s *started) string {
	t.Helper()
	var accepted struct{ ID string }
	if code := s.do(t, "POST", "/api/v1/events", `{"type":"contact.updated","data":{"id":42}}`, &accepted); code != 202 {
		t.Fatalf("POST /api/v1/events: %d", code)
	}
	return accepted.ID
}

type executionView struct {
	ID, DeliveryID, Status, ErrorClass string
	Attempt, ResponseStatus            int
}

func deliveryExecutions(t *testing.T, s *started, webhookID string) []executionView {
	var page struct{ Items []executionView }
	s.do(t, "GET", "/api/v1/executions?webhookId="+webhookID+"&limit=100", "", &page)
	return page.Items
}

func TestDispatcher_DeliversSignedEventsVerifiableWithTheOfficialLibrary(t *testing.T) {
	t.Parallel()
	s := start(t, environ(t, onRabbitMQ(t)...), app.PartAPI, app.PartDispatcher)
	rcv := newHookReceiver(t, always(204))
	webhookID, secret := subscribe(t, s, rcv.url)
	eventID := publish(t, s)

	eventually(t, 10*time.Second, "the delivery", func() bool { return len(rcv.received()) == 1 })
	got := rcv.received()[0]
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	if err := wh.Verify(got.body, got.header); err != nil {
		t.Fatalf("the official Standard Webhooks library rejects our signature: %v (headers %v)", err, got.header)
	}
	eventually(t, 5*time.Second, "the delivered record", func() bool {
		ex := deliveryExecutions(t, s, webhookID)
		return len(ex) == 1 && ex[0].Status == "delivered" && ex[0].ResponseStatus == 204
	})
	if id := got.header.Get("webhook-id"); id == "" || id != deliveryExecutions(t, s, webhookID)[0].DeliveryID {
		t.Errorf("webhook-id %q is not the delivery id of event %s", id, eventID)
	}
}

func TestDispatcher_RetriesFollowTheScheduleAndStopAtExhaustion(t *testing.T) {
	t.Parallel()
	s := start(t, environ(t, append(onRabbitMQ(t), shortSchedule)...), app.PartAPI, app.PartDispatcher)
	rcv := newHookReceiver(t, always(500))
	webhookID, _ := subscribe(t, s, rcv.url)
	publish(t, s)

	eventually(t, 15*time.Second, "three attempts and an exhausted record", func() bool {
		ex := deliveryExecutions(t, s, webhookID)
		for _, e := range ex {
			if e.Status == "exhausted" {
				return len(ex) == 3
			}
		}
		return false
	})
	time.Sleep(3 * time.Second) // no fourth attempt after exhaustion
	got := rcv.received()
	if len(got) != 3 {
		t.Fatalf("the receiver got %d attempts, want 3 (schedule 0s, 1s, 2s)", len(got))
	}
	for i, want := range []time.Duration{time.Second, 2 * time.Second} {
		if gap := got[i+1].at.Sub(got[i].at); gap < want || gap > want+2*time.Second {
			t.Errorf("attempt %d came %v after attempt %d, want about %v", i+2, gap, i+1, want)
		}
	}
	for _, a := range got[1:] {
		if a.header.Get("webhook-id") != got[0].header.Get("webhook-id") {
			t.Errorf("retries changed the webhook-id: %q then %q", got[0].header.Get("webhook-id"), a.header.Get("webhook-id"))
		}
	}
}

func TestDispatcher_GoneDisablesTheEndpoint(t *testing.T) {
	t.Parallel()
	s := start(t, environ(t, append(onRabbitMQ(t), shortSchedule)...), app.PartAPI, app.PartDispatcher)
	rcv := newHookReceiver(t, always(http.StatusGone))
	webhookID, _ := subscribe(t, s, rcv.url)
	publish(t, s)

	var hook struct{ Status, DisabledReason string }
	eventually(t, 10*time.Second, "the endpoint disabled after 410", func() bool {
		s.do(t, "GET", "/api/v1/webhooks/"+webhookID, "", &hook)
		return hook.Status == "disabled"
	})
	time.Sleep(2 * time.Second)
	if n := len(rcv.received()); n != 1 {
		t.Errorf("the receiver got %d attempts after answering 410, want 1", n)
	}
}

func TestDispatcher_HonoursRetryAfter(t *testing.T) {
	t.Parallel()
	// The schedule would retry after 1 s; Retry-After: 3 lands on the next tier
	// up (the 5 s one) since waits round up to the broker's delay tiers.
	s := start(t, environ(t, append(onRabbitMQ(t), "IM_WEBHOOKS_DISPATCHER_SCHEDULE=0s,1s,5s")...), app.PartAPI, app.PartDispatcher)
	rcv := newHookReceiver(t, func(n int) (int, map[string]string) {
		if n == 1 {
			return http.StatusServiceUnavailable, map[string]string{"Retry-After": "3"}
		}
		return http.StatusOK, nil
	})
	subscribe(t, s, rcv.url)
	publish(t, s)

	eventually(t, 15*time.Second, "the second attempt", func() bool { return len(rcv.received()) == 2 })
	got := rcv.received()
	if gap := got[1].at.Sub(got[0].at); gap < 3*time.Second {
		t.Errorf("retried %v after a 503 with Retry-After: 3, want no sooner than 3s (schedule says 1s)", gap)
	}
}

// A waiting retry lives in RabbitMQ, not in the dispatcher: with every
// dispatcher stopped during the wait, the retry still happens, once. The API
// and the dispatchers are separate processes on RabbitMQ and Cosmos (emulator).
func TestDispatcher_RetrySurvivesARestartOfEveryDispatcher(t *testing.T) {
	t.Parallel()
	env := environ(t, append(append(onRabbitMQ(t), onCosmos(t)...), "IM_WEBHOOKS_DISPATCHER_SCHEDULE=0s,5s,30s")...)
	api := start(t, env, app.PartAPI)
	rcv := newHookReceiver(t, func(n int) (int, map[string]string) {
		if n == 1 {
			return 500, nil
		}
		return 200, nil
	})
	webhookID, _ := subscribe(t, api, rcv.url)

	first := startStoppable(t, env, app.PartDispatcher)
	publish(t, api)
	eventually(t, 10*time.Second, "the first attempt", func() bool { return len(rcv.received()) == 1 })
	eventually(t, 5*time.Second, "the first attempt recorded", func() bool { return len(deliveryExecutions(t, api, webhookID)) == 1 })
	first.stop(t)

	time.Sleep(6 * time.Second) // the 5 s retry (±10 %) falls due while no dispatcher runs
	if n := len(rcv.received()); n != 1 {
		t.Fatalf("%d attempts while no dispatcher ran, want 1", n)
	}
	startStoppable(t, env, app.PartDispatcher)
	eventually(t, 10*time.Second, "the retry after the restart", func() bool { return len(rcv.received()) == 2 })
	time.Sleep(2 * time.Second)
	if n := len(rcv.received()); n != 2 {
		t.Errorf("the receiver got %d attempts, want 2 (the retry exactly once)", n)
	}
	got := rcv.received()
	if got[0].header.Get("webhook-id") != got[1].header.Get("webhook-id") {
		t.Error("the retry after the restart changed the webhook-id")
	}
}
