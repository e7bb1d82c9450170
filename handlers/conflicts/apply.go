package conflicts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

// escalate completes an escalation: its record is already stored (done).
func (r *Resolver) escalate(ctx context.Context, log zerolog.Logger, c conflictDoc, plan domain.ResolutionPlan, cl *claimed) error {
	r.metrics.outcomes.WithLabelValues(string(plan.Strategy), string(domain.OutcomeEscalated)).Inc()
	log.Info().Str("reason", plan.Reason).Msg("conflict escalated for a manual decision")
	return r.finish(ctx, c, cl.doc)
}

// apply writes the plan's winning version to the side(s) that lost, records
// the new agreement, then the outcome. It holds the claim cl.
func (r *Resolver) apply(ctx context.Context, log zerolog.Logger, c conflictDoc, task domain.SyncTask, plan domain.ResolutionPlan, cl *claimed) error {
	state, err := r.readState(ctx, c)
	if err != nil {
		return r.stop(ctx, log, c, cl, nil, err)
	}
	ext, err := r.readExternal(ctx, log, c, task)
	if err != nil {
		return r.stop(ctx, log, c, cl, nil, err)
	}
	in, err := r.readInternal(ctx, c)
	if err != nil {
		return r.stop(ctx, log, c, cl, nil, err)
	}

	afterHash := ""
	if !plan.Delete {
		afterHash = domain.ContentHash(plan.Result)
	}
	detExt, detInt := detectedVersions(c.Conflict, state)
	extChanged := changedSince(ext, detExt, plan.Delete, afterHash, cl.written[domain.SideExternal])
	intChanged := changedSince(in, detInt, plan.Delete, afterHash, cl.written[domain.SideInternal])
	if extChanged || intChanged {
		return r.supersede(ctx, log, c, task, state, cl, ext, in, extChanged, intChanged)
	}
	cl.doc.Before = sides(dataOf(ext), dataOf(in))

	written := map[domain.Side]string{}
	extNow, inNow := ext, in
	// The task's direction bounds what the resolver writes, as it bounds the
	// sync run: a pull-only task never writes to the external system, a
	// push-only one never to Castiel. The side left alone keeps its version,
	// which the state records as agreed, so the next run sees no change.
	var kept []string
	writeExt, writeInt := !holds(ext, plan.Delete, afterHash), !holds(in, plan.Delete, afterHash)
	if writeExt && task.Direction == domain.DirectionPull {
		writeExt, kept = false, append(kept, "the task syncs pull only: the external side was left as it is")
	}
	if writeInt && task.Direction == domain.DirectionPush {
		writeInt, kept = false, append(kept, "the task syncs push only: the Castiel side was left as it is")
	}
	if writeExt {
		w := ExternalWrite{Key: c.RecordKey, Delete: plan.Delete, Create: !ext.Present()}
		if !plan.Delete {
			if w.Data, err = domain.ApplyMapping(task.Mapping, plan.Result, domain.MapToExternal); err != nil {
				return r.stop(ctx, log, c, cl, written, messaging.Permanent(fmt.Errorf("map the winning version to the external shape: %w", err)))
			}
		}
		err := r.retrySide(ctx, log, "write", domain.SideExternal, func(ctx context.Context) error {
			return r.writer.Write(ctx, c.TenantID, task, w)
		})
		if err != nil {
			return r.stop(ctx, log, c, cl, written, sideFailure("write the winning version to the external side", err))
		}
		written[domain.SideExternal] = afterHash
		extNow = &domain.SideRecord{Data: plan.Result, Deleted: plan.Delete}
	}
	if writeInt {
		var rec shards.Record
		err := r.retrySide(ctx, log, "write", domain.SideInternal, func(ctx context.Context) error {
			if plan.Delete {
				err := r.shards.Delete(ctx, c.TenantID, c.Entity, c.RecordKey)
				if errors.Is(err, shards.ErrNotFound) {
					return nil // already gone
				}
				return err
			}
			var err error
			rec, err = r.shards.Put(ctx, c.TenantID, c.Entity, c.RecordKey, plan.Result)
			return err
		})
		if err != nil {
			return r.stop(ctx, log, c, cl, written, sideFailure("write the winning version to the Castiel side", err))
		}
		written[domain.SideInternal] = afterHash
		inNow = &domain.SideRecord{Data: plan.Result, Deleted: plan.Delete, ModifiedAt: rec.ModifiedAt}
	}

	now := r.now()
	if err := r.retryStore(ctx, func() error { return r.agree(ctx, c, extNow, inNow, now) }); err != nil {
		return r.stop(ctx, log, c, cl, written, fmt.Errorf("record the agreement in the sync state: %w", err))
	}
	doc := cl.doc
	doc.Outcome, doc.After, doc.WrittenHashes = domain.OutcomeApplied, plan.Result, written
	doc.Reason = strings.Join(kept, "; ")
	doc.ResolvedAt, doc.UpdatedAt = now, now
	if err := r.conclude(ctx, log, c, cl, doc, written); err != nil {
		return err
	}
	log.Info().Bool("wroteExternal", hasKey(written, domain.SideExternal)).
		Bool("wroteInternal", hasKey(written, domain.SideInternal)).Msg("conflict resolved")
	return nil
}

