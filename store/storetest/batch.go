package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// batchApplies: creates, upserts (new and existing), a conditional replace and
// a conditional delete in one batch all land, with the ETags reads see.
func (s *suite) batchApplies(t *testing.T) {
	ctx := t.Context()
	c, b := s.containerOf(t, domain.ContainerWebhooks)
	const pk = "tenant-a"
	replaceTag := mustCreate(t, c, doc{ID: "to-replace", TenantID: pk, Name: "old"})
	deleteTag := mustCreate(t, c, doc{ID: "to-delete", TenantID: pk})
	mustCreate(t, c, doc{ID: "to-overwrite", TenantID: pk, Name: "old", Counter: 1})
	mustCreate(t, c, doc{ID: "neighbour", TenantID: pk, Name: "untouched"})

	created := doc{ID: "created", TenantID: pk, Name: "new", Counter: 7}.json(t)
	upserted := doc{ID: "upserted", TenantID: pk, Name: "upserted"}.json(t)
	overwritten := doc{ID: "to-overwrite", TenantID: pk, Name: "overwritten"}.json(t)
	replaced := doc{ID: "to-replace", TenantID: pk, Name: "replaced", Score: 1.5}.json(t)
	ops := []store.Op{
		store.CreateOp("created", created),
		store.UpsertOp("upserted", upserted),
		store.UpsertOp("to-overwrite", overwritten),
		store.ReplaceOp("to-replace", replaced, replaceTag),
		store.DeleteOp("to-delete", deleteTag),
	}
	etags, err := c.Batch(ctx, pk, ops)
	if err != nil {
		t.Fatalf("Batch: %v", err)
	}
	if len(etags) != len(ops) {
		t.Fatalf("Batch returned %d ETags for %d operations", len(etags), len(ops))
	}
	for i, body := range map[int][]byte{0: created, 1: upserted, 2: overwritten, 3: replaced} {
		it := mustRead(t, c, pk, ops[i].ID)
		assertBody(t, fmt.Sprintf("after the batch's %s of %s", ops[i].Kind, ops[i].ID), body, it.Body)
		if etags[i] == "" || it.ETag != etags[i] {
			t.Errorf("%s %s: Batch returned ETag %q, Read sees %q", ops[i].Kind, ops[i].ID, etags[i], it.ETag)
		}
	}
	if etags[3] == replaceTag {
		t.Errorf("the replaced document kept its ETag %q", replaceTag)
	}
	if _, err := c.Read(ctx, pk, "to-delete"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Read of the document the batch deleted: %v, want ErrNotFound", err)
	}
	if d := decodeDoc(t, mustRead(t, c, pk, "neighbour").Body); d.Name != "untouched" {
		t.Errorf("a document outside the batch changed: %+v", d)
	}

	// Batches of the full size pass, and TTL containers stamp retention as
	// single writes do.
	execs := mustContainer(t, b, domain.ContainerExecutions)
	full := make([]store.Op, store.MaxBatchOps)
	for i := range full {
		id := fmt.Sprintf("exec-%03d", i)
		full[i] = store.CreateOp(id, doc{ID: id, TenantID: pk, Counter: i}.json(t))
	}
	if _, err := execs.Batch(ctx, pk, full); err != nil {
		t.Fatalf("Batch of %d creates: %v", store.MaxBatchOps, err)
	}
	if got := len(queryAll(t, execs, store.Query{PartitionKey: pk})); got != store.MaxBatchOps {
		t.Errorf("after a batch of %d creates the partition holds %d documents", store.MaxBatchOps, got)
	}
	var m map[string]any
	if err := json.Unmarshal(mustRead(t, execs, pk, "exec-042").Body, &m); err != nil || m["ttl"] != specTTL.Seconds() {
		t.Errorf("a document created by a batch in %s carries ttl %v (%v), want %v", domain.ContainerExecutions, m["ttl"], err, specTTL.Seconds())
	}
}

// batchRefusal: a refused operation is reported as a *BatchError naming it,
// with the store sentinel of the refusal.
func (s *suite) batchRefusal(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const pk = "tenant-a"
	mustCreate(t, c, doc{ID: "exists", TenantID: pk})
	cases := []struct {
		name string
		op   store.Op
		want error
	}{
		{"create of an existing id", store.CreateOp("exists", doc{ID: "exists", TenantID: pk, Name: "intruder"}.json(t)), store.ErrConflict},
		{"replace of a missing id", store.ReplaceOp("missing", doc{ID: "missing", TenantID: pk}.json(t), ""), store.ErrNotFound},
		{"delete of a missing id", store.DeleteOp("missing", ""), store.ErrNotFound},
	}
	if s.caps.EnforcesIfMatch {
		cases = append(cases, struct {
			name string
			op   store.Op
			want error
		}{"replace with a stale ETag", store.ReplaceOp("exists", doc{ID: "exists", TenantID: pk, Name: "stale"}.json(t), `"stale"`), store.ErrPreconditionFailed})
	}
	for i, tc := range cases {
		first := fmt.Sprintf("first-%d", i)
		_, err := c.Batch(ctx, pk, []store.Op{store.UpsertOp(first, doc{ID: first, TenantID: pk}.json(t)), tc.op})
		var be *store.BatchError
		if !errors.As(err, &be) || !errors.Is(err, tc.want) {
			t.Errorf("%s: Batch returned %v, want a *store.BatchError wrapping %v", tc.name, err, tc.want)
			continue
		}
		if be.Index != 1 || be.ID != tc.op.ID || be.Op != tc.op.Kind {
			t.Errorf("%s: the error names operation %d (%s %s), want 1 (%s %s)", tc.name, be.Index, be.Op, be.ID, tc.op.Kind, tc.op.ID)
		}
	}
	if d := decodeDoc(t, mustRead(t, c, pk, "exists").Body); d.Name != "" {
		t.Errorf("a refused operation changed its document: %+v", d)
	}
}

