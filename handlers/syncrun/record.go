package syncrun

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/docfields"
)

// errStateRaced: the record's state changed between its read and the run's
// write (the conflict resolver wrote it): classify the record again.
var errStateRaced = errors.New("the record's sync state changed meanwhile")

// recordFailure is a failure of one record only: it is counted and skipped,
// and the run goes on.
type recordFailure struct{ err error }

func (e *recordFailure) Error() string { return e.err.Error() }
func (e *recordFailure) Unwrap() error { return e.err }

// recItem is one record to sync and what each side says about it (nil: no
// news from that side).
type recItem struct {
	key     string
	ext, in *domain.SideRecord
	pulled  bool           // ext was read from the external API (a page of a pull), not deduced
	readAt  time.Time      // when the side given (ext read, or in) was read; zero: not checked
	count   bool           // an unchanged record counts as such (not in the shard walk, which sees every record every run)
	tally   *tally         // where the record is counted until its page's checkpoint; nil: the run's counts
	version string         // the shard's version of in, as the walk listed it ("": unknown)
	listed  *shards.Listed // in as the walk listed it, its Data not yet decoded; nil: in is whole
}

// plan is one record's decided change whose durable writes wait to be
// grouped with the rest of the page: first a pull's write to the shard, then
// the record's new state.
type plan struct {
	it      recItem
	d       domain.Decision
	countAs domain.SyncAction // counted once the state is written; "" : not counted
	st      *domain.RecordState
	etag    string             // the state's ETag when read; "": the state is new
	shard   *shards.Write      // a pull's write to the shard, made before the state
	side    *domain.SideRecord // the version a pull writes
	now     time.Time
}

// maxStateRaces bounds how often one record is planned again because its
// state changed between the run's read and its write.
const maxStateRaces = 3

// reconcileAll syncs a page of records: every record is planned
// concurrently (read, classified, its writes to the external API made), then
// the page's shard writes go in one shard batch and the records' states in
// store batches, written as they come (a push's state follows its API write
// within one group commit). A key listed twice is synced again in a later
// round, after its first version is written.
func (r *run) reconcileAll(ctx context.Context, items []recItem) error {
	for len(items) > 0 {
		round, rest := uniqueKeys(items)
		for attempt := 0; len(round) > 0; attempt++ {
			if attempt > maxStateRaces {
				return transientRun("store", fmt.Errorf("record %s: its sync state kept changing under the run", round[0].key))
			}
			raced, err := r.reconcileRound(ctx, round)
			if err != nil {
				return err
			}
			round = raced
		}
		items = rest
	}
	return nil
}

// uniqueKeys splits items into the first item of each key and the rest, in order.
func uniqueKeys(items []recItem) (round, rest []recItem) {
	if increasingBy(items, func(it recItem) string { return it.key }) {
		return items, nil // each key once (a page listed in key order): no set needed
	}
	seen := make(map[string]struct{}, len(items))
	round = make([]recItem, 0, len(items))
	for _, it := range items {
		if _, dup := seen[it.key]; dup {
			rest = append(rest, it)
			continue
		}
		seen[it.key] = struct{}{}
		round = append(round, it)
	}
	return round, rest
}

// reconcileRound syncs items (distinct keys) and returns those whose state
// raced with another writer (the conflict resolver), to be planned again.
//
// Once a record's change is decided its writes are made even if ctx ends
// meanwhile (within RecordGrace), so a shutdown never leaves an API write
// without the state that records it; pulls not yet written to the shard are
// simply replayed.
func (r *run) reconcileRound(ctx context.Context, items []recItem) ([]recItem, error) {
	wctx, wdone := r.recordContext(ctx)
	defer wdone()
	pctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	w := r.newStateWriter(wctx, stop)

	var (
		mu    sync.Mutex
		pulls []*plan
		raced []recItem
	)
	keys := make([]string, len(items))
	for i, it := range items {
		keys[i] = it.key
	}
	pres, perr := r.preread(pctx, items)
	if perr == nil {
		perr = r.parallel(pctx, keys, func(ctx context.Context, i int) error {
			p, err := r.plan(ctx, items[i], pres.of(i))
			switch {
			case errors.Is(err, errStateRaced):
				mu.Lock()
				raced = append(raced, again(items[i]))
				mu.Unlock()
				return nil
			case err != nil || p == nil:
				return err
			case p.shard != nil:
				mu.Lock()
				pulls = append(pulls, p)
				mu.Unlock()
				return nil
			default:
				w.add(p)
				return nil
			}
		})
	}
	var serr error
	if perr == nil {
		serr = r.writeShards(wctx, pulls, w)
	}
	racedPlans, werr := w.close()
	for _, p := range racedPlans {
		raced = append(raced, again(p.it))
	}
	if err := cmp.Or(werr, perr, serr); err != nil {
		return nil, err
	}
	return raced, nil
}

