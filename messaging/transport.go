// Package messaging is the backbone every worker and the API share: a Transport over
// RabbitMQ (fleet) or an in-process GoChannel (standalone) behind Watermill's
// Publisher/Subscriber, the one list of topics, the CloudEvents-style envelope, and the
// router policy that decides each message's fate (ack, retry then nack, or poison).
package messaging

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"
)

// backend is what differs between RabbitMQ and GoChannel.
type backend interface {
	publisher() message.Publisher
	// subscriber consumes role's queues, each subscription handling up to inFlight
	// messages at once where the backend can (see spread).
	subscriber(role string, inFlight int) message.Subscriber
	// spread splits a concurrency of n messages into subscriptions × messages in flight each.
	spread(n int) (subscriptions, inFlight int)
	declare(ctx context.Context, role string, topics []string) error
	// delay makes msg reach role's queue of topic (only) after ttl; 0: at once.
	delay(ctx context.Context, role, topic string, msg *message.Message, ttl time.Duration) error
	ping(ctx context.Context) error
	close() error
}

// Transport publishes to topics and subscribes consumer roles to them. Build it with
// NewRabbitMQ or NewInProcess; it is safe for concurrent use.
type Transport struct {
	cfg     Config
	log     zerolog.Logger
	backend backend
	pub     message.Publisher
	// metrics is set by RegisterMetrics; nil records nothing.
	metrics atomic.Pointer[publishMetrics]
}

func newTransport(cfg Config, log zerolog.Logger, b backend) *Transport {
	t := &Transport{cfg: cfg, log: log, backend: b}
	t.pub = propagatingPublisher{next: b.publisher(), metrics: &t.metrics}
	return t
}

// Publisher publishes to a topic. On RabbitMQ, Publish returns nil only once the broker
// has confirmed every message. Messages get the correlation id and traceparent of their
// context (see NewMessage). Its Close does nothing: close the Transport instead.
func (t *Transport) Publisher() message.Publisher { return t.pub }

// Subscriber returns the subscriber of a consumer role. Replicas of one role share
// each topic's messages (one queue per (topic, role)); different roles each get every
// message. Each Subscribe call is one consumer handling one message at a time.
func (t *Transport) Subscriber(role string) message.Subscriber { return t.backend.subscriber(role, 1) }

// Declare creates role's queues for topics without consuming, so that messages
// published from now on wait for the role's consumers. On RabbitMQ a message published
// to a topic no queue is bound to is dropped by the broker; declare the queues of every
// command a process publishes at its start-up.
func (t *Transport) Declare(ctx context.Context, role string, topics ...string) error {
	if err := validateName("role", role); err != nil {
		return err
	}
	return t.backend.declare(ctx, role, topics)
}

// Ping reports whether the transport can publish and consume now, for /readyz.
func (t *Transport) Ping(ctx context.Context) error { return t.backend.ping(ctx) }

// Close stops every consumer (each in-flight message gets DrainTimeout to be settled),
// then the publisher and the connections. Close routers first.
func (t *Transport) Close() error { return t.backend.close() }

// Config returns the effective configuration (defaults applied).
func (t *Transport) Config() Config { return t.cfg }
