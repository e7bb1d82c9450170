package syncrun_test

import (
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
)

// scrape sums the series of family name whose labels include want: counter
// values, or for histograms their sample counts (sum false) or sums (sum true).
func scrape(t *testing.T, reg *prometheus.Registry, name string, want map[string]string, sum bool) float64 {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	total := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue series
				}
			}
			switch {
			case f.GetType() == dto.MetricType_COUNTER:
				total += m.GetCounter().GetValue()
			case f.GetType() == dto.MetricType_HISTOGRAM && sum:
				total += m.GetHistogram().GetSampleSum()
			case f.GetType() == dto.MetricType_HISTOGRAM:
				total += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return total
}

func TestRun_MetricsCountRecordsPagesAPICallsAndRateLimitWaits(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	recs := hs.srv.SeedN(entity, 24)
	hs.srv.Seed(entity, fakeapi.Record{ID: "bad-1", Name: "not a number", Email: "b@example.com"})
	hs.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts", Skip: 1, Count: 1, Status: http.StatusTooManyRequests, RetryAfter: "1"})
	hs.task("st-metrics", domain.DirectionPull, domain.ModeFullRefresh, func(t *domain.SyncTask) {
		t.Mapping = append(t.Mapping, domain.FieldMapping{Source: "name", Target: "score", Convert: domain.ConvertNumber})
	})
	// Every seeded name but bad-1's is "Contact n": make them numbers so only bad-1 fails.
	for _, r := range recs {
		hs.srv.Edit(entity, r.ID, func(r *fakeapi.Record) { r.Name = "12" })
	}
	e := hs.run("run-1", "st-metrics")
	mustStatus(t, e, domain.ExecCompletedWithErrors)

	reg := hs.metrics
	records := func(class string) float64 {
		return scrape(t, reg, "integration_sync_records_total", map[string]string{"classification": class}, false)
	}
	if got := records("added"); got != 24 {
		t.Errorf("records{added} = %v, want 24", got)
	}
	if got := records("failed"); got != 1 {
		t.Errorf("records{failed} = %v, want 1 (bad-1's name is not a number)", got)
	}
	if got := scrape(t, reg, "integration_sync_pages_total", map[string]string{"phase": "pull"}, false); got != float64(e.Sync.Pages) || got < 3 {
		t.Errorf("pages{pull} = %v, want the run's %d pages", got, e.Sync.Pages)
	}
	if got := scrape(t, reg, "integration_sync_external_api_calls_total", nil, false); got != float64(e.Sync.APICalls) {
		t.Errorf("external API calls = %v, want the %d the execution records", got, e.Sync.APICalls)
	}
	if got := scrape(t, reg, "integration_sync_rate_limit_waits_total", nil, false); got < 1 {
		t.Errorf("rate-limit waits = %v, want the wait for the 429's Retry-After counted", got)
	}
	if got := scrape(t, reg, "integration_sync_rate_limit_wait_seconds_total", nil, false); got <= 0 {
		t.Errorf("rate-limit wait seconds = %v, want the time waited", got)
	}
	if got := scrape(t, reg, "integration_sync_run_duration_seconds", map[string]string{"status": string(domain.ExecCompletedWithErrors)}, false); got != 1 {
		t.Errorf("run durations observed for completed_with_errors = %v, want 1", got)
	}

	// A re-read counts what it found unchanged.
	hs.run("run-2", "st-metrics")
	if got := records("unchanged"); got != 24 {
		t.Errorf("records{unchanged} = %v after a re-read of 24 synced records", got)
	}
	if got := scrape(t, reg, "integration_sync_run_duration_seconds", nil, false); got != 2 {
		t.Errorf("run durations observed = %v, want 2", got)
	}
}
