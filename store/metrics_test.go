package store_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

// scrape returns the sample count (histograms) or value (counters) of the
// series of family name whose labels include want; 0 if there is none.
func scrape(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue series
				}
			}
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				return float64(m.GetHistogram().GetSampleCount())
			case dto.MetricType_COUNTER:
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// instrumentedWebhooks is the webhooks container of an instrumented embedded
// store, and the registry its metrics are in.
func instrumentedWebhooks(t *testing.T) (store.Container, *prometheus.Registry) {
	t.Helper()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "db"), store.Containers(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	reg := prometheus.NewRegistry()
	b, err := store.Instrument(db, reg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := b.Container(domain.ContainerWebhooks)
	if err != nil {
		t.Fatal(err)
	}
	return c, reg
}

func TestInstrument_TimesEveryRequestByContainerAndOperation(t *testing.T) {
	c, reg := instrumentedWebhooks(t)
	ctx := t.Context()
	body := func(id string) []byte { return []byte(fmt.Sprintf(`{"id":%q,"tenantId":"t1"}`, id)) }
	for i := range 3 {
		if _, err := c.Create(ctx, "t1", fmt.Sprint("w", i), body(fmt.Sprint("w", i))); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = c.Read(ctx, "t1", "w0")
	_, _ = c.Read(ctx, "t1", "absent") // a refusal is timed too, and is no transient failure
	if _, err := c.Batch(ctx, "t1", []store.Op{store.UpsertOp("b1", body("b1")), store.DeleteOp("w2", "")}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Query(ctx, store.Query{PartitionKey: "t1"}); err != nil {
		t.Fatal(err)
	}
	// Several batches sent together stay one request of the embedded store
	// (its MultiBatcher shows through the instrumentation).
	many := make([]store.Op, store.MaxBatchOps+20)
	for i := range many {
		id := fmt.Sprint("m", i)
		many[i] = store.UpsertOp(id, body(id))
	}
	if _, ok := c.(store.MultiBatcher); !ok {
		t.Error("the instrumented embedded container hides its MultiBatcher")
	}
	if _, _, errs := store.WriteBatches(ctx, c, "t1", many); errors.Join(errs...) != nil {
		t.Fatal(errors.Join(errs...))
	}

	const hist = "store_request_duration_seconds"
	for op, want := range map[string]float64{"create": 3, "read": 2, "batch": 2, "query": 1, "replace": 0} {
		if got := scrape(t, reg, hist, map[string]string{"container": domain.ContainerWebhooks, "operation": op}); got != want {
			t.Errorf("%s{operation=%q}: %v requests observed, want %v", hist, op, got, want)
		}
	}
	if got := scrape(t, reg, "store_request_transient_failures_total", nil); got != 0 {
		t.Errorf("transient failures counted %v, want 0 (not-found is the caller's answer, not the store's failure)", got)
	}
}

// The sync worker reads a page's states in one ReadMany where the store has it:
// instrumentation must not hide it (production always instruments), and times
// it as one read.
func TestInstrument_KeepsReadManyVisibleAndTimesIt(t *testing.T) {
	c, reg := instrumentedWebhooks(t)
	ctx := t.Context()
	if _, err := c.Create(ctx, "t1", "w1", []byte(`{"id":"w1","tenantId":"t1"}`)); err != nil {
		t.Fatal(err)
	}
	mr, ok := store.ManyReaderOf(c)
	if !ok {
		t.Fatal("the instrumented embedded container offers no ReadMany")
	}
	items, err := mr.ReadMany(ctx, "t1", []string{"absent", "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if items[0].ID != "" || items[1].ID != "w1" {
		t.Fatalf("ReadMany gave ids %q, %q; want \"\", \"w1\"", items[0].ID, items[1].ID)
	}
	if n := scrape(t, reg, "store_request_duration_seconds", map[string]string{"container": domain.ContainerWebhooks, "operation": "read"}); n != 1 {
		t.Errorf("ReadMany timed as %v reads, want 1", n)
	}
}

func TestInstrument_CountsThrottledAndUnavailableRequests(t *testing.T) {
	reg := prometheus.NewRegistry()
	b, err := store.Instrument(failingBackend{}, reg)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := b.Container("hooks")
	_, _ = c.Read(t.Context(), "t1", "x")
	_, _ = c.Read(t.Context(), "t1", "x")
	_, _ = c.Upsert(t.Context(), "t1", "x", nil)
	const ctr = "store_request_transient_failures_total"
	if got := scrape(t, reg, ctr, map[string]string{"container": "hooks", "operation": "read", "reason": "throttled"}); got != 2 {
		t.Errorf("%s{read, throttled} = %v, want 2", ctr, got)
	}
	if got := scrape(t, reg, ctr, map[string]string{"container": "hooks", "operation": "upsert", "reason": "unavailable"}); got != 1 {
		t.Errorf("%s{upsert, unavailable} = %v, want 1", ctr, got)
	}
	if _, err := store.Instrument(failingBackend{}, reg); err == nil {
		t.Error("a second Instrument on the same registry succeeded; want the duplicate registration refused")
	}
}

// failingBackend's containers refuse reads as throttled and writes as unavailable.
type failingBackend struct{}

func (failingBackend) Container(string) (store.Container, error) { return failingContainer{}, nil }
func (failingBackend) Ping(context.Context) error                { return nil }
func (failingBackend) Close() error                              { return nil }

type failingContainer struct{ store.Container }

func (failingContainer) Read(context.Context, string, string) (store.Item, error) {
	return store.Item{}, fmt.Errorf("read: %w", store.ErrThrottled)
}

func (failingContainer) Upsert(context.Context, string, string, []byte) (string, error) {
	return "", fmt.Errorf("upsert: %w", store.ErrUnavailable)
}
