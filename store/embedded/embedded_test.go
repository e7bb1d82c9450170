package embedded_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
	"github.com/castiel/integration-manager/store/storetest"
)

func openTemp(t testing.TB, specs []store.ContainerSpec, opts ...embedded.Option) *embedded.Backend {
	t.Helper()
	path := filepath.Join(t.TempDir(), "store.db")
	b, err := embedded.Open(path, specs, opts...)
	if err != nil {
		t.Fatalf("open embedded store at %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close embedded store: %v", err)
		}
	})
	return b
}

func TestConformance_Embedded(t *testing.T) {
	storetest.Run(t, func(t *testing.T, specs []store.ContainerSpec) store.Backend {
		// A short sweep interval so the sweeper runs while the suite writes.
		return openTemp(t, specs, embedded.WithSweepInterval(300*time.Millisecond))
	}, storetest.Capabilities{
		EnforcesIfMatch:    true,
		ExpiresTTL:         true,
		PartitionScopedIDs: true,
		AtomicBatch:        true,
		TTLDeclared: func(t *testing.T, b store.Backend, name string) bool {
			ttl, err := b.(*embedded.Backend).DeclaredTTL(name)
			if err != nil {
				t.Fatalf("DeclaredTTL(%s): %v", name, err)
			}
			return ttl > 0
		},
	})
}

func BenchmarkEmbedded(b *testing.B) {
	storetest.Bench(b, func(b *testing.B) store.Backend {
		return openTemp(b, store.Containers(time.Hour))
	})
}

func TestEmbedded_DocumentsSurviveReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "store.db")
	specs := store.Containers(time.Hour)
	b, err := embedded.Open(path, specs)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c, _ := b.Container(domain.ContainerWebhooks)
	body := []byte(`{"id":"wh-1","tenantId":"tenant-a","url":"https://example.test/hook"}`)
	etag, err := c.Create(ctx, "tenant-a", "wh-1", body)
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	b, err = embedded.Open(path, specs)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer b.Close()
	c, _ = b.Container(domain.ContainerWebhooks)
	it, err := c.Read(ctx, "tenant-a", "wh-1")
	if err != nil {
		t.Fatalf("Read after reopen: %v (the document written before Close is gone)", err)
	}
	if it.ETag != etag {
		t.Errorf("ETag after reopen %q, want %q", it.ETag, etag)
	}
	// New writes after a reopen get ETags never used before.
	etag2, err := c.Replace(ctx, "tenant-a", "wh-1", body, etag)
	if err != nil || etag2 == etag {
		t.Errorf("Replace after reopen: etag %q (before %q), err %v", etag2, etag, err)
	}
}

func TestEmbedded_ClosedBackendIsUnavailable(t *testing.T) {
	ctx := t.Context()
	b, err := embedded.Open(filepath.Join(t.TempDir(), "store.db"), store.Containers(time.Hour))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	c, _ := b.Container(domain.ContainerWebhooks)
	if err := b.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	body := []byte(`{"id":"x","tenantId":"t"}`)
	checks := map[string]error{
		"Ping": b.Ping(ctx),
		"Create": func() error {
			_, err := c.Create(ctx, "t", "x", body)
			return err
		}(),
		"Read": func() error {
			_, err := c.Read(ctx, "t", "x")
			return err
		}(),
		"Delete": c.Delete(ctx, "t", "x", ""),
		"Query": func() error {
			_, err := c.Query(ctx, store.Query{PartitionKey: "t"})
			return err
		}(),
	}
	for op, err := range checks {
		if !errors.Is(err, store.ErrUnavailable) || !store.IsTransient(err) {
			t.Errorf("%s on a closed store: got %v, want an ErrUnavailable (transient) error", op, err)
		}
	}
}

func TestEmbedded_SecondOpenOfTheSameFileFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	b, err := embedded.Open(path, store.Containers(time.Hour))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	start := time.Now()
	if second, err := embedded.Open(path, store.Containers(time.Hour)); err == nil {
		second.Close()
		t.Fatal("a second Open of a file in use succeeded; two writers would corrupt it")
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Errorf("the second Open waited %v before failing", waited)
	}
}

