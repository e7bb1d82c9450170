package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/sender"
	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

const testTenant = "tenant-a"

// fakeDelayer stands in for messaging.Transport.Delay until the lead switches
// these tests to it: it re-publishes a copy of the message on the in-process
// transport after the delay (a timer; nothing durable), and records each call.
type fakeDelayer struct {
	pub message.Publisher

	mu     sync.Mutex
	calls  []delayCall
	timers []*time.Timer
	fail   int // the next fail calls return an error
	closed bool
}

type delayCall struct {
	at      time.Time // when Delay was called
	topic   string
	delay   time.Duration
	cmd     domain.DeliverWebhook
	msgUUID string
}

func (f *fakeDelayer) Delay(ctx context.Context, role, topic string, msg *message.Message, delay time.Duration) (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail > 0 {
		f.fail--
		return 0, fmt.Errorf("broker unreachable (simulated)")
	}
	if role != Role {
		return 0, fmt.Errorf("delay for role %q, want %q", role, Role)
	}
	var cmd domain.DeliverWebhook
	_ = json.Unmarshal(msg.Payload, &cmd)
	f.calls = append(f.calls, delayCall{at: time.Now(), topic: topic, delay: delay, cmd: cmd, msgUUID: msg.UUID})
	out := message.NewMessage(msg.UUID, slices.Clone(msg.Payload))
	for k, v := range msg.Metadata {
		out.Metadata.Set(k, v)
	}
	if f.closed {
		return delay, nil
	}
	f.timers = append(f.timers, time.AfterFunc(delay, func() { _ = f.pub.Publish(topic, out) }))
	return delay, nil
}

func (f *fakeDelayer) all() []delayCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeDelayer) failNext(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = n
}

func (f *fakeDelayer) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for _, t := range f.timers {
		t.Stop()
	}
}

// sentEvent is one result event and the correlation id it carried.
type sentEvent struct {
	tenantID      string
	msg           domain.Message
	correlationID string
}

// eventLog records result events and forwards them to the real sender, so
// they pass its validation and reach the in-process broker.
type eventLog struct {
	next EventSender
	mu   sync.Mutex
	sent []sentEvent
}

func (e *eventLog) Send(ctx context.Context, tenantID string, msg domain.Message) error {
	if err := e.next.Send(ctx, tenantID, msg); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sent = append(e.sent, sentEvent{tenantID, msg, messaging.CorrelationID(ctx)})
	return nil
}

func (e *eventLog) all() []sentEvent {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.sent)
}

func (e *eventLog) ofType(ceType string) []domain.Message {
	var out []domain.Message
	for _, s := range e.all() {
		if s.msg.CEType() == ceType {
			out = append(out, s.msg)
		}
	}
	return out
}

// flakySecrets fails the first n reads as unavailable, like a secret service blinking.
type flakySecrets struct {
	next  SecretGetter
	fails atomic.Int32
}

func (f *flakySecrets) Get(ctx context.Context, tenantID, ref string) ([]byte, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, fmt.Errorf("secret service down (simulated): %w", secrets.ErrUnavailable)
	}
	return f.next.Get(ctx, tenantID, ref)
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// receiver is a real local HTTP endpoint whose answers a test programs.
type receiver struct {
	srv    *httptest.Server
	mu     sync.Mutex
	got    []receivedRequest
	answer func(n int, r *http.Request) (status int, header http.Header, body string)
}

type receivedRequest struct {
	header http.Header
	body   []byte
	at     time.Time
}

func newReceiver(t *testing.T, answer func(n int, r *http.Request) (int, http.Header, string)) *receiver {
	rc := &receiver{answer: answer}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, receivedRequest{header: r.Header.Clone(), body: body, at: time.Now()})
		n := len(rc.got)
		rc.mu.Unlock()
		status, header, respBody := 200, http.Header(nil), "ok"
		if rc.answer != nil {
			status, header, respBody = rc.answer(n, r)
		}
		for k, vs := range header {
			w.Header()[k] = vs
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, respBody)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) requests() []receivedRequest {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return slices.Clone(rc.got)
}

func (rc *receiver) count() int { return len(rc.requests()) }

func always(status int) func(int, *http.Request) (int, http.Header, string) {
	return func(int, *http.Request) (int, http.Header, string) {
		return status, nil, fmt.Sprintf("status %d", status)
	}
}

