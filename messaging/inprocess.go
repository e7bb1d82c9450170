package messaging

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// inProcess is the standalone backend on Watermill's GoChannel. GoChannel gives every
// subscription every message; to get the broker's semantics (roles each get a copy,
// consumers of one role compete) each (role, topic) has ONE GoChannel subscription,
// made on first use, and the role's consumers take turns reading from it. Published
// messages do not survive the process: standalone mode trades durability for zero
// dependencies. Delayed messages are the exception when a ScheduleStore is given: they
// stay in it until a consumer has acked them.
type inProcess struct {
	gc     *gochannel.GoChannel
	log    zerolog.Logger
	drain  time.Duration
	ctx    context.Context // lifetime of the shared subscriptions
	cancel context.CancelFunc
	store  ScheduleStore // nil: delays are kept in memory only
	sched  *scheduler
	// backlog holds one token per (published message, role group taking it) not yet
	// acked: GoChannel keeps each such message in a goroutine of its own until then.
	backlog     chan struct{}
	backlogWait time.Duration

	mu        sync.Mutex
	groups    map[groupKey]*roleGroup
	closed    bool
	closeOnce sync.Once
}

type groupKey struct{ role, topic string }

// roleGroup is what the consumers of one role on one topic read: the role's shared
// GoChannel subscription, and the delayed messages that are due for this role only.
type roleGroup struct {
	shared <-chan *message.Message

	mu     sync.Mutex
	ready  []ScheduledMessage // due, waiting for a consumer, oldest first
	signal chan struct{}      // capacity 1: ready may be non-empty
}

// push queues a due message (at the front when a consumer gave it back) and wakes a
// consumer.
func (g *roleGroup) push(m ScheduledMessage, front bool) {
	g.mu.Lock()
	if front {
		g.ready = slices.Insert(g.ready, 0, m)
	} else {
		g.ready = append(g.ready, m)
	}
	g.mu.Unlock()
	g.notify()
}

// pop takes the oldest due message, and wakes another consumer if more are waiting.
func (g *roleGroup) pop() (ScheduledMessage, bool) {
	g.mu.Lock()
	if len(g.ready) == 0 {
		g.mu.Unlock()
		return ScheduledMessage{}, false
	}
	m := g.ready[0]
	g.ready[0] = ScheduledMessage{}
	g.ready = g.ready[1:]
	more := len(g.ready) > 0
	g.mu.Unlock()
	if more {
		g.notify()
	}
	return m, true
}

func (g *roleGroup) notify() {
	select {
	case g.signal <- struct{}{}:
	default:
	}
}

// InProcessOption adjusts NewInProcess and NewInProcessWithSchedule.
type InProcessOption func(*Config)

// WithBacklog bounds the messages published and not yet acked by every role group
// that takes them at max (default DefaultMaxBacklog): past it, Publish waits up to wait
// for room and then fails with ErrBacklogFull, so a burst beyond what the consumers
// keep up with meets back-pressure instead of growing memory without bound.
func WithBacklog(max int, wait time.Duration) InProcessOption {
	return func(c *Config) { c.MaxBacklog, c.BacklogWait = max, wait }
}

// WithDelayTiers replaces DefaultDelayTiers for Transport.Delay (see Config.DelayTiers).
func WithDelayTiers(tiers ...time.Duration) InProcessOption {
	return func(c *Config) { c.DelayTiers = slices.Clone(tiers) }
}

// NewInProcess returns a Transport on an in-memory GoChannel: the same API as
// NewRabbitMQ for the standalone binary and for handler tests. Its delays are kept in
// memory and lost when the process ends; NewInProcessWithSchedule keeps them in a
// store. It panics on invalid options (tiers that are not whole positive
// milliseconds), which NewInProcessWithSchedule returns as an error instead.
func NewInProcess(log zerolog.Logger, opts ...InProcessOption) *Transport {
	t, err := NewInProcessWithSchedule(context.Background(), log, nil, opts...)
	if err != nil {
		panic(fmt.Sprintf("messaging: NewInProcess: %v", err))
	}
	return t
}

