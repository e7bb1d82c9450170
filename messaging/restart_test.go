package messaging

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/castiel/integration-manager/messaging/rabbittest"
)

// A broker restart must lose no message whose Publish returned nil, and consumption
// must resume on the same Transport, without anyone recreating it. The test runs on a
// private node: restarting the shared broker would break other packages' tests.
func TestRabbitMQ_BrokerRestartLosesNoConfirmedMessageAndConsumptionResumes(t *testing.T) {
	node := rabbittest.StartNode(t)
	for _, quorum := range []bool{false, true} {
		name := "ClassicQueue"
		if quorum {
			name = "QuorumQueue"
		}
		t.Run(name, func(t *testing.T) { testBrokerRestart(t, node, quorum) })
	}
}

func testBrokerRestart(t *testing.T, node *rabbittest.Node, quorum bool) {
	res := rabbittest.Track(t, node.URL)
	cfg := testRabbitConfig(node.URL, res)
	cfg.QuorumQueues = quorum
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := NewRabbitMQ(ctx, cfg, testLogger())
	if err != nil {
		t.Fatalf("connect to private node: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	env := &testEnv{t: t, transport: tr, cfg: tr.Config(), res: res}
	const topic, role = TopicCmdWebhookDeliver, "webhook-dispatcher"
	env.declare(role, topic)

	var consumed sync.Map // id -> handling count
	var consumedTotal, consumedAfterRestart atomic.Int64
	var restarted atomic.Bool
	r := newRouter(t, tr, fastPolicy())
	addConsumer(t, r, tr, role, topic, 2, func(msg *message.Message) error {
		n, _ := consumed.LoadOrStore(msg.UUID, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
		consumedTotal.Add(1)
		if restarted.Load() {
			consumedAfterRestart.Add(1)
		}
		return nil
	})
	runRouter(t, r)

	// Publishers run through the whole outage; only confirmed publishes must arrive.
	var (
		confirmed                   sync.Map
		okBefore, okDuring, okAfter atomic.Int64
		failed                      atomic.Int64
		slowest                     atomic.Int64 // ns, longest single Publish call
		phase                       atomic.Int32 // 0 before stop_app, 1 from stop_app to start_app, 2 after
		stop                        = make(chan struct{})
		wg                          sync.WaitGroup
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				msg, err := NewMessage(context.Background(), "test.deliver.v1", "restart-test", "tenant-1", map[string]int{"w": w, "i": i})
				if err != nil {
					t.Errorf("NewMessage: %v", err)
					return
				}
				p := phase.Load()
				start := time.Now()
				err = tr.Publisher().Publish(topic, msg)
				if d := time.Since(start).Nanoseconds(); d > slowest.Load() {
					slowest.Store(d)
				}
				if err != nil {
					failed.Add(1)
					time.Sleep(20 * time.Millisecond)
					continue
				}
				confirmed.Store(msg.UUID, p)
				switch p {
				case 0:
					okBefore.Add(1)
				case 1:
					okDuring.Add(1)
				default:
					okAfter.Add(1)
				}
			}
		}()
	}
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	})

	time.Sleep(time.Second)
	phase.Store(1)
	node.StopApp(t)
	outageStart := time.Now()
	pingCtx, pingCancel := context.WithTimeout(context.Background(), 2*time.Second)
	if err := tr.Ping(pingCtx); err == nil {
		t.Errorf("Ping reported ready while the broker is stopped")
	}
	pingCancel()
	time.Sleep(2 * time.Second)
	node.StartApp(t)
	restarted.Store(true)
	phase.Store(2)
	backAt := time.Now()
	t.Logf("broker down for %s", backAt.Sub(outageStart).Round(time.Millisecond))

	// Publishing and consuming must resume on this Transport by themselves.
	waitFor(t, 30*time.Second, "publishing to resume after the restart", func() bool { return okAfter.Load() >= 200 })
	publishResumed := time.Since(backAt)
	waitFor(t, 30*time.Second, "consumption to resume after the restart", func() bool { return consumedAfterRestart.Load() > 0 })
	waitFor(t, 30*time.Second, "Ping to report ready again", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return tr.Ping(ctx) == nil
	})
	close(stop)
	wg.Wait()

	total := okBefore.Load() + okDuring.Load() + okAfter.Load()
	missing := func() (n int, example string) {
		confirmed.Range(func(id, _ any) bool {
			if _, ok := consumed.Load(id); !ok {
				n++
				example = id.(string)
			}
			return true
		})
		return n, example
	}
	waitFor(t, 60*time.Second, "every confirmed message to be consumed", func() bool { n, _ := missing(); return n == 0 })
	if n, example := missing(); n > 0 {
		t.Fatalf("%d of %d confirmed messages were never consumed (e.g. %s)", n, total, example)
	}
	duplicates := 0
	consumed.Range(func(_, n any) bool {
		if n.(*atomic.Int64).Load() > 1 {
			duplicates++
		}
		return true
	})
	t.Logf("confirmed %d (before stop_app %d, from stop_app until start_app %d, after %d), failed fast %d, slowest Publish %s, publishing resumed %s after the broker was back, all consumed (%d handlings, %d redelivered duplicates)",
		total, okBefore.Load(), okDuring.Load(), okAfter.Load(), failed.Load(),
		time.Duration(slowest.Load()).Round(time.Millisecond), publishResumed.Round(time.Millisecond),
		consumedTotal.Load(), duplicates)
}

func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
