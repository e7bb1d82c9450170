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

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// run is one delivery's work on a sync run: it continues the run's phases
// from the position saved on the execution.
type run struct {
	h      *Handler
	exec   *domain.Execution
	task   domain.SyncTask
	entity domain.EntityDef
	client *connector.Client
	log    zerolog.Logger
	writes chan struct{} // API writes in flight (Options.MaxWrites)

	mu       sync.Mutex
	written  map[uint64]string // the version of each state this delivery wrote, by hash of its key
	prog     domain.SyncRunProgress
	stats    domain.SyncStats
	progBase domain.SyncRunProgress // the counters saved before this delivery
	cliBase  connector.Stats        // the client's counters when this delivery began

	// The last checkpoint saved. An interrupted run records this one, not
	// its live counts: the records of the unfinished page are counted again
	// (as unchanged) when the page is replayed.
	savedProg  domain.SyncRunProgress
	savedStats domain.SyncStats
}

func newRun(h *Handler, exec *domain.Execution, task domain.SyncTask, entity domain.EntityDef, client *connector.Client) *run {
	r := &run{
		h: h, exec: exec, task: task, entity: entity, client: client,
		log:     h.log.With().Str("tenantId", task.TenantID).Str("syncTaskId", task.ID).Str("executionId", exec.ID).Logger(),
		prog:    *exec.Sync,
		stats:   derefStats(exec.Stats),
		cliBase: client.Stats(),
		writes:  make(chan struct{}, h.opts.MaxWrites),
	}
	r.prog.Errors = append([]domain.SyncRecordError(nil), exec.Sync.Errors...)
	r.progBase = r.prog
	h.metrics.client(client)
	r.savedProg, r.savedStats = r.prog, r.stats
	return r
}

// do runs the phases in order: pull (the list endpoint), pull_deleted (the
// deleted-records endpoint, incremental runs), sweep (runs that read
// everything: what they did not see was deleted), push (the shard walk, for
// push and bidirectional tasks), done.
func (r *run) do(ctx context.Context) error {
	for {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		var err error
		switch r.prog.Phase {
		case domain.PhasePull:
			err = r.readExternal(ctx, domain.PhasePull, r.client.ListPage)
		case domain.PhasePullDeleted:
			err = r.readExternal(ctx, domain.PhasePullDeleted, r.client.ListDeletedPage)
		case domain.PhaseSweep:
			err = r.sweep(ctx)
		case domain.PhasePush:
			err = r.walkShards(ctx)
		case domain.PhaseDone:
			return nil
		default:
			return permanentRun("internal", fmt.Errorf("the execution records an unknown phase %q", r.prog.Phase))
		}
		if err != nil {
			return err
		}
	}
}

// next is the phase after p for this run.
func (r *run) next(p domain.SyncRunPhase) domain.SyncRunPhase {
	switch p {
	case domain.PhasePull:
		if !r.prog.FromScratch && r.entity.DeletedPath != "" {
			return domain.PhasePullDeleted
		}
		return r.next(domain.PhasePullDeleted)
	case domain.PhasePullDeleted:
		if r.prog.FromScratch {
			return domain.PhaseSweep
		}
		return r.next(domain.PhaseSweep)
	case domain.PhaseSweep:
		if r.task.Direction != domain.DirectionPull {
			return domain.PhasePush
		}
		return domain.PhaseDone
	default:
		return domain.PhaseDone
	}
}

type lister func(ctx context.Context, entity string, req connector.PageRequest) (connector.Page, error)

type fetched struct {
	page connector.Page
	at   time.Time // when the page was asked for
	err  error
}

// prefetch reads pages from req on, one ahead of the caller, so the API's
// latency overlaps the work on the previous page. It stops after the last
// page, an error, or when ctx ends.
func (r *run) prefetch(ctx context.Context, wg *sync.WaitGroup, list lister, req connector.PageRequest) <-chan fetched {
	ch := make(chan fetched, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		for {
			at := r.h.now()
			p, err := list(ctx, r.entity.Name, req)
			select {
			case ch <- fetched{p, at, err}:
			case <-ctx.Done():
				return
			}
			if err != nil || p.NextPageToken == "" {
				return
			}
			req.PageToken = p.NextPageToken
		}
	}()
	return ch
}

