package messaging

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	amqp "github.com/rabbitmq/amqp091-go"
)

// Delays on RabbitMQ. Stock RabbitMQ has no delayed delivery, so each (role, topic)
// that delays gets consumer-less delay queues, one per tier delay (jitter siblings
// included): <prefix>delay.<role>.<topic>.<ttl>, with x-message-ttl = ttl and
// dead-lettering to the default exchange with routing key = the role's work queue.
// An expired message therefore goes straight back to that role's queue, not to the
// other roles bound to the topic. The TTL is the queue's, not the message's: a
// per-message TTL only expires at the head of a queue, so a short delay would wait
// behind a long one. All messages of a delay queue share its TTL, so its head is
// always the first to expire.
//
// Queue type: the delay queues follow Config.QuorumQueues, like the work queues.
// Classic (the default): durable, messages persistent, one node; dead-lettering is
// at-most-once, which in practice loses a message only if the broker crashes in the
// instant between removing it from the delay queue and writing it to the work queue.
// Quorum: replicated, and dead-lettered with x-dead-letter-strategy=at-least-once
// (which needs x-overflow=reject-publish): the message stays in the delay queue until
// the work queue has confirmed it, so a crash can duplicate it but never lose it.
// Plain quorum dead-lettering is at-most-once and would be a step down from the work
// queues' guarantees, hence the two settings. Needs RabbitMQ 3.10+.

// delayTopology remembers which (role, topic) had their delay queues declared on which
// publish connection. After a reconnect everything is declared again (cheap and
// idempotent), so a broker that lost its queues (not durable storage, a reset node)
// gets them back before the first Delay.
type delayTopology struct {
	mu       sync.Mutex
	conn     *amqp.Connection
	declared map[groupKey]bool
}

func (d *delayTopology) isDeclared(conn *amqp.Connection, key groupKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn != conn {
		d.conn, d.declared = conn, map[groupKey]bool{}
	}
	return d.declared[key]
}

func (d *delayTopology) mark(conn *amqp.Connection, key groupKey, declared bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.conn == conn {
		d.declared[key] = declared
	}
}

// delayQueueArgs are the arguments of the delay queue of ttl that feeds workQueue.
func (r *rabbitMQ) delayQueueArgs(workQueue string, ttl time.Duration) amqp.Table {
	args := amqp.Table{
		"x-message-ttl":             ttl.Milliseconds(),
		"x-dead-letter-exchange":    "", // the default exchange: routing key = queue name
		"x-dead-letter-routing-key": workQueue,
	}
	if r.cfg.QuorumQueues {
		args["x-queue-type"] = "quorum"
		args["x-dead-letter-strategy"] = "at-least-once"
		args["x-overflow"] = "reject-publish"
	}
	return args
}

// declareDelays declares role's work queue for topic (bound as usual: the delayed
// message's destination must exist before anything expires into it) and every delay
// queue of the tiers.
func (r *rabbitMQ) declareDelays(conn *amqp.Connection, role, topic string) error {
	if err := r.declareQueue(conn, role, topic); err != nil {
		return err
	}
	work := r.cfg.QueueName(topic, role)
	return withChannel(conn, func(ch *amqp.Channel) error {
		for _, ttl := range delayTTLs(r.cfg.DelayTiers) {
			name := r.cfg.DelayQueueName(topic, role, ttl)
			if _, err := ch.QueueDeclare(name, true, false, false, false, r.delayQueueArgs(work, ttl)); err != nil {
				return fmt.Errorf("declare delay queue %q: %w", name, err)
			}
		}
		return nil
	})
}

// delay publishes msg to role's delay queue of ttl (or, for 0, straight to role's work
// queue) through the default exchange, persistent, mandatory and confirmed. A return
// means a queue is gone (deleted by hand): the topology is declared again and the
// message published once more.
func (r *rabbitMQ) delay(ctx context.Context, role, topic string, msg *message.Message, ttl time.Duration) error {
	target := r.cfg.QueueName(topic, role)
	if ttl > 0 {
		target = r.cfg.DelayQueueName(topic, role, ttl)
	}
	select {
	case <-r.closing:
		return ErrClosed
	default:
	}
	key := groupKey{role: role, topic: topic}
	for attempt := 1; ; attempt++ {
		conn := r.pubConn.current()
		if conn == nil {
			return ErrNotConnected
		}
		if !r.delays.isDeclared(conn, key) {
			if err := r.declareDelays(conn, role, topic); err != nil {
				if conn.IsClosed() {
					return fmt.Errorf("%w: %w", ErrNotConnected, err)
				}
				return err
			}
			r.delays.mark(conn, key, true)
		}
		err := r.pub.send(ctx, "", target, true, []*message.Message{msg})
		if errors.Is(err, errUnroutable) && attempt == 1 {
			r.log.Warn().Str("queue", target).Msg("delay queue missing on the broker; declaring the delay topology again")
			r.delays.mark(conn, key, false)
			continue
		}
		if err != nil {
			return fmt.Errorf("publish to %s: %w", target, err)
		}
		return nil
	}
}