// batchAtomic: when one operation is refused, the others are not applied.
func (s *suite) batchAtomic(t *testing.T) {
	if !s.caps.AtomicBatch {
		t.Skip(s.caps.NoAtomicBatchReason)
	}
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const pk = "tenant-a"
	origTag := mustCreate(t, c, doc{ID: "exists", TenantID: pk, Name: "original"})
	gone := mustCreate(t, c, doc{ID: "kept", TenantID: pk, Name: "kept"})
	_, err := c.Batch(ctx, pk, []store.Op{
		store.CreateOp("new-1", doc{ID: "new-1", TenantID: pk}.json(t)),
		store.UpsertOp("exists", doc{ID: "exists", TenantID: pk, Name: "overwritten"}.json(t)),
		store.DeleteOp("kept", gone),
		store.CreateOp("exists-2", doc{ID: "exists-2", TenantID: pk}.json(t)),
		store.ReplaceOp("missing", doc{ID: "missing", TenantID: pk}.json(t), ""),
	})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Batch with a replace of a missing document: %v, want ErrNotFound", err)
	}
	for _, id := range []string{"new-1", "exists-2", "missing"} {
		if _, err := c.Read(ctx, pk, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s was written by a refused batch (Read: %v)", id, err)
		}
	}
	it := mustRead(t, c, pk, "exists")
	if d := decodeDoc(t, it.Body); d.Name != "original" || it.ETag != origTag {
		t.Errorf("a refused batch overwrote a document: %+v (ETag %q, was %q)", d, it.ETag, origTag)
	}
	mustRead(t, c, pk, "kept")
}

// batchInvalid: batches no backend accepts fail before anything is written.
func (s *suite) batchInvalid(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const pk = "tenant-a"
	body := func(id string) []byte { return doc{ID: id, TenantID: pk}.json(t) }
	tooMany := make([]store.Op, store.MaxBatchOps+1)
	for i := range tooMany {
		id := fmt.Sprintf("many-%03d", i)
		tooMany[i] = store.CreateOp(id, body(id))
	}
	cases := []struct {
		name string
		ops  []store.Op
	}{
		{"empty", nil},
		{"over the size limit", tooMany},
		{"one id twice", []store.Op{store.CreateOp("twice", body("twice")), store.UpsertOp("twice", body("twice"))}},
		{"a body naming another id", []store.Op{store.CreateOp("fine", body("fine")), store.CreateOp("liar", body("other"))}},
		{"a body in another partition", []store.Op{store.CreateOp("fine", body("fine")), store.CreateOp("elsewhere", doc{ID: "elsewhere", TenantID: "tenant-b"}.json(t))}},
	}
	for _, tc := range cases {
		if _, err := c.Batch(ctx, pk, tc.ops); err == nil {
			t.Errorf("%s: Batch accepted it", tc.name)
		}
	}
	if got := queryAll(t, c, store.Query{PartitionKey: pk}); len(got) != 0 {
		t.Errorf("refused batches wrote %v", ids(got))
	}
}

// writeBatches: store.WriteBatches cuts a long list into batches of
// MaxBatchOps; a refused batch is reported on its own and the others land.
func (s *suite) writeBatches(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const pk = "tenant-a"
	mustCreate(t, c, doc{ID: "w-150", TenantID: pk, Name: "first"})
	ops := make([]store.Op, 2*store.MaxBatchOps+50)
	for i := range ops {
		id := fmt.Sprintf("w-%03d", i)
		ops[i] = store.CreateOp(id, doc{ID: id, TenantID: pk, Counter: i}.json(t))
	}
	batches, etags, errs := store.WriteBatches(ctx, c, pk, ops)
	if len(batches) != 3 || len(batches[0]) != store.MaxBatchOps || len(batches[2]) != 50 || len(etags) != 3 || len(errs) != 3 {
		t.Fatalf("%d operations cut into batches of %d, %d results, %d errors; want 3 batches of at most %d",
			len(ops), len(batches), len(etags), len(errs), store.MaxBatchOps)
	}
	var be *store.BatchError
	if !errors.As(errs[1], &be) || !errors.Is(errs[1], store.ErrConflict) || be.ID != "w-150" {
		t.Errorf("the batch holding a create of an existing id: %v, want a *store.BatchError for w-150 wrapping ErrConflict", errs[1])
	}
	for _, k := range []int{0, 2} {
		if errs[k] != nil || len(etags[k]) != len(batches[k]) {
			t.Fatalf("batch %d: %d ETags, %v", k, len(etags[k]), errs[k])
		}
		for n, op := range batches[k] {
			if it := mustRead(t, c, pk, op.ID); it.ETag != etags[k][n] {
				t.Errorf("%s: ETag %q, WriteBatches reported %q", op.ID, it.ETag, etags[k][n])
			}
		}
	}
	if d := decodeDoc(t, mustRead(t, c, pk, "w-150").Body); d.Name != "first" {
		t.Errorf("the refused create overwrote w-150: %+v", d)
	}
	if s.caps.AtomicBatch {
		if _, err := c.Read(ctx, pk, "w-149"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("a document of the refused batch was written (Read: %v)", err)
		}
	}
}
