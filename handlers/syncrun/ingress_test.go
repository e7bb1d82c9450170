package syncrun_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/scheduler"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/sender"
	"github.com/castiel/integration-manager/store"
)

func ingress(id string) domain.IngressReceived {
	return domain.IngressReceived{IngressID: id, TenantID: tenant, IntegrationID: integration, Body: []byte(`{"event":"contact.updated"}`), ReceivedAt: time.Now().UTC()}
}

// runsRequested lists the task ids of the RunSync commands sent so far.
func (hs *harness) runsRequested() []string {
	var out []string
	for _, m := range hs.events.ofType(domain.TypeRunSync) {
		out = append(out, m.(domain.RunSync).SyncTaskID)
	}
	slices.Sort(out)
	return out
}

func TestIngress_TriggersAnIncrementalRunOfEachPullTaskAndCoalesces(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	hs.srv.SeedN(entity, 12)
	hs.task("st-pull", domain.DirectionPull, domain.ModeIncremental)
	hs.task("st-bi", domain.DirectionBidirectional, domain.ModeIncremental)
	hs.task("st-push", domain.DirectionPush, domain.ModeIncremental)
	hs.task("st-off", domain.DirectionPull, domain.ModeIncremental, func(t *domain.SyncTask) { t.Enabled = false })
	hs.task("st-elsewhere", domain.DirectionPull, domain.ModeIncremental, func(t *domain.SyncTask) { t.IntegrationID = "int-other" })
	ctx := context.Background()

	if err := hs.h.Ingress(ctx, ingress("in-1")); err != nil {
		t.Fatal(err)
	}
	if got := hs.runsRequested(); !slices.Equal(got, []string{"st-bi", "st-pull"}) {
		t.Fatalf("runs requested for %v, want st-bi and st-pull (enabled pull/bidirectional tasks of the integration)", got)
	}
	for _, task := range []string{"st-pull", "st-bi"} {
		e := hs.execution(domain.IngressRunID("in-1", task))
		if e.Status != domain.ExecPending || e.Sync.Trigger != domain.TriggerIngress {
			t.Errorf("run of %s: status %s trigger %s, want a pending ingress run", task, e.Status, e.Sync.Trigger)
		}
	}

	// More posts while those runs are pending are coalesced into them.
	if err := hs.h.Ingress(ctx, ingress("in-2")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hs.execs.Get(ctx, tenant, domain.IngressRunID("in-2", "st-pull")); err == nil {
		t.Error("a second post recorded a new run while one was pending")
	}
	if n := len(hs.runsRequested()); n != 2 {
		t.Errorf("%d runs requested after a coalesced post, want still 2", n)
	}

	// The runs happen; the next post triggers new ones.
	for _, task := range []string{"st-pull", "st-bi"} {
		mustStatus(t, hs.run(domain.IngressRunID("in-1", task), task), domain.ExecCompleted)
	}
	if err := hs.h.Ingress(ctx, ingress("in-3")); err != nil {
		t.Fatal(err)
	}
	if n := len(hs.runsRequested()); n != 4 {
		t.Errorf("%d runs requested after the runs finished and a new post came, want 4", n)
	}
	mustStatus(t, hs.run(domain.IngressRunID("in-3", "st-pull"), "st-pull"), domain.ExecCompleted)
	mustStatus(t, hs.run(domain.IngressRunID("in-3", "st-bi"), "st-bi"), domain.ExecCompleted)

	// A post while a run holds the task's lease is coalesced too.
	hs.srv.Edit(entity, "c0000001", func(r *fakeapi.Record) { r.Name = "changed" })
	hs.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts", Count: 1, Delay: 500 * time.Millisecond})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = hs.h.Run(ctx, runCmd("run-long", "st-pull"))
	}()
	waitFor(t, "the long run to start", func() bool {
		e, _, err := hs.execs.Get(ctx, tenant, "run-long")
		return err == nil && e.Status == domain.ExecRunning
	})
	if err := hs.h.Ingress(ctx, ingress("in-4")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := hs.execs.Get(ctx, tenant, domain.IngressRunID("in-4", "st-pull")); err == nil {
		t.Error("a post recorded a new run of a task whose run holds the lease")
	}
	if _, _, err := hs.execs.Get(ctx, tenant, domain.IngressRunID("in-4", "st-bi")); err != nil {
		t.Error("the other task, idle, was not triggered by the post")
	}
	wg.Wait()
}

// A redelivered post finds the runs it asked for: it sends them again (a
// send may have failed) but records nothing new.
func TestIngress_RedeliveredPostRecordsNothingNew(t *testing.T) {
	hs := newHarness(t, harnessConfig{})
	hs.task("st-pull", domain.DirectionPull, domain.ModeIncremental)
	hs.events.fail.Store(true)
	if err := hs.h.Ingress(context.Background(), ingress("in-1")); err == nil {
		t.Fatal("the broker was down but the post was acked; want a transient error")
	}
	hs.events.fail.Store(false)
	if err := hs.h.Ingress(context.Background(), ingress("in-1")); err != nil {
		t.Fatal(err)
	}
	if got := hs.runsRequested(); !slices.Equal(got, []string{"st-pull"}) {
		t.Errorf("runs requested %v, want the one run of st-pull sent on redelivery", got)
	}
	page, _, err := hs.execs.List(context.Background(), store.Query{PartitionKey: tenant})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 1 {
		t.Errorf("%d executions recorded, want 1", len(page))
	}
}

// Reset clears the checkpoint: the next run reads every record again but,
// with the record state kept, writes only what changed.
func TestResetTask_NextRunRereadsEverythingAndWritesOnlyChanges(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	recs := hs.srv.SeedN(entity, 40)
	hs.task("st-reset", domain.DirectionPull, domain.ModeIncremental)
	mustStatus(t, hs.run("run-1", "st-reset"), domain.ExecCompleted)
	hs.srv.Edit(entity, recs[7].ID, func(r *fakeapi.Record) { r.Email = "changed@example.com" })

	task, err := scheduler.ResetTask(context.Background(), hs.db, tenant, "st-reset")
	if err != nil {
		t.Fatal(err)
	}
	if task.Checkpoint.Cursor != "" {
		t.Fatalf("reset left the cursor %q", task.Checkpoint.Cursor)
	}
	e := hs.run("run-2", "st-reset")
	mustStatus(t, e, domain.ExecCompleted)
	if e.Sync.Read != 40 || !e.Sync.FromScratch {
		t.Errorf("after the reset the run read %d records (from scratch: %v), want all 40", e.Sync.Read, e.Sync.FromScratch)
	}
	if s := stats(e); s.Updated != 1 || s.Unchanged != 39 || s.Added != 0 {
		t.Errorf("stats %+v, want 1 updated and 39 unchanged", s)
	}
	if got := hs.storedTask("st-reset").Checkpoint.Cursor; got == "" {
		t.Error("the run after the reset did not set a new checkpoint")
	}
}

// End to end through the in-process broker: an ingress post is consumed,
// its run command published and consumed, the run done and its events out.
func TestHandlers_ThroughTheBrokerIngressBecomesACompletedRun(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	hs.srv.SeedN(entity, 25)
	hs.task("st-pull", domain.DirectionPull, domain.ModeIncremental)

	router, err := messaging.NewRouter(zerolog.Nop(), messaging.Policy{RetryInitial: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, RetryMaxElapsed: time.Second, CloseTimeout: 5 * time.Second}, hs.transport.Publisher())
	if err != nil {
		t.Fatal(err)
	}
	if err := hs.h.Register(router, hs.transport, 2, 1); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = router.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		_ = router.Close()
		<-done
	})
	<-router.Running()

	if err := sender.New(hs.transport.Publisher(), "test").Send(context.Background(), tenant, ingress("in-broker")); err != nil {
		t.Fatal(err)
	}
	id := domain.IngressRunID("in-broker", "st-pull")
	waitFor(t, "the ingress run to complete", func() bool {
		e, _, err := hs.execs.Get(context.Background(), tenant, id)
		return err == nil && e.Status == domain.ExecCompleted
	})
	if got := len(hs.shardKeys()); got != 25 {
		t.Errorf("the shard holds %d records, want 25", got)
	}
	if n := len(hs.events.ofType(domain.TypeSyncCompleted)); n != 1 {
		t.Errorf("%d sync.completed events, want 1", n)
	}
}
