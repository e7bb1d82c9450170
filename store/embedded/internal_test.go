package embedded

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

func TestDocKey_PartitionsAreDisjointRangesSortedByID(t *testing.T) {
	pks := []string{"a", "ab", "b", "tenant-a", "tenant-ab", "tenant-a\x00", "\xff", "\xff\xff", string(make([]byte, 200))}
	ids := []string{"", "1", "10", "9", "a", "a\x00", "\xff"}
	type entry struct {
		key    []byte
		pk, id string
	}
	var all []entry
	for _, pk := range pks {
		for _, id := range ids {
			all = append(all, entry{docKey(pk, id), pk, id})
		}
	}
	sort.Slice(all, func(i, j int) bool { return bytes.Compare(all[i].key, all[j].key) < 0 })
	for _, pk := range pks {
		prefix := partitionPrefix(pk)
		var got []string
		for _, e := range all {
			if bytes.HasPrefix(e.key, prefix) {
				if e.pk != pk {
					t.Errorf("key of partition %q falls in the range of partition %q", e.pk, pk)
				}
				got = append(got, e.id)
			}
			if end := prefixEnd(prefix); end != nil && bytes.HasPrefix(e.key, prefix) && bytes.Compare(e.key, end) >= 0 {
				t.Errorf("key %q of partition %q is not below the range end %q", e.key, pk, end)
			}
		}
		want := slices.Clone(ids)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("partition %q scans ids %q, want %q in byte order", pk, got, want)
		}
		for _, id := range ids {
			gotPK, gotID, err := splitKey(docKey(pk, id))
			if err != nil || gotPK != pk || gotID != id {
				t.Errorf("splitKey(docKey(%q, %q)) = %q, %q, %v", pk, id, gotPK, gotID, err)
			}
		}
	}
}

func TestDecodeToken_RefusesAnythingItDidNotIssue(t *testing.T) {
	cases := []struct {
		name  string
		token string
		cross bool
		ok    bool
	}{
		{"partition token", encodeToken(continuation{After: "doc-1"}), false, true},
		{"cross-partition token", encodeToken(continuation{After: "doc-1", PK: "crm"}), true, true},
		{"cross token on a partition query", encodeToken(continuation{After: "doc-1", PK: "crm"}), false, false},
		{"partition token on a cross query", encodeToken(continuation{After: "doc-1"}), true, false},
		{"not base64", "not a token", false, false},
		{"base64 of non-JSON", "bm90IGpzb24", false, false},
		{"unknown field", "eyJhZnRlciI6IngiLCJ4IjoxfQ", false, false}, // {"after":"x","x":1}
		{"empty after", "eyJhZnRlciI6IiJ9", false, false},             // {"after":""}
		{"trailing data", "eyJhZnRlciI6IngifXt9", false, false},       // {"after":"x"}{}
	}
	for _, tc := range cases {
		_, err := decodeToken(tc.token, tc.cross)
		if (err == nil) != tc.ok {
			t.Errorf("%s: decodeToken(%q) error %v, want ok=%v", tc.name, tc.token, err, tc.ok)
		}
		if err != nil && !errors.Is(err, store.ErrInvalidQuery) {
			t.Errorf("%s: error %v is not ErrInvalidQuery", tc.name, err)
		}
	}
}

func TestSweep_DeletesExpiredDocumentsFromTheFile(t *testing.T) {
	ctx := t.Context()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	b, err := Open(filepath.Join(t.TempDir(), "store.db"), store.Containers(time.Hour),
		WithClock(func() time.Time { return time.Unix(0, now.Load()) }))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	c, _ := b.Container(domain.ContainerExecutions)
	const n = 1200 // more than one sweep chunk
	for i := range n {
		id := fmt.Sprintf("e-%d", i)
		ttl := ""
		if i%2 == 0 {
			ttl = `,"ttl":60`
		}
		if _, err := c.Create(ctx, "t", id, []byte(`{"id":"`+id+`","tenantId":"t"`+ttl+`}`)); err != nil {
			t.Fatalf("Create: %v", err)
		}
	}
	// Rewriting a short-lived document moves its expiry: it must survive the sweep.
	if _, err := c.Upsert(ctx, "t", "e-0", []byte(`{"id":"e-0","tenantId":"t","ttl":7200}`)); err != nil {
		t.Fatalf("Upsert: %v", err)
	}
	now.Add(int64(2 * time.Minute))
	deleted, err := b.sweep(ctx)
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if want := n/2 - 1; deleted != want {
		t.Errorf("sweep deleted %d documents, want %d", deleted, want)
	}
	docs, index := b.count(t, domain.ContainerExecutions)
	if docs != n/2+1 || index != n/2+1 {
		t.Errorf("after the sweep the file holds %d documents and %d expiry entries, want %d of each", docs, index, n/2+1)
	}
	if _, err := c.Read(ctx, "t", "e-0"); err != nil {
		t.Errorf("rewritten document e-0 was swept: %v", err)
	}
	if deleted, _ := b.sweep(ctx); deleted != 0 {
		t.Errorf("a second sweep deleted %d more", deleted)
	}
}

