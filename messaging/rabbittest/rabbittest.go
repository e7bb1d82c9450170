// Package rabbittest gives tests a real RabbitMQ to talk to: the shared broker on
// 127.0.0.1:5672, per-test exchange and queue names that are removed afterwards, and
// (node.go) a private broker node that a fault test may stop and start at will.
package rabbittest

import (
	"crypto/rand"
	"encoding/hex"
	neturl "net/url"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultURL is the shared broker every package's tests use.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// StartHint tells a developer how to get the shared broker running.
const StartHint = "start RabbitMQ: rabbitmq-server -detached"

// URL returns the shared broker's URL (RABBITMQ_TEST_URL overrides it). When the broker
// cannot be reached the test fails under CI=true and is skipped otherwise.
func URL(t testing.TB) string {
	t.Helper()
	url := os.Getenv("RABBITMQ_TEST_URL")
	if url == "" {
		url = DefaultURL
	}
	conn, err := Dial(url)
	if err != nil {
		Unavailable(t, "RabbitMQ at "+redact(url)+" is unreachable ("+err.Error()+"); "+StartHint)
	}
	_ = conn.Close()
	return url
}

// redact drops the credentials from an AMQP URL for messages.
func redact(raw string) string {
	u, err := neturl.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	return u.String()
}

// Unavailable fails the test under CI=true (a missing service there is a broken
// pipeline, not a reason to pass) and skips it on a developer machine.
func Unavailable(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Dial opens an admin connection with a short connect timeout, so a missing broker is
// reported in seconds rather than hanging the test.
func Dial(url string) (*amqp.Connection, error) {
	return amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(3 * time.Second)})
}

// Suffix returns a random name suffix so that tests running at the same time never
// share an exchange or a queue.
func Suffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Resources records the exchanges and queues a test declared (directly or through the
// code under test) and deletes them when the test ends.
type Resources struct {
	url       string
	exchanges []string
	queues    []string
}

// Track returns a Resources whose names are deleted in t.Cleanup.
func Track(t testing.TB, url string) *Resources {
	t.Helper()
	r := &Resources{url: url}
	t.Cleanup(func() { r.deleteAll(t) })
	return r
}

// Exchange records an exchange name for deletion and returns it.
func (r *Resources) Exchange(name string) string {
	r.exchanges = append(r.exchanges, name)
	return name
}

// Queue records a queue name for deletion and returns it.
func (r *Resources) Queue(name string) string {
	r.queues = append(r.queues, name)
	return name
}

func (r *Resources) deleteAll(t testing.TB) {
	if len(r.exchanges) == 0 && len(r.queues) == 0 {
		return
	}
	conn, err := Dial(r.url)
	if err != nil {
		t.Logf("rabbittest: cannot delete test exchanges/queues (%v); they stay on the broker", err)
		return
	}
	defer conn.Close()
	for _, q := range r.queues {
		if err := withChannel(conn, func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(q, false, false, false)
			return err
		}); err != nil {
			t.Logf("rabbittest: delete queue %s: %v", q, err)
		}
	}
	for _, e := range r.exchanges {
		if err := withChannel(conn, func(ch *amqp.Channel) error {
			return ch.ExchangeDelete(e, false, false)
		}); err != nil {
			t.Logf("rabbittest: delete exchange %s: %v", e, err)
		}
	}
}

// QueueDepth returns how many ready messages and consumers a queue has. A queue that
// does not exist is reported as an error.
func QueueDepth(url, queue string) (messages, consumers int, err error) {
	conn, err := Dial(url)
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	err = withChannel(conn, func(ch *amqp.Channel) error {
		q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		messages, consumers = q.Messages, q.Consumers
		return err
	})
	return messages, consumers, err
}

// Publish sends one raw AMQP message, bypassing the code under test: a test uses it
// to inject what a foreign or broken producer would send.
func Publish(url, exchange, routingKey string, msg amqp.Publishing) error {
	conn, err := Dial(url)
	if err != nil {
		return err
	}
	defer conn.Close()
	return withChannel(conn, func(ch *amqp.Channel) error {
		if err := ch.Confirm(false); err != nil {
			return err
		}
		conf, err := ch.PublishWithDeferredConfirm(exchange, routingKey, false, false, msg)
		if err != nil {
			return err
		}
		if !conf.Wait() {
			return amqp.ErrClosed
		}
		return nil
	})
}

// withChannel runs fn on a fresh channel: a failed admin call closes its channel, so
// one channel per call keeps one failure from hiding the next.
func withChannel(conn *amqp.Connection, fn func(*amqp.Channel) error) error {
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	defer ch.Close()
	return fn(ch)
}
