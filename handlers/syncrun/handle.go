package syncrun

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/integrations"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

var errSliceOver = errors.New("the run used up its slice (Options.RunSlice); it resumes from its checkpoint on redelivery")

// runError is a failure of a whole run, classified for the execution record.
type runError struct {
	class     string // errorClass of the execution and of sync.failed
	permanent bool   // the run is failed for good; otherwise it resumes on redelivery
	err       error
}

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

func permanentRun(class string, err error) error {
	return &runError{class: class, permanent: true, err: err}
}
func transientRun(class string, err error) error { return &runError{class: class, err: err} }

// classify turns an error of a run's dependencies into a runError.
func classify(err error) *runError {
	var re *runError
	if errors.As(err, &re) {
		return re
	}
	switch {
	case errors.Is(err, errLeaseLost):
		return &runError{class: "lease_lost", err: err}
	case errors.Is(err, errSliceOver):
		return &runError{class: "slice_over", err: err}
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &runError{class: "cancelled", err: err}
	case integrations.IsPermanent(err):
		return &runError{class: "configuration", permanent: true, err: err}
	case connector.IsPermanent(err):
		return &runError{class: "external_api", permanent: true, err: err}
	case errors.Is(err, shards.ErrInvalid):
		return &runError{class: "shards", permanent: true, err: err}
	case errors.Is(err, shards.ErrUnavailable):
		return &runError{class: "shards_unavailable", err: err}
	case errors.Is(err, store.ErrInvalidQuery):
		return &runError{class: "store", permanent: true, err: err}
	case store.IsTransient(err):
		return &runError{class: "store_unavailable", err: err}
	}
	var ce *connector.Error
	if errors.As(err, &ce) {
		return &runError{class: "external_api_unavailable", err: err}
	}
	return &runError{class: "transient", err: err}
}

// runContext is the context a delivery works on a run in: cancelled with the
// message's context (shutdown, a test killing the run), but not by its
// deadline (the router's per-attempt timeout is far shorter than a sync run);
// RunSlice bounds it instead.
func (h *Handler) runContext(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	ctx, cancelSlice := context.WithTimeoutCause(ctx, h.opts.RunSlice, errSliceOver)
	stop := context.AfterFunc(parent, func() {
		if !errors.Is(parent.Err(), context.DeadlineExceeded) {
			cancel(context.Cause(parent))
		}
	})
	return ctx, func() {
		stop()
		cancelSlice()
		cancel(nil)
	}
}

// Run executes (or resumes) the run cmd asks for. nil means the message is
// done with (the run finished, failed for good, or was skipped); a
// messaging.Permanent error means the message itself is unusable; any other
// error is transient: the message should come back and the run resumes.
func (h *Handler) Run(ctx context.Context, cmd domain.RunSync) error {
	ctx, cancel := h.runContext(ctx)
	defer cancel()
	log := h.log.With().Str("tenantId", cmd.TenantID).Str("syncTaskId", cmd.SyncTaskID).Str("executionId", cmd.ExecutionID).Logger()

	exec, err := h.openExecution(ctx, cmd)
	if err != nil {
		return err
	}
	if exec.Status.Terminal() {
		log.Debug().Str("status", string(exec.Status)).Msg("run already finished; redelivery acked")
		return nil
	}
	task, _, err := h.tasks.Get(ctx, cmd.TenantID, cmd.SyncTaskID)
	if errors.Is(err, store.ErrNotFound) {
		return h.finishFailed(ctx, &exec, domain.SyncTask{ID: cmd.SyncTaskID}, permanentRun("configuration", errors.New("the sync task no longer exists")))
	}
	if err != nil {
		return fmt.Errorf("read sync task: %w", err)
	}
	if !task.Enabled {
		return h.markSkipped(ctx, &exec, task, "", "the sync task is paused (enabled is false)")
	}

	done, ok := h.claim(exec.ID)
	if !ok {
		return &busyError{holder: exec.ID, same: true}
	}
	defer done()
	lease, err := h.acquire(ctx, task, exec.ID)
	var busy *busyError
	switch {
	case errors.As(err, &busy) && busy.same:
		return err // the worker running it may have died: try again once its lease expires
	case errors.As(err, &busy):
		log.Info().Str("coalescedInto", busy.holder).Msg("another run of the task is in progress; trigger coalesced")
		return h.markSkipped(ctx, &exec, task, busy.holder, "another run of the task was in progress")
	case err != nil:
		return err
	}
	defer lease.release(ctx)
	runCtx, stop := lease.keep(ctx)
	defer stop()
	return h.execute(runCtx, &exec, task, cmd)
}

