package messaging

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/castiel/integration-manager/domain"
)

func TestReasonClass_NamesTheKindOfPermanentFailure(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"undecodable payload", Permanent(fmt.Errorf("%w: bad json", ErrUndecodable)), ReasonUndecodable},
		{"domain malformed message", Permanent(fmt.Errorf("decode: %w", domain.ErrMalformedMessage)), ReasonUndecodable},
		{"unexpected ce-type", Permanent(fmt.Errorf("%w %q", ErrUnexpectedType, "x")), ReasonUnknownType},
		{"domain unknown message type", Permanent(fmt.Errorf("%w: x", domain.ErrUnknownMessageType)), ReasonUnknownType},
		{"domain validation error", Permanent(fmt.Errorf("cmd: %w", domain.NewValidationError("url", "required"))), ReasonInvalid},
		{"invalid envelope", Permanent(fmt.Errorf("%w: no ce-type", ErrInvalidMessage)), ReasonInvalid},
		{"panic", Permanent(&PanicError{Value: "boom"}), ReasonPanic},
		{"anything else", Permanent(errors.New("tenant t-1 does not exist")), ReasonOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ReasonClass(tt.err); got != tt.want {
				t.Errorf("ReasonClass(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

// metricsWorld is one in-process worker whose router records into reg.
type metricsWorld struct {
	reg      *prometheus.Registry
	tr       *Transport
	mu       sync.Mutex
	attempts map[string]int
	handled  chan string
	poisoned chan *message.Message
}

// startMetricsWorld runs a worker on TopicCmdWebhookDeliver whose handler fails the
// first failN[id] attempts of a message transiently, and panics on id "boom".
func startMetricsWorld(t *testing.T, policy Policy, failN map[string]int) *metricsWorld {
	t.Helper()
	w := &metricsWorld{
		reg: prometheus.NewRegistry(), tr: inProcessEnv(t).transport,
		attempts: map[string]int{}, handled: make(chan string, 10), poisoned: make(chan *message.Message, 10),
	}
	if err := w.tr.RegisterMetrics(w.reg); err != nil {
		t.Fatalf("RegisterMetrics: %v", err)
	}
	policy.Metrics = w.reg
	r := newRouter(t, w.tr, policy)
	addConsumer(t, r, w.tr, workerRole, TopicCmdWebhookDeliver, 1, func(msg *message.Message) error {
		o, err := Decode[order](msg, orderType)
		if err != nil {
			return err
		}
		w.mu.Lock()
		w.attempts[o.ID]++
		fail := w.attempts[o.ID] <= failN[o.ID]
		w.mu.Unlock()
		if o.ID == "boom" {
			panic("boom")
		}
		if fail {
			return errors.New("dependency down")
		}
		w.handled <- o.ID
		return nil
	})
	if err := AddPoisonConsumer(r, w.tr, poisonRole, 1, func(msg *message.Message) error {
		w.poisoned <- msg
		return nil
	}); err != nil {
		t.Fatalf("AddPoisonConsumer: %v", err)
	}
	runRouter(t, r)
	return w
}

var workerLabels = map[string]string{"topic": TopicCmdWebhookDeliver, "handler": workerRole}

// value reads a metric from the registry: a counter's value or a histogram's sample
// count, 0 when the series does not exist.
func (w *metricsWorld) value(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	return gathered(t, w.reg, name, labels)
}

func gathered(t *testing.T, reg prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather metrics: %v", err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if hasLabels(m, labels) {
				if h := m.GetHistogram(); h != nil {
					return float64(h.GetSampleCount())
				}
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.GetLabel() {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// eventually waits for the metric to reach want: the router records a delivery's
// outcome just after the handler returns.
func (w *metricsWorld) eventually(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := w.value(t, name, labels)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v = %v, want %v", name, labels, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *metricsWorld) expect(t *testing.T, name string, labels map[string]string, want float64) {
	t.Helper()
	if got := w.value(t, name, labels); got != want {
		t.Errorf("%s%v = %v, want %v", name, labels, got, want)
	}
}

func withReason(class string) map[string]string {
	return map[string]string{"topic": TopicCmdWebhookDeliver, "handler": workerRole, "reason_class": class}
}

func TestRouterMetrics_CountAHandledMessage(t *testing.T) {
	w := startMetricsWorld(t, fastPolicy(), nil)
	publish(t, w.tr, TopicCmdWebhookDeliver, mustMessage(t, context.Background(), orderType, order{ID: "ok-1"}))
	receive(t, w.handled, 5*time.Second, "the handled message")

	w.eventually(t, "messages_acked_total", workerLabels, 1)
	w.expect(t, "messages_consumed_total", workerLabels, 1)
	w.expect(t, "messages_nacked_total", workerLabels, 0)
	w.expect(t, "message_retries_total", workerLabels, 0)
	w.expect(t, "message_handler_duration_seconds", workerLabels, 1)
	w.expect(t, "messages_published_total", map[string]string{"topic": TopicCmdWebhookDeliver}, 1)
	w.expect(t, "messages_poisoned_total", nil, 0)
}

func TestRouterMetrics_CountOneRetryOfATransientFailure(t *testing.T) {
	w := startMetricsWorld(t, fastPolicy(), map[string]int{"flaky": 1})
	publish(t, w.tr, TopicCmdWebhookDeliver, mustMessage(t, context.Background(), orderType, order{ID: "flaky"}))
	receive(t, w.handled, 5*time.Second, "the message after its retry")

	w.eventually(t, "messages_acked_total", workerLabels, 1)
	w.expect(t, "message_retries_total", workerLabels, 1)
	w.expect(t, "messages_consumed_total", workerLabels, 1)
	w.expect(t, "messages_nacked_total", workerLabels, 0)
}

func TestRouterMetrics_CountANackWhenRetriesRunOut(t *testing.T) {
	// No time for an in-process retry: the first delivery is nacked, the redelivery succeeds.
	p := fastPolicy()
	p.RetryInitial, p.RetryMax, p.RetryMaxElapsed = time.Millisecond, time.Millisecond, time.Nanosecond
	w := startMetricsWorld(t, p, map[string]int{"down-once": 1})
	publish(t, w.tr, TopicCmdWebhookDeliver, mustMessage(t, context.Background(), orderType, order{ID: "down-once"}))
	receive(t, w.handled, 5*time.Second, "the redelivered message")

	w.eventually(t, "messages_acked_total", workerLabels, 1)
	w.expect(t, "messages_nacked_total", workerLabels, 1)
	w.expect(t, "messages_consumed_total", workerLabels, 2)
	w.expect(t, "message_handler_duration_seconds", workerLabels, 2)
}

func TestRouterMetrics_CountPoisonByReasonClass(t *testing.T) {
	w := startMetricsWorld(t, fastPolicy(), nil)
	bad := message.NewMessage("bad-json", []byte(`{"id": `))
	bad.Metadata.Set(MetaType, orderType)
	publish(t, w.tr, TopicCmdWebhookDeliver, bad)
	publish(t, w.tr, TopicCmdWebhookDeliver, mustMessage(t, context.Background(), "test.other.v1", order{ID: "other"}))
	publish(t, w.tr, TopicCmdWebhookDeliver, mustMessage(t, context.Background(), orderType, order{ID: "boom"}))
	for range 3 {
		receive(t, w.poisoned, 5*time.Second, "a poisoned message")
	}

	w.eventually(t, "messages_acked_total", workerLabels, 3)
	w.expect(t, "messages_poisoned_total", withReason(ReasonUndecodable), 1)
	w.expect(t, "messages_poisoned_total", withReason(ReasonUnknownType), 1)
	w.expect(t, "messages_poisoned_total", withReason(ReasonPanic), 1)
	w.expect(t, "messages_nacked_total", workerLabels, 0)
	w.expect(t, "message_retries_total", workerLabels, 0)
	w.expect(t, "messages_published_total", map[string]string{"topic": TopicPoison}, 3)
	// The poison recorder is a consumer like any other.
	w.eventually(t, "messages_acked_total", map[string]string{"topic": TopicPoison, "handler": poisonRole}, 3)
}

func TestRouterMetrics_NilRegistererRecordsNothing(t *testing.T) {
	tr := inProcessEnv(t).transport
	if _, err := NewRouter(testLogger(), fastPolicy(), tr.Publisher()); err != nil {
		t.Fatalf("NewRouter without metrics: %v", err)
	}
	if err := tr.RegisterMetrics(nil); err == nil {
		t.Error("RegisterMetrics(nil) succeeded, want an error")
	}
}

func TestRouterMetrics_TwoRoutersShareOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	tr := inProcessEnv(t).transport
	p := fastPolicy()
	p.Metrics = reg
	for i := range 2 {
		if _, err := NewRouter(testLogger(), p, tr.Publisher()); err != nil {
			t.Fatalf("NewRouter #%d on a shared registry: %v", i+1, err)
		}
	}
	for i := range 2 {
		if err := tr.RegisterMetrics(reg); err != nil {
			t.Fatalf("RegisterMetrics #%d on a shared registry: %v", i+1, err)
		}
	}
}

func TestPublishMetrics_CountFailures(t *testing.T) {
	reg := prometheus.NewRegistry()
	tr := NewInProcess(testLogger())
	if err := tr.RegisterMetrics(reg); err != nil {
		t.Fatalf("RegisterMetrics: %v", err)
	}
	_ = tr.Close()
	if err := tr.Publisher().Publish(TopicCmdWebhookDeliver, mustMessage(t, context.Background(), orderType, order{ID: "late"})); err == nil {
		t.Fatal("publish on a closed transport succeeded")
	}
	topic := map[string]string{"topic": TopicCmdWebhookDeliver}
	if got := gathered(t, reg, "message_publish_failures_total", topic); got != 1 {
		t.Errorf("message_publish_failures_total = %v, want 1", got)
	}
	if got := gathered(t, reg, "messages_published_total", topic); got != 0 {
		t.Errorf("messages_published_total = %v, want 0 after a failed publish", got)
	}
}

func TestPublishMetrics_RabbitMQObservesConfirms(t *testing.T) {
	env := rabbitEnv(t, nil)
	env.declare(workerRole, TopicCmdWebhookDeliver)
	reg := prometheus.NewRegistry()
	if err := env.transport.RegisterMetrics(reg); err != nil {
		t.Fatalf("RegisterMetrics: %v", err)
	}
	publish(t, env.transport, TopicCmdWebhookDeliver,
		mustMessage(t, context.Background(), orderType, order{ID: "a"}),
		mustMessage(t, context.Background(), orderType, order{ID: "b"}))

	if got := gathered(t, reg, "messages_published_total", map[string]string{"topic": TopicCmdWebhookDeliver}); got != 2 {
		t.Errorf("messages_published_total = %v, want 2", got)
	}
	// One publish call of two messages waits for its confirms once.
	if got := gathered(t, reg, "message_publish_confirm_seconds", nil); got != 1 {
		t.Errorf("message_publish_confirm_seconds sample count = %v, want 1", got)
	}
}
