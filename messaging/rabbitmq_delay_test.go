package messaging

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/castiel/integration-manager/messaging/rabbittest"
	amqp "github.com/rabbitmq/amqp091-go"
)

// trackDelays has role's work queue and every delay queue of topic deleted after the test.
func (e *testEnv) trackDelays(role string, topics ...string) {
	cfg := e.transport.Config()
	for _, topic := range topics {
		e.res.Queue(cfg.QueueName(topic, role))
		for _, q := range cfg.DelayQueueNames(topic, role) {
			e.res.Queue(q)
		}
	}
}

func delayEnv(t *testing.T, quorum bool, tiers ...time.Duration) *testEnv {
	return rabbitEnv(t, func(c *Config) {
		c.QuorumQueues = quorum
		c.DelayTiers = tiers
	})
}

func queueTypes(t *testing.T, run func(t *testing.T, quorum bool)) {
	t.Run("ClassicQueues", func(t *testing.T) { run(t, false) })
	t.Run("QuorumQueues", func(t *testing.T) { run(t, true) })
}

func TestRabbitMQDelay_ReachesOnlyTheRolesQueueAfterTheTier(t *testing.T) {
	queueTypes(t, func(t *testing.T, quorum bool) {
		env := delayEnv(t, quorum, time.Second, 2*time.Second)
		tr := env.transport
		const topic, role, other = TopicCmdWebhookDeliver, "webhook-dispatcher", "auditor"
		env.trackDelays(role, topic)
		env.declare(other, topic)

		got, audited := make(chan arrival, 10), make(chan arrival, 10)
		r := newRouter(t, tr, fastPolicy())
		addConsumer(t, r, tr, role, topic, 2, collect(got))
		addConsumer(t, r, tr, other, topic, 1, collect(audited))
		runRouter(t, r)

		ctx := context.Background()
		msg := mustMessage(t, ctx, "test.deliver.v1", map[string]string{"to": "https://example.test/hook"})
		msg.Metadata.Set("x-attempt", "2")
		start := time.Now()
		applied, err := tr.Delay(ctx, role, topic, msg, time.Second)
		if err != nil {
			t.Fatalf("Delay 1s: %v", err)
		}
		if applied != time.Second {
			t.Errorf("Delay 1s applied %v", applied)
		}
		a := receive(t, got, 15*time.Second, "the message delayed by 1s")
		took := a.at.Sub(start)
		if took < time.Second {
			t.Errorf("message delayed by 1s arrived after %v", took)
		}
		if a.id != msg.UUID || a.meta.Get("x-attempt") != "2" || a.meta.Get(MetaTenantID) != "tenant-1" {
			t.Errorf("message changed on its way: id %s (want %s), metadata %v", a.id, msg.UUID, a.meta)
		}
		// The broker's dead-letter headers come along as strings and hurt nobody.
		if a.meta.Get("x-first-death-reason") != "expired" || a.meta.Get("x-first-death-queue") != tr.Config().DelayQueueName(topic, role, time.Second) {
			t.Errorf("dead-letter headers missing or unexpected: %v", a.meta)
		}
		var deaths []map[string]any
		if err := json.Unmarshal([]byte(a.meta.Get("x-death")), &deaths); err != nil || len(deaths) != 1 || deaths[0]["reason"] != "expired" {
			t.Errorf("x-death should be readable JSON with one expiry, got %q (%v)", a.meta.Get("x-death"), err)
		}
		t.Logf("1s delay arrived after %v", took.Round(time.Millisecond))

		start = time.Now()
		if applied, err := tr.Delay(ctx, role, topic, mustMessage(t, ctx, "test.deliver.v1", 2), 0); err != nil || applied != 0 {
			t.Fatalf("Delay 0 = %v, %v", applied, err)
		}
		a = receive(t, got, 10*time.Second, "the message delayed by 0")
		t.Logf("0 delay arrived after %v", a.at.Sub(start).Round(time.Millisecond))
		nothingMore(t, audited, time.Second, "message for the auditor role (delays are for one role)")
	})
}

