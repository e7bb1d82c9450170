// Package storetest is the one conformance suite every store.Backend must pass,
// so code written against store.Container behaves the same on Cosmos DB and on
// the embedded file store.
//
// A backend package runs it from a test:
//
//	func TestConformance_Embedded(t *testing.T) {
//		storetest.Run(t, openEmbedded, storetest.Capabilities{EnforcesIfMatch: true, ...})
//	}
package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// Opener opens a fresh, empty database holding the containers of specs. It
// registers its own cleanup with t.Cleanup and fails t when it cannot open.
type Opener func(t *testing.T, specs []store.ContainerSpec) store.Backend

// Capabilities tells the suite which guarantees a backend (or the emulator
// standing in for it) really enforces, so the cases it cannot honour are
// skipped with a reason instead of failing.
type Capabilities struct {
	// EnforcesIfMatch: a write with a stale ETag is refused (412).
	EnforcesIfMatch bool
	// ExpiresTTL: documents whose ttl has passed disappear on their own.
	ExpiresTTL bool
	// PartitionScopedIDs: ids are unique per partition (the same id may live in two
	// partitions) and a write under the wrong partition key finds nothing.
	PartitionScopedIDs bool
	// AtomicBatch: a batch with one refused operation writes nothing at all.
	AtomicBatch bool
	// NoIfMatchReason, NoTTLReason, NoPartitionScopeReason and
	// NoAtomicBatchReason are the skip messages when the above are false.
	NoIfMatchReason, NoTTLReason, NoPartitionScopeReason, NoAtomicBatchReason string
	// TTLDeclared reports whether the named container really has expiry turned on
	// in the backend (Cosmos: DefaultTimeToLive set). Required.
	TTLDeclared func(t *testing.T, b store.Backend, containerName string) bool
}

// specTTL is the retention the suite opens the execution container with.
const specTTL = time.Hour

// doc is the small document type the suite stores.
type doc struct {
	ID       string  `json:"id"`
	TenantID string  `json:"tenantId,omitempty"`
	Category string  `json:"category,omitempty"`
	Name     string  `json:"name,omitempty"`
	Counter  int     `json:"counter"`
	Enabled  bool    `json:"enabled"`
	Score    float64 `json:"score"`
	TTL      int     `json:"ttl,omitempty"`
}

// Key partitions by tenant in tenant containers and by category in the catalog.
func (d doc) Key() (string, string) {
	if d.TenantID != "" {
		return d.TenantID, d.ID
	}
	return d.Category, d.ID
}

func (d doc) json(t testing.TB) []byte {
	t.Helper()
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatalf("encode test document %s: %v", d.ID, err)
	}
	return b
}

// Run runs every conformance case against the backend open returns. Each case
// opens its own database and runs in parallel with the others.
func Run(t *testing.T, open Opener, caps Capabilities) {
	s := &suite{open: open, caps: caps}
	cases := []struct {
		name string
		fn   func(*testing.T)
	}{
		{"CRUD/RoundTripPreservesBody", s.crudRoundTrip},
		{"CRUD/MissingDocumentIsNotFound", s.crudMissing},
		{"Create/ExistingIDConflictsAndKeepsOriginal", s.createConflict},
		{"IfMatch/StaleETagIsRejected", s.ifMatchStale},
		{"ETag/ChangesOnEveryWrite", s.etagChanges},
		{"TenantIsolation/PartitionKeyScopesReadsAndQueries", s.tenantIsolation},
		{"TenantIsolation/SameIDInTwoPartitionsAndWrongPartitionWrites", s.partitionScopedIDs},
		{"Query/EqualityFilters", s.queryFilters},
		{"Query/PaginatesByIDInBothDirections", s.queryPagination},
		{"Query/BogusContinuationIsInvalid", s.queryBogusToken},
		{"Query/CrossPartitionOnlyWhereAllowed", s.queryCrossPartition},
		{"TTL/StampsRetentionIntoBodies", s.ttlStamp},
		{"TTL/ExpiredDocumentsDisappear", s.ttlExpiry},
		{"Concurrency/UpdateLosesNoIncrement", s.concurrentUpdates},
		{"Repository/CreateGetUpdateList", s.repository},
		{"Batch/AppliesEveryOperation", s.batchApplies},
		{"Batch/RefusalNamesTheOperation", s.batchRefusal},
		{"Batch/RefusedBatchWritesNothing", s.batchAtomic},
		{"Batch/InvalidBatchesAreRefusedBeforeWriting", s.batchInvalid},
		{"Batch/WriteBatchesReportsEachBatchApart", s.writeBatches},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t)
		})
	}
}

type suite struct {
	open Opener
	caps Capabilities
}

