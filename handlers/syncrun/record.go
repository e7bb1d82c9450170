package syncrun

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

// errStateRaced: the record's state changed between its read and the run's
// write (the conflict resolver wrote it): classify the record again.
var errStateRaced = errors.New("the record's sync state changed meanwhile")

// recordFailure is a failure of one record only: it is counted and skipped,
// and the run goes on.
type recordFailure struct{ err error }

func (e *recordFailure) Error() string { return e.err.Error() }
func (e *recordFailure) Unwrap() error { return e.err }

// pullOne syncs one record read from the external API.
func (r *run) pullOne(ctx context.Context, key string, raw map[string]any, tombstone bool) error {
	deleted := tombstone || r.client.IsDeleted(r.entity.Name, raw)
	ext, err := domain.ExternalSideRecord(r.entity, r.task.Mapping, raw, deleted)
	if err != nil {
		r.fail(key, "", err)
		return nil
	}
	return r.reconcile(ctx, key, ext, nil, true)
}

// pushOne syncs one record of the shard walk (the external side is "no news").
func (r *run) pushOne(ctx context.Context, rec shards.Record) error {
	in := rec.Side()
	if in.Present() {
		in.Hash = domain.ContentHash(in.Data)
	}
	return r.reconcile(ctx, rec.Key, nil, in, false)
}

// reconcile classifies one record and applies the decision. ext or in nil:
// no news from that side (in nil is read from the shard). count: whether an
// unchanged record counts as such (not in the shard walk, which sees every
// record on every run).
func (r *run) reconcile(ctx context.Context, key string, ext, in *domain.SideRecord, count bool) error {
	for attempt := 0; ; attempt++ {
		st, etag, err := r.loadState(ctx, key)
		if err != nil {
			return err
		}
		if in == nil && ext != nil && st != nil && st.Conflict == nil && ext.ContentHash() == st.ExternalHash {
			// The external side did not change. Whatever Castiel did is the
			// push walk's business (or blocked on a pull task), so the shard
			// need not be read: the common case of a re-read costs one point
			// read.
			if count {
				r.count(domain.ActionUnchanged)
			}
			return nil
		}
		cur := in
		if cur == nil {
			if cur, err = r.readInternal(ctx, key); err != nil {
				if errors.Is(err, shards.ErrInvalid) {
					r.fail(key, "", err)
					return nil
				}
				return err
			}
		}
		d := domain.Classify(r.task.Direction, st, ext, cur)
		err = r.apply(ctx, key, d, st, etag, ext, cur)
		var rf *recordFailure
		switch {
		case errors.Is(err, errStateRaced) && attempt < 3:
			in = nil // read Castiel's side again too
			continue
		case errors.Is(err, errStateRaced):
			return transientRun("store", fmt.Errorf("record %s: its sync state kept changing under the run", key))
		case errors.As(err, &rf):
			r.fail(key, d.Action, rf.err)
			return nil
		case err != nil:
			return err
		}
		a := d.Action
		if d.Pending || a == domain.ActionConverged {
			a = domain.ActionUnchanged
		}
		if count || a != domain.ActionUnchanged {
			r.count(a)
		}
		return nil
	}
}

func (r *run) loadState(ctx context.Context, key string) (*domain.RecordState, string, error) {
	st, etag, err := r.h.states.Get(ctx, r.task.ID, domain.RecordStateID(r.task.ID, key))
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read the sync state of %s: %w", key, err)
	}
	return &st, etag, nil
}

func (r *run) readInternal(ctx context.Context, key string) (*domain.SideRecord, error) {
	rec, err := r.h.shards.Get(ctx, r.task.TenantID, r.task.Entity, key)
	if errors.Is(err, shards.ErrNotFound) {
		return &domain.SideRecord{Deleted: true}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s from the shard: %w", key, err)
	}
	side := rec.Side()
	side.Hash = domain.ContentHash(side.Data)
	return side, nil
}

