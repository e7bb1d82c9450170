package messaging

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/rs/zerolog"
)

// inProcess is the standalone backend on Watermill's GoChannel. GoChannel gives every
// subscription every message; to get the broker's semantics (roles each get a copy,
// consumers of one role compete) each (role, topic) has ONE GoChannel subscription,
// made on first use, and the role's consumers take turns reading from it. Nothing
// survives the process: standalone mode trades durability for zero dependencies.
type inProcess struct {
	gc     *gochannel.GoChannel
	drain  time.Duration
	ctx    context.Context // lifetime of the shared subscriptions
	cancel context.CancelFunc

	mu     sync.Mutex
	groups map[groupKey]<-chan *message.Message
	closed bool
}

type groupKey struct{ role, topic string }

// NewInProcess returns a Transport on an in-memory GoChannel: the same API as
// NewRabbitMQ for the standalone binary and for handler tests.
func NewInProcess(log zerolog.Logger) *Transport {
	log = log.With().Str("component", "messaging").Logger()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{
		gc:     gochannel.NewGoChannel(gochannel.Config{}, NewWatermillLogger(log)),
		drain:  DefaultDrainTimeout,
		ctx:    ctx,
		cancel: cancel,
		groups: map[groupKey]<-chan *message.Message{},
	}
	cfg := Config{Exchange: "in-process"}.WithDefaults()
	return newTransport(cfg, log, p)
}

// group returns the shared GoChannel subscription of (role, topic). Messages published
// before it exists are not delivered to the role, as with a queue not yet declared.
func (p *inProcess) group(role, topic string) (<-chan *message.Message, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	key := groupKey{role, topic}
	if ch, ok := p.groups[key]; ok {
		return ch, nil
	}
	ch, err := p.gc.Subscribe(p.ctx, topic)
	if err != nil {
		return nil, err
	}
	p.groups[key] = ch
	return ch, nil
}

func (p *inProcess) publisher() message.Publisher { return p.gc }

func (p *inProcess) subscriber(role string) message.Subscriber {
	return &inProcessSubscriber{p: p, role: role, closing: make(chan struct{})}
}

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

func (p *inProcess) ping(context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	return nil
}

func (p *inProcess) close() error {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	return p.gc.Close()
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
	shared, err := s.p.group(s.role, topic)
	if err != nil {
		return nil, err
	}
	out := make(chan *message.Message)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(out)
		for {
			var msg *message.Message
			var ok bool
			select {
			case msg, ok = <-shared:
				if !ok {
					return
				}
			case <-ctx.Done():
				return
			case <-s.closing:
				return
			}
			if err := s.forward(ctx, msg, out); err != nil {
				return
			}
		}
	}()
	return out, nil
}

// forward hands one message over and waits until it is settled. GoChannel resends a
// nacked message at once, to whichever consumer of the role reads next.
func (s *inProcessSubscriber) forward(ctx context.Context, msg *message.Message, out chan<- *message.Message) error {
	select {
	case out <- msg:
	case <-ctx.Done():
		msg.Nack()
		return ctx.Err()
	case <-s.closing:
		msg.Nack()
		return ErrClosed
	}
	select {
	case <-msg.Acked():
		return nil
	case <-msg.Nacked():
		return nil
	case <-ctx.Done():
	case <-s.closing:
	}
	drain := time.NewTimer(s.p.drain)
	defer drain.Stop()
	select {
	case <-msg.Acked():
	case <-msg.Nacked():
	case <-drain.C:
		msg.Nack()
	}
	return errors.New("subscription stopping")
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