func hasKey(m map[domain.Side]string, k domain.Side) bool { _, ok := m[k]; return ok }

// conclude stores the attempt's final record, then publishes its event and
// sets the conflict's status.
func (r *Resolver) conclude(ctx context.Context, log zerolog.Logger, c conflictDoc, cl *claimed, doc resolutionDoc, written map[domain.Side]string) error {
	var etag string
	err := r.retryStore(ctx, func() error {
		var err error
		etag, err = r.resolutions.Replace(ctx, doc, cl.etag)
		return err
	})
	switch {
	case errors.Is(err, store.ErrPreconditionFailed):
		// Another resolver took the claim over after the lease ran out; it
		// finds both sides holding what this attempt wrote and completes.
		log.Warn().Msg("the claim was taken over before this attempt finished; leaving the rest to its new holder")
		return nil
	case err != nil:
		return r.stop(ctx, log, c, cl, written, fmt.Errorf("record the outcome: %w", err))
	}
	cl.doc, cl.etag = doc, etag
	r.metrics.outcomes.WithLabelValues(string(doc.Strategy), string(doc.Outcome)).Inc()
	return r.finish(ctx, c, doc)
}

// finish publishes the event of a finished attempt and sets the conflict's
// status from it; also used to complete an attempt whose resolver stopped
// in between (at least once: the event may be published twice then).
func (r *Resolver) finish(ctx context.Context, c conflictDoc, doc resolutionDoc) error {
	var ev domain.Message
	switch doc.Outcome {
	case domain.OutcomeApplied, domain.OutcomeSuperseded:
		fields := 0
		if doc.Outcome == domain.OutcomeApplied {
			fields = len(doc.Decisions)
		}
		ev = domain.ConflictResolved{
			TenantID: c.TenantID, ConflictID: c.ID, SyncTaskID: c.SyncTaskID, Strategy: doc.Strategy,
			Actor: doc.Actor, Outcome: doc.Outcome, Fields: fields, ResolvedAt: doc.ResolvedAt,
		}
	case domain.OutcomeEscalated:
		ev = domain.ConflictEscalated{
			TenantID: c.TenantID, ConflictID: c.ID, SyncTaskID: c.SyncTaskID, Strategy: doc.Strategy,
			Reason: doc.Reason, EscalatedAt: doc.ResolvedAt,
		}
	}
	if ev != nil {
		if err := r.events.Send(ctx, c.TenantID, ev); err != nil {
			return fmt.Errorf("conflicts: publish %s: %w", ev.CEType(), err)
		}
	}
	return r.retryStore(ctx, func() error { return r.setStatus(ctx, c, doc) })
}

// setStatus sets the conflict's status from attempt doc, unless a later
// attempt set it already.
func (r *Resolver) setStatus(ctx context.Context, c conflictDoc, doc resolutionDoc) error {
	status := statusOf(doc.Outcome)
	_, _, err := r.conflicts.Update(ctx, c.TenantID, c.ID, func(d *conflictDoc) error {
		if d.Generation > doc.Generation || d.Generation == doc.Generation && d.Status == status {
			return store.ErrSkipUpdate
		}
		d.Status, d.StatusReason, d.ResolutionID, d.Generation = status, doc.Reason, doc.ID, doc.Generation
		d.UpdatedAt = r.now()
		return nil
	})
	if err != nil {
		return fmt.Errorf("conflicts: set the conflict's status to %s: %w", status, err)
	}
	return nil
}

