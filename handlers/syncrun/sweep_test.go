package syncrun_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// The keys a full refresh records page by page are removed once its sweep is
// over, and so are those a run that never finished left behind: the sync
// state partition keeps only record states.
func TestRun_FullRefreshLeavesOnlyRecordStatesBehind(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	hs.srv.SeedN(entity, 35)
	hs.task("st-clean", domain.DirectionPull, domain.ModeFullRefresh)
	c, err := hs.db.Container(store.SyncStateContainer)
	if err != nil {
		t.Fatal(err)
	}
	// Left by an earlier run of the task that died before its sweep.
	for i := range 3 {
		id := domain.SyncSeenID("run-dead", i)
		body := fmt.Sprintf(`{"id":%q,"syncTaskId":"st-clean","tenantId":%q,"kind":"seen","executionId":"run-dead","page":%d,"keys":["c0000001"]}`, id, tenant, i)
		if _, err := c.Create(context.Background(), "st-clean", id, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}

	e := hs.run("run-1", "st-clean")
	mustStatus(t, e, domain.ExecCompleted)
	if e.Sync.SeenPages != 4 {
		t.Errorf("the run recorded the keys of %d pages, want 4", e.Sync.SeenPages)
	}
	states := 0
	for _, it := range queryAll(t, c, store.Query{PartitionKey: "st-clean", Limit: 1000}) {
		var d struct {
			Kind      string `json:"kind"`
			RecordKey string `json:"recordKey"`
		}
		if err := json.Unmarshal(it.Body, &d); err != nil {
			t.Fatal(err)
		}
		if d.Kind != "" || d.RecordKey == "" {
			t.Errorf("left in the sync state partition: %s", it.Body)
			continue
		}
		states++
	}
	if states != 35 {
		t.Errorf("%d record states, want 35", states)
	}
}

// A task's first full read starts with no sync state, so nothing it does not
// see can be a deletion: it records no keys and does not sweep. The next full
// read, with states to compare, records and sweeps as ever.
func TestRun_AFirstFullReadHasNothingToSweep(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	recs := hs.srv.SeedN(entity, 25)
	hs.task("st-first", domain.DirectionPull, domain.ModeFullRefresh)

	e := hs.run("run-1", "st-first")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Added != 25 || s.Deleted != 0 || e.Sync.SeenPages != 0 || !e.Sync.NothingToSweep {
		t.Errorf("first run: stats %+v, keys of %d pages recorded, nothing to sweep %v; want 25 added, none deleted, none recorded, nothing to sweep",
			s, e.Sync.SeenPages, e.Sync.NothingToSweep)
	}
	for _, r := range recs {
		if _, ok := hs.shardRecord(r.ID); !ok {
			t.Fatalf("after the first run %s is not in Castiel", r.ID)
		}
	}

	hs.srv.Remove(entity, recs[4].ID)
	e = hs.run("run-2", "st-first")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Deleted != 1 || e.Sync.SeenPages != 3 || e.Sync.NothingToSweep {
		t.Errorf("second run: stats %+v, keys of %d pages recorded; want the removed record deleted, 3 pages recorded", s, e.Sync.SeenPages)
	}
	if _, ok := hs.shardRecord(recs[4].ID); ok {
		t.Errorf("%s was removed from the API and is still in Castiel", recs[4].ID)
	}
}

func queryAll(t *testing.T, c store.Container, q store.Query) []store.Item {
	t.Helper()
	var all []store.Item
	for {
		page, err := c.Query(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Items...)
		if page.Continuation == "" {
			return all
		}
		q.Continuation = page.Continuation
	}
}