// openExecution reads the run's execution, creating it when the trigger did
// not (an upstream command).
func (h *Handler) openExecution(ctx context.Context, cmd domain.RunSync) (domain.Execution, error) {
	exec, _, err := h.execs.Get(ctx, cmd.TenantID, cmd.ExecutionID)
	if errors.Is(err, store.ErrNotFound) {
		now := h.now()
		exec = domain.Execution{
			ID: cmd.ExecutionID, TenantID: cmd.TenantID, Kind: domain.ExecutionSyncRun, Status: domain.ExecPending,
			SyncTaskID: cmd.SyncTaskID, Sync: &domain.SyncRunProgress{Trigger: cmd.Trigger}, CreatedAt: now, UpdatedAt: now,
		}
		if _, err = h.execs.Create(ctx, exec); errors.Is(err, store.ErrConflict) {
			exec, _, err = h.execs.Get(ctx, cmd.TenantID, cmd.ExecutionID)
		}
	}
	if err != nil {
		return exec, fmt.Errorf("read execution: %w", err)
	}
	if exec.Kind != domain.ExecutionSyncRun || exec.SyncTaskID != cmd.SyncTaskID {
		return exec, messaging.Permanent(fmt.Errorf("execution %s exists and is not a run of sync task %s", exec.ID, cmd.SyncTaskID))
	}
	return exec, nil
}

// execute runs the sync with the lease held and records its outcome.
// noSyncState reports whether the task's sync state partition holds nothing
// but its lease: a run that begins so can find no deletion to sweep, since
// every state it will see is one it wrote (one run at a time; the resolver
// writes only the states of conflicts the run raised).
func (h *Handler) noSyncState(ctx context.Context, taskID string) (bool, error) {
	page, err := h.stateC.Query(ctx, store.Query{PartitionKey: taskID, Limit: 2}) // the lease is one document
	if err != nil {
		return false, fmt.Errorf("look for the sync state of task %s: %w", taskID, err)
	}
	for _, it := range page.Items {
		if it.ID != domain.SyncLeaseID(taskID) {
			return false, nil
		}
	}
	return true, nil
}

func (h *Handler) execute(ctx context.Context, exec *domain.Execution, task domain.SyncTask, cmd domain.RunSync) error {
	client, provider, err := h.clients.Client(ctx, task.TenantID, task.IntegrationID)
	if errors.Is(err, integrations.ErrInactive) {
		return h.markSkipped(ctx, exec, task, "", "the integration is paused or disabled")
	}
	if err != nil {
		return h.settle(ctx, exec, task, classify(fmt.Errorf("connect integration %s: %w", task.IntegrationID, err)))
	}
	entity, ok := provider.Entity(task.Entity)
	if !ok {
		return h.finishFailed(ctx, exec, task, permanentRun("configuration", fmt.Errorf("provider %s has no entity %q", provider.ID, task.Entity)))
	}
	if err := task.ValidateFor(provider); err != nil {
		return h.finishFailed(ctx, exec, task, permanentRun("configuration", fmt.Errorf("the sync task does not fit its provider: %w", err)))
	}

	if exec.Sync == nil {
		exec.Sync = &domain.SyncRunProgress{Trigger: cmd.Trigger}
	}
	p := exec.Sync
	if exec.Status != domain.ExecRunning {
		// First delivery: fix what the run reads and announce it.
		now := h.now()
		p.IntegrationID, p.Entity, p.Direction, p.Mode = task.IntegrationID, task.Entity, task.Direction, task.Mode
		if p.Trigger == "" {
			p.Trigger = cmd.Trigger
		}
		p.CheckpointAt = task.Checkpoint.UpdatedAt
		if task.Mode == domain.ModeIncremental && entity.SupportsIncremental() {
			p.Since = task.Checkpoint.Cursor
		}
		p.FromScratch = p.Since == ""
		if p.FromScratch {
			empty, err := h.noSyncState(ctx, task.ID)
			if err != nil {
				return err
			}
			p.NothingToSweep = empty
		}
		p.Phase = domain.PhasePull
		exec.StartedAt = now
		h.send(ctx, task.TenantID, domain.SyncStarted{
			TenantID: task.TenantID, ExecutionID: exec.ID, SyncTaskID: task.ID, IntegrationID: task.IntegrationID,
			Entity: task.Entity, Direction: task.Direction, Mode: task.Mode, Trigger: p.Trigger, StartedAt: now,
		})
		exec.Status = domain.ExecRunning
	}
	p.Attempts++
	p.LastTransientFail = ""
	if err := h.saveExecution(ctx, exec); err != nil {
		return err
	}
	h.auditCredentialUse(ctx, exec, task)

	r := newRun(h, exec, task, entity, client)
	err = r.do(ctx)
	h.metrics.client(client)
	if err != nil {
		r.rollback()
		return h.settle(ctx, exec, task, classify(err))
	}
	r.snapshot()
	return h.finishCompleted(ctx, exec, task, entity.CursorFormat)
}

