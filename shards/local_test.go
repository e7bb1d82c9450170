package shards_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

// fakeClock is a settable clock safe for concurrent reads.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestLocal_TombstonesExpireAfterTheRetentionAndAreReclaimed(t *testing.T) {
	c := openEmbedded(t)
	clock := &fakeClock{now: time.Date(2024, 3, 1, 12, 0, 0, 0, time.UTC)}
	l := newLocal(t, c, shards.WithTombstoneRetention(24*time.Hour), shards.WithClock(clock.Now))
	ctx := t.Context()
	mustPut(t, l, "t1", "contacts", "gone", map[string]any{"a": 1.0})
	mustPut(t, l, "t1", "contacts", "kept", map[string]any{"a": 2.0})
	if err := l.Delete(ctx, "t1", "contacts", "gone"); err != nil {
		t.Fatal(err)
	}

	clock.Advance(23 * time.Hour)
	if recs := listAll(t, l, "t1", "contacts", 0); len(recs) != 2 {
		t.Fatalf("within the retention the list holds %d records, want the live one and the tombstone", len(recs))
	}

	clock.Advance(2 * time.Hour)
	recs := listAll(t, l, "t1", "contacts", 0)
	if len(recs) != 1 || recs[0].Key != "kept" {
		t.Fatalf("after the retention the list holds %+v, want only the live record", recs)
	}
	_, err := c.Read(ctx, shards.LocalPartition("t1", "contacts"), shards.LocalID("t1", "contacts", "gone"))
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the expired tombstone is still stored (read: %v)", err)
	}
}

func TestLocal_RecordTimesComeFromItsClock(t *testing.T) {
	clock := &fakeClock{now: time.Date(2024, 3, 1, 12, 0, 0, 0, time.FixedZone("x", 7200))}
	l := newLocal(t, openEmbedded(t), shards.WithClock(clock.Now))
	put := mustPut(t, l, "t1", "contacts", "k", nil)
	if !put.ModifiedAt.Equal(clock.Now()) || put.ModifiedAt.Location() != time.UTC {
		t.Errorf("modifiedAt = %v, want the clock's time in UTC", put.ModifiedAt)
	}
	if put.Data == nil {
		t.Error("a record put with nil data should read back as an empty object")
	}
}

func TestLocal_IDsAreUniqueAcrossPartitions(t *testing.T) {
	ids := map[string]string{}
	for _, ref := range [][3]string{{"t1", "contacts", "k"}, {"t2", "contacts", "k"}, {"t1", "deals", "k"}, {"t1", "contacts", "k2"}, {"t1", "contacts/k", ""}} {
		id := shards.LocalID(ref[0], ref[1], ref[2])
		if !domain.IsValidID(id) {
			t.Errorf("id %q of %v is not a valid document id", id, ref)
		}
		if prev, dup := ids[id]; dup {
			t.Errorf("%v and %s share id %s", ref, prev, id)
		}
		ids[id] = ref[0] + "/" + ref[1] + "/" + ref[2]
	}
}

func TestLocal_PutDoesNotAliasTheCallersData(t *testing.T) {
	l := newLocal(t, openEmbedded(t))
	data := map[string]any{"n": 1, "nested": map[string]any{"x": "y"}}
	put := mustPut(t, l, "t1", "contacts", "k", data)
	data["nested"].(map[string]any)["x"] = "changed"
	if put.Data["nested"].(map[string]any)["x"] != "y" {
		t.Error("the returned record shares maps with the caller's data")
	}
	if put.Data["n"] != 1.0 {
		t.Errorf("returned data holds %T, want the float64 a later Get returns", put.Data["n"])
	}
}

func TestLocal_SideFeedsClassify(t *testing.T) {
	l := newLocal(t, openEmbedded(t))
	ctx := t.Context()
	put := mustPut(t, l, "t1", "contacts", "k", map[string]any{"name": "Ada"})
	state := domain.NewRecordState("t1", "task", "k")
	state.Agree(put.Side(), put.Side(), put.ModifiedAt)

	got, err := l.Get(ctx, "t1", "contacts", "k")
	if err != nil {
		t.Fatal(err)
	}
	if d := domain.Classify(domain.DirectionBidirectional, state, nil, got.Side()); d.Action != domain.ActionUnchanged {
		t.Errorf("an untouched record classifies as %s", d.Action)
	}
	if err := l.Delete(ctx, "t1", "contacts", "k"); err != nil {
		t.Fatal(err)
	}
	recs := listAll(t, l, "t1", "contacts", 0)
	if d := domain.Classify(domain.DirectionBidirectional, state, nil, recs[0].Side()); d.Action != domain.ActionPushDelete {
		t.Errorf("a tombstone classifies as %s, want push_delete", d.Action)
	}
}

func TestNewLocal_RefusesNilContainer(t *testing.T) {
	if _, err := shards.NewLocal(nil); err == nil {
		t.Fatal("NewLocal(nil) succeeded")
	}
	if _, err := shards.NewHandler(nil); err == nil {
		t.Fatal("NewHandler(nil) succeeded")
	}
}