// container opens a fresh database and returns its named container.
func (s *suite) container(t *testing.T, name string) store.Container {
	t.Helper()
	c, _ := s.containerOf(t, name)
	return c
}

func (s *suite) containerOf(t *testing.T, name string) (store.Container, store.Backend) {
	t.Helper()
	b := s.open(t, store.Containers(specTTL))
	c, err := b.Container(name)
	if err != nil {
		t.Fatalf("container %s of a freshly opened backend: %v", name, err)
	}
	return c, b
}

func mustContainer(t *testing.T, b store.Backend, name string) store.Container {
	t.Helper()
	c, err := b.Container(name)
	if err != nil {
		t.Fatalf("container %s: %v", name, err)
	}
	return c
}

func (s *suite) crudRoundTrip(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const pk, id = "tenant-a", "wh-1"

	// A body with nesting, unicode, null, a large integer and a float: all must come back as sent.
	v1 := []byte(`{"id":"wh-1","tenantId":"tenant-a","url":"https://example.test/hook?a=1&b=ü","events":["sync.done","conflict.*"],` +
		`"limits":{"rps":12.5,"burst":40,"window":null},"enabled":true,"version":12345678901,"note":"Ünïcödé ✓ \"quoted\""}`)
	etag, err := c.Create(ctx, pk, id, v1)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if etag == "" {
		t.Fatal("Create returned an empty ETag")
	}
	it := mustRead(t, c, pk, id)
	if it.ID != id || it.PartitionKey != pk {
		t.Errorf("Read returned id %q partition %q, want %q %q", it.ID, it.PartitionKey, id, pk)
	}
	if it.ETag != etag {
		t.Errorf("Read ETag %q differs from the ETag Create returned %q", it.ETag, etag)
	}
	assertBody(t, "after Create", v1, it.Body)

	v2 := []byte(`{"id":"wh-1","tenantId":"tenant-a","url":"https://example.test/v2","enabled":false}`)
	if _, err := c.Replace(ctx, pk, id, v2, ""); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	assertBody(t, "after Replace (old properties must be gone)", v2, mustRead(t, c, pk, id).Body)

	v3 := []byte(`{"id":"wh-1","tenantId":"tenant-a","url":"https://example.test/v3","enabled":true,"retries":3}`)
	if _, err := c.Upsert(ctx, pk, id, v3); err != nil {
		t.Fatalf("Upsert of an existing document: %v", err)
	}
	assertBody(t, "after Upsert over an existing document", v3, mustRead(t, c, pk, id).Body)

	fresh := []byte(`{"id":"wh-2","tenantId":"tenant-a","url":"https://example.test/new"}`)
	if _, err := c.Upsert(ctx, pk, "wh-2", fresh); err != nil {
		t.Fatalf("Upsert of a new document: %v", err)
	}
	assertBody(t, "after Upsert of a new document", fresh, mustRead(t, c, pk, "wh-2").Body)

	if err := c.Delete(ctx, pk, id, ""); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := c.Read(ctx, pk, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Read after Delete: got %v, want ErrNotFound", err)
	}
	// The other document is untouched by the delete.
	assertBody(t, "neighbour after Delete", fresh, mustRead(t, c, pk, "wh-2").Body)
}

func (s *suite) crudMissing(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	body := []byte(`{"id":"ghost","tenantId":"tenant-a"}`)

	if _, err := c.Read(ctx, "tenant-a", "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Read of a missing id: got %v, want ErrNotFound", err)
	}
	if _, err := c.Replace(ctx, "tenant-a", "ghost", body, ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Replace of a missing id: got %v, want ErrNotFound", err)
	}
	if err := c.Delete(ctx, "tenant-a", "ghost", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete of a missing id: got %v, want ErrNotFound", err)
	}
	// Replace must not have created it.
	if _, err := c.Read(ctx, "tenant-a", "ghost"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Read after a failed Replace: got %v, want ErrNotFound (Replace must not create)", err)
	}
}

func (s *suite) createConflict(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	orig := doc{ID: "dup", TenantID: "tenant-a", Name: "original", Counter: 1}.json(t)
	etag, err := c.Create(ctx, "tenant-a", "dup", orig)
	if err != nil {
		t.Fatalf("first Create: %v", err)
	}
	second := doc{ID: "dup", TenantID: "tenant-a", Name: "intruder", Counter: 99}.json(t)
	if _, err := c.Create(ctx, "tenant-a", "dup", second); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("Create of an existing id: got %v, want ErrConflict", err)
	}
	it := mustRead(t, c, "tenant-a", "dup")
	assertBody(t, "original after a conflicting Create", orig, it.Body)
	if it.ETag != etag {
		t.Errorf("ETag changed by a refused Create: %q -> %q", etag, it.ETag)
	}

}