// stop ends an attempt that cannot finish. A permanent cause (the external
// API rejected the record or kept failing through the write-back retries, a
// mapping error, an external read marked permanent) fails the conflict with
// the reason, and the message is acked; a transient one (our store or the
// shard store down, a read of the external side failing, the handler's
// deadline) abandons the attempt and returns the error so the message is
// retried.
func (r *Resolver) stop(ctx context.Context, log zerolog.Logger, c conflictDoc, cl *claimed, written map[domain.Side]string, cause error) error {
	if ctx.Err() != nil {
		// Cut short by the deadline, whatever the cause looks like: retry.
		r.abandon(ctx, log, cl, written, cause)
		return fmt.Errorf("conflicts: attempt interrupted (%v): %w", cause, ctx.Err())
	}
	if !messaging.IsPermanent(cause) {
		r.abandon(ctx, log, cl, written, cause)
		return cause
	}
	now := r.now()
	doc := cl.doc
	doc.Outcome, doc.Reason = domain.OutcomeFailed, truncate(cause.Error())
	if len(written) > 0 {
		doc.WrittenHashes = written
	}
	doc.ResolvedAt, doc.UpdatedAt = now, now
	log.Warn().Err(cause).Msg("conflict resolution failed; a ResolveConflict command retries it")
	return r.conclude(ctx, log, c, cl, doc, written)
}

// sideFailure classifies a side's error after its retries: the resolution
// fails (permanent) unless the handler's own deadline cut it short or one of
// our own dependencies is down (the shard store, the secret store behind the
// external adapter): then the attempt is abandoned and the message retried,
// so an outage of ours never fails a resolution.
func sideFailure(what string, err error) error {
	wrapped := fmt.Errorf("%s: %w", what, err)
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || ourOutage(err) {
		return wrapped
	}
	return messaging.Permanent(wrapped)
}

// ourOutage reports whether err is a failure of our own dependencies.
func ourOutage(err error) bool {
	return errors.Is(err, ErrUnavailable) || errors.Is(err, shards.ErrUnavailable) || store.IsTransient(err)
}

// retrySide runs one read or write of a side with bounded exponential
// backoff; errors no retry can fix stop it at once.
func (r *Resolver) retrySide(ctx context.Context, log zerolog.Logger, op string, side domain.Side, fn func(context.Context) error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = r.opts.WriteInitial, r.opts.WriteMax, r.opts.WriteMaxElapsed
	policy := backoff.WithContext(backoff.WithMaxRetries(b, uint64(r.opts.WriteAttempts-1)), ctx)
	return backoff.RetryNotify(func() error {
		err := fn(ctx)
		if err != nil && permanentWrite(err) {
			return backoff.Permanent(err)
		}
		return err
	}, policy, func(err error, wait time.Duration) {
		r.metrics.sideRetries.WithLabelValues(string(side), op).Inc()
		log.Debug().Err(err).Str("side", string(side)).Str("op", op).Dur("wait", wait).Msg("retrying")
	})
}

func permanentWrite(err error) bool {
	return messaging.IsPermanent(err) || errors.Is(err, shards.ErrInvalid) || errors.Is(err, domain.ErrMapping)
}

// retryStore retries our own store's transient errors briefly, so a blink
// does not cost the message a redelivery.
func (r *Resolver) retryStore(ctx context.Context, op func() error) error {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval, b.MaxElapsedTime = 20*time.Millisecond, 500*time.Millisecond, 3*time.Second
	return backoff.Retry(func() error {
		err := op()
		if err != nil && !store.IsTransient(err) {
			return backoff.Permanent(err)
		}
		return err
	}, backoff.WithContext(b, ctx))
}

// ---- the two sides ----

func (r *Resolver) readState(ctx context.Context, c conflictDoc) (*domain.RecordState, error) {
	s, _, err := r.states.Get(ctx, c.SyncTaskID, domain.RecordStateID(c.SyncTaskID, c.RecordKey))
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the record's sync state: %w", err)
	}
	return &s, nil
}

