package conflicts

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics of the resolver; registered when Deps.Metrics is set.
type metrics struct {
	outcomes    *prometheus.CounterVec
	lost        *prometheus.CounterVec
	busy        prometheus.Counter
	sideRetries *prometheus.CounterVec
	duration    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conflict_resolutions_total",
			Help: "Resolution attempts recorded, by strategy and outcome.",
		}, []string{"strategy", "outcome"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conflict_resolution_lost_total",
			Help: "Messages that found their conflict already claimed or closed and changed nothing, by what they found.",
		}, []string{"found"}),
		busy: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "conflict_resolution_busy_total",
			Help: "Messages put back because another resolver was applying the same conflict.",
		}),
		sideRetries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "conflict_side_retries_total",
			Help: "Reads and writes of a side retried after an error, by side and operation.",
		}, []string{"side", "op"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "conflict_resolution_duration_seconds",
			Help:    "Time to handle one conflict message that claimed its conflict.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.outcomes, m.lost, m.busy, m.sideRetries, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("conflicts: register metrics: %w", err)
		}
	}
	return m, nil
}
