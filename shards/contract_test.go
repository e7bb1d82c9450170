package shards_test

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmostest"
	"github.com/castiel/integration-manager/store/embedded"
)

// shardSpec is the container the lead declares in store.Containers; declared
// here too so the tests do not depend on the full list.
var shardSpec = store.ContainerSpec{Name: store.LocalShardsContainer, PartitionKey: "partition"}

func openEmbedded(t *testing.T) store.Container {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	b, err := embedded.Open(path, []store.ContainerSpec{shardSpec})
	if err != nil {
		t.Fatalf("open embedded store at %s: %v", path, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c, err := b.Container(shardSpec.Name)
	if err != nil {
		t.Fatalf("container %s: %v", shardSpec.Name, err)
	}
	return c
}

func newLocal(t *testing.T, c store.Container, opts ...shards.LocalOption) *shards.Local {
	t.Helper()
	l, err := shards.NewLocal(c, opts...)
	if err != nil {
		t.Fatalf("NewLocal: %v", err)
	}
	return l
}

// serve runs the Shard Manager contract over s on an httptest server.
func serve(t *testing.T, s shards.Store) *httptest.Server {
	t.Helper()
	h, err := shards.NewHandler(s)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func newHTTP(t *testing.T, url string, opts ...shards.HTTPOption) *shards.HTTP {
	t.Helper()
	c, err := shards.NewHTTP(url, nil, opts...)
	if err != nil {
		t.Fatalf("NewHTTP: %v", err)
	}
	return c
}

func TestContract_LocalOnEmbedded(t *testing.T) {
	runContract(t, func(t *testing.T) shards.Store { return newLocal(t, openEmbedded(t)) })
}

func TestContract_LocalOnCosmosEmulator(t *testing.T) {
	em := cosmostest.Start(t)
	b := em.Open(t, []store.ContainerSpec{shardSpec})
	c, err := b.Container(shardSpec.Name)
	if err != nil {
		t.Fatal(err)
	}
	l := newLocal(t, c)
	run := 0
	// One emulator for every subtest; each subtest gets its own tenant.
	runContractShared(t, func(t *testing.T) (shards.Store, string) {
		run++
		return l, fmt.Sprintf("tenant-%d", run)
	})
}

func TestContract_HTTPClientAgainstHandler(t *testing.T) {
	runContract(t, func(t *testing.T) shards.Store {
		srv := serve(t, newLocal(t, openEmbedded(t)))
		return newHTTP(t, srv.URL+"/", shards.WithRetries(1, 0, 0))
	})
}

func runContract(t *testing.T, newStore func(t *testing.T) shards.Store) {
	runContractShared(t, func(t *testing.T) (shards.Store, string) { return newStore(t), "tenant-1" })
}

// runContractShared is the behaviour every Store implementation shares.
// newStore returns a store and a tenant no other subtest uses.
func runContractShared(t *testing.T, newStore func(t *testing.T) (shards.Store, string)) {
	t.Run("PutThenGetReturnsTheRecord", func(t *testing.T) {
		s, tenant := newStore(t)
		ctx := t.Context()
		data := map[string]any{"name": "Ada", "score": 12.5, "address": map[string]any{"city": "Oslo"}, "tags": []any{"a", "b"}, "n": nil}
		put, err := s.Put(ctx, tenant, "contacts", "c1", data)
		if err != nil {
			t.Fatalf("Put: %v", err)
		}
		if put.Key != "c1" || put.Version == "" || put.ModifiedAt.IsZero() || put.Deleted {
			t.Errorf("Put returned %+v, want key c1, a version and a time", put)
		}
		got, err := s.Get(ctx, tenant, "contacts", "c1")
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		if !reflect.DeepEqual(got.Data, data) || got.Version != put.Version || !got.ModifiedAt.Equal(put.ModifiedAt) {
			t.Errorf("Get = %+v, want the record just put %+v", got, put)
		}
		if !reflect.DeepEqual(put.Data, data) {
			t.Errorf("Put returned data %v, want %v", put.Data, data)
		}
	})

	t.Run("GetOfAnAbsentRecordIsNotFound", func(t *testing.T) {
		s, tenant := newStore(t)
		if _, err := s.Get(t.Context(), tenant, "contacts", "nobody"); !errors.Is(err, shards.ErrNotFound) {
			t.Fatalf("Get of an absent record: %v, want ErrNotFound", err)
		}
		if err := s.Delete(t.Context(), tenant, "contacts", "nobody"); !errors.Is(err, shards.ErrNotFound) {
			t.Fatalf("Delete of an absent record: %v, want ErrNotFound", err)
		}
	})

	t.Run("PutOverwritesAndChangesTheVersion", func(t *testing.T) {
		s, tenant := newStore(t)
		ctx := t.Context()
		first := mustPut(t, s, tenant, "contacts", "c1", map[string]any{"name": "Ada", "old": true})
		second := mustPut(t, s, tenant, "contacts", "c1", map[string]any{"name": "Ada L"})
		if second.Version == first.Version {
			t.Errorf("version %q did not change on overwrite", second.Version)
		}
		got, err := s.Get(ctx, tenant, "contacts", "c1")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Data, map[string]any{"name": "Ada L"}) {
			t.Errorf("after overwrite: %v, want only the new data", got.Data)
		}
	})

	t.Run("DeleteLeavesATombstoneInTheList", func(t *testing.T) {
		s, tenant := newStore(t)
		ctx := t.Context()
		mustPut(t, s, tenant, "contacts", "gone", map[string]any{"name": "x"})
		mustPut(t, s, tenant, "contacts", "kept", map[string]any{"name": "y"})
		if err := s.Delete(ctx, tenant, "contacts", "gone"); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if _, err := s.Get(ctx, tenant, "contacts", "gone"); !errors.Is(err, shards.ErrNotFound) {
			t.Errorf("Get after Delete: %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, tenant, "contacts", "gone"); !errors.Is(err, shards.ErrNotFound) {
			t.Errorf("second Delete: %v, want ErrNotFound", err)
		}
		all := listAll(t, s, tenant, "contacts", 0)
		byKey := map[string]shards.Record{}
		for _, r := range all {
			byKey[r.Key] = r
		}
		if len(all) != 2 || !byKey["gone"].Deleted || byKey["gone"].Data != nil || byKey["kept"].Deleted {
			t.Errorf("list after delete = %+v, want the live record and a tombstone without data", all)
		}
		if byKey["gone"].ModifiedAt.IsZero() {
			t.Error("the tombstone has no deletion time")
		}

		back := mustPut(t, s, tenant, "contacts", "gone", map[string]any{"name": "back"})
		if got, err := s.Get(ctx, tenant, "contacts", "gone"); err != nil || got.Version != back.Version {
			t.Errorf("a record put after its deletion is not back: %+v, %v", got, err)
		}
	})

	t.Run("KeysOfAnyShapeAreDistinctRecords", func(t *testing.T) {
		s, tenant := newStore(t)
		ctx := t.Context()
		keys := []string{"a/b", "a%2Fb", "a b", "?x=1#frag", "名前", "..", "a\\b", "UPPER", "upper"}
		for i, k := range keys {
			mustPut(t, s, tenant, "contacts", k, map[string]any{"i": float64(i)})
		}
		for i, k := range keys {
			got, err := s.Get(ctx, tenant, "contacts", k)
			if err != nil {
				t.Fatalf("Get %q: %v", k, err)
			}
			if got.Key != k || got.Data["i"] != float64(i) {
				t.Errorf("Get %q = %+v, want record %d", k, got, i)
			}
		}
		if n := len(listAll(t, s, tenant, "contacts", 4)); n != len(keys) {
			t.Errorf("listed %d records, want %d", n, len(keys))
		}
	})

	t.Run("TenantsAndEntitiesAreIsolated", func(t *testing.T) {
		s, tenant := newStore(t)
		ctx := t.Context()
		other := tenant + "-other"
		mustPut(t, s, tenant, "contacts", "k", map[string]any{"who": "mine"})
		mustPut(t, s, other, "contacts", "k", map[string]any{"who": "theirs"})
		mustPut(t, s, tenant, "deals", "k", map[string]any{"who": "deal"})
		got, err := s.Get(ctx, tenant, "contacts", "k")
		if err != nil || got.Data["who"] != "mine" {
			t.Fatalf("Get = %+v, %v; want this tenant's contact", got, err)
		}
		if err := s.Delete(ctx, other, "contacts", "k"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, tenant, "contacts", "k"); err != nil {
			t.Errorf("another tenant's delete removed this tenant's record: %v", err)
		}
		for _, r := range listAll(t, s, tenant, "contacts", 0) {
			if r.Data["who"] != "mine" {
				t.Errorf("list of this tenant's contacts holds %+v", r)
			}
		}
	})

	t.Run("ListPagesAreStableCompleteAndResumable", func(t *testing.T) {
		s, tenant := newStore(t)
		ctx := t.Context()
		want := map[string]bool{}
		for i := range 23 {
			k := fmt.Sprintf("rec-%02d", i)
			want[k] = true
			mustPut(t, s, tenant, "contacts", k, map[string]any{"i": float64(i)})
		}
		first := keysOf(listAll(t, s, tenant, "contacts", 5))
		second := keysOf(listAll(t, s, tenant, "contacts", 5))
		if !slices.Equal(first, second) {
			t.Errorf("two listings differ:\n%v\n%v", first, second)
		}
		seen := map[string]bool{}
		for _, k := range first {
			if seen[k] {
				t.Errorf("%s listed twice", k)
			}
			seen[k] = true
		}
		if !reflect.DeepEqual(seen, want) {
			t.Errorf("listed %d records, want %d", len(seen), len(want))
		}

		// Resume from the token of page 2 later on, as a restarted run would.
		p1, tok1, err := s.List(ctx, tenant, "contacts", "", 5)
		if err != nil || len(p1) != 5 || tok1 == "" {
			t.Fatalf("page 1: %d records, token %q, %v", len(p1), tok1, err)
		}
		p2, tok2, err := s.List(ctx, tenant, "contacts", tok1, 5)
		if err != nil || tok2 == "" {
			t.Fatalf("page 2: %v", err)
		}
		rest := keysOf(p1)
		rest = append(rest, keysOf(p2)...)
		for tok := tok2; tok != ""; {
			var page []shards.Record
			page, tok, err = s.List(ctx, tenant, "contacts", tok, 5)
			if err != nil {
				t.Fatal(err)
			}
			rest = append(rest, keysOf(page)...)
		}
		if !slices.Equal(rest, first) {
			t.Errorf("resumed listing differs from one pass:\n%v\n%v", rest, first)
		}

		if recs, tok, err := s.List(ctx, tenant, "empty", "", 10); err != nil || len(recs) != 0 || tok != "" || recs == nil {
			t.Errorf("empty entity: %v %q %v, want an empty non-nil page", recs, tok, err)
		}
	})

	t.Run("WriteBatchReportsEachWriteApart", func(t *testing.T) {
		s, tenant := newStore(t)
		ctx := t.Context()
		old := mustPut(t, s, tenant, "contacts", "a", map[string]any{"name": "old"})
		mustPut(t, s, tenant, "contacts", "b", map[string]any{"name": "doomed"})
		writes := []shards.Write{
			{Key: "a", Data: map[string]any{"name": "new", "n": 3}},
			{Key: "b", Delete: true},
			{Key: "nobody", Delete: true},
			{Key: "bad\nkey", Data: map[string]any{}},
		}
		// More than one store batch (store.MaxBatchOps) of new records.
		for i := range 150 {
			writes = append(writes, shards.Write{Key: fmt.Sprintf("new-%03d", i), Data: map[string]any{"i": i}})
		}
		res, err := s.WriteBatch(ctx, tenant, "contacts", writes)
		if err != nil || len(res) != len(writes) {
			t.Fatalf("WriteBatch: %d results, %v; want one per write", len(res), err)
		}
		if r := res[0]; r.Err != nil || r.Record.Key != "a" || r.Record.Version == "" || r.Record.Version == old.Version ||
			!reflect.DeepEqual(r.Record.Data, map[string]any{"name": "new", "n": float64(3)}) {
			t.Errorf("overwrite: %+v, want the new record with a new version and its data as stored", r)
		}
		if res[1].Err != nil {
			t.Errorf("delete of a live record: %v", res[1].Err)
		}
		if !errors.Is(res[2].Err, shards.ErrNotFound) {
			t.Errorf("delete of an absent record: %v, want ErrNotFound", res[2].Err)
		}
		if !errors.Is(res[3].Err, shards.ErrInvalid) {
			t.Errorf("put with a control character in its key: %v, want ErrInvalid", res[3].Err)
		}
		for _, r := range res[4:] {
			if r.Err != nil {
				t.Fatalf("put of %s: %v", r.Record.Key, r.Err)
			}
		}
		got, err := s.Get(ctx, tenant, "contacts", "a")
		if err != nil || got.Version != res[0].Record.Version || got.Data["name"] != "new" {
			t.Errorf("Get a = %+v, %v; want the record the batch wrote", got, err)
		}
		if _, err := s.Get(ctx, tenant, "contacts", "b"); !errors.Is(err, shards.ErrNotFound) {
			t.Errorf("Get of the record the batch deleted: %v, want ErrNotFound", err)
		}
		if got, err := s.Get(ctx, tenant, "contacts", "new-149"); err != nil || got.Data["i"] != float64(149) || got.Version != res[len(res)-1].Record.Version {
			t.Errorf("Get new-149 = %+v, %v; want the last record of the batch", got, err)
		}
		if n := len(listAll(t, s, tenant, "contacts", 0)); n != 152 {
			t.Errorf("the entity lists %d records (tombstone included), want 152", n)
		}
		if _, err := s.WriteBatch(ctx, tenant, "contacts", []shards.Write{{Key: "x", Data: map[string]any{}}, {Key: "x", Delete: true}}); !errors.Is(err, shards.ErrInvalid) {
			t.Errorf("a batch writing one key twice: %v, want ErrInvalid", err)
		}
		if _, err := s.WriteBatch(ctx, "a/b", "contacts", writes[:1]); !errors.Is(err, shards.ErrInvalid) {
			t.Errorf("a batch for a bad tenant: %v, want ErrInvalid", err)
		}
	})

	t.Run("RefusesBadRequests", func(t *testing.T) {
		s, tenant := newStore(t)
		ctx := t.Context()
		cases := []struct {
			name                string
			tenant, entity, key string
		}{
			{"bad tenant", "a/b", "contacts", "k"},
			{"empty tenant", "", "contacts", "k"},
			{"bad entity", tenant, "con tacts", "k"},
			{"empty key", tenant, "contacts", ""},
			{"control character in key", tenant, "contacts", "a\nb"},
			{"invalid UTF-8 key", tenant, "contacts", "\xff"},
		}
		for _, tc := range cases {
			if _, err := s.Get(ctx, tc.tenant, tc.entity, tc.key); !errors.Is(err, shards.ErrInvalid) {
				t.Errorf("%s: Get: %v, want ErrInvalid", tc.name, err)
			}
			if _, err := s.Put(ctx, tc.tenant, tc.entity, tc.key, map[string]any{}); !errors.Is(err, shards.ErrInvalid) {
				t.Errorf("%s: Put: %v, want ErrInvalid", tc.name, err)
			}
		}
		if _, _, err := s.List(ctx, tenant, "contacts", "not-a-token!", 5); !errors.Is(err, shards.ErrInvalid) {
			t.Errorf("List with a forged token: %v, want ErrInvalid", err)
		}
		big := map[string]any{"blob": string(make([]byte, shards.MaxRecordBytes))}
		if _, err := s.Put(ctx, tenant, "contacts", "big", big); !errors.Is(err, shards.ErrInvalid) {
			t.Errorf("Put of a record over the size limit: %v, want ErrInvalid", err)
		}
	})
}

func mustPut(t *testing.T, s shards.Store, tenant, entity, key string, data map[string]any) shards.Record {
	t.Helper()
	r, err := s.Put(t.Context(), tenant, entity, key, data)
	if err != nil {
		t.Fatalf("Put %s/%s: %v", entity, key, err)
	}
	return r
}

func listAll(t *testing.T, s shards.Store, tenant, entity string, limit int) []shards.Record {
	t.Helper()
	var all []shards.Record
	tok := ""
	for range 1000 {
		page, next, err := s.List(t.Context(), tenant, entity, tok, limit)
		if err != nil {
			t.Fatalf("List %s: %v", entity, err)
		}
		all = append(all, page...)
		if next == "" {
			return all
		}
		tok = next
	}
	t.Fatal("List never ended")
	return nil
}

func keysOf(rs []shards.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.Key
	}
	return out
}