// apply carries out d for one record, then writes its state: every side
// write is followed at once by the state that records it, so a replay of
// the record sees both sides agree and does nothing.
func (r *run) apply(ctx context.Context, key string, d domain.Decision, st *domain.RecordState, etag string, ext, in *domain.SideRecord) error {
	now := r.h.now()
	if st == nil {
		st = domain.NewRecordState(r.task.TenantID, r.task.ID, key)
	}
	if d.Supersedes != "" {
		if err := r.supersede(ctx, d.Supersedes, now); err != nil {
			return err
		}
	}
	switch d.Action {
	case domain.ActionUnchanged:
		if d.Supersedes == "" {
			return nil // blocked writes also leave the state as it is
		}
		st.Conflict = nil

	case domain.ActionConverged:
		st.Agree(ext, in, now)

	case domain.ActionPullAdd, domain.ActionPullUpdate:
		side, err := r.sideOrConflict(ctx, st, ext, true)
		if err != nil {
			return err
		}
		rec, err := r.h.shards.Put(ctx, r.task.TenantID, r.task.Entity, key, side.Data)
		if err != nil {
			return shardErr("write", key, err)
		}
		st.Agree(side, rec.Side(), now)

	case domain.ActionPullDelete:
		err := r.h.shards.Delete(ctx, r.task.TenantID, r.task.Entity, key)
		if err != nil && !errors.Is(err, shards.ErrNotFound) {
			return shardErr("delete", key, err)
		}
		st.Agree(&domain.SideRecord{Deleted: true}, &domain.SideRecord{Deleted: true}, now)

	case domain.ActionPushAdd, domain.ActionPushUpdate:
		side, err := r.sideOrConflict(ctx, st, in, false)
		if err != nil {
			return err
		}
		after, newKey, err := r.pushWrite(ctx, key, d.Action, side)
		if err != nil {
			return err
		}
		if newKey != "" {
			return r.rekey(ctx, st, etag, key, newKey, after, side, now)
		}
		st.Agree(after, side, now)

	case domain.ActionPushDelete:
		err := r.writing(ctx, func() error { return r.client.Delete(ctx, r.entity.Name, key) })
		r.auditWrite(ctx, key, "delete", err)
		if err != nil {
			return connectorErr(err)
		}
		st.Agree(&domain.SideRecord{Deleted: true}, &domain.SideRecord{Deleted: true}, now)

	case domain.ActionConflict:
		if d.Pending {
			return nil
		}
		id, err := r.raiseConflict(ctx, key, d, st, ext, in, now)
		if err != nil {
			return err
		}
		st.MarkConflict(id, ext, in, now)

	default:
		return fmt.Errorf("record %s: unexpected action %q", key, d.Action)
	}
	return r.writeState(ctx, st, etag)
}

func (r *run) writeState(ctx context.Context, st *domain.RecordState, etag string) error {
	var err error
	if etag == "" {
		_, err = r.h.states.Create(ctx, *st)
	} else {
		_, err = r.h.states.Replace(ctx, *st, etag)
	}
	switch {
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrPreconditionFailed), errors.Is(err, store.ErrNotFound):
		return errStateRaced
	case err != nil:
		return fmt.Errorf("write the sync state of %s: %w", st.RecordKey, err)
	}
	return nil
}

// sideOrConflict returns side, or, for a side Classify judged from a pending
// conflict (nil: no news this run), that conflict's version of it.
func (r *run) sideOrConflict(ctx context.Context, st *domain.RecordState, side *domain.SideRecord, external bool) (*domain.SideRecord, error) {
	if side != nil {
		return side, nil
	}
	if st.Conflict == nil {
		return nil, fmt.Errorf("record %s: no version to write (no news and no pending conflict)", st.RecordKey)
	}
	c, _, err := r.h.conflicts.Get(ctx, r.task.TenantID, st.Conflict.ConflictID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, &recordFailure{fmt.Errorf("its pending conflict %s is gone", st.Conflict.ConflictID)}
	}
	if err != nil {
		return nil, fmt.Errorf("read conflict %s: %w", st.Conflict.ConflictID, err)
	}
	data, at := c.Internal, c.InternalModifiedAt
	if external {
		data, at = c.External, c.ExternalModifiedAt
	}
	out := &domain.SideRecord{Data: data, Deleted: data == nil}
	if at != nil {
		out.ModifiedAt = *at
	}
	return out, nil
}

