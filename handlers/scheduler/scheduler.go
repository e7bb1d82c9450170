// Package scheduler enqueues due sync runs (cmd/scheduler). Every tick it
// lists the enabled tasks that carry a schedule, across tenants, and for each
// one whose current slot has no run yet it records a pending execution with
// the deterministic id domain.ScheduledRunID(task, slot) and sends RunSync.
// The current slot is domain.Schedule.Slot(now): now truncated to an interval
// schedule, or the latest activation at or before now of a cron schedule (in
// UTC). The record is created if absent, and only its creator sends: with any
// number of scheduler replicas each slot is enqueued once.
//
// Catch-up: when no scheduler ran over one or more slots, the first tick
// afterwards enqueues only the latest of them (the current slot, however late)
// and skips the older ones, since a run reads everything changed since the
// task's checkpoint anyway. The same holds for a task seen for the first time:
// its current slot runs at once. Pausing a task is its enabled flag;
// ResetTask clears its checkpoint.
package scheduler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// Role names the scheduler in logs and metadata.
const Role = "scheduler"

// Sender publishes RunSync commands; *sender.Sender implements it.
type Sender interface {
	Send(ctx context.Context, tenantID string, msg domain.Message) error
}

// Deps are the scheduler's collaborators; all are required but Logger.
type Deps struct {
	Store    store.Backend // integration_sync_tasks (queried across tenants) and integration_executions
	Commands Sender
	Logger   zerolog.Logger
}

// Options tune the scheduler; zero values take the defaults listed.
type Options struct {
	// Tick is how often due slots are looked for (default 10 s). A slot is
	// enqueued within a tick of its start.
	Tick time.Duration
	Now  func() time.Time
}

// DefaultTick is Options.Tick's default.
const DefaultTick = 10 * time.Second

// Scheduler enqueues due runs.
type Scheduler struct {
	opts     Options
	log      zerolog.Logger
	commands Sender
	tasks    *store.Repository[domain.SyncTask]
	execs    *store.Repository[domain.Execution]

	// enqueued remembers each task's last slot known to be enqueued (by this
	// replica or another), so a tick does not try to create it again. Only
	// Tick touches it, and ticks do not overlap.
	enqueued map[taskRef]time.Time
}

type taskRef struct{ tenantID, taskID string }

