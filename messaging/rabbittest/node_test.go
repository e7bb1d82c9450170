package rabbittest_test

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/castiel/integration-manager/messaging/rabbittest"
)

// A restarted node keeps its durable queues and persistent messages, and
// Queues tells ready from unacknowledged messages.
func TestNode_RestartKeepsDurableMessagesAndQueuesReportsThem(t *testing.T) {
	began := time.Now()
	n := rabbittest.StartNode(t)
	t.Logf("node booted in %v", time.Since(began).Round(time.Millisecond))
	const queue = "rabbittest-restart"
	conn, err := rabbittest.Dial(n.URL)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"one", "two"} {
		if err := rabbittest.Publish(n.URL, "", queue, amqp.Publishing{DeliveryMode: amqp.Persistent, Body: []byte(body)}); err != nil {
			t.Fatal(err)
		}
	}
	// One message in hand, not acknowledged.
	if _, ok, err := ch.Get(queue, false); err != nil || !ok {
		t.Fatalf("get a message: ok=%v err=%v", ok, err)
	}
	stats := queueStats(t, n, queue)
	if stats.Ready != 1 || stats.Unacked != 1 {
		t.Errorf("before the restart Queues reports %+v, want 1 ready and 1 unacknowledged", stats)
	}

	began = time.Now()
	n.Restart(t, time.Second)
	t.Logf("node restarted in %v", time.Since(began).Round(time.Millisecond))
	if !conn.IsClosed() {
		t.Error("a client connection survived the restart of the node")
	}
	if stats := queueStats(t, n, queue); stats.Ready != 2 || stats.Unacked != 0 {
		t.Errorf("after the restart Queues reports %+v, want both messages ready again", stats)
	}
}

func queueStats(t *testing.T, n *rabbittest.Node, name string) rabbittest.QueueStats {
	t.Helper()
	qs, err := n.Queues()
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Name == name {
			return q
		}
	}
	t.Fatalf("Queues does not list %s: %+v", name, qs)
	return rabbittest.QueueStats{}
}