// A message that has been through a delay queue, handled and delayed again (the
// webhook retry loop) must go round again: its x-death headers, turned into strings
// by the marshaler, must not be sent back to the broker.
func TestRabbitMQDelay_ADeadLetteredMessageCanBeDelayedAgain(t *testing.T) {
	env := delayEnv(t, false, time.Second)
	tr := env.transport
	const topic, role = TopicCmdWebhookDeliver, "webhook-dispatcher"
	env.trackDelays(role, topic)

	got := make(chan arrival, 10)
	r := newRouter(t, tr, fastPolicy())
	addConsumer(t, r, tr, role, topic, 1, func(msg *message.Message) error {
		got <- arrival{id: msg.UUID, at: time.Now(), meta: msg.Metadata}
		if msg.Metadata.Get("x-attempt") == "" {
			next := msg.Copy()
			next.Metadata.Set("x-attempt", "2")
			_, err := tr.Delay(msg.Context(), role, topic, next, time.Second)
			return err
		}
		return nil
	})
	runRouter(t, r)
	msg := mustMessage(t, context.Background(), "test.deliver.v1", 1)
	if _, err := tr.Delay(context.Background(), role, topic, msg, time.Second); err != nil {
		t.Fatalf("Delay: %v", err)
	}
	first := receive(t, got, 15*time.Second, "the first attempt")
	second := receive(t, got, 15*time.Second, "the second attempt, delayed from the handler")
	if first.id != msg.UUID || second.id != msg.UUID || second.meta.Get("x-attempt") != "2" {
		t.Errorf("attempts: %s then %s (attempt %q), want %s twice", first.id, second.id, second.meta.Get("x-attempt"), msg.UUID)
	}
	var deaths []map[string]any
	if err := json.Unmarshal([]byte(second.meta.Get("x-death")), &deaths); err != nil || len(deaths) != 1 || fmt.Sprint(deaths[0]["count"]) != "1" {
		t.Errorf("second attempt's x-death should be the broker's fresh one (count 1), got %q", second.meta.Get("x-death"))
	}
	nothingMore(t, got, 1500*time.Millisecond, "a third attempt")
}

func TestRabbitMQDelay_UsesTheChosenTiersQueueAndJitters(t *testing.T) {
	env := delayEnv(t, false, time.Second, 5*time.Second, 30*time.Second)
	tr := env.transport
	const topic, role = TopicCmdWebhookDeliver, "webhook-dispatcher"
	env.trackDelays(role, topic)
	ctx := context.Background()

	conn, err := rabbittest.Dial(env.cfg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	// A declaration with other arguments fails, so this proves the queue's TTL and
	// dead-letter target.
	checkQueue := func(ttl time.Duration) {
		t.Helper()
		ch, err := conn.Channel()
		if err != nil {
			t.Fatal(err)
		}
		defer ch.Close()
		name := tr.Config().DelayQueueName(topic, role, ttl)
		args := amqp.Table{"x-message-ttl": ttl.Milliseconds(), "x-dead-letter-exchange": "", "x-dead-letter-routing-key": tr.Config().QueueName(topic, role)}
		if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
			t.Errorf("delay queue %s does not have TTL %v and the role's queue as dead-letter target: %v", name, ttl, err)
		}
	}

	cases := []struct {
		requested time.Duration
		tier      time.Duration
	}{
		{700 * time.Millisecond, time.Second},
		{3 * time.Second, 5 * time.Second},
		{10 * time.Hour, 30 * time.Second}, // capped
	}
	for _, tc := range cases {
		seen := map[time.Duration]int{}
		for range 30 {
			applied, err := tr.Delay(ctx, role, topic, mustMessage(t, ctx, "test.deliver.v1", 1), tc.requested)
			if err != nil {
				t.Fatalf("Delay(%v): %v", tc.requested, err)
			}
			if applied < tc.tier*9/10 || applied > tc.tier*11/10 {
				t.Fatalf("Delay(%v) applied %v, want the tier %v ±10%%", tc.requested, applied, tc.tier)
			}
			seen[applied]++
		}
		if want := map[bool]int{true: 1, false: 3}[tc.tier < 5*time.Second]; len(seen) != want {
			t.Errorf("Delay(%v): applied %v, want %d distinct delays", tc.requested, seen, want)
		}
		for ttl, n := range seen {
			checkQueue(ttl)
			if ttl < 5*time.Second {
				continue // may have expired already
			}
			depth, _, err := rabbittest.QueueDepth(env.cfg.URL, tr.Config().DelayQueueName(topic, role, ttl))
			if err != nil || depth != n {
				t.Errorf("delay queue of %v holds %d messages (%v), want the %d Delay reported there", ttl, depth, err, n)
			}
		}
		t.Logf("Delay(%v) applied %v", tc.requested, seen)
	}
}

// Closing every consumer, even the process, does not lose a pending delay: it lives in
// the broker, and is in the role's queue once due.
func TestRabbitMQDelay_PendingDelaySurvivesTheTransport(t *testing.T) {
	queueTypes(t, func(t *testing.T, quorum bool) {
		env := delayEnv(t, quorum, time.Second, 2*time.Second)
		const topic, role = TopicCmdWebhookDeliver, "webhook-dispatcher"
		env.trackDelays(role, topic)
		first := env.transport
		msg := mustMessage(t, context.Background(), "test.deliver.v1", 1)
		if applied, err := first.Delay(context.Background(), role, topic, msg, 2*time.Second); err != nil || applied != 2*time.Second {
			t.Fatalf("Delay 2s = %v, %v", applied, err)
		}
		if err := first.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		time.Sleep(3 * time.Second)
		depth, consumers, err := rabbittest.QueueDepth(env.cfg.URL, first.Config().QueueName(topic, role))
		if err != nil || depth != 1 || consumers != 0 {
			t.Fatalf("role's queue after the delay, with no consumer: %d messages, %d consumers, %v; want the 1 delayed message", depth, consumers, err)
		}

		second := env.replica()
		got := make(chan arrival, 10)
		r := newRouter(t, second, fastPolicy())
		addConsumer(t, r, second, role, topic, 2, collect(got))
		runRouter(t, r)
		if a := receive(t, got, 15*time.Second, "the message delayed before the transport closed"); a.id != msg.UUID {
			t.Errorf("got %s, want %s", a.id, msg.UUID)
		}
		nothingMore(t, got, time.Second, "second delivery")
	})
}

