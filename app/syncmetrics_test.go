package app_test

import (
	"testing"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
)

// The process's /metrics carries the sync worker's and the store's metrics,
// and they move when a run does work.
func TestSyncWorker_MetricsOfRunsAndStoreRequestsAreExported(t *testing.T) {
	t.Parallel()
	s := start(t, environ(t), app.PartAPI, app.PartSyncWorker)
	fake := fakeapi.New(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthAPIKeyHeader, PageSize: 4}})
	fake.SeedN(syncEntity, 10)
	taskID := syncSetup(t, s, fake, domain.StrategyManual)
	storeBefore := metricSum(t, s, "store_request_duration_seconds_count")

	e := runSync(t, s, taskID)

	if got := metricSum(t, s, "integration_sync_records_total"); got != float64(e.Stats.Added+e.Stats.Unchanged) || e.Stats.Added != 10 {
		t.Errorf("integration_sync_records_total = %v after a run that added %d records (stats %+v)", got, e.Stats.Added, *e.Stats)
	}
	if got := metricSum(t, s, "integration_sync_pages_total"); got < 3 {
		t.Errorf("integration_sync_pages_total = %v after reading 10 records 4 to a page", got)
	}
	if got := metricSum(t, s, "integration_sync_external_api_calls_total"); got < 3 {
		t.Errorf("integration_sync_external_api_calls_total = %v, want the run's page reads", got)
	}
	if got := metricSum(t, s, "integration_sync_run_duration_seconds_count"); got != 1 {
		t.Errorf("integration_sync_run_duration_seconds_count = %v, want 1", got)
	}
	if got := metricSum(t, s, "store_request_duration_seconds_count"); got <= storeBefore {
		t.Errorf("store requests observed: %v before the run, %v after; want the run's reads and writes timed", storeBefore, got)
	}
}
