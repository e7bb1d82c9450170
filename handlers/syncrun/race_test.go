package syncrun_test

import (
	"context"
	"testing"
	"time"

	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// The conflict resolver writes both sides of a record, and its state, while
// a run walks the shard: the Castiel version the walk listed before that is
// stale, and must not be pushed over the resolution.
func TestRun_AStateAgreedAfterTheShardWasListedIsNotPushedOver(t *testing.T) {
	for _, skew := range []time.Duration{0, -time.Minute} {
		name := "same clock"
		if skew != 0 {
			name = "resolver's clock a minute behind"
		}
		t.Run(name, func(t *testing.T) { testResolvedAfterListing(t, skew) })
	}
}

// testResolvedAfterListing: the resolution stamps the state with its own clock,
// skew away from the run's.
func testResolvedAfterListing(t *testing.T, skew time.Duration) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	recs := hs.srv.SeedN(entity, 3)
	task := hs.task("st-race", domain.DirectionBidirectional, domain.ModeIncremental)
	mustStatus(t, hs.run("run-1", "st-race"), domain.ExecCompleted)
	key := recs[1].ID
	c, err := hs.db.Container(store.SyncStateContainer)
	if err != nil {
		t.Fatal(err)
	}
	states := store.NewRepository[domain.RecordState](c)

	// A Castiel edit the next run would push...
	before, _ := hs.shardRecord(key)
	hs.putInternal(key, withName(before, "Edited in Castiel"))
	// ...but once the walk has listed it, a resolution lands on both sides.
	var resolved map[string]any
	once := false
	hs.shards.afterList.Store(ptr(func() {
		if once {
			return
		}
		once = true
		ext, _ := hs.srv.Edit(entity, key, func(r *fakeapi.Record) { r.Name = "Resolved" })
		resolved = mapped(ext)
		if _, err := hs.shards.Local.Put(context.Background(), tenant, entity, key, resolved); err != nil {
			t.Error(err)
		}
		_, _, err := states.Update(context.Background(), task.ID, domain.RecordStateID(task.ID, key), func(s *domain.RecordState) error {
			s.Agree(&domain.SideRecord{Data: resolved, ModifiedAt: ext.UpdatedAt}, &domain.SideRecord{Data: resolved}, time.Now().Add(skew).UTC())
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}))
	writes := hs.srv.Writes(entity, key)

	mustStatus(t, hs.run("run-2", "st-race"), domain.ExecCompleted)
	mustStatus(t, hs.run("run-3", "st-race"), domain.ExecCompleted)

	if !once {
		t.Fatal("the walk never listed the shard")
	}
	if n := hs.srv.Writes(entity, key) - writes; n != 0 {
		t.Errorf("the runs wrote %s to the external API %d times after its resolution, want none", key, n)
	}
	if ext, _ := hs.srv.Get(entity, key); ext.Name != "Resolved" {
		t.Errorf("the external record is %q, want the resolution kept", ext.Name)
	}
	if in, _ := hs.shardRecord(key); domain.ContentHash(in) != domain.ContentHash(resolved) {
		t.Errorf("the Castiel record is %v, want the resolution %v", in, resolved)
	}
}

// A new Castiel record edited after the walk listed it is pushed as edited:
// the listed version is pushed only while it is still the stored one.
func TestRun_ANewRecordEditedAfterTheListingIsPushedAsEdited(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	hs.task("st-new", domain.DirectionPush, domain.ModeIncremental)
	for _, key := range []string{"n-1", "n-2", "n-3"} {
		hs.putInternal(key, internalRecord("Listed "+key, key+"@example.com"))
	}
	once := false
	hs.shards.afterList.Store(ptr(func() {
		if !once {
			once = true
			hs.putInternal("n-2", internalRecord("Edited after the listing", "n-2@example.com"))
		}
	}))

	e := hs.run("run-1", "st-new")
	mustStatus(t, e, domain.ExecCompleted)
	if !once {
		t.Fatal("the walk never listed the shard")
	}
	if s := stats(e); s.Added != 3 {
		t.Errorf("stats %+v, want 3 added", s)
	}
	for key, want := range map[string]string{"n-1": "Listed n-1", "n-2": "Edited after the listing", "n-3": "Listed n-3"} {
		if r, ok := hs.srv.Get(entity, key); !ok || r.Name != want || hs.srv.Writes(entity, key) != 1 {
			t.Errorf("the API holds %s as %q after %d writes, want %q written once", key, r.Name, hs.srv.Writes(entity, key), want)
		}
	}
}
