package messaging

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/castiel/integration-manager/domain"
)

// Reason classes of poisoned messages (label reason_class): a handful of fixed values,
// never the error text, so the series stay few whatever handlers return.
const (
	ReasonUndecodable = "undecodable"
	ReasonUnknownType = "unknown_type"
	ReasonInvalid     = "invalid"
	ReasonPanic       = "panic"
	ReasonOther       = "other"
)

// ReasonClass maps a permanent handler error to its reason class.
func ReasonClass(err error) string {
	var perr *PanicError
	switch {
	case errors.As(err, &perr):
		return ReasonPanic
	case errors.Is(err, ErrUndecodable), errors.Is(err, domain.ErrMalformedMessage):
		return ReasonUndecodable
	case errors.Is(err, ErrUnexpectedType), errors.Is(err, domain.ErrUnknownMessageType):
		return ReasonUnknownType
	case errors.Is(err, domain.ErrInvalid), errors.Is(err, ErrInvalidMessage):
		return ReasonInvalid
	default:
		return ReasonOther
	}
}

// durationBuckets suit handlers that take from a millisecond (a store write) to the
// 30 s default handler timeout, times the in-process retries of one delivery.
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}

// routerMetrics are the per-consumer metrics of the router policy; nil records nothing.
type routerMetrics struct {
	consumed *prometheus.CounterVec
	acked    *prometheus.CounterVec
	nacked   *prometheus.CounterVec
	poisoned *prometheus.CounterVec
	retries  *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newRouterMetrics(reg prometheus.Registerer) (*routerMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	labels := []string{"topic", "handler"}
	m := &routerMetrics{
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messages_consumed_total",
			Help: "Deliveries handed to a consumer, by topic and consumer role (redeliveries count again).",
		}, labels),
		acked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messages_acked_total",
			Help: "Deliveries acked: handled, or moved to the poison topic.",
		}, labels),
		nacked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messages_nacked_total",
			Help: "Deliveries returned to their queue after a transient failure outlasted the in-process retries.",
		}, labels),
		poisoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messages_poisoned_total",
			Help: "Messages moved to the poison topic after a permanent failure, by reason class (undecodable, unknown_type, invalid, panic, other).",
		}, []string{"topic", "handler", "reason_class"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "message_retries_total",
			Help: "In-process retries of a handler after a transient failure (attempts beyond the first of a delivery).",
		}, labels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "message_handler_duration_seconds",
			Help:    "Time from a delivery reaching the router policy to its outcome, in-process retries included.",
			Buckets: durationBuckets,
		}, labels),
	}
	var err error
	for _, c := range []**prometheus.CounterVec{&m.consumed, &m.acked, &m.nacked, &m.poisoned, &m.retries} {
		if *c, err = register(reg, *c); err != nil {
			return nil, err
		}
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under the same
// description: two routers of one process (or of one test) share the series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, fmt.Errorf("messaging: register metrics: %w", err)
}

// handlerLabel is the consumer role of a handler named "<role>@<topic>#<n>": the topic
// has a label of its own and n is only which of the role's consumers took the message.
func handlerLabel(role string) string {
	role, _, _ = strings.Cut(role, "@")
	return role
}

func (m *routerMetrics) consumedOne(topic, handler string) {
	if m != nil {
		m.consumed.WithLabelValues(topic, handler).Inc()
	}
}

func (m *routerMetrics) retried(topic, handler string) {
	if m != nil {
		m.retries.WithLabelValues(topic, handler).Inc()
	}
}

func (m *routerMetrics) poisonedOne(topic, handler string, reason error) {
	if m != nil {
		m.poisoned.WithLabelValues(topic, handler, ReasonClass(reason)).Inc()
	}
}

// settled records a delivery's outcome: a nil err is an ack, any other a nack.
func (m *routerMetrics) settled(topic, handler string, start time.Time, err error) {
	if m == nil {
		return
	}
	m.duration.WithLabelValues(topic, handler).Observe(time.Since(start).Seconds())
	if err == nil {
		m.acked.WithLabelValues(topic, handler).Inc()
	} else {
		m.nacked.WithLabelValues(topic, handler).Inc()
	}
}

// publishMetrics are the metrics of a Transport's publisher.
type publishMetrics struct {
	published *prometheus.CounterVec
	failures  *prometheus.CounterVec
	confirm   prometheus.Histogram
}

func newPublishMetrics(reg prometheus.Registerer) (*publishMetrics, error) {
	m := &publishMetrics{
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messages_published_total",
			Help: "Messages published to a topic (on RabbitMQ: confirmed by the broker).",
		}, []string{"topic"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "message_publish_failures_total",
			Help: "Publish calls to a topic that failed (not connected, not confirmed, closed); the caller retries, nacks or answers 503.",
		}, []string{"topic"}),
		confirm: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "message_publish_confirm_seconds",
			Help:    "RabbitMQ only: time from the last message of a publish sent to every broker confirm received.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	var err error
	if m.published, err = register(reg, m.published); err != nil {
		return nil, err
	}
	if m.failures, err = register(reg, m.failures); err != nil {
		return nil, err
	}
	if m.confirm, err = register(reg, m.confirm); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *publishMetrics) publishedTo(topic string, n int, err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.failures.WithLabelValues(topic).Inc()
		return
	}
	m.published.WithLabelValues(topic).Add(float64(n))
}

func (m *publishMetrics) confirmed(sent time.Time) {
	if m != nil {
		m.confirm.Observe(time.Since(sent).Seconds())
	}
}

// metricsBackend is a backend that records its own publish metrics (confirm latency).
type metricsBackend interface {
	instrument(*publishMetrics)
}

// RegisterMetrics registers the publisher's metrics on reg (messages_published_total,
// message_publish_failures_total, and on RabbitMQ message_publish_confirm_seconds) and
// records them from now on. Call it once at start-up; a second call with the same
// registry keeps recording into the same series.
func (t *Transport) RegisterMetrics(reg prometheus.Registerer) error {
	if reg == nil {
		return errors.New("messaging: RegisterMetrics needs a registerer")
	}
	m, err := newPublishMetrics(reg)
	if err != nil {
		return err
	}
	t.metrics.Store(m)
	if b, ok := t.backend.(metricsBackend); ok {
		b.instrument(m)
	}
	return nil
}