// again is it to be planned anew: Castiel's side is read again too.
func again(it recItem) recItem {
	it.in, it.listed = nil, nil
	return it
}

// plan reads and classifies one record and makes the writes that cannot
// wait for the page (to the external API, conflicts). It returns nil when
// nothing is left to write.
func (r *run) plan(ctx context.Context, it recItem, pre *preread) (*plan, error) {
	if it.in.Present() && it.in.Hash == "" {
		it.in.Hash = domain.ContentHash(it.in.Data)
	}
	raw, found, err := pre.stateOf(ctx, r, it.key)
	if err != nil {
		return nil, err
	}
	ext, in := it.ext, it.in
	if in == nil && ext != nil && found && unchangedExternally(raw.Body, ext) {
		// The external side did not change. Whatever Castiel did is the
		// push walk's business (or blocked on a pull task), so the shard
		// need not be read: the common case of a re-read costs one point
		// read (and the decoding of two fields of it).
		if it.count {
			r.countItem(it.tally, domain.ActionUnchanged)
		}
		return nil, nil
	}
	if ext == nil && in.Present() && found && unchangedInternally(raw.Body, in) {
		// The walk's case: Castiel's record is as last agreed and the
		// external side brings no news, so there is nothing to do, whatever
		// else the state holds. Most records of every walk are like this.
		if it.count {
			r.countItem(it.tally, domain.ActionUnchanged)
		}
		return nil, nil
	}
	if it.listed != nil && in == it.in {
		if err := it.listed.Decode(); err != nil {
			r.failItem(it.tally, it.key, "", fmt.Errorf("the shard holds a record it cannot read: %w", err))
			return nil, nil
		}
		in.Data = it.listed.Data
	}
	var st *domain.RecordState
	var etag string
	if found {
		if st, err = decodeState(raw); err != nil {
			return nil, err
		}
		etag = raw.ETag
		if !it.readAt.IsZero() && st.LastSyncedAt.After(it.readAt) && !r.wroteState(it.key, etag) {
			// Someone else (the conflict resolver, writing both sides)
			// agreed the state after this side was read: the state holds a
			// version at least as new, so what was read is no news. Without
			// this a stale read would be taken for a change and written back
			// over the resolution. (The state as this run last wrote it,
			// say for a record listed again on a later page, proves nothing
			// of the kind.)
			if it.pulled {
				ext = nil
			} else {
				in = nil // read Castiel's side again, now
			}
		}
	}
	if in == nil {
		if in, err = pre.internalOf(ctx, r, it.key); err != nil {
			if errors.Is(err, shards.ErrInvalid) {
				r.failItem(it.tally, it.key, "", err)
				return nil, nil
			}
			return nil, err
		}
	}
	d := domain.Classify(r.task.Direction, st, ext, in)
	if it.in != nil && in == it.in && isPush(d.Action) {
		// The walk listed this record before its state was read, and the check
		// above trusts clocks: a resolver on another machine, its clock behind,
		// may have written both sides and the state since. A push is made only
		// of Castiel's side as read after the state, so a stale listing is never
		// pushed over a resolution. (Only pushes: a conflict seen in the listing
		// is left to the state's pending conflict, and a read racing a resolution
		// in progress would raise a spurious one.)
		if in, err = r.rereadInternal(ctx, it, pre); err != nil {
			if errors.Is(err, shards.ErrInvalid) {
				r.failItem(it.tally, it.key, "", err)
				return nil, nil
			}
			return nil, err
		}
		d = domain.Classify(r.task.Direction, st, ext, in)
	}
	p := &plan{it: it, d: d, st: st, etag: etag, now: r.h.now()}
	if p.st == nil {
		p.st = domain.NewRecordState(r.task.TenantID, r.task.ID, it.key)
	}
	a := d.Action
	if d.Pending || a == domain.ActionConverged {
		a = domain.ActionUnchanged
	}
	if it.count || a != domain.ActionUnchanged {
		p.countAs = a
	}
	write, err := r.apply(ctx, p, ext, in)
	var rf *recordFailure
	switch {
	case errors.As(err, &rf):
		r.failItem(it.tally, it.key, d.Action, rf.err)
		return nil, nil
	case err != nil:
		return nil, err
	case !write:
		r.countPlan(p)
		return nil, nil
	}
	return p, nil
}

