package scheduler_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/scheduler"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

// commandLog records the RunSync commands sent; fail makes sends fail.
type commandLog struct {
	mu   sync.Mutex
	sent []domain.RunSync
	fail atomic.Bool
}

func (c *commandLog) Send(_ context.Context, _ string, msg domain.Message) error {
	if c.fail.Load() {
		return errors.New("broker unreachable (simulated)")
	}
	if err := msg.Validate(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sent = append(c.sent, msg.(domain.RunSync))
	return nil
}

func (c *commandLog) all() []domain.RunSync {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]domain.RunSync(nil), c.sent...)
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

func openStore(t *testing.T) *embedded.Backend {
	t.Helper()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "db"), store.Containers(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

func putTask(t *testing.T, db store.Backend, tenantID, id, schedule string, enabled bool) {
	t.Helper()
	c, _ := db.Container(domain.ContainerSyncTasks)
	now := time.Now().UTC()
	task := domain.SyncTask{ID: id, TenantID: tenantID, IntegrationID: "int-1", Entity: "contacts", Direction: domain.DirectionPull,
		Mode: domain.ModeIncremental, Schedule: schedule, Mapping: []domain.FieldMapping{}, Enabled: enabled,
		ConflictPolicy: domain.ConflictPolicy{Strategy: domain.StrategyManual}, CreatedAt: now, UpdatedAt: now}
	if err := task.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := store.NewRepository[domain.SyncTask](c).Create(context.Background(), task); err != nil {
		t.Fatal(err)
	}
}

func newScheduler(t *testing.T, db store.Backend, cmds scheduler.Sender, clk *clock) *scheduler.Scheduler {
	t.Helper()
	s, err := scheduler.New(scheduler.Deps{Store: db, Commands: cmds}, scheduler.Options{Tick: time.Second, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestScheduler_TwoReplicasEnqueueEachSlotOnce(t *testing.T) {
	db := openStore(t)
	putTask(t, db, "tenant-a", "st-5m", "5m", true)
	putTask(t, db, "tenant-b", "st-1h", "1h", true)
	putTask(t, db, "tenant-a", "st-manual", "", true)
	putTask(t, db, "tenant-b", "st-paused", "5m", false)
	cmds := &commandLog{}
	clk := &clock{now: time.Date(2025, 6, 1, 10, 7, 30, 0, time.UTC)}
	a, b := newScheduler(t, db, cmds, clk), newScheduler(t, db, cmds, clk)

	// Both replicas tick at the same moment, several times within the slot.
	for range 3 {
		var wg sync.WaitGroup
		for _, s := range []*scheduler.Scheduler{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := s.Tick(context.Background()); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
	sent := cmds.all()
	if len(sent) != 2 {
		t.Fatalf("%d runs enqueued by two replicas ticking three times, want 2 (one per scheduled, enabled task): %+v", len(sent), sent)
	}
	want := map[string]string{
		"st-5m": domain.ScheduledRunID("st-5m", time.Date(2025, 6, 1, 10, 5, 0, 0, time.UTC)),
		"st-1h": domain.ScheduledRunID("st-1h", time.Date(2025, 6, 1, 10, 0, 0, 0, time.UTC)),
	}
	ec, _ := db.Container(domain.ContainerExecutions)
	execs := store.NewRepository[domain.Execution](ec)
	for _, cmd := range sent {
		if cmd.ExecutionID != want[cmd.SyncTaskID] || cmd.Trigger != domain.TriggerSchedule {
			t.Errorf("run %+v, want execution %s with trigger schedule", cmd, want[cmd.SyncTaskID])
		}
		e, _, err := execs.Get(context.Background(), cmd.TenantID, cmd.ExecutionID)
		if err != nil || e.Status != domain.ExecPending || e.SyncTaskID != cmd.SyncTaskID {
			t.Errorf("execution of %s: %+v, %v; want a pending sync run", cmd.SyncTaskID, e, err)
		}
	}

	// The next 5-minute slot: one more run of st-5m, none of st-1h.
	clk.Set(time.Date(2025, 6, 1, 10, 10, 0, 0, time.UTC))
	for _, s := range []*scheduler.Scheduler{a, b, a} {
		if _, err := s.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	sent = cmds.all()
	if len(sent) != 3 || sent[2].SyncTaskID != "st-5m" ||
		sent[2].ExecutionID != domain.ScheduledRunID("st-5m", time.Date(2025, 6, 1, 10, 10, 0, 0, time.UTC)) {
		t.Errorf("after the next slot began: %+v, want one more run of st-5m for 10:10", sent)
	}
}

// A slot whose command could not be sent is not lost: its record is removed
// and the next tick, of any replica, enqueues it.
func TestScheduler_FailedSendIsRetriedNextTick(t *testing.T) {
	db := openStore(t)
	putTask(t, db, "tenant-a", "st-5m", "5m", true)
	cmds := &commandLog{}
	clk := &clock{now: time.Date(2025, 6, 1, 10, 7, 0, 0, time.UTC)}
	a, b := newScheduler(t, db, cmds, clk), newScheduler(t, db, cmds, clk)

	cmds.fail.Store(true)
	if _, err := a.Tick(context.Background()); err == nil {
		t.Fatal("a tick whose sends failed reported no error")
	}
	cmds.fail.Store(false)
	n, err := b.Tick(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 || len(cmds.all()) != 1 {
		t.Errorf("the other replica enqueued %d runs after the failed send, want the slot's one run", n)
	}
}

// Pausing a task (enabled false) stops its runs; resuming starts them again.
func TestScheduler_PausedTaskIsNotEnqueued(t *testing.T) {
	db := openStore(t)
	putTask(t, db, "tenant-a", "st", "5m", false)
	cmds := &commandLog{}
	clk := &clock{now: time.Date(2025, 6, 1, 10, 7, 0, 0, time.UTC)}
	s := newScheduler(t, db, cmds, clk)
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(cmds.all()) != 0 {
		t.Fatal("a paused task was enqueued")
	}
	c, _ := db.Container(domain.ContainerSyncTasks)
	if _, _, err := store.NewRepository[domain.SyncTask](c).Update(context.Background(), "tenant-a", "st", func(t *domain.SyncTask) error {
		t.Enabled = true
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(cmds.all()) != 1 {
		t.Errorf("a resumed task was not enqueued (%d runs)", len(cmds.all()))
	}
}

func TestScheduler_RunTicksUntilCancelled(t *testing.T) {
	db := openStore(t)
	putTask(t, db, "tenant-a", "st", "1m", true)
	cmds := &commandLog{}
	s, err := scheduler.New(scheduler.Deps{Store: db, Commands: cmds}, scheduler.Options{Tick: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for len(cmds.all()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v after cancellation, want nil", err)
	}
	if n := len(cmds.all()); n < 1 || n > 2 { // 2 only if a minute began during the test
		t.Errorf("Run enqueued %d runs, want the current slot's one", n)
	}
}

func TestResetTask_ClearsTheCheckpointOnly(t *testing.T) {
	db := openStore(t)
	putTask(t, db, "tenant-a", "st", "5m", true)
	c, _ := db.Container(domain.ContainerSyncTasks)
	repo := store.NewRepository[domain.SyncTask](c)
	if _, _, err := repo.Update(context.Background(), "tenant-a", "st", func(t *domain.SyncTask) error {
		t.Checkpoint = domain.Checkpoint{Cursor: "2025-01-01T00:00:00Z", UpdatedAt: time.Now().UTC()}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got, err := scheduler.ResetTask(context.Background(), db, "tenant-a", "st")
	if err != nil {
		t.Fatal(err)
	}
	if got.Checkpoint.Cursor != "" || got.Checkpoint.UpdatedAt.IsZero() || got.Schedule != "5m" || !got.Enabled {
		t.Errorf("after reset: %+v; want an empty cursor with a new checkpoint time, the rest unchanged", got)
	}
	if _, err := scheduler.ResetTask(context.Background(), db, "tenant-a", "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reset of a missing task: %v, want store.ErrNotFound", err)
	}
}
