package messaging

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
)

// A handler may skip its "done already?" read only for a message the broker
// hands out for the first time and nobody marked; a retry in process, a
// redelivery after a nack and a marked copy may all have been handled before.
func TestRabbitMQ_MayBeDuplicateIsFalseOnlyForAFirstUnmarkedDelivery(t *testing.T) {
	env := rabbitEnv(t, nil)
	const topic, copies = TopicCmdSyncRun, TopicCmdConflictResolve
	env.declare("worker", topic)
	env.declare("observer", copies)

	var mu sync.Mutex
	var seen []bool
	var gotRedelivery bool
	observed := make(chan [2]string, 3) // (type, MayBeDuplicate)
	r := newRouter(t, env.transport, fastPolicy())
	addConsumer(t, r, env.transport, "worker", topic, 1, func(msg *message.Message) error {
		mu.Lock()
		seen = append(seen, MayBeDuplicate(msg))
		first := len(seen) == 1
		mu.Unlock()
		if msg.Metadata.Get(wamqp.MetadataRedeliveredKey) == "true" {
			mu.Lock()
			gotRedelivery = true
			mu.Unlock()
			return nil
		}
		if !first {
			return errors.New("transient: still failing")
		}
		// The message itself published again (as a deferral does) and a new
		// message marked from it: only the mark survives the trip.
		again := message.NewMessage(msg.UUID+"-again", msg.Payload)
		again.Metadata = maps.Clone(msg.Metadata)
		marked := mustMessage(t, context.Background(), "test.marked.v1", struct{}{})
		plain := mustMessage(t, context.Background(), "test.plain.v1", struct{}{})
		redelivered := message.NewMessage("x", nil)
		MarkMaybeDuplicate(redelivered, marked) // from a message that may be a duplicate
		MarkMaybeDuplicate(msg, plain)          // from a first delivery: no mark
		if err := env.transport.Publisher().Publish(copies, again, marked, plain); err != nil {
			t.Errorf("publish copies: %v", err)
		}
		return errors.New("transient: try again") // retried in process, then nacked and redelivered
	})
	addConsumer(t, r, env.transport, "observer", copies, 1, func(msg *message.Message) error {
		v := "false"
		if MayBeDuplicate(msg) {
			v = "true"
		}
		observed <- [2]string{msg.Metadata.Get(MetaType), v}
		return nil
	})
	runRouter(t, r)

	publish(t, env.transport, topic, mustMessage(t, context.Background(), "test.sync.v1", struct{}{}))
	deadline := time.Now().Add(15 * time.Second)
	for {
		mu.Lock()
		n, redelivered := len(seen), gotRedelivery
		mu.Unlock()
		if n >= 3 && redelivered || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 3 {
		t.Fatalf("the handler ran %d times, want a first run, in-process retries and a redelivery", len(seen))
	}
	if seen[0] {
		t.Errorf("the first delivery of an unmarked message was reported as a possible duplicate")
	}
	for i, dup := range seen[1:] {
		if !dup {
			t.Errorf("run %d (a retry or a redelivery) was reported as a first delivery", i+2)
		}
	}
	want := map[string]string{"test.sync.v1": "false", "test.marked.v1": "true", "test.plain.v1": "false"}
	for range want {
		got := receive(t, observed, 10*time.Second, "a published copy")
		if want[got[0]] != got[1] {
			t.Errorf("%s arrived with MayBeDuplicate=%s, want %s", got[0], got[1], want[got[0]])
		}
	}
}

func TestMayBeDuplicate_IsTrueWhenTheTransportCannotTell(t *testing.T) {
	if !MayBeDuplicate(message.NewMessage("m1", nil)) {
		t.Error("a message no transport vouched for was reported as a first delivery")
	}
}