func (s *suite) ifMatchStale(t *testing.T) {
	if !s.caps.EnforcesIfMatch {
		t.Skip(s.caps.NoIfMatchReason)
	}
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const pk, id = "tenant-a", "im-1"
	e1, err := c.Create(ctx, pk, id, doc{ID: id, TenantID: pk, Counter: 1}.json(t))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	v2 := doc{ID: id, TenantID: pk, Counter: 2}.json(t)
	e2, err := c.Replace(ctx, pk, id, v2, e1)
	if err != nil {
		t.Fatalf("Replace with the current ETag: %v", err)
	}
	if _, err := c.Replace(ctx, pk, id, doc{ID: id, TenantID: pk, Counter: 3}.json(t), e1); !errors.Is(err, store.ErrPreconditionFailed) {
		t.Errorf("Replace with a stale ETag: got %v, want ErrPreconditionFailed", err)
	}
	if _, err := c.Replace(ctx, pk, id, doc{ID: id, TenantID: pk, Counter: 4}.json(t), `"not-an-etag"`); !errors.Is(err, store.ErrPreconditionFailed) {
		t.Errorf("Replace with an unknown ETag: got %v, want ErrPreconditionFailed", err)
	}
	if err := c.Delete(ctx, pk, id, e1); !errors.Is(err, store.ErrPreconditionFailed) {
		t.Errorf("Delete with a stale ETag: got %v, want ErrPreconditionFailed", err)
	}
	it := mustRead(t, c, pk, id)
	assertBody(t, "after refused stale writes", v2, it.Body)
	if it.ETag != e2 {
		t.Errorf("refused writes changed the ETag: %q -> %q", e2, it.ETag)
	}
	if err := c.Delete(ctx, pk, id, e2); err != nil {
		t.Fatalf("Delete with the current ETag: %v", err)
	}
	if _, err := c.Read(ctx, pk, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Read after a conditional Delete: got %v, want ErrNotFound", err)
	}
}

func (s *suite) etagChanges(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const pk, id = "tenant-a", "et-1"
	body := doc{ID: id, TenantID: pk, Name: "same"}.json(t)
	seen := map[string]string{}
	check := func(op, etag string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", op, err)
		}
		if etag == "" {
			t.Fatalf("%s returned an empty ETag", op)
		}
		if prev, dup := seen[etag]; dup {
			t.Errorf("%s returned ETag %q already returned by %s: ETags must change on every write", op, etag, prev)
		}
		seen[etag] = op
		if got := mustRead(t, c, pk, id).ETag; got != etag {
			t.Errorf("Read after %s returned ETag %q, want the write's %q", op, got, etag)
		}
	}
	e, err := c.Create(ctx, pk, id, body)
	check("Create", e, err)
	e, err = c.Replace(ctx, pk, id, body, "") // identical body: still a new version
	check("Replace with an identical body", e, err)
	e, err = c.Upsert(ctx, pk, id, body)
	check("Upsert", e, err)
	last, err := c.Replace(ctx, pk, id, doc{ID: id, TenantID: pk, Name: "changed"}.json(t), e)
	check("conditional Replace", last, err)

	page, err := c.Query(ctx, store.Query{PartitionKey: pk})
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	if len(page.Items) != 1 || page.Items[0].ETag != last {
		t.Errorf("Query items must carry the current ETag %q; got %+v", last, page.Items)
	}
}

func (s *suite) tenantIsolation(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const a, b = "tenant-a", "tenant-b"
	// tenant-a is a prefix of tenant-ab: a backend keying by concatenation would leak.
	const ab = "tenant-ab"
	var wantA []string
	for i := range 23 {
		id := fmt.Sprintf("a-%02d", i)
		mustCreate(t, c, doc{ID: id, TenantID: a, Enabled: i%2 == 0, Counter: i})
		wantA = append(wantA, id)
	}
	for i := range 17 {
		mustCreate(t, c, doc{ID: fmt.Sprintf("b-%02d", i), TenantID: b, Enabled: true, Counter: i, Name: "theirs"})
		mustCreate(t, c, doc{ID: fmt.Sprintf("ab-%02d", i), TenantID: ab, Enabled: true, Counter: i, Name: "theirs"})
	}

	for _, q := range []struct {
		name    string
		filters []store.Filter
		want    func(doc) bool
	}{
		{"no filter", nil, func(doc) bool { return true }},
		{"enabled=true", []store.Filter{{Field: "enabled", Value: true}}, func(d doc) bool { return d.Enabled }},
		{"name=theirs", []store.Filter{{Field: "name", Value: "theirs"}}, func(d doc) bool { return d.Name == "theirs" }},
	} {
		for _, desc := range []bool{false, true} {
			got := queryAll(t, c, store.Query{PartitionKey: a, Filters: q.filters, Descending: desc, Limit: 5})
			for _, it := range got {
				d := decodeDoc(t, it.Body)
				if it.PartitionKey != a || d.TenantID != a {
					t.Errorf("query of %s (%s, descending=%v) returned %s of partition %q (body tenant %q)",
						a, q.name, desc, it.ID, it.PartitionKey, d.TenantID)
				}
				if !q.want(d) {
					t.Errorf("query of %s (%s) returned %s which does not match the filter", a, q.name, it.ID)
				}
			}
			if q.name == "no filter" && len(got) != len(wantA) {
				t.Errorf("query of %s (descending=%v) returned %d documents, want %d", a, desc, len(got), len(wantA))
			}
		}
	}

	if _, err := c.Read(ctx, a, "b-01"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Read of tenant B's id under tenant A: got %v, want ErrNotFound", err)
	}
	mustRead(t, c, b, "b-01") // still there
}

