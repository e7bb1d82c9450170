package delaystore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/delaystore"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

// openStore opens (or reopens) the embedded store file at path with the scheduled
// container.
func openStore(t *testing.T, path string) (*embedded.Backend, *delaystore.Store) {
	t.Helper()
	b, err := embedded.Open(path, []store.ContainerSpec{delaystore.Spec()})
	if err != nil {
		t.Fatalf("open embedded store %s: %v", path, err)
	}
	c, err := b.Container(delaystore.ContainerName)
	if err != nil {
		t.Fatal(err)
	}
	return b, delaystore.New(c)
}

func TestStore_SavesListsAndDeletesAcrossRolesAndPages(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	b, s := openStore(t, path)
	ctx := context.Background()
	due := time.Now().Add(time.Hour).Round(0)
	var want []string
	for i := range 1200 { // more than one page of store.MaxPageSize
		role := []string{"webhook-dispatcher", "sync-worker"}[i%2]
		m := messaging.ScheduledMessage{
			ID: fmt.Sprintf("sched-%04d", i), Role: role, Topic: messaging.TopicCmdWebhookDeliver,
			Due: due.Add(time.Duration(i) * time.Millisecond), UUID: fmt.Sprintf("msg-%d", i),
			Metadata: map[string]string{"x-attempt": "3"}, Payload: []byte(`{"i":1}`),
		}
		if err := s.Save(ctx, m); err != nil {
			t.Fatalf("Save: %v", err)
		}
		want = append(want, m.ID)
	}
	if err := s.Delete(ctx, "sync-worker", "sched-0001"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := s.Delete(ctx, "sync-worker", "sched-0001"); err != nil {
		t.Errorf("deleting twice must not fail: %v", err)
	}
	want = slices.DeleteFunc(want, func(id string) bool { return id == "sched-0001" })
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}

	b, s = openStore(t, path) // a new process: nothing known in memory
	t.Cleanup(func() { _ = b.Close() })
	pending, err := s.Pending(ctx)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	var got []string
	for _, m := range pending {
		got = append(got, m.ID)
		if m.ID == "sched-0002" {
			if m.Role != "webhook-dispatcher" || m.Topic != messaging.TopicCmdWebhookDeliver || m.UUID != "msg-2" ||
				!m.Due.Equal(due.Add(2*time.Millisecond)) || m.Metadata["x-attempt"] != "3" || string(m.Payload) != `{"i":1}` {
				t.Errorf("message read back differs: %+v", m)
			}
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("Pending returned %d messages, want the %d saved and not deleted", len(got), len(want))
	}
}

type arrival struct {
	id string
	at time.Time
}

func consume(t *testing.T, tr *messaging.Transport, role, topic string) <-chan arrival {
	t.Helper()
	got := make(chan arrival, 10)
	r, err := messaging.NewRouter(zerolog.Nop(), messaging.Policy{CloseTimeout: 5 * time.Second}, tr.Publisher())
	if err != nil {
		t.Fatal(err)
	}
	if err := messaging.AddConsumer(r, tr, role, topic, 1, func(msg *message.Message) error {
		got <- arrival{id: msg.UUID, at: time.Now()}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); _ = r.Close(); <-done })
	<-r.Running()
	return got
}

