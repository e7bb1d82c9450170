package shards_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
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
	recs := listAll(t, l, "t1", "contacts", 0)
	if len(recs) != 2 {
		t.Fatalf("within the retention the list holds %d records, want the live one and the tombstone", len(recs))
	}
	if gone, kept := recs[0], recs[1]; !gone.Deleted || gone.Hash != "" || kept.Hash != domain.ContentHash(kept.Data) {
		t.Errorf("listed tombstone %+v and live record %+v: want no hash kept for the tombstone, the data's for the record", gone, kept)
	}

	clock.Advance(2 * time.Hour)
	recs = listAll(t, l, "t1", "contacts", 0)
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

// A put returns the record a later Get (and a batch write) gives, whatever
// Go values the caller's data holds: the sync hashes one and compares it
// with the hash of the other on the next run. The content hash of its data
// is kept beside it, so a walk over the shard does not hash every record again.
func TestLocal_PutReturnsWhatGetReads(t *testing.T) {
	l := newLocal(t, openEmbedded(t))
	ctx := t.Context()
	cases := map[string]map[string]any{
		"nil":       nil,
		"empty":     {},
		"strings":   {"name": "Ada", "html": "<b>&amp;</b>", "quote": `"q"\`, "uni": "é☃\u2028", "bad": "x\xffy"},
		"numbers":   {"f": 1.5, "i": 7, "big": int64(1) << 60, "n": json.Number("12.50"), "e": json.Number("1e3"), "neg": -0.0},
		"nested":    {"a": map[string]any{"b": []any{1.0, "x", nil, true, map[string]any{"c": json.Number("3")}}}, "nilmap": map[string]any(nil), "nilslice": []any(nil)},
		"typed":     {"when": time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC), "tags": []string{"a", "b"}, "m": map[string]string{"k": "v"}},
		"bad key":   {"k\xff": "v"},
		"odd ascii": {"~!#$%'()*+,-./:;=?@[]^_`{|}": "\x7f\x01"},
	}
	for name, data := range cases {
		key := "k-" + name
		put := mustPut(t, l, "t1", "contacts", key, data)
		got, err := l.Get(ctx, "t1", "contacts", key)
		if err != nil {
			t.Fatalf("%s: get: %v", name, err)
		}
		if len(data) > 0 && !reflect.DeepEqual(put.Data, got.Data) { // no data: {} from a put, nil from a read, hashed alike
			t.Errorf("%s: put returned %#v, get reads %#v", name, put.Data, got.Data)
		}
		if domain.ContentHash(put.Data) != domain.ContentHash(got.Data) {
			t.Errorf("%s: the hashes of the put and the read record differ", name)
		}
		// The kept hash is the one a sync run would compute of what it reads.
		if want := domain.ContentHash(got.Data); put.Hash != want || got.Hash != want {
			t.Errorf("%s: kept hash %q on the put, %q on the read; want %q", name, put.Hash, got.Hash, want)
		}
		// The writer's own hash of its data is kept only where it is the
		// hash of what is stored (not for json.Numbers made float64s).
		res, err := l.WriteBatch(ctx, "t1", "contacts", []shards.Write{{Key: key + "-b", Data: data, Hash: domain.ContentHash(data)}})
		if err != nil || res[0].Err != nil {
			t.Fatalf("%s: batch: %v %v", name, err, res[0].Err)
		}
		if res[0].Record.Hash != got.Hash {
			t.Errorf("%s: batch kept hash %q, want %q", name, res[0].Record.Hash, got.Hash)
		}
		if !reflect.DeepEqual(res[0].Record.Data, put.Data) {
			t.Errorf("%s: batch returned %#v, want %#v", name, res[0].Record.Data, got.Data)
		}
		if !got.ModifiedAt.Equal(put.ModifiedAt) {
			t.Errorf("%s: modifiedAt read %v, put %v", name, got.ModifiedAt, put.ModifiedAt)
		}
	}
	if _, err := l.Put(ctx, "t1", "contacts", "nan", map[string]any{"x": math.NaN()}); !errors.Is(err, shards.ErrInvalid) {
		t.Errorf("a NaN put: %v, want ErrInvalid", err)
	}
}

// Records with neighbouring keys get neighbouring ids (the embedded store
// keeps them on the same pages), and List walks them in key order.
func TestLocal_ListsInKeyOrder(t *testing.T) {
	l := newLocal(t, openEmbedded(t))
	keys := []string{"c0000003", "c0000001", "a/b", "c0000002", "c0000010", "Z"}
	for _, k := range keys {
		mustPut(t, l, "t1", "contacts", k, map[string]any{"k": k})
	}
	var got []string
	for _, r := range listAll(t, l, "t1", "contacts", 2) {
		got = append(got, r.Key)
	}
	want := []string{"Z", "a/b", "c0000001", "c0000002", "c0000003", "c0000010"}
	if !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
}

// A sync run pushes a record it listed only if that version is still the
// stored one; every write, a delete included, makes it stale. A page's
// records are checked together as they are one by one.
func TestLocal_AreCurrentFollowsEveryWrite(t *testing.T) {
	t.Run("one read", func(t *testing.T) { testAreCurrent(t, openEmbedded(t)) })
	t.Run("a read per key", func(t *testing.T) { testAreCurrent(t, struct{ store.Container }{openEmbedded(t)}) })
}

func testAreCurrent(t *testing.T, c store.Container) {
	l := newLocal(t, c)
	ctx := t.Context()
	current := func(key, version string) bool {
		t.Helper()
		ok, errs := l.AreCurrent(ctx, "t1", "contacts", []string{key}, []string{version})
		if errs[0] != nil {
			t.Fatal(errs[0])
		}
		return ok[0]
	}
	v1 := mustPut(t, l, "t1", "contacts", "k", map[string]any{"n": 1.0}).Version
	if !current("k", v1) {
		t.Fatal("the version just written is not current")
	}
	v2 := mustPut(t, l, "t1", "contacts", "k", map[string]any{"n": 2.0}).Version
	if current("k", v1) || !current("k", v2) {
		t.Fatalf("after a second put: v1 current %v, v2 current %v; want only v2", current("k", v1), current("k", v2))
	}
	if err := l.Delete(ctx, "t1", "contacts", "k"); err != nil {
		t.Fatal(err)
	}
	if current("k", v2) {
		t.Error("the version before the delete is still current")
	}
	recs := listAll(t, l, "t1", "contacts", 0)
	if len(recs) != 1 || !recs[0].Deleted || !current("k", recs[0].Version) {
		t.Errorf("the listed tombstone %+v is not current", recs)
	}
	if current("missing", v2) || current("k", "") {
		t.Error("a missing record or an empty version is current")
	}
	cur, errs := l.AreCurrent(ctx, "t1", "contacts", []string{"missing", "k", "", "k"}, []string{v2, recs[0].Version, v2, v1})
	if want := []bool{false, true, false, false}; !reflect.DeepEqual(cur, want) {
		t.Errorf("AreCurrent of a missing key, the tombstone, an empty key and a stale version, together = %v, want %v", cur, want)
	}
	if errs[0] != nil || errs[1] != nil || !errors.Is(errs[2], shards.ErrInvalid) || errs[3] != nil {
		t.Errorf("AreCurrent errors %v, want ErrInvalid for the empty key only", errs)
	}
}

// GetMany (a sync run's read of a page's Castiel side) gives for each key
// what Get gives: the record, or the same error; in one read on the embedded
// store, one read per key on a container that cannot read many at once.
func TestLocal_GetManyAgreesWithGet(t *testing.T) {
	t.Run("one read", func(t *testing.T) { testGetMany(t, openEmbedded(t)) })
	t.Run("a read per key", func(t *testing.T) { testGetMany(t, struct{ store.Container }{openEmbedded(t)}) })
}

func testGetMany(t *testing.T, c store.Container) {
	l := newLocal(t, c)
	ctx := t.Context()
	mustPut(t, l, "t1", "contacts", "a", map[string]any{"n": 1.0})
	mustPut(t, l, "t1", "contacts", "b/with space", map[string]any{"n": 2.0})
	mustPut(t, l, "t1", "contacts", "gone", map[string]any{"n": 3.0})
	mustPut(t, l, "t1", "other", "a", map[string]any{"n": 4.0})
	if err := l.Delete(ctx, "t1", "contacts", "gone"); err != nil {
		t.Fatal(err)
	}
	keys := []string{"b/with space", "missing", "a", "gone", "", "a"}
	recs, errs := l.GetMany(ctx, "t1", "contacts", keys)
	if len(recs) != len(keys) || len(errs) != len(keys) {
		t.Fatalf("GetMany returned %d records and %d errors for %d keys", len(recs), len(errs), len(keys))
	}
	for i, key := range keys {
		want, wantErr := l.Get(ctx, "t1", "contacts", key)
		if (errs[i] == nil) != (wantErr == nil) || errors.Is(errs[i], shards.ErrNotFound) != errors.Is(wantErr, shards.ErrNotFound) ||
			errors.Is(errs[i], shards.ErrInvalid) != errors.Is(wantErr, shards.ErrInvalid) {
			t.Errorf("key %q: GetMany error %v, Get error %v", key, errs[i], wantErr)
			continue
		}
		if !reflect.DeepEqual(recs[i], want) {
			t.Errorf("key %q: GetMany gave %+v, Get gives %+v", key, recs[i], want)
		}
	}
}

// A walk lists records with their data undecoded: the same records List
// gives once decoded, the hash there without the data. A document written
// before hashes were kept comes decoded, without a hash (the walk hashes it).
func TestLocal_ListListedDecodesOnDemandWhatListGives(t *testing.T) {
	c := openEmbedded(t)
	l := newLocal(t, c)
	ctx := t.Context()
	mustPut(t, l, "t1", "contacts", "a", map[string]any{"name": "A", "n": json.Number("12.50"), "nested": map[string]any{"x": []any{1.0, "y"}}})
	mustPut(t, l, "t1", "contacts", "b", nil)
	mustPut(t, l, "t1", "contacts", "gone", map[string]any{"name": "Gone"})
	if err := l.Delete(ctx, "t1", "contacts", "gone"); err != nil {
		t.Fatal(err)
	}
	oldID := shards.LocalID("t1", "contacts", "old")
	old := fmt.Sprintf(`{"id":%q,"partition":%q,"tenantId":"t1","entity":"contacts","recordKey":"old","data":{"name":"Old"},"modifiedAt":"2024-01-02T03:04:05Z","ttl":-1}`,
		oldID, shards.LocalPartition("t1", "contacts"))
	if _, err := c.Create(ctx, shards.LocalPartition("t1", "contacts"), oldID, []byte(old)); err != nil {
		t.Fatal(err)
	}

	want := listAll(t, l, "t1", "contacts", 0)
	listed, next, err := l.ListListed(ctx, "t1", "contacts", "", 100)
	if err != nil || next != "" || len(listed) != len(want) || len(want) != 4 {
		t.Fatalf("ListListed: %d records, next %q, %v; List: %d records", len(listed), next, err, len(want))
	}
	for i := range listed {
		r := &listed[i]
		switch {
		case r.Key == "old":
			if r.Hash != "" || r.Data["name"] != "Old" {
				t.Errorf("the document without a kept hash listed as %+v, want it decoded and unhashed", r.Record)
			}
		case !r.Deleted && (r.Data != nil || r.Hash == ""):
			t.Errorf("%s listed with data %v and hash %q, want the hash alone before Decode", r.Key, r.Data, r.Hash)
		}
		if err := r.Decode(); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(r.Record, want[i]) {
			t.Errorf("decoded %+v, List gives %+v", r.Record, want[i])
		}
		if r.Hash != "" && r.Hash != domain.ContentHash(r.Data) {
			t.Errorf("%s: kept hash %q is not the hash of its data", r.Key, r.Hash)
		}
	}
}