// New builds a scheduler; it refuses missing dependencies.
func New(deps Deps, opts Options) (*Scheduler, error) {
	if deps.Store == nil || deps.Commands == nil {
		return nil, errors.New("scheduler: New needs Store and Commands")
	}
	if opts.Tick == 0 {
		opts.Tick = DefaultTick
	}
	if opts.Tick < 0 {
		return nil, errors.New("scheduler: Tick must be > 0")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	tc, err := deps.Store.Container(domain.ContainerSyncTasks)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	ec, err := deps.Store.Container(domain.ContainerExecutions)
	if err != nil {
		return nil, fmt.Errorf("scheduler: %w", err)
	}
	return &Scheduler{
		opts:     opts,
		log:      deps.Logger.With().Str("component", Role).Logger(),
		commands: deps.Commands,
		tasks:    store.NewRepository[domain.SyncTask](tc),
		execs:    store.NewRepository[domain.Execution](ec),
		enqueued: map[taskRef]time.Time{},
	}, nil
}

// Run ticks until ctx ends; a failed tick is logged and the next one tries
// again. It returns nil when ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Tick)
	defer t.Stop()
	for {
		if n, err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn().Err(err).Int("enqueued", n).Msg("scheduler tick failed; retrying at the next tick")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick enqueues the current slot of every due task and returns how many runs
// this replica enqueued. It goes through every task even when some fail, and
// returns the first error.
func (s *Scheduler) Tick(ctx context.Context) (int, error) {
	now := s.opts.Now().UTC()
	q := store.Query{Limit: store.MaxPageSize, Filters: []store.Filter{{Field: "enabled", Value: true}}}
	seen := make(map[taskRef]bool, len(s.enqueued))
	enqueued := 0
	var firstErr error
	for {
		tasks, next, err := s.tasks.List(ctx, q)
		if err != nil {
			return enqueued, fmt.Errorf("scheduler: list sync tasks: %w", err)
		}
		for _, t := range tasks {
			if !t.Enabled {
				continue
			}
			// The store holds validated tasks; one that no longer parses
			// reads as manual rather than stopping the others.
			slot, next := t.ParsedSchedule().Slot(now)
			if slot.IsZero() {
				continue // manual, or a cron that has not fired yet
			}
			ref := taskRef{t.TenantID, t.ID}
			seen[ref] = true
			if s.enqueued[ref].Equal(slot) {
				continue
			}
			created, err := s.enqueue(ctx, t, slot, next, now)
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			s.enqueued[ref] = slot
			if created {
				enqueued++
			}
		}
		if next == "" {
			break
		}
		q.Continuation = next
	}
	for ref := range s.enqueued {
		if !seen[ref] {
			delete(s.enqueued, ref) // deleted or paused: forget it
		}
	}
	return enqueued, firstErr
}

// enqueue creates the slot's execution and, if this call created it, sends
// the run. A send that fails removes the execution again, so the next tick
// (of any replica) retries the slot.
func (s *Scheduler) enqueue(ctx context.Context, t domain.SyncTask, slot, next, now time.Time) (bool, error) {
	exec := domain.Execution{
		ID: domain.ScheduledRunID(t.ID, slot), TenantID: t.TenantID, Kind: domain.ExecutionSyncRun, Status: domain.ExecPending,
		SyncTaskID: t.ID,
		Sync:       &domain.SyncRunProgress{Trigger: domain.TriggerSchedule, IntegrationID: t.IntegrationID, Entity: t.Entity},
		CreatedAt:  now, UpdatedAt: now,
	}
	if _, err := s.execs.Create(ctx, exec); errors.Is(err, store.ErrConflict) {
		return false, nil // another replica (or an earlier tick) has this slot
	} else if err != nil {
		return false, fmt.Errorf("scheduler: record run of task %s for %s: %w", t.ID, slot.Format(time.RFC3339), err)
	}
	cmd := domain.RunSync{ExecutionID: exec.ID, TenantID: t.TenantID, SyncTaskID: t.ID, Trigger: domain.TriggerSchedule, RequestedAt: now}
	if err := s.commands.Send(ctx, t.TenantID, cmd); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if derr := s.execs.Delete(dctx, t.TenantID, exec.ID, ""); derr != nil && !errors.Is(derr, store.ErrNotFound) {
			s.log.Error().Err(derr).Str("executionId", exec.ID).Msg("a scheduled run was not enqueued and its record could not be removed; this slot is lost")
		}
		return false, fmt.Errorf("scheduler: enqueue run of task %s: %w", t.ID, err)
	}
	ev := s.log.Debug()
	msg := "run enqueued"
	if now.Sub(slot) > s.opts.Tick {
		// Later than a tick after its start: no scheduler ran then, and
		// any slots before this one were skipped.
		ev, msg = s.log.Info(), "run enqueued late: the slot began over a tick ago; any earlier missed slots are skipped"
	}
	ev.Str("tenantId", t.TenantID).Str("syncTaskId", t.ID).Time("slot", slot).Time("nextSlot", next).Str("executionId", exec.ID).Msg(msg)
	return true, nil
}

// ResetTask clears a task's checkpoint so its next run reads every record
// from scratch (and, having read everything, detects deletions). The per-record
// sync state is kept, so the re-read still tells changed records from
// unchanged ones and writes only the former. A run in progress keeps its own
// position but will not move the checkpoint past the reset.
func ResetTask(ctx context.Context, backend store.Backend, tenantID, taskID string) (domain.SyncTask, error) {
	c, err := backend.Container(domain.ContainerSyncTasks)
	if err != nil {
		return domain.SyncTask{}, fmt.Errorf("scheduler: %w", err)
	}
	now := time.Now().UTC()
	t, _, err := store.NewRepository[domain.SyncTask](c).Update(ctx, tenantID, taskID, func(t *domain.SyncTask) error {
		t.Reset(now)
		return nil
	})
	if err != nil {
		return domain.SyncTask{}, fmt.Errorf("scheduler: reset task %s: %w", taskID, err)
	}
	return t, nil
}