// committed records that p's state is written (etag: its new version): it
// is counted, and the version remembered as this run's.
func (r *run) committed(p *plan, etag string) {
	r.noteState(p.it.key, etag)
	r.countPlan(p)
}

func (r *run) countPlan(p *plan) {
	if p.countAs != "" {
		r.countItem(p.it.tally, p.countAs)
	}
}

func keyHash(key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return h.Sum64()
}

// noteState remembers the version of key's state this run wrote.
func (r *run) noteState(key, etag string) {
	if etag == "" {
		return
	}
	r.mu.Lock()
	if r.written == nil {
		r.written = map[uint64]string{}
	}
	r.written[keyHash(key)] = etag
	r.mu.Unlock()
}

// wroteState reports whether etag is the version of key's state this run
// last wrote.
func (r *run) wroteState(key, etag string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	got, ok := r.written[keyHash(key)]
	return ok && got == etag
}

func (r *run) loadState(ctx context.Context, key string) (*domain.RecordState, string, error) {
	raw, found, err := r.readState(ctx, key)
	if err != nil || !found {
		return nil, "", err
	}
	st, err := decodeState(raw)
	return st, raw.ETag, err
}

// readState reads a record's state as stored; found is false if it has none.
func (r *run) readState(ctx context.Context, key string) (store.Item, bool, error) {
	it, err := r.h.stateC.Read(ctx, r.task.ID, domain.RecordStateID(r.task.ID, key))
	if errors.Is(err, store.ErrNotFound) {
		return store.Item{}, false, nil
	}
	if err != nil {
		return store.Item{}, false, fmt.Errorf("read the sync state of %s: %w", key, err)
	}
	return it, true, nil
}

func decodeState(it store.Item) (*domain.RecordState, error) {
	var st domain.RecordState
	if err := json.Unmarshal(it.Body, &st); err != nil {
		return nil, fmt.Errorf("decode the sync state %s: %w", it.ID, err)
	}
	return &st, nil
}

// stateHead is what telling an unchanged external record needs of its state.
type stateHead struct {
	ExternalHash string          `json:"externalHash"`
	InternalHash string          `json:"internalHash"`
	Conflict     json.RawMessage `json:"conflict"`
}

// unchangedExternally reports whether the stored state agrees with ext and
// has no pending conflict, without decoding the whole state.
func unchangedExternally(body []byte, ext *domain.SideRecord) bool {
	h, err := decodeStateHead(body)
	if err != nil {
		return false // decoded in full, and refused, by the caller
	}
	return docfields.IsNull(h.Conflict) && h.ExternalHash == ext.ContentHash()
}

// unchangedInternally reports whether the stored state agrees with in (a
// record present in Castiel) and has no pending conflict, without decoding
// the whole state.
func unchangedInternally(body []byte, in *domain.SideRecord) bool {
	h, err := decodeStateHead(body)
	if err != nil {
		return false
	}
	return docfields.IsNull(h.Conflict) && h.InternalHash != "" && h.InternalHash == in.ContentHash()
}

