package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/store"
)

// These tests pin Repository's own logic (retries, skip, key checks) with a
// scripted in-memory Container; the behaviour on real backends is covered by
// store/storetest, which every backend runs.

type account struct {
	ID      string `json:"id"`
	Tenant  string `json:"tenantId"`
	Balance int    `json:"balance"`
}

func (a account) Key() (string, string) { return a.Tenant, a.ID }

// memContainer keeps documents in a map; staleReplaces makes that many
// conditional Replaces fail as if another writer had just won.
type memContainer struct {
	mu            sync.Mutex
	docs          map[string]store.Item
	version       int
	staleReplaces int
	replaces      int
	lastQuery     store.Query
	page          store.Page
}

func newMem() *memContainer { return &memContainer{docs: map[string]store.Item{}} }

func (m *memContainer) key(pk, id string) string { return pk + "\x00" + id }

func (m *memContainer) nextTag() string {
	m.version++
	return fmt.Sprintf(`"v%d"`, m.version)
}

func (m *memContainer) Create(_ context.Context, pk, id string, body []byte) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.docs[m.key(pk, id)]; ok {
		return "", store.ErrConflict
	}
	tag := m.nextTag()
	m.docs[m.key(pk, id)] = store.Item{ID: id, PartitionKey: pk, Body: body, ETag: tag}
	return tag, nil
}

func (m *memContainer) Read(_ context.Context, pk, id string) (store.Item, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.docs[m.key(pk, id)]
	if !ok {
		return store.Item{}, store.ErrNotFound
	}
	return it, nil
}

func (m *memContainer) Replace(_ context.Context, pk, id string, body []byte, ifMatch string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.replaces++
	it, ok := m.docs[m.key(pk, id)]
	if !ok {
		return "", store.ErrNotFound
	}
	if ifMatch != "" && m.staleReplaces > 0 {
		m.staleReplaces--
		it.ETag = m.nextTag() // someone else wrote meanwhile
		m.docs[m.key(pk, id)] = it
		return "", store.ErrPreconditionFailed
	}
	if ifMatch != "" && ifMatch != it.ETag {
		return "", store.ErrPreconditionFailed
	}
	tag := m.nextTag()
	m.docs[m.key(pk, id)] = store.Item{ID: id, PartitionKey: pk, Body: body, ETag: tag}
	return tag, nil
}

func (m *memContainer) Upsert(_ context.Context, pk, id string, body []byte) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tag := m.nextTag()
	m.docs[m.key(pk, id)] = store.Item{ID: id, PartitionKey: pk, Body: body, ETag: tag}
	return tag, nil
}

func (m *memContainer) Delete(_ context.Context, pk, id, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.docs[m.key(pk, id)]; !ok {
		return store.ErrNotFound
	}
	delete(m.docs, m.key(pk, id))
	return nil
}

// Batch checks every operation, then applies them all (the fake's
// all-or-nothing).
func (m *memContainer) Batch(_ context.Context, pk string, ops []store.Op) ([]string, error) {
	if err := store.ValidateBatch(ops); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, op := range ops {
		it, ok := m.docs[m.key(pk, op.ID)]
		var refused error
		switch {
		case op.Kind == store.OpCreate && ok:
			refused = store.ErrConflict
		case (op.Kind == store.OpReplace || op.Kind == store.OpDelete) && !ok:
			refused = store.ErrNotFound
		case (op.Kind == store.OpReplace || op.Kind == store.OpDelete) && op.IfMatch != "" && op.IfMatch != it.ETag:
			refused = store.ErrPreconditionFailed
		}
		if refused != nil {
			return nil, &store.BatchError{Index: i, Op: op.Kind, ID: op.ID, Err: refused}
		}
	}
	etags := make([]string, len(ops))
	for i, op := range ops {
		if op.Kind == store.OpDelete {
			delete(m.docs, m.key(pk, op.ID))
			continue
		}
		etags[i] = m.nextTag()
		m.docs[m.key(pk, op.ID)] = store.Item{ID: op.ID, PartitionKey: pk, Body: op.Body, ETag: etags[i]}
	}
	return etags, nil
}

