package messaging

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/castiel/integration-manager/messaging/rabbittest"
	"github.com/rs/zerolog"
)

// testEnv is one isolated messaging world for a test: a transport on the in-process
// GoChannel, or on the shared RabbitMQ with an exchange and queue prefix of its own
// (deleted when the test ends).
type testEnv struct {
	t         testing.TB
	transport *Transport
	cfg       Config
	res       *rabbittest.Resources // nil in process
}

func testLogger() zerolog.Logger {
	if lvl, err := zerolog.ParseLevel(os.Getenv("MESSAGING_TEST_LOG")); err == nil && lvl != zerolog.NoLevel {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(lvl).With().Timestamp().Logger()
	}
	return zerolog.Nop()
}

func inProcessEnv(t testing.TB) *testEnv {
	tr := NewInProcess(testLogger())
	t.Cleanup(func() { _ = tr.Close() })
	return &testEnv{t: t, transport: tr, cfg: tr.Config()}
}

// testRabbitConfig isolates a test on a broker: its own exchange and queue prefix, and
// quick reconnects so fault tests do not wait for production backoffs.
func testRabbitConfig(url string, res *rabbittest.Resources) Config {
	suffix := rabbittest.Suffix()
	return Config{
		URL:              url,
		Exchange:         res.Exchange("test.messaging." + suffix),
		QueuePrefix:      "test." + suffix + ".",
		ReconnectInitial: 50 * time.Millisecond,
		ReconnectMax:     500 * time.Millisecond,
		DrainTimeout:     2 * time.Second,
		PublishTimeout:   10 * time.Second,
	}
}

func rabbitEnv(t testing.TB, mutate func(*Config)) *testEnv {
	t.Helper()
	url := rabbittest.URL(t)
	res := rabbittest.Track(t, url)
	cfg := testRabbitConfig(url, res)
	if mutate != nil {
		mutate(&cfg)
	}
	e := &testEnv{t: t, cfg: cfg, res: res}
	e.transport = e.replica()
	return e
}

// replica connects another Transport to the same exchange and queues: another process
// of the fleet.
func (e *testEnv) replica() *Transport {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	tr, err := NewRabbitMQ(ctx, e.cfg, testLogger())
	if err != nil {
		e.t.Fatalf("connect to RabbitMQ: %v", err)
	}
	e.t.Cleanup(func() { _ = tr.Close() })
	return tr
}

// declare creates role's queues for topics (and has them deleted after the test), so
// that nothing published from now on is dropped for want of a queue.
func (e *testEnv) declare(role string, topics ...string) {
	e.t.Helper()
	if e.res != nil {
		for _, topic := range topics {
			e.res.Queue(e.cfg.QueueName(topic, role))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.transport.Declare(ctx, role, topics...); err != nil {
		e.t.Fatalf("declare %s queues for %v: %v", role, topics, err)
	}
}

// fastPolicy keeps the retry budget small so tests see nacks and redeliveries quickly.
func fastPolicy() Policy {
	return Policy{
		HandlerTimeout:  5 * time.Second,
		RetryInitial:    10 * time.Millisecond,
		RetryMax:        50 * time.Millisecond,
		RetryMaxElapsed: 300 * time.Millisecond,
		CloseTimeout:    5 * time.Second,
	}
}

// newRouter builds a router with the shared policy; start it with runRouter after
// adding consumers.
func newRouter(t testing.TB, tr *Transport, p Policy) *message.Router {
	t.Helper()
	r, err := NewRouter(testLogger(), p, tr.Publisher())
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	return r
}

// runRouter runs r until the test ends and waits until every handler is subscribed.
func runRouter(t testing.TB, r *message.Router) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		_ = r.Close()
		<-done
	})
	select {
	case <-r.Running():
	case err := <-done:
		t.Fatalf("router stopped at start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatalf("router did not start within 30s")
	}
}

func addConsumer(t testing.TB, r *message.Router, tr *Transport, role, topic string, n int, h message.NoPublishHandlerFunc) {
	t.Helper()
	if err := AddConsumer(r, tr, role, topic, n, h); err != nil {
		t.Fatalf("AddConsumer(%s, %s): %v", role, topic, err)
	}
}

func publish(t testing.TB, tr *Transport, topic string, msgs ...*message.Message) {
	t.Helper()
	if err := tr.Publisher().Publish(topic, msgs...); err != nil {
		t.Fatalf("publish to %s: %v", topic, err)
	}
}

func mustMessage(t testing.TB, ctx context.Context, ceType string, payload any) *message.Message {
	t.Helper()
	msg, err := NewMessage(ctx, ceType, "messaging-test", "tenant-1", payload)
	if err != nil {
		t.Fatalf("NewMessage: %v", err)
	}
	return msg
}

// receive waits for the next value on ch or fails the test saying what did not arrive.
func receive[T any](t testing.TB, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("%s did not arrive within %s", what, within)
	}
	var zero T
	return zero
}

// nothingMore fails the test if ch yields a value within d.
func nothingMore[T any](t testing.TB, ch <-chan T, d time.Duration, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("unexpected %s: %v", what, v)
	case <-time.After(d):
	}
}
