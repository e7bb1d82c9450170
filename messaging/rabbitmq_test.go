package messaging

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/castiel/integration-manager/messaging/rabbittest"
	amqp "github.com/rabbitmq/amqp091-go"
)

// tally counts how often each message id was handled, and by whom.
type tally struct {
	mu    sync.Mutex
	count map[string]int
	by    map[string]int
	total int
	done  chan struct{}
	want  int
}

func newTally(want int) *tally {
	return &tally{count: map[string]int{}, by: map[string]int{}, done: make(chan struct{}), want: want}
}

func (c *tally) handler(who string) message.NoPublishHandlerFunc {
	return func(msg *message.Message) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.count[msg.UUID]++
		c.by[who]++
		c.total++
		if c.total == c.want {
			close(c.done)
		}
		return nil
	}
}

func (c *tally) wait(t *testing.T, within time.Duration, what string) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(within):
		c.mu.Lock()
		defer c.mu.Unlock()
		t.Fatalf("%s: handled %d of %d messages within %s", what, c.total, c.want, within)
	}
}

// exactlyOnce checks that every id was handled once and nothing else was handled.
func (c *tally) exactlyOnce(t *testing.T, ids []string, what string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		if n := c.count[id]; n != 1 {
			t.Errorf("%s: message %s handled %d times, want exactly once", what, id, n)
		}
	}
	if len(c.count) != len(ids) || c.total != len(ids) {
		t.Errorf("%s: %d handlings of %d distinct ids, want %d of %d", what, c.total, len(c.count), len(ids), len(ids))
	}
}

func TestRabbitMQ_ReplicasOfOneRoleShareWorkAndEveryRoleGetsEveryMessage(t *testing.T) {
	env := rabbitEnv(t, func(c *Config) { c.Prefetch = 1 })
	replicaA, replicaB := env.transport, env.replica()
	const topic, n = TopicCmdSyncRun, 300
	env.declare("sync-worker", topic)
	env.declare("auditor", topic)

	workers, auditors := newTally(n), newTally(n)
	routerA := newRouter(t, replicaA, fastPolicy())
	addConsumer(t, routerA, replicaA, "sync-worker", topic, 2, workers.handler("A"))
	addConsumer(t, routerA, replicaA, "auditor", topic, 1, auditors.handler("A"))
	runRouter(t, routerA)
	routerB := newRouter(t, replicaB, fastPolicy())
	addConsumer(t, routerB, replicaB, "sync-worker", topic, 2, workers.handler("B"))
	runRouter(t, routerB)

	ids := make([]string, 0, n)
	for i := range n {
		msg := mustMessage(t, context.Background(), "test.sync.v1", map[string]int{"i": i})
		ids = append(ids, msg.UUID)
		publish(t, replicaA, topic, msg)
	}
	workers.wait(t, 30*time.Second, "sync-worker role")
	auditors.wait(t, 30*time.Second, "auditor role")
	time.Sleep(500 * time.Millisecond) // a duplicate would show up now

	workers.exactlyOnce(t, ids, "sync-worker role (two replicas)")
	auditors.exactlyOnce(t, ids, "auditor role")
	workers.mu.Lock()
	defer workers.mu.Unlock()
	if workers.by["A"] == 0 || workers.by["B"] == 0 {
		t.Errorf("replicas should compete for the work, got A=%d B=%d", workers.by["A"], workers.by["B"])
	}
	t.Logf("sync-worker split: replica A %d, replica B %d", workers.by["A"], workers.by["B"])
}

func TestRabbitMQ_ForeignHeadersDoNotBlockTheQueue(t *testing.T) {
	env := rabbitEnv(t, nil)
	const topic = TopicIngressReceived
	env.declare("ingress", topic)
	got := make(chan *message.Message, 1)
	r := newRouter(t, env.transport, fastPolicy())
	addConsumer(t, r, env.transport, "ingress", topic, 1, func(msg *message.Message) error {
		got <- msg
		return nil
	})
	runRouter(t, r)

	// What a shovel, a dead-letter cycle or a non-Watermill producer sends: no Watermill
	// UUID header, non-string headers.
	err := rabbittest.Publish(env.cfg.URL, env.cfg.Exchange, topic, amqp.Publishing{
		MessageId: "foreign-1",
		Body:      []byte(`{"ok":true}`),
		Headers: amqp.Table{
			"x-death":     []any{amqp.Table{"count": int64(2), "queue": "elsewhere", "reason": "expired"}},
			"x-retries":   int32(4),
			MetaTenantID:  "tenant-9",
			"x-is-replay": true,
		},
	})
	if err != nil {
		t.Fatalf("publish foreign message: %v", err)
	}
	msg := receive(t, got, 20*time.Second, "the message with non-string headers")
	if msg.UUID != "foreign-1" || msg.Metadata.Get("x-retries") != "4" || msg.Metadata.Get("x-is-replay") != "true" || msg.Metadata.Get(MetaTenantID) != "tenant-9" {
		t.Errorf("headers not carried as strings: id %q metadata %v", msg.UUID, msg.Metadata)
	}
	if msg.Metadata.Get("x-death") == "" {
		t.Errorf("x-death should be kept (as JSON), metadata %v", msg.Metadata)
	}
}

