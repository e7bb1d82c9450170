package messaging

import (
	"context"
	"errors"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// The handler policy must behave the same on both transports: each backend runs this
// one suite.

func TestPolicy_InProcess(t *testing.T) {
	runPolicySuite(t, func(t *testing.T) *testEnv { return inProcessEnv(t) })
}

func TestPolicy_RabbitMQ(t *testing.T) {
	runPolicySuite(t, func(t *testing.T) *testEnv { return rabbitEnv(t, nil) })
}

func TestPolicy_RabbitMQQuorumQueues(t *testing.T) {
	runPolicySuite(t, func(t *testing.T) *testEnv {
		return rabbitEnv(t, func(c *Config) { c.QuorumQueues = true })
	})
}

const (
	orderType  = "test.order.v1"
	workerRole = "worker"
	poisonRole = "poison-watch"
)

type order struct {
	ID string `json:"id"`
}

func runPolicySuite(t *testing.T, newEnv func(t *testing.T) *testEnv) {
	t.Run("UndecodableMessageIsPoisonedAndConsumerGoesOn", func(t *testing.T) {
		s := startPolicyWorld(t, newEnv(t), func(order) error { return nil })

		bad := message.NewMessage("bad-json-1", []byte(`{"id": "unterminated`))
		bad.Metadata.Set(MetaType, orderType)
		bad.Metadata.Set(MetaTenantID, "tenant-1")
		publish(t, s.env.transport, TopicCmdWebhookDeliver, bad)
		publish(t, s.env.transport, TopicCmdWebhookDeliver, mustMessage(t, context.Background(), orderType, order{ID: "after-bad"}))

		poisoned := receive(t, s.poisoned, 20*time.Second, "the undecodable message on the poison topic")
		if poisoned.UUID != "bad-json-1" {
			t.Errorf("poison message id = %q, want the original bad-json-1", poisoned.UUID)
		}
		if string(poisoned.Payload) != `{"id": "unterminated` {
			t.Errorf("poison payload = %q, want the original bytes", poisoned.Payload)
		}
		if r := poisoned.Metadata.Get(MetaPoisonReason); !strings.Contains(r, ErrUndecodable.Error()) {
			t.Errorf("reason_poisoned = %q, want it to say the payload is undecodable", r)
		}
		if got := poisoned.Metadata.Get(MetaPoisonTopic); got != TopicCmdWebhookDeliver {
			t.Errorf("poison_topic = %q, want %q", got, TopicCmdWebhookDeliver)
		}
		if got := poisoned.Metadata.Get(MetaPoisonHandler); got != workerRole+"@"+TopicCmdWebhookDeliver {
			t.Errorf("poison_handler = %q, want %s@%s", got, workerRole, TopicCmdWebhookDeliver)
		}
		if poisoned.Metadata.Get(MetaType) != orderType || poisoned.Metadata.Get(MetaTenantID) != "tenant-1" {
			t.Errorf("poison message lost the original metadata: %v", poisoned.Metadata)
		}
		if id := receive(t, s.handled, 20*time.Second, "the message after the bad one"); id != "after-bad" {
			t.Errorf("handled %q, want after-bad", id)
		}
		nothingMore(t, s.poisoned, 500*time.Millisecond, "second poison message")
	})

	t.Run("PanicIsPoisonedAndConsumerGoesOn", func(t *testing.T) {
		s := startPolicyWorld(t, newEnv(t), func(o order) error {
			if o.ID == "boom" {
				panic("nil map somewhere")
			}
			return nil
		})
		boom := mustMessage(t, context.Background(), orderType, order{ID: "boom"})
		publish(t, s.env.transport, TopicCmdWebhookDeliver, boom)
		publish(t, s.env.transport, TopicCmdWebhookDeliver, mustMessage(t, context.Background(), orderType, order{ID: "after-panic"}))

		poisoned := receive(t, s.poisoned, 20*time.Second, "the panicking message on the poison topic")
		if poisoned.UUID != boom.UUID {
			t.Errorf("poisoned %q, want the panicking message %q", poisoned.UUID, boom.UUID)
		}
		if r := poisoned.Metadata.Get(MetaPoisonReason); !strings.Contains(r, "panicked: nil map somewhere") {
			t.Errorf("reason_poisoned = %q, want the panic value", r)
		}
		if !strings.Contains(poisoned.Metadata.Get(MetaPoisonStack), "policy_test.go") {
			t.Errorf("poison_stack should point at the panicking handler, got %q", poisoned.Metadata.Get(MetaPoisonStack))
		}
		if id := receive(t, s.handled, 20*time.Second, "the message after the panic"); id != "after-panic" {
			t.Errorf("handled %q, want after-panic", id)
		}
		if n := s.calls("boom"); n != 1 {
			t.Errorf("a panicking message was attempted %d times; a panic is permanent and must not be retried", n)
		}
	})

	t.Run("TransientErrorIsRetriedAndHandledOnce", func(t *testing.T) {
		s := startPolicyWorld(t, newEnv(t), func(order) error { return nil })
		s.failFirst("flaky", 2)
		publish(t, s.env.transport, TopicCmdWebhookDeliver, mustMessage(t, context.Background(), orderType, order{ID: "flaky"}))

		if id := receive(t, s.handled, 20*time.Second, "the flaky message"); id != "flaky" {
			t.Errorf("handled %q, want flaky", id)
		}
		nothingMore(t, s.handled, time.Second, "second successful handling of the flaky message")
		if n := s.calls("flaky"); n != 3 {
			t.Errorf("flaky message attempted %d times, want 3 (two failures, one success)", n)
		}
		nothingMore(t, s.poisoned, 100*time.Millisecond, "poison message for a transient failure")
	})

	t.Run("TransientBeyondRetryBudgetIsNackedAndRedeliveredNotLost", func(t *testing.T) {
		s := startPolicyWorld(t, newEnv(t), func(order) error { return nil })
		// fastPolicy retries for 300ms; fail for longer so the message goes back to the queue.
		s.failUntil("outage", time.Now().Add(1200*time.Millisecond))
		publish(t, s.env.transport, TopicCmdWebhookDeliver, mustMessage(t, context.Background(), orderType, order{ID: "outage"}))

		if id := receive(t, s.handled, 30*time.Second, "the message after the outage"); id != "outage" {
			t.Errorf("handled %q, want outage", id)
		}
		nothingMore(t, s.handled, time.Second, "second successful handling after the outage")
		nothingMore(t, s.poisoned, 100*time.Millisecond, "poison message for a transient failure")
		if s.env.res != nil && s.lastMeta("outage", "_watermill_amqp_redelivered") != "true" {
			t.Errorf("the successful attempt should be a broker redelivery, metadata: %v", s.meta["outage"])
		}
		if s.env.cfg.QuorumQueues && s.lastMeta("outage", "x-delivery-count") == "" {
			t.Errorf("a quorum queue redelivery should carry x-delivery-count as a string, metadata: %v", s.meta["outage"])
		}
	})

	t.Run("CorrelationReachesEveryPublishedMessage", func(t *testing.T) {
		env := newEnv(t)
		env.declare("observer", TopicEvtWebhookDelivered)
		seen := make(chan context.Context, 1)
		s := startPolicyWorldWith(t, env, func(msg *message.Message) error {
			seen <- msg.Context()
			out, err := NewMessage(msg.Context(), "test.delivered.v1", "worker", msg.Metadata.Get(MetaTenantID), order{ID: "result"})
			if err != nil {
				return Permanent(err)
			}
			return env.transport.Publisher().Publish(TopicEvtWebhookDelivered, out)
		})
		results := make(chan *message.Message, 1)
		addConsumer(t, s.router, env.transport, "observer", TopicEvtWebhookDelivered, 1, func(msg *message.Message) error {
			results <- msg
			return nil
		})
		s.run()

		const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		ctx := WithTraceparent(WithCorrelationID(context.Background(), "corr-42"), tp)
		publish(t, env.transport, TopicCmdWebhookDeliver, mustMessage(t, ctx, orderType, order{ID: "cmd"}))

		hctx := receive(t, seen, 20*time.Second, "the command in the handler")
		if CorrelationID(hctx) != "corr-42" || Traceparent(hctx) != tp {
			t.Errorf("handler context has correlation %q traceparent %q, want corr-42 and %s", CorrelationID(hctx), Traceparent(hctx), tp)
		}
		if dl, ok := hctx.Deadline(); !ok || time.Until(dl) > fastPolicy().HandlerTimeout {
			t.Errorf("handler context should carry the HandlerTimeout deadline, got %v %v", dl, ok)
		}
		res := receive(t, results, 20*time.Second, "the result event")
		if res.Metadata.Get(MetaCorrelation) != "corr-42" || res.Metadata.Get(MetaTraceparent) != tp {
			t.Errorf("result event correlation %q traceparent %q, want the command's", res.Metadata.Get(MetaCorrelation), res.Metadata.Get(MetaTraceparent))
		}
		if res.Metadata.Get(MetaTenantID) != "tenant-1" || res.Metadata.Get(MetaID) != res.UUID {
			t.Errorf("result event envelope incomplete: %v", res.Metadata)
		}
	})
}

// policyWorld is a worker role on TopicCmdWebhookDeliver plus a poison watcher.
type policyWorld struct {
	t        *testing.T
	env      *testEnv
	router   *message.Router
	handled  chan string
	poisoned chan *message.Message
	started  bool
	// onAttempt runs for every decoded attempt that no scripted failure stopped.
	onAttempt func(order) error

	mu       sync.Mutex
	attempts map[string]int
	failN    map[string]int
	failTill map[string]time.Time
	meta     map[string]message.Metadata
}

// startPolicyWorld runs a worker that decodes orders and reports each handled id.
func startPolicyWorld(t *testing.T, env *testEnv, onAttempt func(order) error) *policyWorld {
	s := newPolicyWorld(t, env)
	s.onAttempt = onAttempt
	addConsumer(t, s.router, env.transport, workerRole, TopicCmdWebhookDeliver, 2, s.handle)
	s.run()
	return s
}

// startPolicyWorldWith adds a custom worker handler; call run after adding more consumers.
func startPolicyWorldWith(t *testing.T, env *testEnv, h message.NoPublishHandlerFunc) *policyWorld {
	s := newPolicyWorld(t, env)
	addConsumer(t, s.router, env.transport, workerRole, TopicCmdWebhookDeliver, 2, h)
	return s
}

func newPolicyWorld(t *testing.T, env *testEnv) *policyWorld {
	env.declare(workerRole, TopicCmdWebhookDeliver)
	env.declare(poisonRole, TopicPoison)
	s := &policyWorld{
		t: t, env: env,
		router:   newRouter(t, env.transport, fastPolicy()),
		handled:  make(chan string, 100),
		poisoned: make(chan *message.Message, 100),
		attempts: map[string]int{},
		failN:    map[string]int{},
		failTill: map[string]time.Time{},
		meta:     map[string]message.Metadata{},
	}
	if err := AddPoisonConsumer(s.router, env.transport, poisonRole, 1, func(msg *message.Message) error {
		s.poisoned <- msg
		return nil
	}); err != nil {
		t.Fatalf("AddPoisonConsumer: %v", err)
	}
	return s
}

func (s *policyWorld) run() {
	if !s.started {
		s.started = true
		runRouter(s.t, s.router)
	}
}

// failFirst makes the first n attempts of id fail with a transient error.
func (s *policyWorld) failFirst(id string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failN[id] = n
}

// failUntil makes every attempt of id before until fail with a transient error.
func (s *policyWorld) failUntil(id string, until time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failTill[id] = until
}

func (s *policyWorld) calls(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attempts[id]
}

func (s *policyWorld) lastMeta(id, key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.meta[id].Get(key)
}

func (s *policyWorld) handle(msg *message.Message) error {
	o, err := Decode[order](msg, orderType)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.attempts[o.ID]++
	fail := s.attempts[o.ID] <= s.failN[o.ID] || time.Now().Before(s.failTill[o.ID])
	s.meta[o.ID] = maps.Clone(msg.Metadata)
	s.mu.Unlock()
	if fail {
		return errors.New("dependency down")
	}
	if err := s.onAttempt(o); err != nil {
		return err
	}
	s.handled <- o.ID
	return nil
}