// pushWrite creates or updates the record in the external API and returns
// the external side as it is now (the API's answer, in Castiel's shape), and
// the id the API gave a created record when it is not key.
func (r *run) pushWrite(ctx context.Context, key string, action domain.SyncAction, side *domain.SideRecord) (*domain.SideRecord, string, error) {
	body, err := domain.ApplyMapping(r.task.Mapping, side.Data, domain.MapToExternal)
	if err != nil {
		return nil, "", &recordFailure{err}
	}
	var resp map[string]any
	op := "update"
	if action == domain.ActionPushAdd {
		op = "create"
		if _, ok := domain.GetPath(body, r.entity.PrimaryKey); !ok {
			if err := domain.SetPath(body, r.entity.PrimaryKey, key); err != nil {
				return nil, "", &recordFailure{fmt.Errorf("set the primary key %q: %w", r.entity.PrimaryKey, err)}
			}
		}
		err = r.writing(ctx, func() (err error) {
			resp, err = r.client.Create(ctx, r.entity.Name, body)
			return err
		})
	} else {
		err = r.writing(ctx, func() (err error) {
			resp, err = r.client.Update(ctx, r.entity.Name, key, body)
			return err
		})
	}
	r.auditWrite(ctx, key, op, err)
	if err != nil {
		return nil, "", connectorErr(err)
	}
	if resp == nil {
		resp = body // the API acknowledged without the record: it holds what we sent
	}
	mapped, err := domain.ApplyMapping(r.task.Mapping, resp, domain.MapToInternal)
	if err != nil {
		mapped = side.Data
	}
	after := &domain.SideRecord{Data: mapped, Hash: domain.ContentHash(mapped), ModifiedAt: r.entity.ModifiedAt(resp)}
	if action == domain.ActionPushAdd {
		if id, err := r.client.RecordID(r.entity.Name, resp); err == nil && id != key {
			return after, id, nil
		}
	}
	return after, "", nil
}

// rekey handles an API that gave a created record an id of its own: the
// Castiel record moves to that key, so later runs pair the two sides. The old
// key's state is written first, so the record is never created twice.
func (r *run) rekey(ctx context.Context, st *domain.RecordState, etag, oldKey, newKey string, after, side *domain.SideRecord, now time.Time) error {
	st.Agree(&domain.SideRecord{Deleted: true}, side, now)
	if err := r.writeState(ctx, st, etag); err != nil {
		return err
	}
	rec, err := r.h.shards.Put(ctx, r.task.TenantID, r.task.Entity, newKey, side.Data)
	if err != nil {
		return shardErr("write", newKey, err)
	}
	ns := domain.NewRecordState(r.task.TenantID, r.task.ID, newKey)
	ns.Agree(after, rec.Side(), now)
	if _, err := r.h.states.Upsert(ctx, *ns); err != nil {
		return fmt.Errorf("write the sync state of %s: %w", newKey, err)
	}
	if err := r.h.shards.Delete(ctx, r.task.TenantID, r.task.Entity, oldKey); err != nil && !errors.Is(err, shards.ErrNotFound) {
		return shardErr("delete", oldKey, err)
	}
	old, oldTag, err := r.loadState(ctx, oldKey)
	if err != nil || old == nil {
		return err
	}
	old.Agree(&domain.SideRecord{Deleted: true}, &domain.SideRecord{Deleted: true}, now)
	if err := r.writeState(ctx, old, oldTag); err != nil && !errors.Is(err, errStateRaced) {
		return err
	}
	r.log.Info().Str("recordKey", oldKey).Str("newKey", newKey).Msg("the API gave the created record its own id; the Castiel record moved to it")
	return nil
}