func TestSweeper_RunsInTheBackgroundAndStopsOnClose(t *testing.T) {
	ctx := t.Context()
	b, err := Open(filepath.Join(t.TempDir(), "store.db"), store.Containers(time.Hour), WithSweepInterval(50*time.Millisecond))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c, _ := b.Container(domain.ContainerExecutions)
	if _, err := c.Create(ctx, "t", "x", []byte(`{"id":"x","tenantId":"t","ttl":1}`)); err != nil {
		t.Fatalf("Create: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if docs, _ := b.count(t, domain.ContainerExecutions); docs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the background sweeper did not delete an expired document within 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	done := make(chan error)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return: the sweeper or writer did not stop")
	}
}

// count returns how many documents and expiry index entries a container holds in the file.
func (b *Backend) count(t *testing.T, name string) (docs, index int) {
	t.Helper()
	err := b.db.View(func(tx *bolt.Tx) error {
		docs = tx.Bucket([]byte(name)).Stats().KeyN
		index = tx.Bucket([]byte(expiryBucket)).Bucket([]byte(name)).Stats().KeyN
		return nil
	})
	if err != nil {
		t.Fatalf("count %s: %v", name, err)
	}
	return docs, index
}

// The fast path of prepareBody must store exactly what the general path
// stores, for every body it accepts.
func FuzzPrepareCommonBodyAgreesWithTheGeneralPath(f *testing.F) {
	for _, seed := range []string{
		`{"id":"a","tenantId":"t"}`,
		`{"id":"a","tenantId":"t","ttl":60}`,
		`{"id":"a","tenantId":"t","ttl":null}`,
		`{"id":"a","tenantId":"t","ttl":-1} `,
		`{"id":"a","tenantId":"t","_etag":"x"}`,
		` { "tenantId" : "t" , "n":[1,{"id":"b"}], "s":"q\"}", "id":"a" } `,
		`{"id":"a","id":"b","tenantId":"t"}`,
		`{"i\u0064":"a","tenantId":"t"}`,
		`{"id":"\u0061","tenantId":"t"}`,
		`{"id":"a","tenantId":"t","x":{"y":[true,false,null,1.5e3]}}`,
		`{"id":"a","tenantId":"u"}`,
		`[{"id":"a"}]`,
		`null`,
		`{"id":"a","tenantId":"t"`,
	} {
		f.Add([]byte(seed))
	}
	plain := &container{spec: store.ContainerSpec{Name: "plain", PartitionKey: "tenantId"}}
	ttl := &container{spec: store.ContainerSpec{Name: "ttl", PartitionKey: "tenantId", TTL: time.Hour}, ttlSeconds: 3600}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, c := range []*container{plain, ttl} {
			fast, fastTTL, ok := c.prepareCommonBody("t", "a", body)
			if !ok {
				continue
			}
			slow, slowTTL, err := c.prepareAnyBody("t", "a", body)
			if err != nil {
				t.Fatalf("%s: the fast path accepted %q, the general path refuses it: %v", c.spec.Name, body, err)
			}
			if !bytes.Equal(fast, slow) || fastTTL != slowTTL {
				t.Fatalf("%s: %q stored as %q (ttl %d) by the fast path, %q (ttl %d) by the general path", c.spec.Name, body, fast, fastTTL, slow, slowTTL)
			}
		}
	})
}

// Batches of ordered ids written in order (a sync page of new records) go in
// at one place each, and bbolt leaves the pages behind them nearly full; a
// batch whose ids fall among stored ones gets bbolt's default half-full pages.
func TestBatches_InOrderAppendsLeaveFullPages(t *testing.T) {
	ctx := t.Context()
	b, err := Open(filepath.Join(t.TempDir(), "store.db"), store.Containers(time.Hour))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	c, _ := b.Container(store.SyncStateContainer)
	mb := c.(store.MultiBatcher)
	body := func(id string) []byte {
		return []byte(`{"id":"` + id + `","syncTaskId":"task","pad":"` + string(bytes.Repeat([]byte("x"), 200)) + `"}`)
	}
	for page := range 20 {
		var batches [][]store.Op
		for k := range 10 {
			var ops []store.Op
			for n := range 100 {
				id := fmt.Sprintf("r%06d", page*1000+k*100+n)
				ops = append(ops, store.UpsertOp(id, body(id)))
			}
			batches = append(batches, ops)
		}
		if _, errs := mb.Batches(ctx, "task", batches); errors.Join(errs...) != nil {
			t.Fatalf("Batches: %v", errors.Join(errs...))
		}
	}
	var fill float64
	if err := b.db.View(func(tx *bolt.Tx) error {
		s := tx.Bucket([]byte(store.SyncStateContainer)).Stats()
		fill = float64(s.LeafInuse) / float64(s.LeafAlloc)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fill < 0.8 {
		t.Errorf("leaf pages %.0f %% used after in-order appends, want at least 80 %%", 100*fill)
	}

	if err := b.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket([]byte(store.SyncStateContainer)).Cursor()
		among := [][]byte{docKey("task", "r000050"), docKey("task", "r019999x")}
		after := [][]byte{docKey("task", "r999999"), docKey("task", "r500000")}
		if inOnePlace(cur, among) {
			t.Error("keys with stored keys between them taken for one place")
		}
		if !inOnePlace(cur, after) {
			t.Error("keys past every stored key not taken for one place")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