func TestEmbedded_ReopenWithAnotherPartitionKeyIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "store.db")
	specs := []store.ContainerSpec{{Name: "things", PartitionKey: "tenantId"}}
	b, err := embedded.Open(path, specs)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	b.Close()
	specs[0].PartitionKey = "category"
	if b, err := embedded.Open(path, specs); err == nil {
		b.Close()
		t.Fatal("reopening a container with a different partition key succeeded; its documents would be unreachable")
	}
}

func TestEmbedded_RefusesBodiesThatDisagreeWithTheirKey(t *testing.T) {
	c, _ := openTemp(t, store.Containers(time.Hour)).Container(domain.ContainerWebhooks)
	cases := []struct {
		name, pk, id, body string
	}{
		{"not JSON", "t", "x", `not json`},
		{"not an object", "t", "x", `["x"]`},
		{"id missing", "t", "x", `{"tenantId":"t"}`},
		{"id differs", "t", "x", `{"id":"y","tenantId":"t"}`},
		{"partition key missing", "t", "x", `{"id":"x"}`},
		{"partition key differs", "t", "x", `{"id":"x","tenantId":"u"}`},
		{"empty id", "t", "", `{"id":"","tenantId":"t"}`},
		{"slash in id", "t", "a/b", `{"id":"a/b","tenantId":"t"}`},
		{"id too long", "t", strings.Repeat("x", 1024), `{"id":"` + strings.Repeat("x", 1024) + `","tenantId":"t"}`},
		{"body over 2 MiB", "t", "x", `{"id":"x","tenantId":"t","pad":"` + strings.Repeat("x", 2<<20) + `"}`},
	}
	for _, tc := range cases {
		if _, err := c.Create(t.Context(), tc.pk, tc.id, []byte(tc.body)); err == nil {
			t.Errorf("%s: Create of %s accepted", tc.name, tc.body)
		} else if store.IsTransient(err) {
			t.Errorf("%s: a bad document is the caller's fault, got a transient error %v", tc.name, err)
		}
	}
}

func TestEmbedded_SystemPropertiesSentBackAreReplaced(t *testing.T) {
	ctx := t.Context()
	c, _ := openTemp(t, store.Containers(time.Hour)).Container(domain.ContainerWebhooks)
	if _, err := c.Create(ctx, "t", "x", []byte(`{"id":"x","tenantId":"t","n":1}`)); err != nil {
		t.Fatalf("Create: %v", err)
	}
	first, _ := c.Read(ctx, "t", "x")
	// Write back exactly what was read, as a careless caller would.
	if _, err := c.Replace(ctx, "t", "x", first.Body, first.ETag); err != nil {
		t.Fatalf("Replace with a body carrying _etag/_ts: %v", err)
	}
	second, _ := c.Read(ctx, "t", "x")
	if n := strings.Count(string(second.Body), `"_etag"`); n != 1 {
		t.Errorf("body carries %d _etag properties, want 1: %s", n, second.Body)
	}
	if second.ETag == first.ETag {
		t.Errorf("ETag unchanged by Replace")
	}
}

func TestEmbedded_TTLMinusOneNeverExpiresAndBadTTLIsRefused(t *testing.T) {
	ctx := t.Context()
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	b := openTemp(t, store.Containers(time.Hour), embedded.WithClock(func() time.Time { return time.Unix(0, now.Load()) }))
	c, _ := b.Container(domain.ContainerExecutions)
	for id, body := range map[string]string{
		"forever": `{"id":"forever","tenantId":"t","ttl":-1}`,
		"default": `{"id":"default","tenantId":"t"}`,
		"null":    `{"id":"null","tenantId":"t","ttl":null}`,
	} {
		if _, err := c.Upsert(ctx, "t", id, []byte(body)); err != nil {
			t.Fatalf("Upsert %s: %v", body, err)
		}
	}
	for _, bad := range []string{`0`, `-5`, `1.5`, `"60"`} {
		body := `{"id":"bad","tenantId":"t","ttl":` + bad + `}`
		if _, err := c.Upsert(ctx, "t", "bad", []byte(body)); err == nil {
			t.Errorf("ttl %s was accepted; Cosmos refuses it", bad)
		}
	}
	if it, err := c.Read(ctx, "t", "null"); err != nil || !strings.Contains(string(it.Body), `"ttl":3600`) {
		t.Errorf("a null ttl must take the container's default: body %s, err %v", it.Body, err)
	}
	now.Add(int64(2 * time.Hour)) // past the container's retention
	if _, err := c.Read(ctx, "t", "default"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("document with the default 1h retention read 2h later: got %v, want ErrNotFound", err)
	}
	if _, err := c.Read(ctx, "t", "forever"); err != nil {
		t.Errorf("document with ttl -1 read 2h later: %v, want it kept", err)
	}
	// An expired id is free again.
	if _, err := c.Create(ctx, "t", "default", []byte(`{"id":"default","tenantId":"t"}`)); err != nil {
		t.Errorf("Create over an expired document: %v", err)
	}
}