// settle records a failed attempt: a permanent failure (or a run failing for
// longer than MaxRunAge) ends the run; a transient one leaves it resumable
// and returns the error so the message comes back.
func (h *Handler) settle(ctx context.Context, exec *domain.Execution, task domain.SyncTask, re *runError) error {
	if re.permanent {
		return h.finishFailed(ctx, exec, task, re)
	}
	if !exec.StartedAt.IsZero() && h.now().Sub(exec.StartedAt) > h.opts.MaxRunAge {
		re = &runError{class: re.class, permanent: true, err: fmt.Errorf("still failing %s after the run began: %w", h.opts.MaxRunAge, re.err)}
		return h.finishFailed(ctx, exec, task, re)
	}
	if exec.Sync != nil && exec.Status == domain.ExecRunning {
		exec.Sync.LastTransientFail = truncate(re.Error(), domain.MaxDescriptionLength)
		// Detached: the run's context may be what was cancelled.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := h.saveExecution(sctx, exec); err != nil {
			h.log.Warn().Err(err).Str("executionId", exec.ID).Msg("could not record the run's transient failure")
		}
		cancel()
	}
	h.log.Info().Err(re).Str("executionId", exec.ID).Str("errorClass", re.class).Msg("sync run interrupted; it resumes from its checkpoint on redelivery")
	return re
}

// finishCompleted moves the task's checkpoint, publishes sync.completed and
// closes the execution, in that order, so a crash in between is repaired by
// the redelivery (which finds the run at PhaseDone) rather than lost.
func (h *Handler) finishCompleted(ctx context.Context, exec *domain.Execution, task domain.SyncTask, format domain.TimeFormat) error {
	p := exec.Sync
	now := h.now()
	if err := h.advanceCheckpoint(ctx, task, p, format, now); err != nil {
		return err
	}
	stats := derefStats(exec.Stats)
	status := domain.ExecCompleted
	if stats.Failed > 0 {
		status = domain.ExecCompletedWithErrors
	}
	if err := h.sendRequired(ctx, task.TenantID, domain.SyncCompleted{
		TenantID: task.TenantID, ExecutionID: exec.ID, SyncTaskID: task.ID, IntegrationID: task.IntegrationID,
		Status: status, Stats: stats, StartedAt: exec.StartedAt, FinishedAt: now,
	}); err != nil {
		return err
	}
	exec.Status = status
	exec.FinishedAt = &now
	exec.DurationMs = now.Sub(exec.StartedAt).Milliseconds()
	exec.Error, exec.ErrorClass = "", ""
	if err := h.saveExecution(ctx, exec); err != nil {
		return err
	}
	h.metrics.duration.WithLabelValues(string(status)).Observe(now.Sub(exec.StartedAt).Seconds())
	h.log.Info().Str("executionId", exec.ID).Str("syncTaskId", task.ID).Str("status", string(status)).
		Int("added", stats.Added).Int("updated", stats.Updated).Int("deleted", stats.Deleted).
		Int("unchanged", stats.Unchanged).Int("conflicts", stats.Conflicts).Int("failed", stats.Failed).
		Int("pages", p.Pages).Int64("apiCalls", p.APICalls).Msg("sync run finished")
	return nil
}

