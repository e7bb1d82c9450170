package messaging

import (
	"context"
	"testing"
	"time"
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