// NewInProcessWithSchedule returns an in-process Transport whose delayed messages are
// saved in s before Delay returns and deleted once a consumer has acked them, so a
// pending delay survives a restart of the standalone process: the messages s holds
// now are scheduled again (those overdue at once, to their role's queue, where they
// wait for its consumers). A nil s keeps delays in memory, like NewInProcess.
func NewInProcessWithSchedule(ctx context.Context, log zerolog.Logger, s ScheduleStore, opts ...InProcessOption) (*Transport, error) {
	cfg := Config{Exchange: "in-process"}
	for _, o := range opts {
		o(&cfg)
	}
	cfg = cfg.WithDefaults()
	if err := validateTiers(cfg.DelayTiers); err != nil {
		return nil, err
	}
	var pending []ScheduledMessage
	if s != nil {
		var err error
		if pending, err = s.Pending(ctx); err != nil {
			return nil, fmt.Errorf("load pending delayed messages: %w", err)
		}
	}
	log = log.With().Str("component", "messaging").Logger()
	gctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{
		gc:     gochannel.NewGoChannel(gochannel.Config{}, NewWatermillLogger(log)),
		log:    log,
		drain:  DefaultDrainTimeout,
		ctx:    gctx,
		cancel: cancel,
		store:  s,
		groups: map[groupKey]*roleGroup{},

		backlog:     make(chan struct{}, cfg.MaxBacklog),
		backlogWait: cfg.BacklogWait,
	}
	p.sched = newScheduler(p.due)
	// Oldest first, so that messages due at the same time keep their order.
	slices.SortFunc(pending, func(a, b ScheduledMessage) int {
		return cmp.Or(a.Due.Compare(b.Due), cmp.Compare(a.ID, b.ID))
	})
	for _, m := range pending {
		p.sched.add(m)
	}
	if len(pending) > 0 {
		log.Info().Int("pending", len(pending)).Msg("rescheduled delayed messages saved before the restart")
	}
	return newTransport(cfg, log, p), nil
}

// group returns the shared GoChannel subscription of (role, topic). Messages published
// before it exists are not delivered to the role, as with a queue not yet declared.
func (p *inProcess) group(role, topic string) (*roleGroup, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	key := groupKey{role, topic}
	if g, ok := p.groups[key]; ok {
		return g, nil
	}
	ch, err := p.gc.Subscribe(p.ctx, topic)
	if err != nil {
		return nil, err
	}
	g := &roleGroup{shared: ch, signal: make(chan struct{}, 1)}
	p.groups[key] = g
	return g, nil
}

func (p *inProcess) publisher() message.Publisher { return boundedPublisher{p} }

// boundedPublisher publishes to GoChannel once the backlog has room for every copy.
type boundedPublisher struct{ p *inProcess }

func (b boundedPublisher) Publish(topic string, msgs ...*message.Message) error {
	copies := len(msgs) * b.p.groupsOf(topic)
	if err := b.p.reserve(copies); err != nil {
		return fmt.Errorf("publish %d messages to %s: %w", len(msgs), topic, err)
	}
	if err := b.p.gc.Publish(topic, msgs...); err != nil {
		b.p.release(copies)
		return err
	}
	return nil
}

func (b boundedPublisher) Close() error { return nil }

// groupsOf counts the role groups that take topic's messages.
func (p *inProcess) groupsOf(topic string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for k := range p.groups {
		if k.topic == topic {
			n++
		}
	}
	return n
}

// reserve takes n backlog tokens, waiting up to backlogWait for them; all or none.
func (p *inProcess) reserve(n int) error {
	n = min(n, cap(p.backlog)) // a batch larger than the bound waits for an empty backlog
	var timeout <-chan time.Time
	for i := range n {
		select {
		case p.backlog <- struct{}{}:
			continue
		default:
		}
		if timeout == nil {
			t := time.NewTimer(p.backlogWait)
			defer t.Stop()
			timeout = t.C
		}
		select {
		case p.backlog <- struct{}{}:
		case <-timeout:
			p.release(i)
			return fmt.Errorf("%w: %d messages wait for their consumers", ErrBacklogFull, cap(p.backlog))
		}
	}
	return nil
}

// release gives back n tokens (messages acked by a role group).
func (p *inProcess) release(n int) {
	for range n {
		select {
		case <-p.backlog:
		default:
			return
		}
	}
}

func (p *inProcess) subscriber(role string, _ int) message.Subscriber {
	return &inProcessSubscriber{p: p, role: role, closing: make(chan struct{})}
}

// spread: an in-process subscription hands over one message at a time.
func (p *inProcess) spread(n int) (subscriptions, inFlight int) { return n, 1 }

func (p *inProcess) declare(_ context.Context, role string, topics []string) error {
	for _, topic := range topics {
		if err := validateName("topic", topic); err != nil {
			return err
		}
		if _, err := p.group(role, topic); err != nil {
			return err
		}
	}
	return nil
}

