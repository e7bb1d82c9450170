package messaging

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wamqp "github.com/ThreeDotsLabs/watermill-amqp/v3/pkg/amqp"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v4"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"
)

// rabbitMQ is the fleet backend: one durable topic exchange, a durable queue per
// (topic, role), publisher confirms on pooled channels, and separate connections for
// publishing and consuming (so that broker flow control on publishers never delays
// consumers' acks).
type rabbitMQ struct {
	cfg       Config
	log       zerolog.Logger
	wlog      watermill.LoggerAdapter
	marshaler wamqp.Marshaler
	topology  wamqp.TopologyBuilder

	pubConn *connection
	subConn *connection
	pub     *rabbitPublisher
	delays  delayTopology

	closing   chan struct{}
	closeOnce sync.Once
	subs      sync.WaitGroup // consume loops of every subscriber

	metrics atomic.Pointer[publishMetrics] // set by Transport.RegisterMetrics
}

func (r *rabbitMQ) instrument(m *publishMetrics) { r.metrics.Store(m) }

// NewRabbitMQ connects to RabbitMQ and declares the exchange. The first connection is
// retried with backoff until ctx ends, so a worker started before the broker waits for
// it; later losses are recovered in the background for as long as the Transport lives.
func NewRabbitMQ(ctx context.Context, cfg Config, log zerolog.Logger) (*Transport, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log = log.With().Str("component", "messaging").Logger()
	r := &rabbitMQ{
		cfg:       cfg,
		log:       log,
		wlog:      NewWatermillLogger(log),
		marshaler: headerMarshaler{},
		topology:  &wamqp.DefaultTopologyBuilder{},
		closing:   make(chan struct{}),
	}
	declareExchange := func(conn *amqp.Connection) error {
		return withChannel(conn, func(ch *amqp.Channel) error {
			if err := r.topology.ExchangeDeclare(ch, cfg.Exchange, r.amqpConfig("")); err != nil {
				return fmt.Errorf("declare exchange %q: %w", cfg.Exchange, err)
			}
			return nil
		})
	}
	var err error
	if r.pubConn, err = dialConnection(ctx, "publish", cfg, declareExchange, log); err != nil {
		return nil, err
	}
	if r.subConn, err = dialConnection(ctx, "consume", cfg, nil, log); err != nil {
		_ = r.pubConn.Close()
		return nil, err
	}
	r.pub = newRabbitPublisher(r)
	log.Info().Str("exchange", cfg.Exchange).Bool("quorumQueues", cfg.QuorumQueues).
		Int("prefetch", cfg.Prefetch).Int("publishChannels", cfg.PublishChannels).Msg("connected to RabbitMQ")
	return newTransport(cfg, log, r), nil
}

// amqpConfig is the watermill-amqp configuration of our topology for one role: a
// constant topic exchange, routing key = topic on publish and bind, one durable queue
// per (topic, role), persistent messages, confirms and a channel pool. The benchmark
// feeds the same configuration to a stock watermill-amqp publisher.
func (r *rabbitMQ) amqpConfig(role string) wamqp.Config {
	var args amqp.Table
	if r.cfg.QuorumQueues {
		// Deliberately no x-delivery-limit: our nacks mean "try later", never "give up".
		args = amqp.Table{"x-queue-type": "quorum"}
	}
	routingKey := func(topic string) string { return topic }
	return wamqp.Config{
		Connection: wamqp.ConnectionConfig{AmqpURI: r.cfg.URL},
		Marshaler:  r.marshaler,
		Exchange: wamqp.ExchangeConfig{
			GenerateName: wamqp.GenerateExchangeNameConstant(r.cfg.Exchange),
			Type:         "topic",
			Durable:      true,
		},
		Queue: wamqp.QueueConfig{
			GenerateName: func(topic string) string { return r.cfg.QueueName(topic, role) },
			Durable:      true,
			Arguments:    args,
		},
		QueueBind: wamqp.QueueBindConfig{GenerateRoutingKey: routingKey},
		Publish: wamqp.PublishConfig{
			GenerateRoutingKey: routingKey,
			ConfirmDelivery:    true,
			ChannelPoolSize:    r.cfg.PublishChannels,
		},
		Consume:         wamqp.ConsumeConfig{Qos: wamqp.QosConfig{PrefetchCount: r.cfg.Prefetch}},
		TopologyBuilder: r.topology,
	}
}

