package messaging

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// arrival is one delayed message as a handler saw it.
type arrival struct {
	id   string
	at   time.Time
	meta message.Metadata
}

func collect(ch chan<- arrival) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		ch <- arrival{id: msg.UUID, at: time.Now(), meta: msg.Metadata}
		return nil
	}
}

func TestInProcessDelay_FiresInDueOrderForTheRoleOnly(t *testing.T) {
	tiers := []time.Duration{300 * time.Millisecond, 600 * time.Millisecond, 900 * time.Millisecond, 1200 * time.Millisecond}
	tr := NewInProcess(testLogger(), WithDelayTiers(tiers...))
	t.Cleanup(func() { _ = tr.Close() })
	env := &testEnv{t: t, transport: tr, cfg: tr.Config()}
	const topic = TopicCmdWebhookDeliver
	env.declare("webhook-dispatcher", topic)
	env.declare("auditor", topic)

	got, audited := make(chan arrival, 10), make(chan arrival, 10)
	r := newRouter(t, tr, fastPolicy())
	addConsumer(t, r, tr, "webhook-dispatcher", topic, 2, collect(got))
	addConsumer(t, r, tr, "auditor", topic, 1, collect(audited))
	runRouter(t, r)

	// Scheduled longest first; they must come out shortest first.
	requested := []time.Duration{1200 * time.Millisecond, 800 * time.Millisecond, 600 * time.Millisecond, 100 * time.Millisecond, 0}
	wantApplied := []time.Duration{1200 * time.Millisecond, 900 * time.Millisecond, 600 * time.Millisecond, 300 * time.Millisecond, 0}
	start := time.Now()
	idOf := map[string]time.Duration{}
	for i, d := range requested {
		msg := mustMessage(t, context.Background(), "test.deliver.v1", map[string]int{"i": i})
		applied, err := tr.Delay(context.Background(), "webhook-dispatcher", topic, msg, d)
		if err != nil {
			t.Fatalf("Delay(%v): %v", d, err)
		}
		if applied != wantApplied[i] {
			t.Errorf("Delay(%v) applied %v, want %v (rounded up to a tier)", d, applied, wantApplied[i])
		}
		idOf[msg.UUID] = applied
	}
	var last time.Duration = -1
	for range requested {
		a := receive(t, got, 10*time.Second, "a delayed message")
		applied, ok := idOf[a.id]
		if !ok {
			t.Fatalf("unexpected message %s", a.id)
		}
		after := a.at.Sub(start)
		if after < applied {
			t.Errorf("message delayed by %v arrived after only %v", applied, after)
		}
		if applied <= last {
			t.Errorf("message delayed by %v arrived after the one delayed by %v", applied, last)
		}
		last = applied
		t.Logf("delay %v arrived after %v", applied, after.Round(time.Millisecond))
	}
	nothingMore(t, audited, 300*time.Millisecond, "delivery to the auditor role (a delay is for one role)")
	nothingMore(t, got, 0, "duplicate delivery")
}

func TestInProcessDelay_PendingDelaysHoldNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	tr := NewInProcess(testLogger())
	env := &testEnv{t: t, transport: tr, cfg: tr.Config()}
	env.declare("webhook-dispatcher", TopicCmdWebhookDeliver)
	baseline := runtime.NumGoroutine()

	const n = 1000
	for i := range n {
		msg := mustMessage(t, context.Background(), "test.deliver.v1", map[string]int{"i": i})
		delay := time.Duration(1+i%8) * time.Hour
		if _, err := tr.Delay(context.Background(), "webhook-dispatcher", TopicCmdWebhookDeliver, msg, delay); err != nil {
			t.Fatalf("Delay: %v", err)
		}
	}
	if p := tr.backend.(*inProcess).sched.pending(); p != n {
		t.Fatalf("%d delays pending, want %d", p, n)
	}
	if grown := runtime.NumGoroutine() - baseline; grown > 0 {
		t.Errorf("%d pending delays added %d goroutines, want none", n, grown)
	}
	t.Logf("goroutines: %d before the transport, %d with it, %d with %d pending delays", before, baseline, runtime.NumGoroutine(), n)
	if err := tr.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitFor(t, 5*time.Second, "the transport's goroutines to end after Close", func() bool { return runtime.NumGoroutine() <= before })
}

func TestInProcessDelay_NackedDelayedMessageComesBack(t *testing.T) {
	tr := NewInProcess(testLogger(), WithDelayTiers(100*time.Millisecond))
	t.Cleanup(func() { _ = tr.Close() })
	sub := tr.Subscriber("webhook-dispatcher")
	t.Cleanup(func() { _ = sub.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	msgs, err := sub.Subscribe(ctx, TopicCmdWebhookDeliver)
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	msg := mustMessage(t, context.Background(), "test.deliver.v1", 1)
	if _, err := tr.Delay(ctx, "webhook-dispatcher", TopicCmdWebhookDeliver, msg, time.Millisecond); err != nil {
		t.Fatalf("Delay: %v", err)
	}
	first := receive(t, msgs, 5*time.Second, "the delayed message")
	first.Nack()
	again := receive(t, msgs, 5*time.Second, "the nacked delayed message, again")
	if again.UUID != msg.UUID {
		t.Errorf("got %s again, want %s", again.UUID, msg.UUID)
	}
	again.Ack()
	nothingMore(t, msgs, 300*time.Millisecond, "delivery of an acked message")
}