// partitionScopedIDs checks what real Cosmos DB guarantees beyond the above: an
// id is unique per partition only, and a write under another partition key
// cannot reach a document.
func (s *suite) partitionScopedIDs(t *testing.T) {
	if !s.caps.PartitionScopedIDs {
		t.Skip(s.caps.NoPartitionScopeReason)
	}
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const a, b = "tenant-a", "tenant-b"
	mustCreate(t, c, doc{ID: "shared", TenantID: a, Name: "mine"})
	mustCreate(t, c, doc{ID: "shared", TenantID: b, Name: "theirs"})
	if got := decodeDoc(t, mustRead(t, c, a, "shared").Body); got.Name != "mine" {
		t.Errorf("Read of a shared id under tenant A returned %q's document %q", got.TenantID, got.Name)
	}
	if got := decodeDoc(t, mustRead(t, c, b, "shared").Body); got.Name != "theirs" {
		t.Errorf("Read of a shared id under tenant B returned %q's document %q", got.TenantID, got.Name)
	}
	mustCreate(t, c, doc{ID: "b-only", TenantID: b, Name: "theirs"})
	if _, err := c.Replace(ctx, a, "b-only", doc{ID: "b-only", TenantID: a}.json(t), ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Replace of tenant B's id under tenant A: got %v, want ErrNotFound", err)
	}
	if err := c.Delete(ctx, a, "b-only", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete of tenant B's id under tenant A: got %v, want ErrNotFound", err)
	}
	if got := decodeDoc(t, mustRead(t, c, b, "b-only").Body); got.TenantID != b || got.Name != "theirs" {
		t.Errorf("tenant B's document was changed by tenant A's writes: %+v", got)
	}
}

func (s *suite) queryFilters(t *testing.T) {
	c := s.container(t, domain.ContainerWebhooks)
	const pk = "tenant-f"
	names := []string{"alpha", "beta", "gamma"}
	var docs []doc
	for i := range 30 {
		d := doc{ID: fmt.Sprintf("f-%02d", i), TenantID: pk, Name: names[i%3], Enabled: i%4 == 0, Counter: i % 5, Score: float64(i%3) + 0.5}
		docs = append(docs, d)
		mustCreate(t, c, d)
	}
	mustCreate(t, c, doc{ID: "other-tenant", TenantID: "tenant-g", Name: "alpha", Enabled: true})

	cases := []struct {
		name    string
		filters []store.Filter
		want    func(doc) bool
	}{
		{"string", []store.Filter{{Field: "name", Value: "alpha"}}, func(d doc) bool { return d.Name == "alpha" }},
		{"bool true", []store.Filter{{Field: "enabled", Value: true}}, func(d doc) bool { return d.Enabled }},
		{"bool false", []store.Filter{{Field: "enabled", Value: false}}, func(d doc) bool { return !d.Enabled }},
		{"float", []store.Filter{{Field: "score", Value: 1.5}}, func(d doc) bool { return d.Score == 1.5 }},
		{"int", []store.Filter{{Field: "counter", Value: 3}}, func(d doc) bool { return d.Counter == 3 }},
		{"int64 zero", []store.Filter{{Field: "counter", Value: int64(0)}}, func(d doc) bool { return d.Counter == 0 }},
		{"several fields (AND)", []store.Filter{{Field: "name", Value: "beta"}, {Field: "enabled", Value: true}},
			func(d doc) bool { return d.Name == "beta" && d.Enabled }},
		{"string never equals a number", []store.Filter{{Field: "counter", Value: "3"}}, func(doc) bool { return false }},
		{"no match", []store.Filter{{Field: "name", Value: "nope"}}, func(doc) bool { return false }},
		{"missing field", []store.Filter{{Field: "absent", Value: "x"}}, func(doc) bool { return false }},
	}
	for _, tc := range cases {
		var want []string
		for _, d := range docs {
			if tc.want(d) {
				want = append(want, d.ID)
			}
		}
		got := ids(queryAll(t, c, store.Query{PartitionKey: pk, Filters: tc.filters, Limit: 7}))
		if !slices.Equal(got, want) {
			t.Errorf("filter %s %v: got ids %v, want %v", tc.name, tc.filters, got, want)
		}
	}
}