// declareQueue declares role's queue for topic and binds it, on a channel of its own
// (a failed declaration closes the channel it was made on).
func (r *rabbitMQ) declareQueue(conn *amqp.Connection, role, topic string) error {
	return withChannel(conn, func(ch *amqp.Channel) error {
		return r.declareOn(ch, role, topic)
	})
}

func (r *rabbitMQ) declareOn(ch *amqp.Channel, role, topic string) error {
	cfg := r.amqpConfig(role)
	params := wamqp.BuildTopologyParams{
		Topic:        topic,
		QueueName:    cfg.Queue.GenerateName(topic),
		ExchangeName: r.cfg.Exchange,
		RoutingKey:   topic,
	}
	if err := r.topology.BuildTopology(ch, params, cfg, r.wlog); err != nil {
		return fmt.Errorf("declare queue %q bound to %q: %w", params.QueueName, topic, err)
	}
	return nil
}

func (r *rabbitMQ) publisher() message.Publisher { return r.pub }

func (r *rabbitMQ) subscriber(role string, inFlight int) message.Subscriber {
	return &rabbitSubscriber{r: r, role: role, inFlight: max(inFlight, 1), closing: make(chan struct{})}
}

// spread splits a concurrency of n over consumer channels of at most Prefetch
// messages each, evenly: 64 at prefetch 16 is 4 channels of 16, 20 at prefetch 16 is 2 of 10.
func (r *rabbitMQ) spread(n int) (subscriptions, inFlight int) {
	subscriptions = (n + r.cfg.Prefetch - 1) / r.cfg.Prefetch
	return subscriptions, (n + subscriptions - 1) / subscriptions
}

func (r *rabbitMQ) declare(ctx context.Context, role string, topics []string) error {
	conn, err := r.subConn.wait(ctx)
	if err != nil {
		return err
	}
	for _, topic := range topics {
		if err := r.declareQueue(conn, role, topic); err != nil {
			return err
		}
	}
	return nil
}

// ping proves a round trip to the broker on the publishing connection, not only that
// a socket is open, and that the consuming connection is up.
func (r *rabbitMQ) ping(ctx context.Context) error {
	if r.subConn.current() == nil {
		return fmt.Errorf("consume connection: %w", ErrNotConnected)
	}
	conn := r.pubConn.current()
	if conn == nil {
		return fmt.Errorf("publish connection: %w", ErrNotConnected)
	}
	done := make(chan error, 1)
	go func() {
		done <- withChannel(conn, func(ch *amqp.Channel) error {
			return ch.ExchangeDeclarePassive(r.cfg.Exchange, "topic", true, false, false, false, nil)
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("ping RabbitMQ: %w", err)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("ping RabbitMQ: %w", ctx.Err())
	}
}

func (r *rabbitMQ) close() error {
	r.closeOnce.Do(func() { close(r.closing) })
	r.subs.Wait()
	return errors.Join(r.pub.Close(), r.subConn.Close(), r.pubConn.Close())
}

func withChannel(conn *amqp.Connection, fn func(*amqp.Channel) error) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	defer ch.Close()
	return fn(ch)
}

// rabbitPublisher publishes on a pool of confirm-mode channels. All messages of one
// Publish call are sent before their confirms are awaited, so a batch costs about one
// round trip instead of one per message.
type rabbitPublisher struct {
	r         *rabbitMQ
	slots     chan *pubSlot
	closing   chan struct{}
	closeOnce sync.Once
}

// pubSlot is one pooled channel; it is reopened on the current connection when it was
// closed (by the broker or a lost connection) and always goes back into the pool.
// returns receives the broker's basic.return of a mandatory publish that no queue took:
// the broker sends it before the publish's confirm, on the same connection reader, so
// it is there to be seen once the confirm is in.
type pubSlot struct {
	ch      *amqp.Channel
	returns chan amqp.Return
}

func newRabbitPublisher(r *rabbitMQ) *rabbitPublisher {
	p := &rabbitPublisher{r: r, slots: make(chan *pubSlot, r.cfg.PublishChannels), closing: make(chan struct{})}
	for range r.cfg.PublishChannels {
		p.slots <- &pubSlot{}
	}
	return p
}

func (s *pubSlot) open(conn *amqp.Connection) error {
	if s.ch != nil && !s.ch.IsClosed() {
		return nil
	}
	s.reset()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open publish channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return fmt.Errorf("enable publisher confirms: %w", err)
	}
	// Only mandatory publishes (one at a time per slot, drained after each) produce
	// returns, so one buffered place never blocks the connection's reader.
	s.returns = ch.NotifyReturn(make(chan amqp.Return, 1))
	s.ch = ch
	return nil
}