// harness is a dispatcher on the real embedded store, the in-process
// transport and the real sender, with a router running its consumers.
type harness struct {
	t         *testing.T
	db        *embedded.Backend
	backend   store.Backend // what the dispatcher uses (db, or a wrapper of it)
	transport *messaging.Transport
	secrets   *secrets.Local
	delayer   *fakeDelayer
	events    *eventLog
	logs      *syncBuffer
	d         *Dispatcher
	opts      Options
	webhooks  *store.Repository[domain.WebhookEndpoint]
	attempts  *store.Repository[domain.DeliveryAttempt]
	metrics   *prometheus.Registry
}

// metric is the value of the dispatcher's metric name with the given label value
// (any label), summed; 0 when absent.
func (h *harness) metric(name, labelValue string) float64 {
	h.t.Helper()
	families, err := h.metrics.Gather()
	if err != nil {
		h.t.Fatalf("gather metrics: %v", err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := labelValue == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetValue() == labelValue
			}
			if !match {
				continue
			}
			switch {
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

type harnessConfig struct {
	opts        Options
	secrets     func(SecretGetter) SecretGetter // wraps the secret store
	backend     func(store.Backend) store.Backend
	noRouter    bool
	deliverers  int
	retryPolicy messaging.Policy
}

// fastOptions: a short schedule and the loopback allowlist for httptest receivers.
func fastOptions() Options {
	return Options{
		Timeout:    2 * time.Second,
		Schedule:   []time.Duration{0, 30 * time.Millisecond, 30 * time.Millisecond},
		AllowHosts: []string{"127.0.0.1"},
		CacheTTL:   time.Minute,
	}
}

func newHarness(t *testing.T, cfg harnessConfig) *harness {
	t.Helper()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "db"), store.Containers(time.Hour))
	if err != nil {
		t.Fatalf("open the embedded store: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	logs := &syncBuffer{}
	logger := zerolog.New(logs).Level(zerolog.DebugLevel)
	transport := messaging.NewInProcess(zerolog.Nop())
	t.Cleanup(func() { _ = transport.Close() })
	secretsC, err := db.Container(store.LocalSecretsContainer)
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	local, err := secrets.NewLocal(secretsC, key)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t: t, db: db, backend: db, transport: transport, secrets: local, logs: logs,
		delayer: &fakeDelayer{pub: transport.Publisher()},
		events:  &eventLog{next: sender.New(transport.Publisher(), "test")},
	}
	t.Cleanup(h.delayer.stop)
	if cfg.backend != nil {
		h.backend = cfg.backend(db)
	}
	var sg SecretGetter = local
	if cfg.secrets != nil {
		sg = cfg.secrets(local)
	}
	if cfg.opts.Timeout == 0 && len(cfg.opts.Schedule) == 0 && cfg.opts.AllowHosts == nil {
		cfg.opts = fastOptions()
	}
	h.opts = cfg.opts
	h.metrics = prometheus.NewRegistry()
	h.d, err = New(Deps{
		Store: h.backend, Secrets: sg, Publisher: transport.Publisher(), Delayer: h.delayer,
		Events: h.events, Logger: logger, Metrics: h.metrics,
	}, cfg.opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = h.d.Close() })
	wc, _ := db.Container(domain.ContainerWebhooks)
	ec, _ := db.Container(domain.ContainerExecutions)
	h.webhooks = store.NewRepository[domain.WebhookEndpoint](wc)
	h.attempts = store.NewRepository[domain.DeliveryAttempt](ec)

	if cfg.noRouter {
		return h
	}
	policy := cfg.retryPolicy
	if policy.RetryInitial == 0 {
		policy = messaging.Policy{RetryInitial: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond, RetryMaxElapsed: 2 * time.Second, CloseTimeout: 5 * time.Second}
	}
	router, err := messaging.NewRouter(logger, policy, transport.Publisher())
	if err != nil {
		t.Fatal(err)
	}
	deliverers := cfg.deliverers
	if deliverers == 0 {
		deliverers = 8
	}
	if err := h.d.Register(router, transport, 2, deliverers); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = router.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		_ = router.Close()
		<-done
	})
	select {
	case <-router.Running():
	case <-time.After(5 * time.Second):
		t.Fatal("router did not start")
	}
	return h
}

// newSecret returns a fresh Standard Webhooks secret.
func newSecret() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return "whsec_" + base64.StdEncoding.EncodeToString(b)
}