func (s *suite) queryPagination(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	const pk, n, size = "tenant-p", 237, 50
	var want []string
	// Unpadded numbers: id order is byte order ("p-10" < "p-9"), not numeric.
	for i := range n {
		id := fmt.Sprintf("p-%d", i)
		want = append(want, id)
		mustCreate(t, c, doc{ID: id, TenantID: pk, Counter: i, Enabled: i%3 == 0})
	}
	mustCreate(t, c, doc{ID: "q-5", TenantID: "tenant-q"}) // a neighbour partition
	sort.Strings(want)

	for _, desc := range []bool{false, true} {
		exp := slices.Clone(want)
		if desc {
			slices.Reverse(exp)
		}
		var got []string
		token := ""
		pages := 0
		for {
			page, err := c.Query(ctx, store.Query{PartitionKey: pk, Limit: size, Descending: desc, Continuation: token})
			if err != nil {
				t.Fatalf("descending=%v page %d: %v", desc, pages+1, err)
			}
			pages++
			if page.Continuation != "" && len(page.Items) != size {
				t.Errorf("descending=%v page %d has %d items and a continuation; only the last page may be short", desc, pages, len(page.Items))
			}
			got = append(got, ids(page.Items)...)
			token = page.Continuation
			if token == "" || pages > 2*n/size {
				break
			}
		}
		if wantPages := (n + size - 1) / size; pages != wantPages {
			t.Errorf("descending=%v: %d pages of %d, want %d (the last page must carry an empty continuation)", desc, pages, size, wantPages)
		}
		if !slices.Equal(got, exp) {
			t.Errorf("descending=%v: pages did not return every document exactly once in id order:\n got %v\nwant %v", desc, got, exp)
		}
	}

	// Limit 0 means the default page size.
	page, err := c.Query(ctx, store.Query{PartitionKey: pk})
	if err != nil {
		t.Fatalf("Query with Limit 0: %v", err)
	}
	if len(page.Items) != store.DefaultPageSize || page.Continuation == "" {
		t.Errorf("Query with Limit 0 returned %d items (continuation %q), want %d and a continuation", len(page.Items), page.Continuation, store.DefaultPageSize)
	}

	// Filters and keyset paging together.
	var wantEnabled []string
	for _, id := range want {
		var i int
		fmt.Sscanf(id, "p-%d", &i)
		if i%3 == 0 {
			wantEnabled = append(wantEnabled, id)
		}
	}
	if got := ids(queryAll(t, c, store.Query{PartitionKey: pk, Filters: []store.Filter{{Field: "enabled", Value: true}}, Limit: 11})); !slices.Equal(got, wantEnabled) {
		t.Errorf("filtered pages: got %v, want %v", got, wantEnabled)
	}
}

func (s *suite) queryBogusToken(t *testing.T) {
	ctx := t.Context()
	c := s.container(t, domain.ContainerWebhooks)
	mustCreate(t, c, doc{ID: "x", TenantID: "tenant-a"})
	for _, token := range []string{"not a token", "%%%", "eyJ0cnVuY2F0ZWQ"} {
		if _, err := c.Query(ctx, store.Query{PartitionKey: "tenant-a", Continuation: token}); !errors.Is(err, store.ErrInvalidQuery) {
			t.Errorf("Query with continuation %q: got %v, want ErrInvalidQuery", token, err)
		}
	}
}

