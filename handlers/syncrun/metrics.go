package syncrun

import (
	"fmt"
	"runtime"
	"sync"
	"weak"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/domain"
)

// Record classifications of integration_sync_records_total.
const (
	classAdded      = "added"
	classUpdated    = "updated"
	classDeleted    = "deleted"
	classUnchanged  = "unchanged"
	classConflicted = "conflicted"
	classFailed     = "failed"
)

// metrics of the sync worker; registered when Deps.Metrics is set.
type metrics struct {
	records      *prometheus.CounterVec
	pages        *prometheus.CounterVec
	apiCalls     prometheus.Counter
	rateWaits    prometheus.Counter
	rateWaitSecs prometheus.Counter
	duration     *prometheus.HistogramVec

	byClass map[string]prometheus.Counter // read-only after newMetrics

	// The connector counters already reported, per client: clients are
	// shared by the runs of one connection (and live on after them), so
	// each run reports what its client did since anyone last reported.
	mu      sync.Mutex
	clients map[weak.Pointer[connector.Client]]connector.Stats
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "integration_sync_records_total",
			Help: "Records sync runs handled, by classification (added, updated, deleted, unchanged, conflicted, failed). A page replayed after an interruption counts its records again.",
		}, []string{"classification"}),
		pages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "integration_sync_pages_total",
			Help: "Pages sync runs read and applied, by phase (pull and pull_deleted: the external API; push: the shard walk; sweep: the sync state walk).",
		}, []string{"phase"}),
		apiCalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "integration_sync_external_api_calls_total",
			Help: "Requests to external APIs made by the connector clients of sync runs (token requests excluded; retries included).",
		}),
		rateWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "integration_sync_rate_limit_waits_total",
			Help: "Times a sync run's request waited for a rate limit (the provider's token bucket, Retry-After or a reset header).",
		}),
		rateWaitSecs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "integration_sync_rate_limit_wait_seconds_total",
			Help: "Total time sync runs' requests waited for rate limits.",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "integration_sync_run_duration_seconds",
			Help:    "Duration of finished sync runs from their start to their end (resumptions included), by final status.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600},
		}, []string{"status"}),
		byClass: map[string]prometheus.Counter{},
		clients: map[weak.Pointer[connector.Client]]connector.Stats{},
	}
	for _, c := range []string{classAdded, classUpdated, classDeleted, classUnchanged, classConflicted, classFailed} {
		m.byClass[c] = m.records.WithLabelValues(c)
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.records, m.pages, m.apiCalls, m.rateWaits, m.rateWaitSecs, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("syncrun: register metrics: %w", err)
		}
	}
	return m, nil
}

// record counts one record by what the run did about it.
func (m *metrics) record(a domain.SyncAction) {
	c := classUnchanged
	switch a {
	case domain.ActionPullAdd, domain.ActionPushAdd:
		c = classAdded
	case domain.ActionPullUpdate, domain.ActionPushUpdate:
		c = classUpdated
	case domain.ActionPullDelete, domain.ActionPushDelete:
		c = classDeleted
	case domain.ActionConflict:
		c = classConflicted
	}
	m.byClass[c].Inc()
}

func (m *metrics) failed() { m.byClass[classFailed].Inc() }

func (m *metrics) page(phase domain.SyncRunPhase) { m.pages.WithLabelValues(string(phase)).Inc() }

// client adds what c did since it was last reported. The first report of a
// client only takes its counters as the base.
func (m *metrics) client(c *connector.Client) {
	key := weak.Make(c)
	m.mu.Lock()
	s := c.Stats() // under the lock: reports of concurrent runs never cross
	last, seen := m.clients[key]
	m.clients[key] = s
	m.mu.Unlock()
	if !seen {
		runtime.AddCleanup(c, func(key weak.Pointer[connector.Client]) {
			m.mu.Lock()
			delete(m.clients, key)
			m.mu.Unlock()
		}, key)
		return
	}
	if d := s.APICalls - last.APICalls; d > 0 {
		m.apiCalls.Add(float64(d))
	}
	if d := s.RateLimitWaits - last.RateLimitWaits; d > 0 {
		m.rateWaits.Add(float64(d))
	}
	if d := s.RateLimitWaitTime - last.RateLimitWaitTime; d > 0 {
		m.rateWaitSecs.Add(d.Seconds())
	}
}