// endpoint stores an active endpoint with a fresh secret and returns both.
func (h *harness) endpoint(id, url string, eventTypes []string, mutate ...func(*domain.WebhookEndpoint)) (domain.WebhookEndpoint, string) {
	h.t.Helper()
	secret := newSecret()
	ref, err := h.secrets.Put(context.Background(), testTenant, []byte(secret))
	if err != nil {
		h.t.Fatal(err)
	}
	now := time.Now().UTC()
	ep := domain.WebhookEndpoint{
		ID: id, TenantID: testTenant, URL: url, EventTypes: eventTypes, SecretRef: ref,
		Status: domain.WebhookActive, CreatedAt: now, UpdatedAt: now,
	}
	for _, m := range mutate {
		m(&ep)
	}
	if _, err := h.webhooks.Create(context.Background(), ep); err != nil {
		h.t.Fatal(err)
	}
	return ep, secret
}

func (h *harness) storedEndpoint(id string) domain.WebhookEndpoint {
	h.t.Helper()
	ep, _, err := h.webhooks.Get(context.Background(), testTenant, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return ep
}

// publishEvent publishes a PublishEvent command as an upstream service would.
func (h *harness) publishEvent(eventID, eventType string, data string) *message.Message {
	h.t.Helper()
	ev := domain.PublishEvent{EventID: eventID, TenantID: testTenant, Type: eventType, Data: json.RawMessage(data), OccurredAt: time.Now().UTC()}
	ctx := messaging.WithCorrelationID(context.Background(), "corr-"+eventID)
	m, err := messaging.NewMessage(ctx, domain.TypePublishEvent, "test", testTenant, ev)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.transport.Publisher().Publish(messaging.TopicCmdEventPublish, m); err != nil {
		h.t.Fatal(err)
	}
	return m
}

// deliverCmd is attempt 1 of eventID to ep.
func deliverCmd(eventID string, ep domain.WebhookEndpoint, data string) domain.DeliverWebhook {
	now := time.Now().UTC()
	return domain.DeliverWebhook{
		DeliveryID: domain.DeliveryID(eventID, ep.ID), EventID: eventID, TenantID: ep.TenantID, WebhookID: ep.ID,
		EventType: "contact.updated", Data: json.RawMessage(data), OccurredAt: now, Attempt: 1, FirstAttemptAt: now,
	}
}

func (h *harness) publishDeliver(cmd domain.DeliverWebhook) {
	h.t.Helper()
	m, err := messaging.NewMessage(context.Background(), domain.TypeDeliverWebhook, "test", cmd.TenantID, cmd)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.transport.Publisher().Publish(messaging.TopicCmdWebhookDeliver, m); err != nil {
		h.t.Fatal(err)
	}
}

// attemptsOf lists a delivery's records, by attempt number.
func (h *harness) attemptsOf(deliveryID string) []domain.DeliveryAttempt {
	h.t.Helper()
	items, _, err := h.attempts.List(context.Background(), store.Query{PartitionKey: testTenant,
		Filters: []store.Filter{{Field: "deliveryId", Value: deliveryID}}, Limit: store.MaxPageSize})
	if err != nil {
		h.t.Fatal(err)
	}
	slices.SortFunc(items, func(a, b domain.DeliveryAttempt) int { return a.Attempt - b.Attempt })
	return items
}

// rawDocuments returns every stored body of a container, as text.
func (h *harness) rawDocuments(container string) string {
	h.t.Helper()
	c, err := h.db.Container(container)
	if err != nil {
		h.t.Fatal(err)
	}
	var all bytes.Buffer
	q := store.Query{PartitionKey: testTenant, Limit: store.MaxPageSize}
	for {
		page, err := c.Query(context.Background(), q)
		if err != nil {
			h.t.Fatal(err)
		}
		for _, it := range page.Items {
			all.Write(it.Body)
			all.WriteByte('\n')
		}
		if page.Continuation == "" {
			return all.String()
		}
		q.Continuation = page.Continuation
	}
}

// eventually waits for cond, failing with what a user would notice.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func statuses(recs []domain.DeliveryAttempt) []domain.ExecutionStatus {
	var out []domain.ExecutionStatus
	for _, r := range recs {
		out = append(out, r.Status)
	}
	return out
}

// newStuckReceiver is an endpoint whose calls all wait until release is
// called (at the latest when the test ends), then answer 200.
func newStuckReceiver(t *testing.T) (rc *receiver, release func()) {
	stuck := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(stuck) }) }
	rc = newReceiver(t, func(int, *http.Request) (int, http.Header, string) {
		<-stuck
		return 200, nil, "late"
	})
	t.Cleanup(release)
	return rc, release
}
