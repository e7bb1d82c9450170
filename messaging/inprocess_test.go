package messaging

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

func TestInProcess_RolesEachGetEveryMessageAndConsumersOfARoleShareIt(t *testing.T) {
	env := inProcessEnv(t)
	const topic, n = TopicCmdEventPublish, 200
	env.declare("fanout", topic)
	env.declare("auditor", topic)

	fanout, auditors := newTally(n), newTally(n)
	r := newRouter(t, env.transport, fastPolicy())
	addConsumer(t, r, env.transport, "fanout", topic, 4, fanout.handler("fanout"))
	addConsumer(t, r, env.transport, "auditor", topic, 1, auditors.handler("auditor"))
	runRouter(t, r)

	ids := make([]string, 0, n)
	for i := range n {
		msg := mustMessage(t, context.Background(), "test.event.v1", map[string]int{"i": i})
		ids = append(ids, msg.UUID)
		publish(t, env.transport, topic, msg)
	}
	fanout.wait(t, 20*time.Second, "fanout role")
	auditors.wait(t, 20*time.Second, "auditor role")
	time.Sleep(200 * time.Millisecond)
	fanout.exactlyOnce(t, ids, "fanout role (4 consumers)")
	auditors.exactlyOnce(t, ids, "auditor role")
}

func TestInProcess_PingFailsAfterClose(t *testing.T) {
	tr := NewInProcess(testLogger())
	if err := tr.Ping(context.Background()); err != nil {
		t.Fatalf("Ping on a fresh in-process transport: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tr.Ping(context.Background()); err == nil {
		t.Errorf("Ping after Close should fail")
	}
}

// A burst the consumers cannot keep up with meets back-pressure: past maxBacklog
// unacked copies a publish waits, then fails with ErrBacklogFull (the API answers 503),
// and publishing works again as soon as consumers ack. Nothing accepted is dropped.
func TestInProcess_BacklogIsBoundedAndPublishWaitsForRoom(t *testing.T) {
	tr := NewInProcess(testLogger(), WithBacklog(4, 150*time.Millisecond))
	t.Cleanup(func() { _ = tr.Close() })
	env := &testEnv{t: t, transport: tr, cfg: tr.Config()}
	const topic = TopicCmdEventPublish
	env.declare("fanout", topic)
	release := make(chan struct{})
	handled := newTally(6)
	r := newRouter(t, tr, fastPolicy())
	count := handled.handler("fanout")
	addConsumer(t, r, tr, "fanout", topic, 1, func(msg *message.Message) error {
		<-release
		return count(msg)
	})
	runRouter(t, r)

	for i := range 4 {
		publish(t, tr, topic, mustMessage(t, context.Background(), "test.event.v1", map[string]int{"i": i}))
	}
	began := time.Now()
	err := tr.Publisher().Publish(topic, mustMessage(t, context.Background(), "test.event.v1", map[string]int{"i": 4}))
	if !errors.Is(err, ErrBacklogFull) {
		t.Fatalf("publish beyond the backlog: %v, want ErrBacklogFull", err)
	}
	if waited := time.Since(began); waited < 100*time.Millisecond {
		t.Errorf("the publish failed after %v, want it to wait ~150ms for room first", waited)
	}

	close(release)
	for deadline := time.Now().Add(5 * time.Second); ; {
		err := tr.Publisher().Publish(topic, mustMessage(t, context.Background(), "test.event.v1", map[string]int{"i": 5}))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room in the backlog 5s after the consumer started acking: %v", err)
		}
	}
	publish(t, tr, topic, mustMessage(t, context.Background(), "test.event.v1", map[string]int{"i": 6}))
	handled.wait(t, 5*time.Second, "the 4 accepted before and the 2 after")
}
