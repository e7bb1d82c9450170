package syncrun

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/shards"
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
		if r.prog.FromScratch && !r.prog.NothingToSweep {
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

// listedPage is one page of a phase's listing, ready to sync.
type listedPage struct {
	items     []recItem
	keys      []string
	tally     *tally // where its records are counted until its checkpoint
	read      int    // records listed
	next      string // the position after it; "": it is the last page
	maxCursor string
	err       error // the listing failed
}

// prefetch reads pages from req on, one ahead of the caller, so the API's
// latency overlaps the work on the previous page. It stops after the last
// page, an error, or when ctx ends.
func (r *run) prefetch(ctx context.Context, wg *sync.WaitGroup, phase domain.SyncRunPhase, list lister, req connector.PageRequest) <-chan listedPage {
	ch := make(chan listedPage, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		for {
			at := r.h.now()
			p, err := list(ctx, r.entity.Name, req)
			lp := listedPage{err: err}
			if err != nil {
				lp.err = fmt.Errorf("read %s (%s): %w", r.entity.Name, phase, err)
			} else {
				lp.tally = &tally{}
				lp.items, lp.keys = r.pageItems(p.Records, phase == domain.PhasePullDeleted, at, lp.tally)
				lp.read, lp.next, lp.maxCursor = len(p.Records), p.NextPageToken, p.MaxCursor
			}
			select {
			case ch <- lp:
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
	return r.syncPages(ctx, phase, r.prefetch(fctx, &wg, phase, list, connector.PageRequest{PageToken: r.prog.PageToken, Since: r.prog.Since}))
}

// syncPages syncs the pages of a phase in order, checkpointing the run after
// each.
//
// A page is listed, planned (its records' states and the other side read,
// classified, mapped; pushes made) and written while the page before it is
// written and checkpointed, so the store's commits of the two overlap (on the
// embedded store they share group commits). What keeps that safe: a page
// sharing a key with the page in flight waits for it (so the key's second
// version sees the state its first wrote); at most two pages are in flight,
// so a run interrupted mid-way has written nothing past the two pages after
// its last checkpoint, and replayed, those records are found in agreement
// (a shard write without its state included: both sides then hold the same
// content); and each page keeps its counts (tally) until its own checkpoint,
// so a checkpoint never counts records of a page a resumed run will replay.
func (r *run) syncPages(ctx context.Context, phase domain.SyncRunPhase, pages <-chan listedPage) error {
	var inFlight *pageRun
	defer func() {
		if inFlight != nil {
			inFlight.abort(errors.New("the page before it failed"))
			<-inFlight.done // no write of this run outlives it
		}
	}()
	r.mu.Lock()
	seen := r.prog.SeenPages // the index of the next page's seen keys
	r.mu.Unlock()
	for lp := range pages {
		if lp.err != nil {
			if inFlight != nil {
				// The page before the failed listing keeps its checkpoint.
				prev := inFlight
				inFlight = nil
				if err := r.finishPage(ctx, phase, prev); err != nil {
					return err
				}
			}
			return lp.err
		}
		p := newPageRun(ctx, lp)
		if phase == domain.PhasePull && r.prog.FromScratch && !r.prog.NothingToSweep {
			p.seen = seen
			seen++
		}
		if inFlight != nil && inFlight.shares(lp.keys) {
			prev := inFlight
			inFlight = nil
			if err := r.finishPage(ctx, phase, prev); err != nil {
				return err
			}
		}
		prev := inFlight
		inFlight = p
		go r.syncPage(p, lp.items, lp.keys)
		if prev != nil {
			if err := r.finishPage(ctx, phase, prev); err != nil {
				return err
			}
		}
		if lp.next == "" {
			inFlight = nil
			return r.finishPage(ctx, phase, p)
		}
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return transientRun("internal", errors.New("the page reader stopped before the last page"))
}

// pageRun is one page on its way to its checkpoint.
type pageRun struct {
	read      int
	next      string
	maxCursor string
	keys      []string // the keys it lists
	tally     *tally
	seen      int // the index of its seen-keys document; -1: none (not a from-scratch pull)

	ctx   context.Context // the page's; abort ends it
	abort context.CancelCauseFunc
	done  chan struct{} // closed when err is set
	err   error
}

func newPageRun(ctx context.Context, lp listedPage) *pageRun {
	pctx, abort := context.WithCancelCause(ctx)
	return &pageRun{read: lp.read, next: lp.next, maxCursor: lp.maxCursor, keys: lp.keys, tally: lp.tally,
		seen: -1, ctx: pctx, abort: abort, done: make(chan struct{})}
}

// shares reports whether the page lists one of keys.
func (p *pageRun) shares(keys []string) bool {
	if len(p.keys) == 0 || len(keys) == 0 {
		return false
	}
	key := func(k string) string { return k }
	if increasingBy(p.keys, key) && increasingBy(keys, key) && (keys[0] > p.keys[len(p.keys)-1] || keys[len(keys)-1] < p.keys[0]) {
		return false // pages listed in key order, as most APIs list them: no set needed
	}
	set := make(map[string]struct{}, len(p.keys))
	for _, k := range p.keys {
		set[k] = struct{}{}
	}
	for _, k := range keys {
		if _, ok := set[k]; ok {
			return true
		}
	}
	return false
}

// increasingBy reports whether the keys of xs are in strictly increasing
// order (so each is there once).
func increasingBy[T any](xs []T, key func(T) string) bool {
	for i := 1; i < len(xs); i++ {
		if key(xs[i-1]) >= key(xs[i]) {
			return false
		}
	}
	return true
}

// syncPage syncs the records of p and stores its seen keys beside them (that
// write shares the page's commits; it only has to be durable before the
// checkpoint).
func (r *run) syncPage(p *pageRun, items []recItem, keys []string) {
	defer close(p.done)
	defer p.abort(nil)
	var seen chan error
	if p.seen >= 0 {
		seen = make(chan error, 1)
		go func() { seen <- r.recordSeen(p.ctx, p.seen, keys) }()
	}
	err := r.reconcileAll(p.ctx, items)
	if seen != nil {
		err = cmp.Or(err, <-seen)
	}
	p.err = err
}

// finishPage waits for p's writes and checkpoints the run after it: its
// counts join the run's, and the position moves past it.
func (r *run) finishPage(ctx context.Context, phase domain.SyncRunPhase, p *pageRun) error {
	<-p.done
	if p.err != nil {
		return p.err
	}
	last := p.next == ""
	r.h.metrics.page(phase)
	r.mu.Lock()
	p.tally.addTo(r)
	r.prog.Pages++
	if phase != domain.PhasePush {
		r.prog.Read += p.read
	}
	if p.seen >= 0 {
		r.prog.SeenPages = p.seen + 1
	}
	if phase == domain.PhasePull && domain.CursorAfter(r.entity.CursorFormat, p.maxCursor, r.prog.MaxCursor) {
		r.prog.MaxCursor = p.maxCursor
	}
	r.prog.PageToken = p.next
	if last {
		r.prog.Phase, r.prog.PageToken = r.next(phase), ""
	}
	r.mu.Unlock()
	return r.save(ctx)
}

// pageItems returns the records of a page to sync, in Castiel's shape and
// hashed, and the keys the page lists. A record without a key or that the
// mapping cannot convert is counted failed and not synced; the latter's key
// is still listed (the sweep must not take it for deleted). Mapped here, by
// the reader a page ahead, so the mapping of one page overlaps the writes of
// the one before. recs are the page's, read for this run alone: each is
// mapped in place.
func (r *run) pageItems(recs []map[string]any, tombstones bool, at time.Time, t *tally) ([]recItem, []string) {
	items := make([]recItem, 0, len(recs))
	keys := make([]string, 0, len(recs))
	for _, raw := range recs {
		key, err := r.client.RecordID(r.entity.Name, raw)
		if err != nil {
			r.failItem(t, "", "", err)
			continue
		}
		deleted := tombstones || r.client.IsDeleted(r.entity.Name, raw)
		keys = append(keys, key)
		ext, err := domain.ExternalSideRecordTaking(r.entity, r.task.Mapping, raw, deleted)
		if err != nil {
			r.failItem(t, key, "", err)
			continue
		}
		items = append(items, recItem{key: key, ext: ext, pulled: true, readAt: at, count: true, tally: t})
	}
	return items, keys
}

// parallel calls fn for every key's index with up to Options.Concurrency
// goroutines; indexes of one key run in order on one goroutine. The first
// error cancels the rest and is returned. No record starts once ctx has
// ended; the records in flight then get RecordGrace (recordContext), all
// from the same moment, so they share one record context.
func (r *run) parallel(ctx context.Context, keys []string, fn func(ctx context.Context, i int) error) error {
	w := min(r.h.opts.Concurrency, len(keys))
	if w <= 1 {
		rctx, done := r.recordContext(ctx)
		defer done()
		for i := range keys {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			if err := fn(rctx, i); err != nil {
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
	rctx, done := r.recordContext(ctx)
	defer done()
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
				if err := fn(rctx, i); err != nil {
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

// minChunk is the fewest records inChunks gives a goroutine of their own.
const minChunk = 64

// inChunks calls fn on consecutive chunks of [0, n), up to one per CPU, and
// waits for them: for CPU-bound work on a page's records on the way from one
// checkpoint to the next, which would otherwise leave the other CPUs idle.
func inChunks(n int, fn func(lo, hi int)) {
	w := min(runtime.GOMAXPROCS(0), n/minChunk)
	if w <= 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for k := range w {
		wg.Go(func() { fn(k*n/w, (k+1)*n/w) })
	}
	wg.Wait()
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

// recordSeen stores the keys of page n of the pages of seen keys; a replayed
// page overwrites its own document.
func (r *run) recordSeen(ctx context.Context, n int, keys []string) error {
	doc := seenDoc{ID: domain.SyncSeenID(r.exec.ID, n), SyncTaskID: r.task.ID, TenantID: r.task.TenantID,
		Kind: kindSeen, ExecutionID: r.exec.ID, Page: n, Keys: keys}
	if _, err := r.h.seen.Upsert(ctx, doc); err != nil {
		return fmt.Errorf("record the keys of page %d: %w", n, err)
	}
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
			if err := decodeStateDoc(it.Body, &d); err != nil {
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
// from the state is classified and pushed. The shard is listed a page ahead,
// and its pages are synced as the external ones are (syncPages).
func (r *run) walkShards(ctx context.Context) error {
	lctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait() // no listing of this run outlives it
	}()
	pages := make(chan listedPage, 1)
	token := r.prog.PageToken
	list := r.listShard
	wg.Go(func() {
		defer close(pages)
		for {
			at := r.h.now()
			recs, next, err := list(lctx, token)
			lp := listedPage{err: err, read: len(recs), next: next, tally: &tally{}}
			if err != nil {
				lp.err = fmt.Errorf("walk the shard: %w", err)
			}
			lp.items, lp.keys = make([]recItem, len(recs)), make([]string, len(recs))
			for i := range recs {
				// Hashed (unless the store kept the hash) and decoded (if it
				// has to be) when planned, concurrently; unchanged records
				// are not counted (the walk sees every record every run).
				rec := &recs[i]
				lp.items[i] = recItem{key: rec.Key, in: rec.Side(), version: rec.Version, readAt: at, tally: lp.tally}
				if rec.Data == nil && !rec.Deleted {
					lp.items[i].listed = rec
				}
				lp.keys[i] = rec.Key
			}
			select {
			case pages <- lp:
			case <-lctx.Done():
				return
			}
			if err != nil || next == "" {
				return
			}
			token = next
		}
	})
	return r.syncPages(ctx, domain.PhasePush, pages)
}

// listedLister is a shard store that lists records with their data left
// undecoded until asked for (*shards.Local).
type listedLister interface {
	ListListed(ctx context.Context, tenantID, entity, pageToken string, limit int) ([]shards.Listed, string, error)
}

// listShard lists a page of the task's shard for the walk: with the data
// undecoded where the store can (most records of a walk are unchanged, which
// the hash tells), decoded otherwise.
func (r *run) listShard(ctx context.Context, token string) ([]shards.Listed, string, error) {
	if ll, ok := r.h.shards.(listedLister); ok {
		return ll.ListListed(ctx, r.task.TenantID, r.task.Entity, token, r.h.opts.ShardPageSize)
	}
	recs, next, err := r.h.shards.List(ctx, r.task.TenantID, r.task.Entity, token, r.h.opts.ShardPageSize)
	listed := make([]shards.Listed, len(recs))
	for i, rec := range recs {
		listed[i].Record = rec
	}
	return listed, next, err
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

// tally holds the counts and record errors of one page until its
// checkpoint, when they join the run's.
type tally struct {
	mu     sync.Mutex
	stats  domain.SyncStats
	errors []domain.SyncRecordError
}

// countItem counts a record's outcome in t, or in the run's counts if t is nil.
func (r *run) countItem(t *tally, a domain.SyncAction) {
	if t == nil {
		r.count(a)
		return
	}
	r.h.metrics.record(a)
	t.mu.Lock()
	t.stats.Count(a)
	t.mu.Unlock()
}

// failItem records a record the run skips in t, or in the run if t is nil.
func (r *run) failItem(t *tally, key string, action domain.SyncAction, err error) {
	if t == nil {
		r.fail(key, action, err)
		return
	}
	r.h.metrics.failed()
	t.mu.Lock()
	t.stats.Failed++
	if len(t.errors) < domain.MaxSyncRecordErrors {
		t.errors = append(t.errors, domain.SyncRecordError{RecordKey: key, Action: action, Error: err.Error()})
	}
	t.mu.Unlock()
	r.log.Debug().Err(err).Str("recordKey", key).Str("action", string(action)).Msg("record failed; skipped")
}

// addTo adds t's counts and errors to the run's; r.mu is held.
func (t *tally) addTo(r *run) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r.stats.Add(t.stats)
	for _, e := range t.errors {
		r.prog.AddRecordError(e)
	}
}
