package webhook

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sony/gobreaker/v2"
)

// metrics of the dispatcher; registered when Deps.Metrics is set.
type metrics struct {
	attempts    *prometheus.CounterVec
	duration    prometheus.Histogram
	deferred    *prometheus.CounterVec
	fannedOut   *prometheus.CounterVec
	handedOff   prometheus.Counter
	noMatch     prometheus.Counter
	redelivered prometheus.Counter
	retries     prometheus.Counter
	circuits    *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_delivery_attempts_total",
			Help: "Recorded delivery attempts by resulting status, error class and the endpoint's HTTP status class (2xx..5xx, none).",
		}, []string{"status", "error_class", "status_class"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "webhook_delivery_attempt_duration_seconds",
			Help:    "Duration of delivery attempts, request sent to response read.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30},
		}),
		deferred: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_delivery_deferrals_total",
			Help: "Deliveries deferred without using an attempt, by reason.",
		}, []string{"reason"}),
		fannedOut: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "webhook_fanout_deliveries_total",
			Help: "Deliveries created by the fan-out of events, by path of their first attempt: inline (made by the fan-out) or queue.",
		}, []string{"path"}),
		handedOff: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhook_fanout_handoffs_total",
			Help: "Inline first attempts still running after webhooks.dispatcher.inlineHandoff: the event was acked, a safety copy scheduled.",
		}),
		noMatch: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhook_fanout_no_match_total",
			Help: "Events no endpoint of their tenant accepted.",
		}),
		redelivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhook_delivery_redelivered_total",
			Help: "Delivery messages whose attempt was already recorded (the endpoint was not called again).",
		}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "webhook_delivery_retries_scheduled_total",
			Help: "Next attempts put on the durable retry schedule after a failed attempt.",
		}),
		circuits: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "webhook_endpoint_circuits",
			Help: "Endpoints whose circuit breaker in this process is open or half-open (as of its last use).",
		}, []string{"state"}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.attempts, m.duration, m.deferred, m.fannedOut, m.handedOff, m.noMatch, m.redelivered, m.retries, m.circuits} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("webhook: register metrics: %w", err)
		}
	}
	return m, nil
}

// circuitChanged keeps webhook_endpoint_circuits in step with one breaker's transition.
func (m *metrics) circuitChanged(from, to gobreaker.State) {
	if from != gobreaker.StateClosed {
		m.circuits.WithLabelValues(circuitLabel(from)).Dec()
	}
	if to != gobreaker.StateClosed {
		m.circuits.WithLabelValues(circuitLabel(to)).Inc()
	}
}

func circuitLabel(s gobreaker.State) string {
	if s == gobreaker.StateHalfOpen {
		return "half_open"
	}
	return "open"
}

// statusClass buckets an endpoint's HTTP answer for metrics; "none" when there was
// no answer (connection error, timeout, blocked, not attempted).
func statusClass(code int) string {
	switch {
	case code >= 100 && code < 600:
		return string(rune('0'+code/100)) + "xx"
	default:
		return "none"
	}
}