// readExternal reads the external side, retried like a write-back: an
// external system still failing afterwards fails the resolution (retryable by
// command) rather than cycling the message for as long as it is down.
func (r *Resolver) readExternal(ctx context.Context, log zerolog.Logger, c conflictDoc, task domain.SyncTask) (*domain.SideRecord, error) {
	var rec *domain.SideRecord
	err := r.retrySide(ctx, log, "read", domain.SideExternal, func(ctx context.Context) error {
		var err error
		rec, err = r.external.Read(ctx, c.TenantID, task, c.RecordKey)
		return err
	})
	if err != nil {
		return nil, sideFailure("read the external side", err)
	}
	if rec == nil {
		return nil, messaging.Permanent(errors.New("read the external side: the reader returned no record"))
	}
	return rec, nil
}

func (r *Resolver) readInternal(ctx context.Context, c conflictDoc) (*domain.SideRecord, error) {
	rec, err := r.shards.Get(ctx, c.TenantID, c.Entity, c.RecordKey)
	switch {
	case errors.Is(err, shards.ErrNotFound):
		return &domain.SideRecord{Deleted: true}, nil
	case errors.Is(err, shards.ErrInvalid):
		return nil, messaging.Permanent(fmt.Errorf("read the Castiel side: %w", err))
	case err != nil:
		return nil, fmt.Errorf("read the Castiel side: %w", err)
	}
	return rec.Side(), nil
}

// detected is what a side held when the conflict was detected.
type detected struct {
	pending      string // the sync run's hash of it (the record state's pending conflict)
	pendingKnown bool
	data         string // ContentHash of the conflict's copy; "" when deleted
}

func detectedVersions(c domain.Conflict, state *domain.RecordState) (ext, in detected) {
	if c.DeletedSide() != domain.SideExternal {
		ext.data = domain.ContentHash(c.External)
	}
	if c.DeletedSide() != domain.SideInternal {
		in.data = domain.ContentHash(c.Internal)
	}
	if state != nil && state.Conflict != nil && state.Conflict.ConflictID == c.ID {
		ext.pending, ext.pendingKnown = state.Conflict.ExternalHash, true
		in.pending, in.pendingKnown = state.Conflict.InternalHash, true
	}
	return ext, in
}

// changedSince reports whether someone changed side cur since detection: it
// holds neither the detected version, nor the winning version, nor a version
// an earlier attempt wrote.
func changedSince(cur *domain.SideRecord, det detected, afterDeleted bool, afterHash string, prior []string) bool {
	data := ""
	if cur.Present() {
		data = domain.ContentHash(cur.Data)
	}
	switch {
	case det.pendingKnown && cur.ContentHash() == det.pending,
		data == det.data,
		afterDeleted && !cur.Present(),
		!afterDeleted && cur.Present() && data == afterHash:
		return false
	}
	for _, h := range prior {
		if data == h {
			return false
		}
	}
	return true
}

// holds reports whether side cur already holds the winning version.
func holds(cur *domain.SideRecord, afterDeleted bool, afterHash string) bool {
	if afterDeleted {
		return !cur.Present()
	}
	return cur.Present() && domain.ContentHash(cur.Data) == afterHash
}

func dataOf(s *domain.SideRecord) map[string]any {
	if !s.Present() {
		return nil
	}
	return s.Data
}

// agree records in the record's sync state that both sides now hold the
// same version, so the next sync run sees no change.
func (r *Resolver) agree(ctx context.Context, c conflictDoc, ext, in *domain.SideRecord, now time.Time) error {
	return r.updateState(ctx, c, func(s *domain.RecordState) error {
		s.Agree(ext, in, now)
		return nil
	})
}

// updateState runs fn on the record's sync state, creating the state when
// the record has none.
func (r *Resolver) updateState(ctx context.Context, c conflictDoc, fn func(*domain.RecordState) error) error {
	id := domain.RecordStateID(c.SyncTaskID, c.RecordKey)
	for range 3 {
		_, _, err := r.states.Update(ctx, c.SyncTaskID, id, fn)
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		s := domain.NewRecordState(c.TenantID, c.SyncTaskID, c.RecordKey)
		if err := fn(s); err != nil {
			if errors.Is(err, store.ErrSkipUpdate) {
				return nil
			}
			return err
		}
		_, err = r.states.Create(ctx, *s)
		if !errors.Is(err, store.ErrConflict) {
			return err
		}
		// Created concurrently: update that one.
	}
	return fmt.Errorf("conflicts: sync state %s keeps appearing and vanishing", id)
}

// ---- superseded: re-detect ----

