package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/scheduler"
	"github.com/castiel/integration-manager/store"
)

func at(h, m, s int) time.Time { return time.Date(2025, 6, 1, h, m, s, 0, time.UTC) }

func tickAll(t *testing.T, ss ...*scheduler.Scheduler) {
	t.Helper()
	for _, s := range ss {
		if _, err := s.Tick(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func runIDs(cmds *commandLog) []string {
	var ids []string
	for _, c := range cmds.all() {
		ids = append(ids, c.ExecutionID)
	}
	return ids
}

// A cron task gets a run for the activation current when it is first seen,
// then one at each activation, identified by the activation time.
func TestScheduler_EnqueuesCronTaskAtItsActivation(t *testing.T) {
	db := openStore(t)
	putTask(t, db, "tenant-a", "st-cron", "*/15 * * * *", true)
	cmds := &commandLog{}
	clk := &clock{now: at(10, 14, 50)}
	s := newScheduler(t, db, cmds, clk)

	tickAll(t, s)
	clk.Set(at(10, 14, 59))
	tickAll(t, s)
	want := []string{domain.ScheduledRunID("st-cron", at(10, 0, 0))}
	if got := runIDs(cmds); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("before 10:15: runs %v, want only the 10:00 activation's %v", got, want)
	}

	clk.Set(at(10, 15, 0))
	tickAll(t, s)
	clk.Set(at(10, 15, 10))
	tickAll(t, s)
	want = append(want, domain.ScheduledRunID("st-cron", at(10, 15, 0)))
	if got := runIDs(cmds); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the 10:15 activation: runs %v, want %v", got, want)
	}
	if sent := cmds.all(); sent[1].Trigger != domain.TriggerSchedule || sent[1].SyncTaskID != "st-cron" || !sent[1].RequestedAt.Equal(at(10, 15, 0)) {
		t.Errorf("run for 10:15: %+v, want a scheduled run of st-cron requested at 10:15", sent[1])
	}
}

func TestScheduler_TwoReplicasEnqueueEachCronActivationOnce(t *testing.T) {
	db := openStore(t)
	putTask(t, db, "tenant-a", "st-cron", "0 * * * *", true)
	putTask(t, db, "tenant-b", "st-daily", "@daily", true)
	cmds := &commandLog{}
	clk := &clock{now: at(10, 59, 55)}
	a, b := newScheduler(t, db, cmds, clk), newScheduler(t, db, cmds, clk)

	for _, now := range []time.Time{at(10, 59, 55), at(11, 0, 0), at(11, 0, 0), at(11, 0, 5)} {
		clk.Set(now)
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
	want := map[string]int{
		domain.ScheduledRunID("st-cron", at(10, 0, 0)): 1,
		domain.ScheduledRunID("st-cron", at(11, 0, 0)): 1,
		domain.ScheduledRunID("st-daily", at(0, 0, 0)): 1,
	}
	got := map[string]int{}
	for _, id := range runIDs(cmds) {
		got[id]++
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("two replicas ticking across 11:00 sent %v, want each of %v once", got, want)
	}
}

// A scheduler down over several slots enqueues one catch-up run, for the
// latest missed slot, whether the same process resumes or another starts.
func TestScheduler_DownForThreeSlotsEnqueuesOneCatchUpRun(t *testing.T) {
	for _, schedule := range []string{"5m", "*/5 * * * *"} {
		for _, restart := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s restart=%v", schedule, restart), func(t *testing.T) {
				db := openStore(t)
				putTask(t, db, "tenant-a", "st", schedule, true)
				cmds := &commandLog{}
				clk := &clock{now: at(10, 1, 0)}
				s := newScheduler(t, db, cmds, clk)
				tickAll(t, s) // the 10:00 slot

				// Down from 10:01 to 10:17: slots 10:05, 10:10 and 10:15 pass unseen.
				clk.Set(at(10, 17, 0))
				if restart {
					s = newScheduler(t, db, cmds, clk)
				}
				n, err := s.Tick(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				tickAll(t, s) // a second tick in the same slot adds nothing
				want := []string{domain.ScheduledRunID("st", at(10, 0, 0)), domain.ScheduledRunID("st", at(10, 15, 0))}
				if got := runIDs(cmds); n != 1 || fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("after the downtime: this tick enqueued %d, runs %v; want one catch-up run, for 10:15: %v", n, got, want)
				}
				ec, _ := db.Container(domain.ContainerExecutions)
				execs := store.NewRepository[domain.Execution](ec)
				for _, skipped := range []time.Time{at(10, 5, 0), at(10, 10, 0)} {
					if _, _, err := execs.Get(context.Background(), "tenant-a", domain.ScheduledRunID("st", skipped)); !errors.Is(err, store.ErrNotFound) {
						t.Errorf("missed slot %s: %v, want no execution (only the latest missed slot is caught up)", skipped.Format("15:04"), err)
					}
				}

				// Back on time: the next slot is enqueued as usual.
				clk.Set(at(10, 20, 0))
				tickAll(t, s)
				if got := runIDs(cmds); len(got) != 3 || got[2] != domain.ScheduledRunID("st", at(10, 20, 0)) {
					t.Errorf("at 10:20: runs %v, want a third for 10:20", got)
				}
			})
		}
	}
}