// rereadInternal reads Castiel's side of a listed record again: the listed
// version itself when the store says it is still the current one (checked
// for the round beforehand, or now).
func (r *run) rereadInternal(ctx context.Context, it recItem, pre *preread) (*domain.SideRecord, error) {
	if pre != nil && pre.checked {
		if pre.current {
			return it.in, nil
		}
		return r.readInternal(ctx, it.key)
	}
	if vc, ok := r.h.shards.(versionChecker); ok && it.version != "" {
		current, errs := vc.AreCurrent(ctx, r.task.TenantID, r.task.Entity, []string{it.key}, []string{it.version})
		if errs[0] != nil {
			return nil, fmt.Errorf("read %s from the shard: %w", it.key, errs[0])
		}
		if current[0] {
			return it.in, nil
		}
	}
	return r.readInternal(ctx, it.key)
}

func (r *run) readInternal(ctx context.Context, key string) (*domain.SideRecord, error) {
	rec, err := r.h.shards.Get(ctx, r.task.TenantID, r.task.Entity, key)
	return internalSide(key, rec, err)
}

// internalSide is Castiel's side of key as a shard read gave it: a record
// not found is a deletion.
func internalSide(key string, rec shards.Record, err error) (*domain.SideRecord, error) {
	if errors.Is(err, shards.ErrNotFound) {
		return &domain.SideRecord{Deleted: true}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s from the shard: %w", key, err)
	}
	side := rec.Side()
	if side.Hash == "" {
		side.Hash = domain.ContentHash(side.Data)
	}
	return side, nil
}

// apply carries out p's decision up to its grouped writes: a pull gets its
// shard write (p.shard), a push is written to the API, a conflict stored and
// announced, and p.st is brought to what the record's state must become.
// write reports whether the state is to be written; a state is always
// written after the side write it records, so a replay of the record sees
// both sides agree and does nothing.
func (r *run) apply(ctx context.Context, p *plan, ext, in *domain.SideRecord) (write bool, err error) {
	d, st, key, now := p.d, p.st, p.it.key, p.now
	if d.Supersedes != "" {
		if err := r.supersede(ctx, d.Supersedes, now); err != nil {
			return false, err
		}
	}
	switch d.Action {
	case domain.ActionUnchanged:
		if d.Supersedes == "" {
			return false, nil // blocked writes also leave the state as it is
		}
		st.Conflict = nil

	case domain.ActionConverged:
		st.Agree(ext, in, now)

	case domain.ActionPullAdd, domain.ActionPullUpdate:
		side, err := r.sideOrConflict(ctx, st, ext, true)
		if err != nil {
			return false, err
		}
		p.shard, p.side = &shards.Write{Key: key, Data: side.Data, Hash: side.Hash}, side

	case domain.ActionPullDelete:
		p.shard = &shards.Write{Key: key, Delete: true}

	case domain.ActionPushAdd, domain.ActionPushUpdate:
		side, err := r.sideOrConflict(ctx, st, in, false)
		if err != nil {
			return false, err
		}
		after, newKey, err := r.pushWrite(ctx, key, d.Action, side)
		if err != nil {
			return false, err
		}
		if newKey != "" {
			return false, r.rekey(ctx, st, p.etag, key, newKey, after, side, now)
		}
		// side is this run's own reading of the record (the walk's, a
		// re-read, or a pending conflict's version), written nowhere else:
		// the state keeps it as its snapshot without a copy.
		st.AgreeTaking(after, side, now)

	case domain.ActionPushDelete:
		err := r.writing(ctx, func() error { return r.client.Delete(ctx, r.entity.Name, key) })
		r.auditWrite(ctx, key, "delete", err)
		if err != nil {
			return false, connectorErr(err)
		}
		st.Agree(&domain.SideRecord{Deleted: true}, &domain.SideRecord{Deleted: true}, now)

	case domain.ActionConflict:
		if d.Pending {
			return false, nil
		}
		id, err := r.raiseConflict(ctx, key, d, st, ext, in, now)
		if err != nil {
			return false, err
		}
		st.MarkConflict(id, ext, in, now)
		// Written now, not with the page: the resolver acts on the event just
		// published and writes this state too; the sooner the mark is in, the
		// less often one of the two has to start over.
		return false, r.writeState(ctx, st, p.etag)

	default:
		return false, fmt.Errorf("record %s: unexpected action %q", key, d.Action)
	}
	return true, nil
}