// Someone deleted the queues by hand: Delay finds out from the broker's return and
// declares them again instead of confirming a message the broker dropped.
func TestRabbitMQDelay_RecreatesQueuesDeletedBehindItsBack(t *testing.T) {
	env := delayEnv(t, false, time.Second)
	tr := env.transport
	const topic, role = TopicCmdWebhookDeliver, "webhook-dispatcher"
	env.trackDelays(role, topic)
	ctx := context.Background()
	if _, err := tr.Delay(ctx, role, topic, mustMessage(t, ctx, "test.deliver.v1", 1), time.Second); err != nil {
		t.Fatalf("first Delay: %v", err)
	}
	conn, err := rabbittest.Dial(env.cfg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{tr.Config().DelayQueueName(topic, role, time.Second), tr.Config().QueueName(topic, role)} {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			t.Fatalf("delete %s: %v", q, err)
		}
	}
	_ = ch.Close()

	msg := mustMessage(t, ctx, "test.deliver.v1", 2)
	if _, err := tr.Delay(ctx, role, topic, msg, time.Second); err != nil {
		t.Fatalf("Delay after the queues were deleted: %v", err)
	}
	waitFor(t, 10*time.Second, "the delayed message in the recreated role's queue", func() bool {
		depth, _, err := rabbittest.QueueDepth(env.cfg.URL, tr.Config().QueueName(topic, role))
		return err == nil && depth == 1
	})
}

// After a broker restart Delay fails fast while the broker is away and works again on
// the same Transport once it is back; what was pending before is delivered.
func TestRabbitMQDelay_WorksAgainAfterABrokerRestart(t *testing.T) {
	node := rabbittest.StartNode(t)
	queueTypes(t, func(t *testing.T, quorum bool) {
		res := rabbittest.Track(t, node.URL)
		cfg := testRabbitConfig(node.URL, res)
		cfg.QuorumQueues = quorum
		cfg.DelayTiers = []time.Duration{time.Second, 3 * time.Second}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tr, err := NewRabbitMQ(ctx, cfg, testLogger())
		if err != nil {
			t.Fatalf("connect to private node: %v", err)
		}
		t.Cleanup(func() { _ = tr.Close() })
		env := &testEnv{t: t, transport: tr, cfg: tr.Config(), res: res}
		const topic, role = TopicCmdWebhookDeliver, "webhook-dispatcher"
		env.trackDelays(role, topic)

		before := mustMessage(t, ctx, "test.deliver.v1", "before")
		if _, err := tr.Delay(ctx, role, topic, before, 3*time.Second); err != nil {
			t.Fatalf("Delay before the restart: %v", err)
		}
		node.StopApp(t)
		_, err = tr.Delay(ctx, role, topic, mustMessage(t, ctx, "test.deliver.v1", "down"), time.Second)
		if !errors.Is(err, ErrNotConnected) {
			t.Errorf("Delay while the broker is down = %v, want ErrNotConnected (fail fast, transient)", err)
		}
		node.StartApp(t)
		backAt := time.Now()

		after := mustMessage(t, ctx, "test.deliver.v1", "after")
		waitFor(t, 30*time.Second, "Delay to work again after the restart", func() bool {
			_, err := tr.Delay(ctx, role, topic, after, time.Second)
			return err == nil
		})
		t.Logf("Delay worked again %v after the broker was back", time.Since(backAt).Round(time.Millisecond))

		got := make(chan arrival, 10)
		r := newRouter(t, tr, fastPolicy())
		addConsumer(t, r, tr, role, topic, 1, collect(got))
		runRouter(t, r)
		seen := map[string]int{}
		for range 2 {
			seen[receive(t, got, 30*time.Second, "the messages delayed before and after the restart").id]++
		}
		nothingMore(t, got, 1500*time.Millisecond, "a duplicate")
		if seen[before.UUID] != 1 || seen[after.UUID] != 1 {
			t.Errorf("got %v, want %s (before) and %s (after) once each", seen, before.UUID, after.UUID)
		}
	})
}
