package app_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/castiel/integration-manager/app"
)

// A dispatcher SIGKILLed while an inline first attempt it has handed off is
// still in flight (the event already acked) loses nothing: the attempt's
// safety copy, on a delay tier of its own, reaches another dispatcher about
// inlineHandoff + 2 × timeout later (not the next longer tier's wait), which
// makes the attempt with the same webhook-id; one attempt is recorded.
func TestDispatcher_KilledDuringAHandedOffAttemptDeliversItsSafetyCopy(t *testing.T) {
	t.Parallel()
	const (
		timeout = 5 * time.Second
		handoff = 500 * time.Millisecond
		safety  = handoff + 2*timeout // webhook.SafetyDelay
	)
	env := environ(t, append(append(onRabbitMQ(t), onCosmos(t)...),
		"IM_WEBHOOKS_DISPATCHER_TIMEOUT="+timeout.String(),
		"IM_WEBHOOKS_DISPATCHER_INLINEHANDOFF="+handoff.String(),
	)...)
	bin := buildBinary(t, "webhook-dispatcher")
	api := start(t, env, app.PartAPI)

	rcv := newHangingFirstReceiver(t)
	received := func() int { return len(rcv.received()) }
	webhookID, _ := subscribe(t, api, rcv.url)

	first := startBinary(t, bin, env, "first dispatcher")
	publish(t, api)
	eventually(t, 15*time.Second, "the endpoint called", func() bool { return received() == 1 })
	time.Sleep(handoff + time.Second) // handed off: the event is acked, the attempt hangs on
	first.kill()
	startBinary(t, bin, env, "second dispatcher")

	eventually(t, 2*safety+10*time.Second, "the safety copy's attempt", func() bool { return received() == 2 })
	calls := rcv.received()
	gap := calls[1].at.Sub(calls[0].at)
	sameID := calls[0].webhookID != "" && calls[1].webhookID == calls[0].webhookID
	// Due safety after the hand-off, less the delay queues' 10 % jitter; the next
	// longer tier (the breaker's 30 s cool-down) would make it far later.
	if lo, hi := handoff+safety*9/10-time.Second, handoff+safety*11/10+3*time.Second; gap < lo || gap > hi {
		t.Errorf("the safety copy's attempt came %v after the first call, want between %v and %v", gap.Round(time.Millisecond), lo, hi)
	}
	if !sameID {
		t.Errorf("the safety copy's attempt has another webhook-id than the killed one")
	}
	var ex []executionView
	eventually(t, 10*time.Second, "the delivered record", func() bool {
		ex = allExecutions(t, api, webhookID)
		return len(ex) > 0 && ex[0].Status == "delivered"
	})
	if len(ex) != 1 || ex[0].Attempt != 1 {
		raw, _ := json.Marshal(ex)
		t.Errorf("records %s; want one, attempt 1, delivered", raw)
	}
	time.Sleep(time.Second)
	if n := received(); n != 2 {
		t.Errorf("the endpoint was called %d times, want 2 (the killed attempt and its safety copy)", n)
	}
}