// advanceCheckpoint moves the task's cursor to the newest record the run
// read, unless someone changed the checkpoint since the run began (a reset
// must not be undone by a run that started before it).
func (h *Handler) advanceCheckpoint(ctx context.Context, task domain.SyncTask, p *domain.SyncRunProgress, format domain.TimeFormat, now time.Time) error {
	_, _, err := h.tasks.Update(ctx, task.TenantID, task.ID, func(t *domain.SyncTask) error {
		if !t.Checkpoint.UpdatedAt.Equal(p.CheckpointAt) || t.IntegrationID != p.IntegrationID || t.Entity != p.Entity {
			return store.ErrSkipUpdate
		}
		cursor := t.Checkpoint.Cursor
		if domain.CursorAfter(format, p.MaxCursor, cursor) {
			cursor = p.MaxCursor
		}
		t.Checkpoint = domain.Checkpoint{Cursor: cursor, UpdatedAt: now}
		t.UpdatedAt = now
		// Remember the checkpoint this run wrote, so a redelivery after a
		// crash recognises it and does not skip the update.
		p.CheckpointAt = now
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil // the task was deleted meanwhile: nothing to move
	}
	if err != nil {
		return fmt.Errorf("move the task's checkpoint: %w", err)
	}
	return nil
}

// finishFailed ends the run for good and publishes sync.failed.
func (h *Handler) finishFailed(ctx context.Context, exec *domain.Execution, task domain.SyncTask, err error) error {
	re := classify(err)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	now := h.now()
	if exec.StartedAt.IsZero() {
		exec.StartedAt = now
	}
	stats := derefStats(exec.Stats)
	if task.IntegrationID != "" {
		if err := h.sendRequired(ctx, exec.TenantID, domain.SyncFailed{
			TenantID: exec.TenantID, ExecutionID: exec.ID, SyncTaskID: exec.SyncTaskID, IntegrationID: task.IntegrationID,
			ErrorClass: re.class, Reason: truncate(re.Error(), domain.MaxDescriptionLength), Stats: stats, FailedAt: now,
		}); err != nil {
			return err
		}
	}
	exec.Status = domain.ExecFailed
	exec.ErrorClass = re.class
	exec.Error = truncate(re.Error(), domain.MaxDescriptionLength)
	exec.FinishedAt = &now
	exec.DurationMs = now.Sub(exec.StartedAt).Milliseconds()
	if err := h.saveExecution(ctx, exec); err != nil {
		return err
	}
	h.metrics.duration.WithLabelValues(string(domain.ExecFailed)).Observe(now.Sub(exec.StartedAt).Seconds())
	h.log.Warn().Str("executionId", exec.ID).Str("syncTaskId", exec.SyncTaskID).Str("errorClass", re.class).Err(re.err).Msg("sync run failed")
	return nil
}

// markSkipped records a run that did not start (coalesced or paused).
func (h *Handler) markSkipped(ctx context.Context, exec *domain.Execution, task domain.SyncTask, holder, reason string) error {
	now := h.now()
	if exec.Sync == nil {
		exec.Sync = &domain.SyncRunProgress{}
	}
	exec.Sync.CoalescedInto = holder
	exec.Sync.IntegrationID, exec.Sync.Entity = task.IntegrationID, task.Entity
	exec.Status = domain.ExecSkipped
	exec.Error = reason
	if exec.StartedAt.IsZero() {
		exec.StartedAt = now
	}
	exec.FinishedAt = &now
	return h.saveExecution(ctx, exec)
}

// saveExecution writes the execution's status, progress and stats.
func (h *Handler) saveExecution(ctx context.Context, exec *domain.Execution) error {
	exec.UpdatedAt = h.now()
	var sync *domain.SyncRunProgress
	if exec.Sync != nil {
		cp := *exec.Sync
		cp.Errors = append([]domain.SyncRecordError(nil), exec.Sync.Errors...)
		sync = &cp
	}
	e := *exec
	e.Sync = sync
	_, _, err := h.execs.Update(ctx, exec.TenantID, exec.ID, func(cur *domain.Execution) error {
		ttl := cur.TTL
		*cur = e
		cur.TTL = ttl // the store's retention stamp
		return nil
	})
	if err != nil {
		return fmt.Errorf("save execution %s: %w", exec.ID, err)
	}
	return nil
}

// send publishes an informational event; a failure is logged, not fatal
// (sync.started only announces what the execution record already says).
func (h *Handler) send(ctx context.Context, tenantID string, msg domain.Message) {
	if err := h.events.Send(ctx, tenantID, msg); err != nil {
		h.log.Warn().Err(err).Str("type", msg.CEType()).Msg("could not publish event")
	}
}

// sendRequired publishes an event the run must not finish without; a
// message the domain refuses is logged and dropped (retrying cannot fix it).
func (h *Handler) sendRequired(ctx context.Context, tenantID string, msg domain.Message) error {
	err := h.events.Send(ctx, tenantID, msg)
	if err == nil {
		return nil
	}
	if errors.Is(err, domain.ErrInvalid) {
		h.log.Error().Err(err).Str("type", msg.CEType()).Msg("event refused by validation; not published")
		return nil
	}
	return transientRun("broker", fmt.Errorf("publish %s: %w", msg.CEType(), err))
}

func derefStats(s *domain.SyncStats) domain.SyncStats {
	if s == nil {
		return domain.SyncStats{}
	}
	return *s
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := s[:n]
	for len(cut) > 0 && cut[len(cut)-1]&0xC0 == 0x80 {
		cut = cut[:len(cut)-1]
	}
	if len(cut) > 0 && cut[len(cut)-1] >= 0xC0 {
		cut = cut[:len(cut)-1]
	}
	return cut + "…"
}