// The standalone process is stopped while a webhook retry waits, and started again:
// the retry is still delivered, once, no earlier than it was due.
func TestInProcessWithSchedule_PendingDelaySurvivesClosingTransportAndStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "standalone.db")
	const role, topic = "webhook-dispatcher", messaging.TopicCmdWebhookDeliver
	ctx := context.Background()
	tiers := messaging.WithDelayTiers(time.Second, 2*time.Second)

	b, s := openStore(t, path)
	tr, err := messaging.NewInProcessWithSchedule(ctx, zerolog.Nop(), s, tiers)
	if err != nil {
		t.Fatalf("NewInProcessWithSchedule: %v", err)
	}
	msg, err := messaging.NewMessage(ctx, "test.deliver.v1", "delaystore-test", "tenant-1", map[string]int{"attempt": 2})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if applied, err := tr.Delay(ctx, role, topic, msg, 2*time.Second); err != nil || applied != 2*time.Second {
		t.Fatalf("Delay 2s = %v, %v", applied, err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("close transport: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("close store: %v", err)
	}

	time.Sleep(500 * time.Millisecond)
	b, s = openStore(t, path)
	t.Cleanup(func() { _ = b.Close() })
	tr, err = messaging.NewInProcessWithSchedule(ctx, zerolog.Nop(), s, tiers)
	if err != nil {
		t.Fatalf("reopen transport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	got := consume(t, tr, role, topic)
	a := receiveArrival(t, got, 10*time.Second)
	if a.id != msg.UUID {
		t.Errorf("got %s, want %s", a.id, msg.UUID)
	}
	if took := a.at.Sub(start); took < 2*time.Second {
		t.Errorf("a 2s delay was delivered after %v", took)
	}
	select {
	case dup := <-got:
		t.Errorf("delivered twice: %s", dup.id)
	case <-time.After(500 * time.Millisecond):
	}
	waitEmpty(t, s)
}

// A message that was due but not consumed when the process stopped is delivered
// after the restart, even though it fires again before any consumer subscribes: it
// waits in the role's queue, and leaves the store once handled.
func TestInProcessWithSchedule_OverdueMessagesWaitForTheRolesConsumers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "standalone.db")
	const role, topic = "webhook-dispatcher", messaging.TopicCmdWebhookDeliver
	ctx := context.Background()
	tiers := messaging.WithDelayTiers(100 * time.Millisecond)

	b, s := openStore(t, path)
	tr, err := messaging.NewInProcessWithSchedule(ctx, zerolog.Nop(), s, tiers)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := messaging.NewMessage(ctx, "test.deliver.v1", "delaystore-test", "tenant-1", 1)
	if _, err := tr.Delay(ctx, role, topic, msg, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // due, waiting in the role's queue: nobody consumes
	_ = tr.Close()
	_ = b.Close()

	b, s = openStore(t, path)
	t.Cleanup(func() { _ = b.Close() })
	tr, err = messaging.NewInProcessWithSchedule(ctx, zerolog.Nop(), s, tiers)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Close() })
	time.Sleep(200 * time.Millisecond) // overdue at start: fires before anyone subscribes
	got := consume(t, tr, role, topic)
	if a := receiveArrival(t, got, 5*time.Second); a.id != msg.UUID {
		t.Errorf("got %s, want %s", a.id, msg.UUID)
	}
	waitEmpty(t, s)
}

func receiveArrival(t *testing.T, ch <-chan arrival, within time.Duration) arrival {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(within):
		t.Fatalf("the delayed message did not arrive within %s", within)
	}
	return arrival{}
}

// waitEmpty checks the store forgets a message once it was handled.
func waitEmpty(t *testing.T, s *delaystore.Store) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		pending, err := s.Pending(context.Background())
		if err == nil && len(pending) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the handled message is still in the schedule store: %d pending, %v", len(pending), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkInProcessDelayWithStore: Delay on the standalone transport saves each
// message in the embedded store (one fsync per commit, shared by concurrent writers).
func BenchmarkInProcessDelayWithStore(b *testing.B) {
	bk, err := embedded.Open(filepath.Join(b.TempDir(), "bench.db"), []store.ContainerSpec{delaystore.Spec()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = bk.Close() })
	c, _ := bk.Container(delaystore.ContainerName)
	tr, err := messaging.NewInProcessWithSchedule(context.Background(), zerolog.Nop(), delaystore.New(c))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = tr.Close() })
	ctx := context.Background()
	payload := map[string]string{"data": string(make([]byte, 400))}
	delay := func() error {
		msg, err := messaging.NewMessage(ctx, "bench.v1", "bench", "tenant-1", payload)
		if err != nil {
			return err
		}
		_, err = tr.Delay(ctx, "webhook-dispatcher", messaging.TopicCmdWebhookDeliver, msg, 30*time.Minute)
		return err
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if err := delay(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	b.Run("parallel16", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := delay(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
}
