package app_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/rabbittest"
)

// A dispatcher stopped with SIGTERM while its only delivery hangs on an
// endpoint that answers later than shutdown.timeout gives up on that attempt by
// the deadline: it returns the delivery to its queue, exits 0 by the
// deadline, and records nothing, so the attempt is not used up. A dispatcher
// started afterwards delivers it, with the same webhook-id, as attempt 1.
func TestShutdown_SIGTERMPastTheDeadlineReturnsTheDeliveryUnspent(t *testing.T) {
	t.Parallel()
	// inline: the fan-out makes the attempt, hands it off after 1 s, and Close
	// interrupts it; queue: a delivery consumer makes it and the router's
	// deadline interrupts it.
	for name, inline := range map[string]string{"inline": "64", "queue": "0"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const (
				deadline = 3 * time.Second // shutdown.timeout
				margin   = 2 * time.Second // allowed beyond it for closing connections and the store
			)
			env := environ(t, append(append(onRabbitMQ(t), onCosmos(t)...),
				"IM_SHUTDOWN_TIMEOUT="+deadline.String(),
				"IM_HTTP_API_SHUTDOWNTIMEOUT=1s", // may not exceed shutdown.timeout
				"IM_WEBHOOKS_DISPATCHER_INLINEATTEMPTS="+inline,
			)...)
			// The attempt's own timeout (webhooks.dispatcher.timeout, 15 s) is far beyond
			// deadline+margin: the shutdown, not the attempt timeout, must end the call.
			bin := buildBinary(t, "webhook-dispatcher")
			api := start(t, env, app.PartAPI)

			// The first call hangs until the caller gives up; later calls succeed.
			rcv := newHangingFirstReceiver(t)
			received := rcv.received
			webhookID, _ := subscribe(t, api, rcv.url)

			brokerURL := envValue(env, "IM_BROKER_AMQP_URL")
			qcfg := messaging.Config{QueuePrefix: envValue(env, "IM_BROKER_AMQP_EXCHANGEPREFIX") + "."}
			deliverQueue := qcfg.QueueName(messaging.TopicCmdWebhookDeliver, app.RoleWebhookDispatcher)

			first := startBinary(t, bin, env, "first dispatcher")
			eventually(t, 15*time.Second, "the first dispatcher consuming deliveries", func() bool {
				_, consumers, err := rabbittest.QueueDepth(brokerURL, deliverQueue)
				return err == nil && consumers > 0
			})
			publish(t, api)
			eventually(t, 10*time.Second, "the endpoint called", func() bool { return len(received()) == 1 })

			took, err := first.terminate(deadline + margin + 10*time.Second)
			if err != nil {
				t.Fatalf("SIGTERM with a delivery in flight past shutdown.timeout (%v): %v", deadline, err)
			}
			if took > deadline+margin {
				t.Errorf("the dispatcher exited %v after SIGTERM, want within shutdown.timeout (%v) + %v", took.Round(time.Millisecond), deadline, margin)
			}
			select {
			case <-rcv.callerGone: // the receiver notices the closed connection on its own time
				t.Logf("the dispatcher hung up on the endpoint and exited with status 0 %v after SIGTERM (shutdown.timeout %v)",
					took.Round(time.Millisecond), deadline)
			case <-time.After(2 * time.Second):
				t.Errorf("the dispatcher exited without ending its call to the endpoint")
			}

			// What was left went back to the queue, and no attempt was recorded for it.
			eventually(t, 5*time.Second, "the delivery back in its queue", func() bool {
				n, consumers, err := rabbittest.QueueDepth(brokerURL, deliverQueue)
				return err == nil && n == 1 && consumers == 0
			})
			if ex := allExecutions(t, api, webhookID); len(ex) != 0 {
				t.Fatalf("the interrupted call left attempt records %+v, want none (our shutdown is not the endpoint's failure)", ex)
			}

			// A dispatcher started afterwards delivers it: same webhook-id, attempt 1.
			startBinary(t, bin, env, "second dispatcher")
			eventually(t, 15*time.Second, "the delivery after the restart", func() bool { return len(received()) == 2 })
			got := received()
			if got[0].webhookID == "" || got[1].webhookID != got[0].webhookID {
				t.Errorf("the call after the restart has webhook-id %q, the interrupted one had %q: want the same", got[1].webhookID, got[0].webhookID)
			}
			var ex []executionView
			eventually(t, 10*time.Second, "the delivered record", func() bool {
				ex = allExecutions(t, api, webhookID)
				return len(ex) > 0 && ex[0].Status == "delivered"
			})
			if len(ex) != 1 || ex[0].Attempt != 1 || ex[0].DeliveryID != got[0].webhookID {
				raw, _ := json.Marshal(ex)
				t.Errorf("records after the restart: %s; want one, attempt 1 of delivery %s, delivered", raw, got[0].webhookID)
			}
			time.Sleep(500 * time.Millisecond)
			if n := len(received()); n != 2 {
				t.Errorf("the endpoint was called %d times, want 2 (the interrupted call and the delivery)", n)
			}
		})
	}
}