func (m *memContainer) Query(_ context.Context, q store.Query) (store.Page, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastQuery = q
	return m.page, nil
}

func seeded(t *testing.T, m *memContainer, a account) *store.Repository[account] {
	t.Helper()
	r := store.NewRepository[account](m)
	if _, err := r.Create(t.Context(), a); err != nil {
		t.Fatalf("seed: %v", err)
	}
	return r
}

func TestRepositoryUpdate_RetriesAfterLosingARace(t *testing.T) {
	m := newMem()
	r := seeded(t, m, account{ID: "acc", Tenant: "t", Balance: 10})
	m.staleReplaces = 5
	calls := 0
	got, etag, err := r.Update(t.Context(), "t", "acc", func(a *account) error { calls++; a.Balance += 5; return nil })
	if err != nil {
		t.Fatalf("Update after 5 lost races: %v", err)
	}
	if got.Balance != 15 || calls != 6 {
		t.Errorf("Update returned balance %d after %d callback runs, want 15 after 6 (the callback reruns on fresh data)", got.Balance, calls)
	}
	if stored, tag, _ := r.Get(t.Context(), "t", "acc"); stored.Balance != 15 || tag != etag {
		t.Errorf("stored %+v etag %q, Update returned etag %q", stored, tag, etag)
	}
}

func TestRepositoryUpdate_GivesUpAfterPersistentContention(t *testing.T) {
	m := newMem()
	r := seeded(t, m, account{ID: "acc", Tenant: "t"})
	m.staleReplaces = 1 << 30
	start := time.Now()
	_, _, err := r.Update(t.Context(), "t", "acc", func(a *account) error { a.Balance++; return nil })
	if !errors.Is(err, store.ErrPreconditionFailed) {
		t.Fatalf("Update under endless contention: got %v, want ErrPreconditionFailed", err)
	}
	if m.replaces != 20 {
		t.Errorf("Update tried %d replaces, want the bound of 20", m.replaces)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("giving up took %v; the backoff between attempts is too long", took)
	}
}

func TestRepositoryUpdate_StopsWaitingWhenTheContextEnds(t *testing.T) {
	m := newMem()
	r := seeded(t, m, account{ID: "acc", Tenant: "t"})
	m.staleReplaces = 1 << 30
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, _, err := r.Update(ctx, "t", "acc", func(a *account) error { a.Balance++; return nil })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Update with an expiring context: got %v, want context.DeadlineExceeded", err)
	}
}

func TestRepositoryUpdate_CallbackOutcomes(t *testing.T) {
	boom := errors.New("insufficient funds")
	cases := []struct {
		name        string
		fn          func(*account) error
		wantErr     error // nil: success
		anyErr      bool  // an error without a sentinel
		wantBalance int   // stored afterwards
	}{
		{"change is written", func(a *account) error { a.Balance = 42; return nil }, nil, false, 42},
		{"skip writes nothing and is not an error", func(a *account) error { a.Balance = 1; return store.ErrSkipUpdate }, nil, false, 10},
		{"wrapped skip too", func(a *account) error { return fmt.Errorf("already done: %w", store.ErrSkipUpdate) }, nil, false, 10},
		{"callback error is returned", func(a *account) error { a.Balance = 0; return boom }, boom, false, 10},
		{"key change is refused", func(a *account) error { a.ID = "other"; return nil }, nil, true, 10},
		{"partition change is refused", func(a *account) error { a.Tenant = "u"; return nil }, nil, true, 10},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := newMem()
			r := seeded(t, m, account{ID: "acc", Tenant: "t", Balance: 10})
			_, before, _ := r.Get(t.Context(), "t", "acc")
			got, etag, err := r.Update(t.Context(), "t", "acc", tc.fn)
			switch {
			case tc.wantErr != nil && !errors.Is(err, tc.wantErr):
				t.Errorf("got error %v, want %v", err, tc.wantErr)
			case tc.anyErr && err == nil:
				t.Error("got no error")
			case tc.wantErr == nil && !tc.anyErr && err != nil:
				t.Errorf("got error %v, want none", err)
			}
			stored, after, _ := r.Get(t.Context(), "t", "acc")
			if stored.Balance != tc.wantBalance || stored.ID != "acc" || stored.Tenant != "t" {
				t.Errorf("stored %+v, want balance %d under t/acc", stored, tc.wantBalance)
			}
			if tc.wantBalance == 10 && after != before {
				t.Errorf("nothing should have been written, but the ETag moved %q -> %q", before, after)
			}
			if err == nil && (etag != after || got != stored) {
				t.Errorf("Update returned %+v etag %q, the store holds %+v etag %q", got, etag, stored, after)
			}
		})
	}
}