// reset drops a channel whose state is unknown (an unconfirmed publish, a failed send).
func (s *pubSlot) reset() {
	if s.ch != nil {
		_ = s.ch.Close()
		s.ch = nil
		s.returns = nil
	}
}

// returned reports (and consumes) a basic.return received for the slot's last publish.
func (s *pubSlot) returned() (amqp.Return, bool) {
	select {
	case ret, ok := <-s.returns:
		return ret, ok
	default:
		return amqp.Return{}, false
	}
}

// errUnroutable: the broker confirmed a mandatory message it could not route to any
// queue (the target queue does not exist), so it dropped it.
var errUnroutable = errors.New("message returned unroutable by the broker")

// Publish returns nil only once the broker has confirmed every message (persisted to
// its durable queues). While disconnected it fails at once with ErrNotConnected and
// buffers nothing: the caller decides whether to retry, nack or answer 503.
func (p *rabbitPublisher) Publish(topic string, msgs ...*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if err := validateName("topic", topic); err != nil {
		return err
	}
	if err := p.send(msgs[0].Context(), p.r.cfg.Exchange, topic, false, msgs); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	return nil
}

// send publishes msgs to exchange with routingKey on a pooled confirm channel and
// waits for every confirm. With mandatory (one message only), a message no queue took
// fails with errUnroutable instead of being silently dropped.
func (p *rabbitPublisher) send(ctx context.Context, exchange, routingKey string, mandatory bool, msgs []*message.Message) error {
	if mandatory && len(msgs) != 1 {
		return fmt.Errorf("mandatory publish of %d messages: only one at a time can be checked for a return", len(msgs))
	}
	select {
	case <-p.closing:
		return ErrClosed
	default:
	}
	conn := p.r.pubConn.current()
	if conn == nil {
		return ErrNotConnected
	}
	var slot *pubSlot
	select {
	case slot = <-p.slots:
	case <-p.closing:
		return ErrClosed
	}
	// A mandatory publish keeps its channel until the confirm so a basic.return
	// cannot be mistaken for another's. Other publishes give the channel back
	// as soon as their messages are sent and wait for their confirms beside the
	// publishes that follow on it: confirms are pipelined, not one per channel.
	released := false
	release := func() {
		if !released {
			released = true
			p.slots <- slot
		}
	}
	defer release()
	if err := slot.open(conn); err != nil {
		return err
	}
	slot.returned() // nothing should be there; never let a stale one answer for this publish

	ctx, cancel := context.WithTimeout(ctx, p.r.cfg.PublishTimeout)
	defer cancel()
	if err := ctx.Err(); err != nil {
		// Do not send what we could not wait for: the caller would retry a message the
		// broker may already have.
		return err
	}
	confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	for _, msg := range msgs {
		pub, err := p.r.marshaler.Marshal(msg)
		if err != nil {
			return fmt.Errorf("marshal message %s: %w", msg.UUID, err)
		}
		dc, err := slot.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, routingKey, mandatory, false, pub)
		if err != nil {
			slot.reset()
			return fmt.Errorf("publish message %s: %w", msg.UUID, err)
		}
		confirms = append(confirms, dc)
	}
	if !mandatory {
		release()
	}
	sent := time.Now()
	for i, dc := range confirms {
		acked, err := dc.WaitContext(ctx)
		if err != nil {
			if !released {
				slot.reset()
			}
			// A released channel may carry others' publishes now; if it died,
			// the next user's open() replaces it.
			return fmt.Errorf("message %s not confirmed: %w", msgs[i].UUID, err)
		}
		if !acked {
			// A nack, or the channel closed before the confirm: the broker may not have it.
			return fmt.Errorf("message %s not confirmed by the broker: %w", msgs[i].UUID, ErrNotConnected)
		}
	}
	p.r.metrics.Load().confirmed(sent)
	if mandatory {
		if ret, ok := slot.returned(); ok {
			return fmt.Errorf("message %s to %q: %w (%d %s)", msgs[0].UUID, routingKey, errUnroutable, ret.ReplyCode, ret.ReplyText)
		}
	}
	return nil
}