// writeShards makes the round's pulls in one shard batch and hands each
// written record's state to w.
func (r *run) writeShards(ctx context.Context, pulls []*plan, w *stateWriter) error {
	if len(pulls) == 0 {
		return nil
	}
	writes := make([]shards.Write, len(pulls))
	for i, p := range pulls {
		writes[i] = *p.shard
	}
	res, err := r.h.shards.WriteBatch(ctx, r.task.TenantID, r.task.Entity, writes)
	if err != nil {
		return fmt.Errorf("write %d records to the shard: %w", len(writes), err)
	}
	// The new states (a hash of each record) on every CPU: this is on the
	// way from one page's checkpoint to the next. The record the shard gives
	// back is a copy of its own, which the state keeps as its snapshot.
	deleted := &domain.SideRecord{Deleted: true}
	inChunks(len(pulls), func(lo, hi int) {
		for i, p := range pulls[lo:hi] {
			switch res := res[lo+i]; {
			case !pullWritten(p, res):
			case p.shard.Delete:
				p.st.Agree(deleted, deleted, p.now)
			default:
				p.st.AgreeTaking(p.side, res.Record.Side(), p.now)
			}
		}
	})
	var first error
	written := make([]*plan, 0, len(pulls))
	defer func() { w.add(written...) }() // together: they go out in as few batches as they can
	for i, p := range pulls {
		res := res[i]
		switch {
		case pullWritten(p, res):
		case errors.Is(res.Err, shards.ErrInvalid):
			r.failItem(p.it.tally, p.it.key, p.d.Action, fmt.Errorf("the shard refused the write: %w", res.Err))
			continue
		default:
			first = cmp.Or(first, fmt.Errorf("write %s in the shard: %w", p.it.key, res.Err))
			continue
		}
		written = append(written, p)
	}
	return first
}

// pullWritten reports whether the shard took p's write (res): a put that
// succeeded, or a delete of a record that is now gone.
func pullWritten(p *plan, res shards.WriteResult) bool {
	return res.Err == nil || p.shard.Delete && errors.Is(res.Err, shards.ErrNotFound)
}

// writeState writes one record's state on its own (rekey).
func (r *run) writeState(ctx context.Context, st *domain.RecordState, etag string) error {
	var err error
	var written string
	if etag == "" {
		written, err = r.h.states.Create(ctx, *st)
	} else {
		written, err = r.h.states.Replace(ctx, *st, etag)
	}
	switch {
	case isStateRace(err):
		return errStateRaced
	case err != nil:
		return fmt.Errorf("write the sync state of %s: %w", st.RecordKey, err)
	}
	r.noteState(st.RecordKey, written)
	return nil
}

// isStateRace: a state write found the state changed since it was read.
func isStateRace(err error) bool {
	return errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrPreconditionFailed) || errors.Is(err, store.ErrNotFound)
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
	newKey := ""
	if action == domain.ActionPushAdd {
		if id, err := r.client.RecordID(r.entity.Name, resp); err == nil && id != key {
			newKey = id
		}
	}
	// resp is ours alone (decoded from the answer, or the body sent), so it
	// is mapped in place; read what else it tells first.
	at := r.entity.ModifiedAt(resp)
	after, err := domain.ExternalSideRecordTaking(r.entity, r.task.Mapping, resp, false)
	if err != nil {
		after = &domain.SideRecord{Data: side.Data, Hash: side.ContentHash(), ModifiedAt: at}
	}
	return after, newKey, nil
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
	written, err := r.h.states.Upsert(ctx, *ns)
	if err != nil {
		return fmt.Errorf("write the sync state of %s: %w", newKey, err)
	}
	r.noteState(newKey, written)
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

func isPush(a domain.SyncAction) bool {
	return a == domain.ActionPushAdd || a == domain.ActionPushUpdate || a == domain.ActionPushDelete
}