func (s *suite) queryCrossPartition(t *testing.T) {
	ctx := t.Context()
	b := s.open(t, store.Containers(specTTL))
	catalog := mustContainer(t, b, domain.ContainerCatalog)
	categories := []string{"crm", "storage", "ticketing", "erp"}
	var want, wantEnabled []string
	for i := range 45 {
		cat := categories[i%len(categories)]
		d := doc{ID: fmt.Sprintf("%s-%02d", cat, i), Category: cat, Name: "entry", Enabled: i%2 == 1}
		mustCreate(t, catalog, d)
		want = append(want, d.ID)
		if d.Enabled {
			wantEnabled = append(wantEnabled, d.ID)
		}
	}
	sort.Strings(want)
	sort.Strings(wantEnabled)

	for _, desc := range []bool{false, true} {
		got := queryAll(t, catalog, store.Query{Limit: 10, Descending: desc})
		exp := slices.Clone(want)
		if desc {
			slices.Reverse(exp)
		}
		if !slices.Equal(ids(got), exp) {
			t.Errorf("cross-partition query (descending=%v): got %v, want %v", desc, ids(got), exp)
		}
		seen := map[string]bool{}
		for _, it := range got {
			d := decodeDoc(t, it.Body)
			if it.PartitionKey != d.Category {
				t.Errorf("cross-partition item %s reports partition %q, body says %q", it.ID, it.PartitionKey, d.Category)
			}
			seen[d.Category] = true
		}
		if len(seen) != len(categories) {
			t.Errorf("cross-partition query saw categories %v, want all of %v", seen, categories)
		}
	}
	if got := ids(queryAll(t, catalog, store.Query{Limit: 4, Filters: []store.Filter{{Field: "enabled", Value: true}}})); !slices.Equal(got, wantEnabled) {
		t.Errorf("filtered cross-partition query: got %v, want %v", got, wantEnabled)
	}

	webhooks := mustContainer(t, b, domain.ContainerWebhooks)
	mustCreate(t, webhooks, doc{ID: "w", TenantID: "tenant-a"})
	if _, err := webhooks.Query(ctx, store.Query{}); !errors.Is(err, store.ErrInvalidQuery) {
		t.Errorf("cross-partition query on %s (tenant data): got %v, want ErrInvalidQuery", domain.ContainerWebhooks, err)
	}
	if _, err := b.Container("integration_no_such_container"); err == nil {
		t.Error("Container of an undeclared name returned no error")
	}
}

func (s *suite) ttlStamp(t *testing.T) {
	ctx := t.Context()
	if s.caps.TTLDeclared == nil {
		t.Fatal("Capabilities.TTLDeclared is required: it checks the backend really turned expiry on")
	}
	c, b := s.containerOf(t, domain.ContainerExecutions)
	if !s.caps.TTLDeclared(t, b, domain.ContainerExecutions) {
		t.Errorf("%s was opened with TTL %v but the backend does not declare expiry on it", domain.ContainerExecutions, specTTL)
	}
	if s.caps.TTLDeclared(t, b, domain.ContainerWebhooks) {
		t.Errorf("%s has no TTL in its spec but the backend declares expiry on it", domain.ContainerWebhooks)
	}
	const pk = "tenant-a"
	wantTTL := specTTL.Seconds()
	ttlOf := func(body []byte) any {
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("decode body %s: %v", body, err)
		}
		return m["ttl"]
	}

	mustCreate(t, c, doc{ID: "exec-default", TenantID: pk, Name: "created"})
	if got := ttlOf(mustRead(t, c, pk, "exec-default").Body); got != wantTTL {
		t.Errorf("document written without ttl in %s carries ttl %v, want %v (the container's retention in seconds)", domain.ContainerExecutions, got, wantTTL)
	}
	if _, err := c.Replace(ctx, pk, "exec-default", doc{ID: "exec-default", TenantID: pk, Name: "replaced"}.json(t), ""); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	if got := ttlOf(mustRead(t, c, pk, "exec-default").Body); got != wantTTL {
		t.Errorf("after Replace without ttl: ttl %v, want %v", got, wantTTL)
	}
	if _, err := c.Upsert(ctx, pk, "exec-upsert", doc{ID: "exec-upsert", TenantID: pk}.json(t)); err != nil {
		t.Fatalf("Upsert: %v", err)
	}
	if got := ttlOf(mustRead(t, c, pk, "exec-upsert").Body); got != wantTTL {
		t.Errorf("after Upsert without ttl: ttl %v, want %v", got, wantTTL)
	}
	mustCreate(t, c, doc{ID: "exec-own", TenantID: pk, TTL: 7200})
	if got := ttlOf(mustRead(t, c, pk, "exec-own").Body); got != float64(7200) {
		t.Errorf("a document's own ttl must be kept: got %v, want 7200", got)
	}
	for _, it := range queryAll(t, c, store.Query{PartitionKey: pk}) {
		if ttlOf(it.Body) == nil {
			t.Errorf("queried document %s carries no ttl", it.ID)
		}
	}

	other := mustContainer(t, b, domain.ContainerWebhooks)
	mustCreate(t, other, doc{ID: "hook", TenantID: pk})
	if got := ttlOf(mustRead(t, other, pk, "hook").Body); got != nil {
		t.Errorf("a document in %s (no TTL) came back with ttl %v", domain.ContainerWebhooks, got)
	}
}