// Close waits for publishes in flight and closes the pooled channels.
func (p *rabbitPublisher) Close() error {
	p.closeOnce.Do(func() {
		close(p.closing)
		for range cap(p.slots) {
			(<-p.slots).reset()
		}
	})
	return nil
}

// rabbitSubscriber consumes the queues of one role. Each Subscribe opens one consumer
// (its own channel, prefetch inFlight) that hands over up to inFlight messages at once,
// each settled on its own as soon as its handler acks or nacks it, so a slow message
// holds one place and never the ones behind it; after a lost connection or channel it
// consumes again on the new connection.
type rabbitSubscriber struct {
	r         *rabbitMQ
	role      string
	inFlight  int
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// errStopping ends a consume loop because the subscriber, the transport or the
// subscription's context is closing, as opposed to a broker failure.
var errStopping = errors.New("subscription stopping")

// Subscribe starts consuming topic from the role's queue. When connected it declares
// the queue first, so a conflicting declaration fails start-up loudly; when not, the
// consumer declares it as soon as the connection is back.
func (s *rabbitSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := validateName("role", s.role); err != nil {
		return nil, err
	}
	if err := validateName("topic", topic); err != nil {
		return nil, err
	}
	select {
	case <-s.closing:
		return nil, ErrClosed
	case <-s.r.closing:
		return nil, ErrClosed
	default:
	}
	if conn := s.r.subConn.current(); conn != nil {
		if err := s.r.declareQueue(conn, s.role, topic); err != nil {
			return nil, err
		}
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	s.r.subs.Add(1)
	go func() {
		defer s.r.subs.Done()
		defer s.wg.Done()
		defer close(out)
		s.consumeLoop(ctx, topic, out)
	}()
	return out, nil
}

// SubscribeInitialize declares the role's queue for topic without consuming.
func (s *rabbitSubscriber) SubscribeInitialize(topic string) error {
	return s.r.declare(context.Background(), s.role, []string{topic})
}

// Close stops this role's consumers (not the shared connection) and waits for them.
// It is idempotent: the router closes the subscriber once per handler.
func (s *rabbitSubscriber) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.wg.Wait()
	return nil
}

func (s *rabbitSubscriber) consumeLoop(ctx context.Context, topic string, out chan<- *message.Message) {
	queue := s.r.cfg.QueueName(topic, s.role)
	log := s.r.log.With().Str("queue", queue).Str("role", s.role).Str("topic", topic).Logger()
	// stopCtx ends with the subscription's context, this subscriber or the transport.
	stopCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
		case <-s.r.closing:
		case <-stopCtx.Done():
		}
		cancel()
	}()
	stop := stopCtx.Done()

	b := backoff.NewExponentialBackOff()
	b.InitialInterval = s.r.cfg.ReconnectInitial
	b.MaxInterval = s.r.cfg.ReconnectMax
	b.MaxElapsedTime = 0
	b.Reset()
	for {
		conn, err := s.r.subConn.wait(stopCtx)
		if err != nil {
			return
		}
		started := time.Now()
		err = s.consumeOnce(ctx, stop, conn, topic, queue, out)
		if errors.Is(err, errStopping) {
			return
		}
		if time.Since(started) > time.Minute {
			b.Reset() // a long healthy run: start the backoff over
		}
		wait := b.NextBackOff()
		log.Warn().Err(err).Dur("retryIn", wait).Msg("consumer interrupted; consuming again")
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-stop:
			timer.Stop()
			return
		}
	}
}

