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