func (s *suite) ttlExpiry(t *testing.T) {
	if !s.caps.ExpiresTTL {
		t.Skip(s.caps.NoTTLReason)
	}
	ctx := t.Context()
	b := s.open(t, store.Containers(specTTL))
	execs := mustContainer(t, b, domain.ContainerExecutions)
	hooks := mustContainer(t, b, domain.ContainerWebhooks)
	const pk = "tenant-a"
	mustCreate(t, execs, doc{ID: "short-lived", TenantID: pk, TTL: 1})
	mustCreate(t, execs, doc{ID: "retained", TenantID: pk})
	mustCreate(t, hooks, doc{ID: "forever", TenantID: pk})

	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := execs.Read(ctx, pk, "short-lived")
		queried := slices.Contains(ids(queryAll(t, execs, store.Query{PartitionKey: pk})), "short-lived")
		if errors.Is(err, store.ErrNotFound) && !queried {
			break
		}
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Read of the short-lived document: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("a document with ttl 1 is still visible after 10 s (Read error %v, in query results %v)", err, queried)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mustRead(t, execs, pk, "retained")
	mustRead(t, hooks, pk, "forever")
	if got := ids(queryAll(t, execs, store.Query{PartitionKey: pk})); !slices.Equal(got, []string{"retained"}) {
		t.Errorf("after expiry the query returned %v, want [retained]", got)
	}
}