// consumeOnce consumes on one channel until it fails or the subscription stops.
func (s *rabbitSubscriber) consumeOnce(ctx context.Context, stop <-chan struct{}, conn *amqp.Connection, topic, queue string, out chan<- *message.Message) error {
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open consume channel: %w", err)
	}
	// Closing the channel returns prefetched, unacked messages to the queue.
	defer ch.Close()
	// The broker sends no more than we handle at once: nothing waits in our buffer
	// behind a slow message.
	if err := ch.Qos(s.inFlight, 0, false); err != nil {
		return fmt.Errorf("set prefetch: %w", err)
	}
	// Declared again on every (re)start: cheap, and it recreates a queue that was
	// deleted or lost with a non-durable broker.
	if err := s.r.declareOn(ch, s.role, topic); err != nil {
		return err
	}
	deliveries, err := ch.Consume(queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", queue, err)
	}
	// Every message in hand is settled (or its drain has ended) before the channel
	// closes, and none is handed over twice: a new channel starts only after this one's
	// handlers are done.
	places := make(chan struct{}, s.inFlight)
	failed := make(chan error, 1)
	var handling sync.WaitGroup
	defer handling.Wait()
	for {
		select {
		case places <- struct{}{}:
		case err := <-failed:
			return err
		case <-stop:
			return errStopping
		}
		select {
		case d, ok := <-deliveries:
			if !ok {
				return fmt.Errorf("consume %s: channel closed", queue)
			}
			handling.Add(1)
			go func() {
				defer handling.Done()
				defer func() { <-places }()
				if err := s.deliver(ctx, stop, d, out); err != nil && !errors.Is(err, errStopping) {
					select {
					case failed <- err:
					default:
					}
				}
			}()
		case err := <-failed:
			return err
		case <-stop:
			return errStopping
		}
	}
}

// deliver hands one message to the router and settles it with the broker. A message
// the handler has not settled when the subscription stops gets DrainTimeout to finish;
// its context is not cancelled by the subscription's, so shutdown does not abort work
// in progress.
func (s *rabbitSubscriber) deliver(ctx context.Context, stop <-chan struct{}, d amqp.Delivery, out chan<- *message.Message) error {
	msg, err := s.r.marshaler.Unmarshal(d)
	if err != nil {
		// headerMarshaler never fails; a custom one might. Keep the message for later.
		_ = d.Nack(false, true)
		return fmt.Errorf("unmarshal delivery: %w", err)
	}
	if d.Redelivered {
		msg.Metadata.Set(wamqp.MetadataRedeliveredKey, "true")
		delete(msg.Metadata, metaFirstDelivery)
	} else {
		msg.Metadata.Set(metaFirstDelivery, "true")
	}
	msgCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	msg.SetContext(msgCtx)

	select {
	case out <- msg:
	case <-stop:
		_ = d.Nack(false, true)
		return errStopping
	}

	select {
	case <-msg.Acked():
		return settle(d.Ack(false))
	case <-msg.Nacked():
		return settle(d.Nack(false, true))
	case <-stop:
	}
	drain := time.NewTimer(s.r.cfg.DrainTimeout)
	defer drain.Stop()
	select {
	case <-msg.Acked():
		_ = d.Ack(false)
	case <-msg.Nacked():
		_ = d.Nack(false, true)
	case <-drain.C:
		_ = d.Nack(false, true)
	}
	return errStopping
}

// settle turns a failed ack/nack (the channel is gone; the broker will redeliver the
// message) into a reason to consume again on a new channel.
func settle(err error) error {
	if err != nil {
		return fmt.Errorf("settle delivery: %w", err)
	}
	return nil
}