// raiseConflict stores the conflict (create-if-absent: a replayed run finds
// its own) and announces it to the resolver.
func (r *run) raiseConflict(ctx context.Context, key string, d domain.Decision, st *domain.RecordState, ext, in *domain.SideRecord, now time.Time) (string, error) {
	id := domain.ConflictID(r.exec.ID, r.entity.Name, key)
	e, err := r.sideOrConflict(ctx, st, ext, true)
	if err != nil {
		return "", err
	}
	i, err := r.sideOrConflict(ctx, st, in, false)
	if err != nil {
		return "", err
	}
	c := domain.Conflict{
		ID: id, TenantID: r.task.TenantID, SyncTaskID: r.task.ID, IntegrationID: r.task.IntegrationID,
		ExecutionID: r.exec.ID, Entity: r.entity.Name, RecordKey: key, Kind: d.Conflict,
		External: presentData(e), Internal: presentData(i), Base: st.BaseSnapshot,
		ExternalModifiedAt: timePtr(e.ModifiedAt), InternalModifiedAt: timePtr(i.ModifiedAt),
		Status: domain.ConflictStatusPending, DetectedAt: now, CreatedAt: now, UpdatedAt: now,
	}
	if _, err := r.h.conflicts.Create(ctx, c); err != nil && !errors.Is(err, store.ErrConflict) {
		return "", fmt.Errorf("store conflict %s: %w", id, err)
	}
	if err := r.h.sendRequired(ctx, r.task.TenantID, domain.ConflictDetected{
		TenantID: r.task.TenantID, ConflictID: id, SyncTaskID: r.task.ID, IntegrationID: r.task.IntegrationID,
		ExecutionID: r.exec.ID, Entity: r.entity.Name, RecordKey: key, Kind: d.Conflict, DetectedAt: now,
	}); err != nil {
		return "", err
	}
	r.log.Info().Str("recordKey", key).Str("conflictId", id).Str("kind", string(d.Conflict)).Msg("conflict detected; record left alone until resolved")
	return id, nil
}

// supersede marks a recorded conflict the record has moved past.
func (r *run) supersede(ctx context.Context, id string, now time.Time) error {
	_, _, err := r.h.conflicts.Update(ctx, r.task.TenantID, id, func(c *domain.Conflict) error {
		if c.Status != domain.ConflictStatusPending && c.Status != domain.ConflictStatusEscalated {
			return store.ErrSkipUpdate
		}
		c.Status, c.UpdatedAt = domain.ConflictStatusSuperseded, now
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("mark conflict %s superseded: %w", id, err)
	}
	return nil
}

// writing runs one write to the external API within MaxWrites.
func (r *run) writing(ctx context.Context, fn func() error) error {
	select {
	case r.writes <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-r.writes }()
	return fn()
}

func (r *run) auditWrite(ctx context.Context, key, op string, err error) {
	ev := AuditEvent{
		TenantID: r.task.TenantID, IntegrationID: r.task.IntegrationID, SyncTaskID: r.task.ID, ExecutionID: r.exec.ID,
		Action: AuditWriteBack, Actor: Role, Entity: r.entity.Name, RecordKey: key, Operation: op, Outcome: "ok", At: r.h.now(),
	}
	if err != nil {
		ev.Outcome, ev.Error = "failed", truncate(err.Error(), 300)
	}
	if aerr := r.h.audit.Record(ctx, ev); aerr != nil {
		r.log.Warn().Err(aerr).Str("recordKey", key).Msg("could not record the write-back audit event")
	}
}

// shardErr keeps a record-level refusal (ErrInvalid) apart from the shard
// store being unavailable (which fails the run, resumably).
func shardErr(op, key string, err error) error {
	if errors.Is(err, shards.ErrInvalid) {
		return &recordFailure{fmt.Errorf("the shard refused the %s: %w", op, err)}
	}
	return fmt.Errorf("%s %s in the shard: %w", op, key, err)
}

// connectorErr: the API refused this record (4xx): skip it; anything else
// (5xx after retries, timeouts, rate limits that never ended) fails the run
// resumably.
func connectorErr(err error) error {
	if connector.IsPermanent(err) {
		return &recordFailure{err}
	}
	return err
}

func presentData(s *domain.SideRecord) map[string]any {
	if !s.Present() {
		return nil
	}
	return s.Data
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