func TestRabbitMQ_PublishedCommandWaitsInDeclaredQueueForLateConsumer(t *testing.T) {
	env := rabbitEnv(t, nil)
	const topic = TopicCmdConflictResolve
	env.declare("conflict-resolver", topic) // what the API does at start-up
	msg := mustMessage(t, context.Background(), "test.resolve.v1", order{ID: "early"})
	publish(t, env.transport, topic, msg)

	depth, _, err := rabbittest.QueueDepth(env.cfg.URL, env.cfg.QueueName(topic, "conflict-resolver"))
	if err != nil || depth != 1 {
		t.Fatalf("queue should hold the command until a resolver runs: depth %d, %v", depth, err)
	}
	got := make(chan string, 1)
	r := newRouter(t, env.transport, fastPolicy())
	addConsumer(t, r, env.transport, "conflict-resolver", topic, 1, func(m *message.Message) error {
		got <- m.UUID
		return nil
	})
	runRouter(t, r)
	if id := receive(t, got, 20*time.Second, "the command published before the consumer started"); id != msg.UUID {
		t.Errorf("got %s, want %s", id, msg.UUID)
	}
}

func TestRabbitMQ_PingAndClose(t *testing.T) {
	env := rabbitEnv(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := env.transport.Ping(ctx); err != nil {
		t.Fatalf("Ping on a healthy broker: %v", err)
	}
	if err := env.transport.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := env.transport.Ping(ctx); err == nil {
		t.Errorf("Ping after Close should fail")
	}
	err := env.transport.Publisher().Publish(TopicCmdSyncRun, mustMessage(t, ctx, "x", 1))
	if !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close = %v, want ErrClosed", err)
	}
	if _, err := env.transport.Subscriber("r").Subscribe(ctx, TopicCmdSyncRun); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe after Close = %v, want ErrClosed", err)
	}
}

func TestRabbitMQ_ConflictingQueueDeclarationFailsSubscribeLoudly(t *testing.T) {
	env := rabbitEnv(t, nil) // classic queues
	const topic = TopicCmdSyncRun
	env.declare("sync-worker", topic)
	quorum := *env
	quorum.cfg.QuorumQueues = true
	other := quorum.replica()
	_, err := other.Subscriber("sync-worker").Subscribe(context.Background(), topic)
	if err == nil {
		t.Fatalf("subscribing with quorum settings to an existing classic queue should fail")
	}
	t.Logf("error seen by the operator: %v", err)
}

func TestNewRabbitMQ_RetriesFirstConnectionUntilContextEnds(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close() // nothing listens there now

	ctx, cancel := context.WithTimeout(context.Background(), 1200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = NewRabbitMQ(ctx, Config{
		URL:              fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", port),
		ReconnectInitial: 100 * time.Millisecond,
		ReconnectMax:     200 * time.Millisecond,
	}, testLogger())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the context's deadline after retrying, got %v", err)
	}
	if took := time.Since(start); took < time.Second {
		t.Errorf("gave up after %s; it should keep retrying until the context ends", took)
	}
}

func TestNewRabbitMQ_WrongCredentialsFailAtOnce(t *testing.T) {
	url := rabbittest.URL(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bad := "amqp://guest:wrong-password@" + url[len("amqp://guest:guest@"):]
	start := time.Now()
	_, err := NewRabbitMQ(ctx, Config{URL: bad}, testLogger())
	if err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wrong credentials should fail at once, got %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %s to report wrong credentials", took)
	}
}

// One consumer channel hands over several messages at once and settles each on its
// own: a message whose handler hangs holds one place, the others flow past it, and
// never more than the asked concurrency run at once.
func TestRabbitMQ_OneChannelHandlesSeveralMessagesAndASlowOneHoldsOnlyItsPlace(t *testing.T) {
	env := rabbitEnv(t, func(c *Config) { c.Prefetch = 16 })
	const topic, role, concurrency, fast = TopicCmdWebhookDeliver, "dispatcher", 4, 40
	env.declare(role, topic)
	release := make(chan struct{})
	var mu sync.Mutex
	running, most, handled := 0, 0, 0
	done := make(chan struct{})
	r := newRouter(t, env.transport, fastPolicy())
	addConsumer(t, r, env.transport, role, topic, concurrency, func(msg *message.Message) error {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		defer func() {
			mu.Lock()
			running--
			mu.Unlock()
		}()
		if msg.Metadata.Get("slow") == "true" {
			<-release
			return nil
		}
		time.Sleep(5 * time.Millisecond)
		mu.Lock()
		handled++
		if handled == fast {
			close(done)
		}
		mu.Unlock()
		return nil
	})
	runRouter(t, r)
	if subs, inFlight := env.transport.backend.spread(concurrency); subs != 1 || inFlight != concurrency {
		t.Fatalf("a concurrency of %d at prefetch 16 should be 1 channel of %d, got %d of %d", concurrency, concurrency, subs, inFlight)
	}

	slow := mustMessage(t, context.Background(), "test.slow.v1", map[string]int{"i": -1})
	slow.Metadata.Set("slow", "true")
	publish(t, env.transport, topic, slow)
	for i := range fast {
		publish(t, env.transport, topic, mustMessage(t, context.Background(), "test.fast.v1", map[string]int{"i": i}))
	}
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("only %d of %d messages handled while one hung: the slow one held the channel", handled, fast)
	}
	close(release)
	mu.Lock()
	defer mu.Unlock()
	if most > concurrency {
		t.Errorf("%d handlers ran at once, want at most %d", most, concurrency)
	}
	if most < 2 {
		t.Errorf("at most %d handler ran at a time: the channel did not hand over messages concurrently", most)
	}
}