// delay saves the message (when there is a store) and hands it to the scheduler. The
// role's group is made now, as RabbitMQ declares the role's queue, so that a message
// due before any consumer subscribes waits for one.
func (p *inProcess) delay(ctx context.Context, role, topic string, msg *message.Message, ttl time.Duration) error {
	if _, err := p.group(role, topic); err != nil {
		return err
	}
	m := ScheduledMessage{
		ID:       uuid.NewString(),
		Role:     role,
		Topic:    topic,
		Due:      time.Now().Add(ttl),
		UUID:     msg.UUID,
		Metadata: maps.Clone(map[string]string(msg.Metadata)),
		Payload:  msg.Payload,
	}
	if p.store != nil {
		if err := p.store.Save(ctx, m); err != nil {
			return fmt.Errorf("save delayed message: %w", err)
		}
	}
	p.sched.add(m)
	return nil
}

// due is the scheduler's delivery: the message joins its role's ready list.
func (p *inProcess) due(m ScheduledMessage) {
	g, err := p.group(m.Role, m.Topic)
	if err != nil {
		return // closing; the store (if any) still has it
	}
	g.push(m, false)
}

// handled forgets a delayed message a consumer acked.
func (p *inProcess) handled(m ScheduledMessage) {
	if p.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.store.Delete(ctx, m.Role, m.ID); err != nil {
		p.log.Error().Err(err).Str("messageId", m.UUID).Str("role", m.Role).Str("topic", m.Topic).
			Msg("cannot delete a handled delayed message from the schedule store; it will be delivered again after a restart")
	}
}

func (p *inProcess) ping(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	return nil
}

func (p *inProcess) close() error {
	var err error
	p.closeOnce.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.sched.close()
		p.cancel()
		err = p.gc.Close()
	})
	return err
}

// inProcessSubscriber is one role's view of the GoChannel.
type inProcessSubscriber struct {
	p         *inProcess
	role      string
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Subscribe adds one consumer of the role's shared subscription to topic. Like an AMQP
// consumer it holds one message at a time until the message is acked or nacked.
func (s *inProcessSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	if err := validateName("role", s.role); err != nil {
		return nil, err
	}
	if err := validateName("topic", topic); err != nil {
		return nil, err
	}
	select {
	case <-s.closing:
		return nil, ErrClosed
	default:
	}
	g, err := s.p.group(s.role, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		for {
			select {
			case msg, ok := <-g.shared:
				if !ok {
					return
				}
				acked, err := s.forward(ctx, msg, out)
				if acked {
					s.p.release(1)
				}
				if err != nil {
					return
				}
			case <-g.signal:
				m, ok := g.pop()
				if !ok {
					continue
				}
				acked, err := s.forward(ctx, m.message(), out)
				if acked {
					s.p.handled(m)
				} else {
					g.push(m, true) // nacked or not handed over: next in line again
				}
				if err != nil {
					return
				}
			case <-ctx.Done():
				return
			case <-s.closing:
				return
			}
		}
	}()
	return out, nil
}

// message builds a fresh message (its own ack and nack) for one delivery attempt.
func (m ScheduledMessage) message() *message.Message {
	msg := message.NewMessage(m.UUID, m.Payload)
	msg.Metadata = make(message.Metadata, len(m.Metadata))
	maps.Copy(msg.Metadata, m.Metadata)
	return msg
}

// forward hands one message over and waits until it is settled, reporting whether it
// was acked. GoChannel resends a nacked message at once, to whichever consumer of the
// role reads next. A non-nil error means the subscription is stopping.
func (s *inProcessSubscriber) forward(ctx context.Context, msg *message.Message, out chan<- *message.Message) (acked bool, err error) {
	select {
	case out <- msg:
	case <-ctx.Done():
		msg.Nack()
		return false, ctx.Err()
	case <-s.closing:
		msg.Nack()
		return false, ErrClosed
	}
	select {
	case <-msg.Acked():
		return true, nil
	case <-msg.Nacked():
		return false, nil
	case <-ctx.Done():
	case <-s.closing:
	}
	drain := time.NewTimer(s.p.drain)
	defer drain.Stop()
	select {
	case <-msg.Acked():
		acked = true
	case <-msg.Nacked():
	case <-drain.C:
		msg.Nack()
	}
	return acked, errors.New("subscription stopping")
}

// SubscribeInitialize creates the role's shared subscription without consuming, so that
// messages published from now on wait for the role's consumers.
func (s *inProcessSubscriber) SubscribeInitialize(topic string) error {
	return s.p.declare(context.Background(), s.role, []string{topic})
}

// Close stops this subscriber's consumers; the role's shared subscription stays, so
// messages keep waiting for the next consumer until the transport closes.
func (s *inProcessSubscriber) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.wg.Wait()
	return nil
}