// ReadMany reads a page's documents in one transaction and must agree with
// Read on each: the live document, or nothing for a missing id, another
// partition's document or a deleted one.
func TestEmbedded_ReadManyAgreesWithRead(t *testing.T) {
	ctx := t.Context()
	c, _ := openTemp(t, store.Containers(time.Hour)).Container(domain.ContainerWebhooks)
	for _, d := range []struct{ pk, id string }{{"t", "a"}, {"t", "b"}, {"t", "gone"}, {"u", "c"}} {
		body := `{"id":"` + d.id + `","tenantId":"` + d.pk + `"}`
		if _, err := c.Create(ctx, d.pk, d.id, []byte(body)); err != nil {
			t.Fatalf("Create %s/%s: %v", d.pk, d.id, err)
		}
	}
	if err := c.Delete(ctx, "t", "gone", ""); err != nil {
		t.Fatal(err)
	}
	ids := []string{"b", "missing", "a", "c", "gone", "a"}
	readManyAgreesWithRead(t, c, "t", ids)
}

// ReadMany steps forward through ids given in increasing order (a page of
// records in key order) instead of seeking each: stored runs, gaps longer
// than its steps, ids past the partition's last document and a turn back
// must all read as Read does.
func TestEmbedded_ReadManyInKeyOrderAgreesWithRead(t *testing.T) {
	ctx := t.Context()
	c, _ := openTemp(t, store.Containers(time.Hour)).Container(domain.ContainerWebhooks)
	id := func(n int) string { return fmt.Sprintf("k%03d", n) }
	for n := range 60 {
		if n%3 == 0 || n > 20 && n < 45 { // single gaps, then a run, then a long gap
			continue
		}
		body := `{"id":"` + id(n) + `","tenantId":"t"}`
		if _, err := c.Create(ctx, "t", id(n), []byte(body)); err != nil {
			t.Fatalf("Create %s: %v", id(n), err)
		}
	}
	if _, err := c.Create(ctx, "u", id(70), []byte(`{"id":"`+id(70)+`","tenantId":"u"}`)); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for n := range 75 {
		ids = append(ids, id(n))
	}
	ids = append(ids, id(5), id(4), id(58), id(59))
	readManyAgreesWithRead(t, c, "t", ids)
}

// readManyAgreesWithRead checks that ReadMany of ids in partition pk gives, id
// by id, what Read gives (the zero Item where Read finds nothing).
func readManyAgreesWithRead(t *testing.T, c store.Container, pk string, ids []string) {
	t.Helper()
	got, err := c.(store.ManyReader).ReadMany(t.Context(), pk, ids)
	if err != nil {
		t.Fatalf("ReadMany: %v", err)
	}
	if len(got) != len(ids) {
		t.Fatalf("ReadMany returned %d items for %d ids", len(got), len(ids))
	}
	for i, id := range ids {
		want, err := c.Read(t.Context(), pk, id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			if got[i].ID != "" {
				t.Errorf("ids[%d] %q: ReadMany found %s, Read finds nothing", i, id, got[i].Body)
			}
		case err != nil:
			t.Fatal(err)
		case !reflect.DeepEqual(got[i], want):
			t.Errorf("ids[%d] %q: ReadMany gave %+v, Read gives %+v", i, id, got[i], want)
		}
	}
}