func (s *suite) concurrentUpdates(t *testing.T) {
	if !s.caps.EnforcesIfMatch {
		t.Skip(s.caps.NoIfMatchReason)
	}
	ctx := t.Context()
	repo := store.NewRepository[doc](s.container(t, domain.ContainerWebhooks))
	const pk, id, writers, each = "tenant-a", "counter", 8, 25
	if _, err := repo.Create(ctx, doc{ID: id, TenantID: pk}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for range writers {
		wg.Go(func() {
			for range each {
				if _, _, err := repo.Update(ctx, pk, id, func(d *doc) error { d.Counter++; return nil }); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Update under contention: %v", err)
	}
	got, _, err := repo.Get(ctx, pk, id)
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got.Counter != writers*each {
		t.Errorf("%d writers x %d increments left the counter at %d, want %d: updates were lost", writers, each, got.Counter, writers*each)
	}
}

func (s *suite) repository(t *testing.T) {
	ctx := t.Context()
	repo := store.NewRepository[doc](s.container(t, domain.ContainerWebhooks))
	const pk = "tenant-r"
	d := doc{ID: "r-1", TenantID: pk, Name: "first", Counter: 1, Score: 2.25}
	etag, err := repo.Create(ctx, d)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if _, err := repo.Create(ctx, d); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second Create of the same document: got %v, want ErrConflict", err)
	}

	got, gotTag, err := repo.Get(ctx, pk, "r-1")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if got != d || gotTag != etag {
		t.Errorf("Get returned %+v (etag %q), want %+v (etag %q)", got, gotTag, d, etag)
	}
	if _, _, err := repo.Get(ctx, pk, "missing"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a missing id: got %v, want ErrNotFound", err)
	}

	updated, upTag, err := repo.Update(ctx, pk, "r-1", func(d *doc) error { d.Counter += 10; d.Name = "updated"; return nil })
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	if updated.Counter != 11 || updated.Name != "updated" || upTag == etag {
		t.Errorf("Update returned %+v etag %q; want counter 11, name updated and a new etag", updated, upTag)
	}
	if stored, tag, _ := repo.Get(ctx, pk, "r-1"); stored != updated || tag != upTag {
		t.Errorf("after Update the store holds %+v (etag %q), Update returned %+v (etag %q)", stored, tag, updated, upTag)
	}

	skipped, skipTag, err := repo.Update(ctx, pk, "r-1", func(d *doc) error { d.Counter = -1; return store.ErrSkipUpdate })
	if err != nil {
		t.Errorf("Update returning ErrSkipUpdate: got error %v, want nil", err)
	}
	if skipTag != upTag || skipped.Name != "updated" || skipped.Counter != 11 {
		t.Errorf("skipped Update returned %+v etag %q, want the current document with etag %q", skipped, skipTag, upTag)
	}
	if stored, tag, _ := repo.Get(ctx, pk, "r-1"); stored.Counter != 11 || tag != upTag {
		t.Errorf("a skipped Update wrote: stored %+v etag %q", stored, tag)
	}

	boom := errors.New("validation refused")
	if _, _, err := repo.Update(ctx, pk, "r-1", func(d *doc) error { d.Counter = 0; return boom }); !errors.Is(err, boom) {
		t.Errorf("Update whose callback fails: got %v, want the callback's error", err)
	}
	if _, _, err := repo.Update(ctx, pk, "r-1", func(d *doc) error { d.ID = "renamed"; return nil }); err == nil {
		t.Error("Update that changes the document's id succeeded; it must be refused")
	}
	if _, _, err := repo.Update(ctx, pk, "missing", func(*doc) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Update of a missing id: got %v, want ErrNotFound", err)
	}
	if stored, tag, _ := repo.Get(ctx, pk, "r-1"); stored.Counter != 11 || stored.ID != "r-1" || tag != upTag {
		t.Errorf("failed Updates wrote: stored %+v etag %q", stored, tag)
	}

	// Upsert, Replace and List.
	for i := 2; i <= 5; i++ {
		if _, err := repo.Upsert(ctx, doc{ID: fmt.Sprintf("r-%d", i), TenantID: pk, Counter: i}); err != nil {
			t.Fatalf("Upsert r-%d: %v", i, err)
		}
	}
	if _, err := repo.Replace(ctx, doc{ID: "r-2", TenantID: pk, Counter: 20}, ""); err != nil {
		t.Fatalf("Replace: %v", err)
	}
	var listed []doc
	token := ""
	for range 10 {
		page, next, err := repo.List(ctx, store.Query{PartitionKey: pk, Limit: 2, Continuation: token})
		if err != nil {
			t.Fatalf("List: %v", err)
		}
		listed = append(listed, page...)
		if token = next; token == "" {
			break
		}
	}
	wantCounters := []int{11, 20, 3, 4, 5}
	if len(listed) != len(wantCounters) {
		t.Fatalf("List returned %d documents, want %d: %+v", len(listed), len(wantCounters), listed)
	}
	for i, d := range listed {
		if d.ID != fmt.Sprintf("r-%d", i+1) || d.Counter != wantCounters[i] {
			t.Errorf("List item %d = %+v, want r-%d with counter %d", i, d, i+1, wantCounters[i])
		}
	}
	if err := repo.Delete(ctx, pk, "r-5", ""); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, _, err := repo.Get(ctx, pk, "r-5"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get after Delete: got %v, want ErrNotFound", err)
	}
}

// --- helpers ---

func mustCreate(t *testing.T, c store.Container, d doc) string {
	t.Helper()
	pk, id := d.Key()
	etag, err := c.Create(t.Context(), pk, id, d.json(t))
	if err != nil {
		t.Fatalf("Create %s/%s: %v", pk, id, err)
	}
	return etag
}

func mustRead(t *testing.T, c store.Container, pk, id string) store.Item {
	t.Helper()
	it, err := c.Read(t.Context(), pk, id)
	if err != nil {
		t.Fatalf("Read %s/%s: %v", pk, id, err)
	}
	return it
}

func decodeDoc(t *testing.T, body []byte) doc {
	t.Helper()
	var d doc
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("decode %s: %v", body, err)
	}
	return d
}

// queryAll follows continuations to the end (bounded, so a backend that never
// ends its continuation fails instead of hanging).
func queryAll(t *testing.T, c store.Container, q store.Query) []store.Item {
	t.Helper()
	var all []store.Item
	for range 1000 {
		page, err := c.Query(t.Context(), q)
		if err != nil {
			t.Fatalf("Query %+v: %v", q, err)
		}
		all = append(all, page.Items...)
		if page.Continuation == "" {
			return all
		}
		q.Continuation = page.Continuation
	}
	t.Fatalf("Query %+v: still returning continuations after 1000 pages", q)
	return nil
}

func ids(items []store.Item) []string {
	out := make([]string, 0, len(items))
	for _, it := range items {
		out = append(out, it.ID)
	}
	return out
}

func assertBody(t *testing.T, when string, want, got []byte) {
	t.Helper()
	if diff := bodyDiff(want, got); diff != "" {
		t.Errorf("%s: stored body differs from the one written: %s\n got %s\nwant %s", when, diff, got, want)
	}
}

// bodyDiff compares a body as written with the body read back. Every property
// written must come back equal; the backend may only add system properties
// (names starting with "_"). "" means equal.
func bodyDiff(want, got []byte) string {
	var w, g map[string]any
	if err := json.Unmarshal(want, &w); err != nil {
		return fmt.Sprintf("written body is not a JSON object: %v", err)
	}
	if err := json.Unmarshal(got, &g); err != nil {
		return fmt.Sprintf("read body is not a JSON object: %v", err)
	}
	var diffs []string
	for k, wv := range w {
		gv, ok := g[k]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%q is missing", k))
		case !reflect.DeepEqual(wv, gv):
			diffs = append(diffs, fmt.Sprintf("%q is %v, want %v", k, gv, wv))
		}
	}
	for k := range g {
		if _, ok := w[k]; !ok && !strings.HasPrefix(k, "_") {
			diffs = append(diffs, fmt.Sprintf("unexpected property %q", k))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "; ")
}