// supersede ends an attempt whose sides changed since detection: nothing is
// written; the record is classified again with the new versions.
func (r *Resolver) supersede(ctx context.Context, log zerolog.Logger, c conflictDoc, task domain.SyncTask, state *domain.RecordState, cl *claimed, ext, in *domain.SideRecord, extChanged, intChanged bool) error {
	newID, err := r.redetect(ctx, c, task, state, ext, in)
	if err != nil {
		return r.stop(ctx, log, c, cl, nil, err)
	}
	var changed []string
	if extChanged {
		changed = append(changed, "external")
	}
	if intChanged {
		changed = append(changed, "Castiel")
	}
	reason := fmt.Sprintf("the %s side changed since the conflict was detected; nothing was overwritten", strings.Join(changed, " and the "))
	if newID != "" {
		reason += "; conflict " + newID + " replaces it"
	} else {
		reason += "; the sides no longer conflict and the next sync run takes the record from here"
	}
	now := r.now()
	doc := cl.doc
	doc.Outcome, doc.Reason, doc.Before = domain.OutcomeSuperseded, reason, sides(dataOf(ext), dataOf(in))
	doc.ResolvedAt, doc.UpdatedAt = now, now
	log.Info().Str("newConflictId", newID).Strs("changed", changed).Msg("conflict superseded: a side changed since detection")
	return r.conclude(ctx, log, c, cl, doc, nil)
}

// redetect classifies the record with its current versions. Still in
// conflict: stores the new conflict (deterministic id), marks it pending in
// the record's state and publishes conflict.detected; returns its id. No
// longer in conflict: clears this conflict from the state, leaving the
// record to the next sync run; returns "".
func (r *Resolver) redetect(ctx context.Context, c conflictDoc, task domain.SyncTask, state *domain.RecordState, ext, in *domain.SideRecord) (string, error) {
	d := domain.Classify(task.Direction, state, ext, in)
	if d.Action != domain.ActionConflict {
		err := r.updateState(ctx, c, func(s *domain.RecordState) error {
			if s.Conflict == nil || s.Conflict.ConflictID != c.ID {
				return store.ErrSkipUpdate
			}
			s.Conflict = nil
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("clear the conflict from the sync state: %w", err)
		}
		return "", nil
	}
	if d.Pending {
		return state.Conflict.ConflictID, nil // a sync run recorded these versions already
	}
	now := r.now()
	nc := domain.Conflict{
		ID: redetectedID(c.ID, ext.ContentHash(), in.ContentHash()), TenantID: c.TenantID,
		SyncTaskID: c.SyncTaskID, IntegrationID: c.IntegrationID, ExecutionID: c.ExecutionID,
		Entity: c.Entity, RecordKey: c.RecordKey, Kind: d.Conflict,
		External: dataOf(ext), Internal: dataOf(in), Base: c.Base,
		ExternalModifiedAt: timePtr(ext.ModifiedAt), InternalModifiedAt: timePtr(in.ModifiedAt),
		Status: domain.ConflictStatusPending, DetectedAt: now, CreatedAt: now, UpdatedAt: now,
	}
	if state != nil && state.BaseSnapshot != nil {
		nc.Base = state.BaseSnapshot
	}
	if _, err := r.conflicts.Create(ctx, conflictDoc{Conflict: nc}); err != nil && !errors.Is(err, store.ErrConflict) {
		return "", fmt.Errorf("store the re-detected conflict: %w", err)
	}
	err := r.updateState(ctx, c, func(s *domain.RecordState) error {
		if s.Conflict != nil && s.Conflict.ConflictID != c.ID && s.Conflict.ConflictID != nc.ID {
			return store.ErrSkipUpdate // a sync run has moved the record on already
		}
		s.MarkConflict(nc.ID, ext, in, now)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("mark the re-detected conflict in the sync state: %w", err)
	}
	executionID := c.ExecutionID
	if !domain.IsValidID(executionID) {
		executionID = c.ID
	}
	ev := domain.ConflictDetected{
		TenantID: c.TenantID, ConflictID: nc.ID, SyncTaskID: c.SyncTaskID, IntegrationID: c.IntegrationID,
		ExecutionID: executionID, Entity: c.Entity, RecordKey: c.RecordKey, Kind: nc.Kind, DetectedAt: now,
	}
	if err := r.events.Send(ctx, c.TenantID, ev); err != nil {
		return "", fmt.Errorf("publish the re-detected conflict: %w", err)
	}
	return nc.ID, nil
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