// readExternal pages one external endpoint from the saved position, applies
// each page, and saves the position after it.
func (r *run) readExternal(ctx context.Context, phase domain.SyncRunPhase, list lister) error {
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait() // no request of this run outlives it
	}()
	pages := r.prefetch(fctx, &wg, list, connector.PageRequest{PageToken: r.prog.PageToken, Since: r.prog.Since})
	for f := range pages {
		if f.err != nil {
			return fmt.Errorf("read %s (%s): %w", r.entity.Name, phase, f.err)
		}
		items, keys := r.pageItems(f.page.Records, phase == domain.PhasePullDeleted, f.at)
		var seen chan error
		if phase == domain.PhasePull && r.prog.FromScratch {
			// The page's keys are known: store them while the page is synced,
			// so their write shares the page's commits (it only has to be
			// durable before the checkpoint).
			seen = make(chan error, 1)
			go func() { seen <- r.recordSeen(ctx, keys) }()
		}
		err := r.reconcileAll(ctx, items)
		if seen != nil {
			err = cmp.Or(err, <-seen)
		}
		if err != nil {
			return err
		}
		last := f.page.NextPageToken == ""
		r.h.metrics.page(phase)
		r.mu.Lock()
		r.prog.Pages++
		r.prog.Read += len(f.page.Records)
		if phase == domain.PhasePull && domain.CursorAfter(r.entity.CursorFormat, f.page.MaxCursor, r.prog.MaxCursor) {
			r.prog.MaxCursor = f.page.MaxCursor
		}
		r.prog.PageToken = f.page.NextPageToken
		if last {
			r.prog.Phase, r.prog.PageToken = r.next(phase), ""
		}
		r.mu.Unlock()
		if err := r.save(ctx); err != nil {
			return err
		}
		if last {
			return nil
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return transientRun("internal", errors.New("the page reader stopped before the last page"))
}

// pageItems returns the records of a page to sync and their keys.
func (r *run) pageItems(recs []map[string]any, tombstones bool, at time.Time) ([]recItem, []string) {
	items := make([]recItem, 0, len(recs))
	keys := make([]string, 0, len(recs))
	for _, raw := range recs {
		key, err := r.client.RecordID(r.entity.Name, raw)
		if err != nil {
			r.fail("", "", err)
			continue
		}
		items = append(items, recItem{key: key, raw: raw, tombstone: tombstones, readAt: at, count: true})
		keys = append(keys, key)
	}
	return items, keys
}

// parallel calls fn for every key's index with up to Options.Concurrency
// goroutines; indexes of one key run in order on one goroutine. The first
// error cancels the rest and is returned.
func (r *run) parallel(ctx context.Context, keys []string, fn func(ctx context.Context, i int) error) error {
	w := min(r.h.opts.Concurrency, len(keys))
	one := func(ctx context.Context, i int) error {
		rctx, done := r.recordContext(ctx)
		defer done()
		return fn(rctx, i)
	}
	if w <= 1 {
		for i := range keys {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if err := one(ctx, i); err != nil {
				return err
			}
		}
		return nil
	}
	buckets := make([][]int, w)
	for i, k := range keys {
		h := fnv.New32a()
		h.Write([]byte(k))
		b := int(h.Sum32() % uint32(w))
		buckets[b] = append(buckets[b], i)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	for _, b := range buckets {
		if len(b) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, i := range b {
				if ctx.Err() != nil {
					return
				}
				if err := one(ctx, i); err != nil {
					once.Do(func() { first = err; cancel(err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		return first
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// recordContext is the context one record is synced in. When ctx ends (a
// shutdown, a lost lease) the record in flight still gets RecordGrace to
// finish its write and the state that records it, so an interruption between
// the two (a write made twice on resume) needs a crash, not a mere shutdown.
func (r *run) recordContext(ctx context.Context) (context.Context, func()) {
	rctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	grace := r.h.opts.RecordGrace
	stop := context.AfterFunc(ctx, func() {
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-t.C:
			cancel(context.Cause(ctx))
		case <-rctx.Done():
		}
	})
	return rctx, func() {
		stop()
		cancel(nil)
	}
}

// seenDoc records the keys one page of a from-scratch run saw (in the sync
// state container, the task's partition), for the deletion sweep.
type seenDoc struct {
	ID          string   `json:"id"`
	SyncTaskID  string   `json:"syncTaskId"`
	TenantID    string   `json:"tenantId"`
	Kind        string   `json:"kind"` // kindSeen
	ExecutionID string   `json:"executionId"`
	Page        int      `json:"page"`
	Keys        []string `json:"keys"`
}

func (d seenDoc) Key() (string, string) { return d.SyncTaskID, d.ID }

// recordSeen stores the keys of the page about to be checkpointed; a replayed
// page overwrites its own document.
func (r *run) recordSeen(ctx context.Context, keys []string) error {
	r.mu.Lock()
	n := r.prog.SeenPages
	r.mu.Unlock()
	doc := seenDoc{ID: domain.SyncSeenID(r.exec.ID, n), SyncTaskID: r.task.ID, TenantID: r.task.TenantID,
		Kind: kindSeen, ExecutionID: r.exec.ID, Page: n, Keys: keys}
	if _, err := r.h.seen.Upsert(ctx, doc); err != nil {
		return fmt.Errorf("record the keys of page %d: %w", n, err)
	}
	r.mu.Lock()
	r.prog.SeenPages++
	r.mu.Unlock()
	return nil
}

// stateDoc is what the sweep reads of any document of the sync state
// partition (a record state, a lease or a page of seen keys): the base
// snapshot and the rest are left undecoded.
type stateDoc struct {
	RecordKey    string                  `json:"recordKey"`
	ExternalHash string                  `json:"externalHash"`
	Deleted      bool                    `json:"deleted"`
	Conflict     *domain.PendingConflict `json:"conflict"`
	Kind         string                  `json:"kind"`
	ExecutionID  string                  `json:"executionId"`
}

// sweep ends a run that read every external record: a record the state says
// the external side had and that no page listed was deleted there. It only
// runs once every page was read, so a failed read never deletes anything.
func (r *run) sweep(ctx context.Context) error {
	seen, err := r.loadSeen(ctx)
	if err != nil {
		return err
	}
	token := r.prog.PageToken
	for {
		page, err := r.h.stateC.Query(ctx, store.Query{PartitionKey: r.task.ID, Limit: r.h.opts.ShardPageSize, Continuation: token})
		if err != nil {
			return fmt.Errorf("walk the sync state: %w", err)
		}
		var gone []string
		var stale []store.Item
		for _, it := range page.Items {
			var d stateDoc
			if err := json.Unmarshal(it.Body, &d); err != nil {
				return permanentRun("store", fmt.Errorf("decode sync state %s: %w", it.ID, err))
			}
			switch {
			case d.Kind == kindSeen && d.ExecutionID != r.exec.ID:
				stale = append(stale, it) // left by a run that never finished
			case d.Kind != "", d.RecordKey == "", d.Deleted, seen[d.RecordKey]:
			case d.ExternalHash != "" || d.Conflict != nil && d.Conflict.ExternalHash != "":
				gone = append(gone, d.RecordKey)
			}
		}
		items := make([]recItem, len(gone))
		for i, key := range gone {
			items[i] = recItem{key: key, ext: &domain.SideRecord{Deleted: true}, count: true}
		}
		if err := r.reconcileAll(ctx, items); err != nil {
			return err
		}
		if len(stale) > 0 {
			ops := make([]store.Op, len(stale))
			for i, it := range stale {
				ops[i] = store.DeleteOp(it.ID, it.ETag)
			}
			r.deleteStates(ctx, ops) // best effort: the next sweep tries again
		}
		token = page.Continuation
		last := token == ""
		r.h.metrics.page(domain.PhaseSweep)
		r.mu.Lock()
		r.prog.PageToken = token
		if last {
			r.prog.Phase, r.prog.PageToken = r.next(domain.PhaseSweep), ""
		}
		r.mu.Unlock()
		if err := r.save(ctx); err != nil {
			return err
		}
		if last {
			// Only once the phase is saved as over: a sweep resumed without
			// its seen keys would take every record for deleted.
			ops := make([]store.Op, r.prog.SeenPages)
			for i := range ops {
				ops[i] = store.DeleteOp(domain.SyncSeenID(r.exec.ID, i), "")
			}
			r.deleteStates(ctx, ops) // best effort: a later sweep removes what is left
			return nil
		}
	}
}

// deleteStates deletes documents of the task's sync state partition in
// batches, best effort: a batch refused (one document already gone or
// changed) is deleted one document at a time, and failures are left for a
// later sweep.
func (r *run) deleteStates(ctx context.Context, ops []store.Op) {
	if len(ops) == 0 {
		return
	}
	batches, _, errs := store.WriteBatches(ctx, r.h.stateC, r.task.ID, ops)
	for k, err := range errs {
		if err == nil || store.IsTransient(err) {
			continue
		}
		for _, op := range batches[k] {
			_ = r.h.stateC.Delete(ctx, r.task.ID, op.ID, op.IfMatch)
		}
	}
}

func (r *run) loadSeen(ctx context.Context) (map[string]bool, error) {
	seen := map[string]bool{}
	for i := range r.prog.SeenPages {
		d, _, err := r.h.seen.Get(ctx, r.task.ID, domain.SyncSeenID(r.exec.ID, i))
		if errors.Is(err, store.ErrNotFound) {
			// A page's keys are missing: sweeping now could delete records
			// the run did see. Better fail the run than delete wrongly.
			return nil, permanentRun("store", fmt.Errorf("the keys of page %d of %d are missing; not sweeping deletions", i, r.prog.SeenPages))
		}
		if err != nil {
			return nil, fmt.Errorf("read the keys seen by the run: %w", err)
		}
		for _, k := range d.Keys {
			seen[k] = true
		}
	}
	return seen, nil
}

// walkShards is the push phase: every Castiel record whose content differs
// from the state is classified and pushed.
func (r *run) walkShards(ctx context.Context) error {
	token := r.prog.PageToken
	for {
		at := r.h.now()
		recs, next, err := r.h.shards.List(ctx, r.task.TenantID, r.task.Entity, token, r.h.opts.ShardPageSize)
		if err != nil {
			return fmt.Errorf("walk the shard: %w", err)
		}
		items := make([]recItem, len(recs))
		for i, rec := range recs {
			items[i] = recItem{key: rec.Key, in: rec.Side(), readAt: at} // hashed when planned, concurrently
		}
		if err := r.reconcileAll(ctx, items); err != nil {
			return err
		}
		last := next == ""
		r.h.metrics.page(domain.PhasePush)
		r.mu.Lock()
		r.prog.Pages++
		r.prog.PageToken = next
		if last {
			r.prog.Phase, r.prog.PageToken = r.next(domain.PhasePush), ""
		}
		r.mu.Unlock()
		if err := r.save(ctx); err != nil {
			return err
		}
		if last {
			return nil
		}
		token = next
	}
}

// snapshot copies the run's progress, counters and the client's into the
// execution.
func (r *run) snapshot() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clientCountsLocked(&r.prog)
	p := r.prog
	p.Errors = append([]domain.SyncRecordError(nil), r.prog.Errors...)
	r.exec.Sync = &p
	st := r.stats
	r.exec.Stats = &st
}

// rollback puts the last saved checkpoint (with the API calls made since,
// which did happen) into the execution, for an interrupted run.
func (r *run) rollback() {
	r.mu.Lock()
	defer r.mu.Unlock()
	p := r.savedProg
	p.Errors = append([]domain.SyncRecordError(nil), r.savedProg.Errors...)
	r.clientCountsLocked(&p)
	r.exec.Sync = &p
	st := r.savedStats
	r.exec.Stats = &st
}

func (r *run) clientCountsLocked(p *domain.SyncRunProgress) {
	s := r.client.Stats()
	b, c := r.progBase, r.cliBase
	p.APICalls = b.APICalls + s.APICalls - c.APICalls
	p.Retries = b.Retries + s.Retries - c.Retries
	p.Throttled = b.Throttled + s.Throttled - c.Throttled
	p.RateLimitWaits = b.RateLimitWaits + s.RateLimitWaits - c.RateLimitWaits
	p.RateLimitWaitMs = b.RateLimitWaitMs + (s.RateLimitWaitTime - c.RateLimitWaitTime).Milliseconds()
	p.TokenRefreshes = b.TokenRefreshes + s.TokenRefreshes - c.TokenRefreshes
}

// save checkpoints the run on its execution.
func (r *run) save(ctx context.Context) error {
	r.h.metrics.client(r.client)
	r.snapshot()
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.h.saveExecution(ctx, r.exec); err != nil {
		return err
	}
	r.savedProg = r.prog
	r.savedProg.Errors = append([]domain.SyncRecordError(nil), r.prog.Errors...)
	r.savedStats = r.stats
	return nil
}

// fail records a record the run skips (a mapping error, a 4xx on write).
func (r *run) fail(key string, action domain.SyncAction, err error) {
	r.h.metrics.failed()
	r.mu.Lock()
	r.stats.Failed++
	r.prog.AddRecordError(domain.SyncRecordError{RecordKey: key, Action: action, Error: err.Error()})
	r.mu.Unlock()
	r.log.Debug().Err(err).Str("recordKey", key).Str("action", string(action)).Msg("record failed; skipped")
}

func (r *run) count(a domain.SyncAction) {
	r.h.metrics.record(a)
	r.mu.Lock()
	r.stats.Count(a)
	r.mu.Unlock()
}
