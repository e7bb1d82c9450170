package syncrun

import (
	"context"
	"fmt"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

// Planning a record reads its sync state and, unless its external side is
// unchanged, Castiel's side. Where the stores can read many documents at once
// (the embedded store, the local shard store) a round reads them for all its
// records first: the states in one store read, then the Castiel sides the
// plans will need in another, instead of two point reads per record, each a
// read transaction of its own. Elsewhere (Cosmos, the Shard Manager over
// HTTP) each record is read as it is planned. Either way a record's state is
// read before its Castiel side, which the plan relies on.

// manyGetter is a shard store that reads many records in one store read
// (*shards.Local).
type manyGetter interface {
	GetMany(ctx context.Context, tenantID, entity string, keys []string) ([]shards.Record, []error)
}

// versionChecker is a shard store that tells whether listed records are
// still at their listed versions without reading them whole (*shards.Local).
type versionChecker interface {
	AreCurrent(ctx context.Context, tenantID, entity string, keys, versions []string) ([]bool, []error)
}

// preread is what a round read of one record before planning it.
type preread struct {
	state store.Item // the stored state; ID "": none
	hasIn bool       // Castiel's side was read too: rec, or err as Get returned it
	rec   shards.Record
	err   error
	// checked: the listed version of a walked record was checked after its
	// state was read; current: it is still the stored one.
	checked, current bool
}

// prereads are a round's prereads, by item; nil: none were made.
type prereads []preread

func (ps prereads) of(i int) *preread {
	if ps == nil {
		return nil
	}
	return &ps[i]
}

// preread reads the states of items and the Castiel sides their plans will
// need, when the stores can read them together.
func (r *run) preread(ctx context.Context, items []recItem) (prereads, error) {
	mr, ok := store.ManyReaderOf(r.h.stateC)
	if !ok || len(items) == 0 {
		return nil, nil
	}
	ids := make([]string, len(items))
	stateID := domain.RecordStateIDs(r.task.ID)
	for i, it := range items {
		ids[i] = stateID(it.key)
	}
	states, err := mr.ReadMany(ctx, r.task.ID, ids)
	if err != nil {
		return nil, fmt.Errorf("read the sync state of %d records: %w", len(items), err)
	}
	ps := make(prereads, len(items))
	keys := make([]string, 0, len(items))
	at := make([]int, 0, len(items)) // the item of each key
	var listed, versions []string    // walked records with no state: pushed if still current
	var listedAt []int
	for i, it := range items {
		ps[i].state = states[i]
		found := states[i].ID != ""
		// What plan reads Castiel's side for (a listed side is read again
		// only after a resolver's write, which is rare: left to plan).
		if it.in == nil && (it.ext == nil || !found || !unchangedExternally(states[i].Body, it.ext)) {
			keys, at = append(keys, it.key), append(at, i)
		}
		if it.in != nil && it.version != "" && !found {
			listed, versions, listedAt = append(listed, it.key), append(versions, it.version), append(listedAt, i)
		}
	}
	if vc, ok := r.h.shards.(versionChecker); ok && len(listed) > 0 {
		current, errs := vc.AreCurrent(ctx, r.task.TenantID, r.task.Entity, listed, versions)
		for n, i := range listedAt {
			ps[i].checked, ps[i].current = errs[n] == nil, current[n] // an error: plan reads again
		}
	}
	mg, ok := r.h.shards.(manyGetter)
	if !ok || len(keys) == 0 {
		return ps, nil
	}
	recs, errs := mg.GetMany(ctx, r.task.TenantID, r.task.Entity, keys)
	for n, i := range at {
		ps[i].hasIn, ps[i].rec, ps[i].err = true, recs[n], errs[n]
	}
	return ps, nil
}

// stateOf is the record's stored state (found false: none), read ahead or
// now.
func (p *preread) stateOf(ctx context.Context, r *run, key string) (store.Item, bool, error) {
	if p == nil {
		return r.readState(ctx, key)
	}
	return p.state, p.state.ID != "", nil
}

// internalOf is Castiel's side of the record, read ahead or now.
func (p *preread) internalOf(ctx context.Context, r *run, key string) (*domain.SideRecord, error) {
	if p == nil || !p.hasIn {
		return r.readInternal(ctx, key)
	}
	return internalSide(key, p.rec, p.err)
}