func TestRepositoryUpdate_MissingDocumentIsNotFound(t *testing.T) {
	r := store.NewRepository[account](newMem())
	called := false
	_, _, err := r.Update(t.Context(), "t", "ghost", func(*account) error { called = true; return nil })
	if !errors.Is(err, store.ErrNotFound) || called {
		t.Errorf("Update of a missing document: err %v, callback called %v; want ErrNotFound without calling back", err, called)
	}
}

func TestRepository_GetReportsUndecodableBodies(t *testing.T) {
	m := newMem()
	if _, err := m.Create(t.Context(), "t", "bad", []byte(`{"id":"bad","tenantId":"t","balance":"lots"}`)); err != nil {
		t.Fatal(err)
	}
	_, _, err := store.NewRepository[account](m).Get(t.Context(), "t", "bad")
	if err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("Get of a body that does not decode: got %v, want a decode error", err)
	}
}

func TestRepositoryList_DecodesThePageAndPassesTheToken(t *testing.T) {
	m := newMem()
	m.page = store.Page{
		Items: []store.Item{
			{ID: "a", PartitionKey: "t", Body: []byte(`{"id":"a","tenantId":"t","balance":1,"_etag":"\"x\"","_ts":1}`)},
			{ID: "b", PartitionKey: "t", Body: []byte(`{"id":"b","tenantId":"t","balance":2}`)},
		},
		Continuation: "next-page",
	}
	q := store.Query{PartitionKey: "t", Limit: 2, Continuation: "this-page", Filters: []store.Filter{{Field: "balance", Value: 1}}}
	got, next, err := store.NewRepository[account](m).List(t.Context(), q)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	want := []account{{ID: "a", Tenant: "t", Balance: 1}, {ID: "b", Tenant: "t", Balance: 2}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] || next != "next-page" {
		t.Errorf("List = %+v, %q; want %+v, %q", got, next, want, "next-page")
	}
	if m.lastQuery.Continuation != "this-page" || m.lastQuery.PartitionKey != "t" || len(m.lastQuery.Filters) != 1 {
		t.Errorf("List passed query %+v, want the caller's query unchanged", m.lastQuery)
	}
}

func TestRepositoryCreate_ConflictOnExistingID(t *testing.T) {
	m := newMem()
	r := seeded(t, m, account{ID: "acc", Tenant: "t", Balance: 1})
	if _, err := r.Create(t.Context(), account{ID: "acc", Tenant: "t", Balance: 2}); !errors.Is(err, store.ErrConflict) {
		t.Errorf("second Create: got %v, want ErrConflict", err)
	}
}

func TestPageSize_NormalisesLimits(t *testing.T) {
	for _, tc := range []struct{ in, want int }{
		{-1, store.DefaultPageSize}, {0, store.DefaultPageSize}, {1, 1}, {store.MaxPageSize, store.MaxPageSize}, {store.MaxPageSize + 1, store.MaxPageSize},
	} {
		if got := store.PageSize(tc.in); got != tc.want {
			t.Errorf("PageSize(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestIsTransient_OnlyStoreFaults(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("read: %w", store.ErrThrottled), true},
		{fmt.Errorf("read: %w", store.ErrUnavailable), true},
		{store.ErrNotFound, false},
		{store.ErrConflict, false},
		{store.ErrPreconditionFailed, false},
		{store.ErrInvalidQuery, false},
		{nil, false},
	} {
		if got := store.IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
