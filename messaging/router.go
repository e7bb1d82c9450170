package messaging

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Metadata a poisoned message carries in addition to its original metadata.
const (
	MetaPoisonReason  = "reason_poisoned"
	MetaPoisonTopic   = "poison_topic"
	MetaPoisonHandler = "poison_handler"
	MetaPoisonStack   = "poison_stack" // only for panics
)

// Policy is the message-handling policy every worker shares. Zero fields get defaults.
type Policy struct {
	// HandlerTimeout is the deadline of each handler attempt's context (default 30s).
	HandlerTimeout time.Duration
	// RetryInitial and RetryMax bound the backoff between in-process attempts after a
	// transient error (defaults 100ms, 2s).
	RetryInitial time.Duration
	RetryMax     time.Duration
	// RetryMaxElapsed bounds the in-process retries of one delivery (default 15s); then
	// the message is nacked back to its queue for a later attempt. It is never
	// dead-lettered or dropped for a transient error.
	RetryMaxElapsed time.Duration
	// PoisonTopic receives permanently failing messages (default TopicPoison).
	PoisonTopic string
	// CloseTimeout is how long Router.Close waits for running handlers (default 30s).
	CloseTimeout time.Duration
	// Metrics, when set, receives the per-consumer metrics (messages_consumed_total,
	// messages_acked_total, messages_nacked_total, messages_poisoned_total,
	// message_retries_total, message_handler_duration_seconds). Nil: none.
	Metrics prometheus.Registerer
}

// WithDefaults returns p with every unset field given its default.
func (p Policy) WithDefaults() Policy {
	if p.HandlerTimeout == 0 {
		p.HandlerTimeout = 30 * time.Second
	}
	if p.RetryInitial == 0 {
		p.RetryInitial = 100 * time.Millisecond
	}
	if p.RetryMax == 0 {
		p.RetryMax = 2 * time.Second
	}
	if p.RetryMaxElapsed == 0 {
		p.RetryMaxElapsed = 15 * time.Second
	}
	if p.PoisonTopic == "" {
		p.PoisonTopic = TopicPoison
	}
	if p.CloseTimeout == 0 {
		p.CloseTimeout = 30 * time.Second
	}
	return p
}

// NewRouter returns a Watermill router with the shared policy, outermost first:
//
//  1. outcome: recovers panics (a panic is permanent: poison, never a crash loop);
//     sends permanently failing messages to the poison topic and acks them; lets a
//     transient error through so the router nacks the message back to its queue;
//     logs with messageId, tenantId, correlationId, topic, handler.
//  2. correlation: puts the message's correlation id and traceparent in its context,
//     and on every message the handler returns.
//  3. retry: retries transient errors in process with exponential backoff, bounded by
//     RetryMaxElapsed; permanent errors and panics are not retried.
//  4. timeout: each attempt's context gets the HandlerTimeout deadline.
//
// publisher receives poisoned messages; pass Transport.Publisher().
func NewRouter(log zerolog.Logger, policy Policy, publisher message.Publisher) (*message.Router, error) {
	if publisher == nil {
		return nil, errors.New("messaging: NewRouter needs a publisher for the poison topic")
	}
	policy = policy.WithDefaults()
	if err := validateName("poison topic", policy.PoisonTopic); err != nil {
		return nil, err
	}
	if policy.HandlerTimeout < 0 || policy.RetryInitial < 0 || policy.RetryMax < policy.RetryInitial || policy.RetryMaxElapsed < 0 {
		return nil, fmt.Errorf("messaging: invalid policy %+v", policy)
	}
	log = log.With().Str("component", "router").Logger()
	r, err := message.NewRouter(message.RouterConfig{CloseTimeout: policy.CloseTimeout}, NewWatermillLogger(log))
	if err != nil {
		return nil, fmt.Errorf("create router: %w", err)
	}
	metrics, err := newRouterMetrics(policy.Metrics)
	if err != nil {
		return nil, err
	}
	m := middlewares{policy: policy, log: log, poison: publisher, metrics: metrics}
	r.AddMiddleware(m.outcome, m.correlation, m.retry, m.timeout)
	return r, nil
}

type middlewares struct {
	policy  Policy
	log     zerolog.Logger
	poison  message.Publisher
	metrics *routerMetrics // nil: none
}

func (m middlewares) outcome(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) (produced []*message.Message, err error) {
		start := time.Now()
		topic := message.SubscribeTopicFromCtx(msg.Context())
		handler := handlerRole(message.HandlerNameFromCtx(msg.Context()))
		role := handlerLabel(handler)
		m.metrics.consumedOne(topic, role)
		// Deferred first, so it runs last and sees the outcome the switch below settles on.
		defer func() { m.metrics.settled(topic, role, start, err) }()
		// The message's log context is built only when a line is written: at the
		// usual levels a handled message logs nothing, and building it for every
		// message cost allocations on the hot path.
		logger := func() *zerolog.Logger {
			l := m.log.With().
				Str("messageId", msg.UUID).
				Str("tenantId", msg.Metadata.Get(MetaTenantID)).
				Str("correlationId", msg.Metadata.Get(MetaCorrelation)).
				Str("topic", topic).
				Str("handler", handler).
				Str("type", msg.Metadata.Get(MetaType)).
				Logger()
			return &l
		}

		defer func() {
			if r := recover(); r != nil {
				produced, err = nil, Permanent(&PanicError{Value: r, Stack: debug.Stack()})
			}
			switch {
			case err == nil:
				if m.log.GetLevel() <= zerolog.DebugLevel && zerolog.GlobalLevel() <= zerolog.DebugLevel {
					logger().Debug().Dur("took", time.Since(start)).Msg("message handled")
				}
			case !IsPermanent(err):
				logger().Warn().Err(err).Dur("took", time.Since(start)).Msg("transient failure; message returned to its queue for a later attempt")
			case msg.Metadata.Get(MetaPoisonReason) != "":
				// Already a poison message: poisoning it again would loop forever.
				logger().Error().Err(err).Msg("poison consumer failed permanently; message acked and dropped")
				produced, err = nil, nil
			default:
				log := logger()
				if perr := m.publishPoison(msg, err, topic, handler); perr != nil {
					log.Error().Err(perr).AnErr("reason", err).Msg("cannot publish to the poison topic; message returned to its queue")
					produced, err = nil, fmt.Errorf("publish to poison topic: %w", perr)
					return
				}
				ev := log.Error().Err(err).Str("poisonTopic", m.policy.PoisonTopic)
				var perr *PanicError
				if errors.As(err, &perr) {
					ev = ev.Str("stack", string(perr.Stack))
				}
				ev.Msg("permanent failure; message moved to the poison topic")
				m.metrics.poisonedOne(topic, role, err)
				produced, err = nil, nil
			}
		}()
		return h(msg)
	}
}

// publishPoison publishes a copy of msg (same id, payload and metadata) with the reason.
func (m middlewares) publishPoison(msg *message.Message, reason error, topic, handler string) error {
	poisoned := message.NewMessage(msg.UUID, msg.Payload)
	poisoned.Metadata = make(message.Metadata, len(msg.Metadata)+4)
	for k, v := range msg.Metadata {
		poisoned.Metadata[k] = v
	}
	poisoned.Metadata.Set(MetaPoisonReason, reason.Error())
	poisoned.Metadata.Set(MetaPoisonTopic, topic)
	poisoned.Metadata.Set(MetaPoisonHandler, handler)
	var perr *PanicError
	if errors.As(reason, &perr) {
		poisoned.Metadata.Set(MetaPoisonStack, string(perr.Stack))
	}
	// The handler's context may be cancelled or past its deadline; the publish must not be.
	poisoned.SetContext(context.WithoutCancel(contextFromMessage(msg.Context(), msg)))
	return m.poison.Publish(m.policy.PoisonTopic, poisoned)
}

func (m middlewares) correlation(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		msg.SetContext(contextFromMessage(msg.Context(), msg))
		produced, err := h(msg)
		for _, out := range produced {
			propagate(msg.Context(), out)
		}
		return produced, err
	}
}

func (m middlewares) retry(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx := msg.Context()
		b := backoff.NewExponentialBackOff()
		b.InitialInterval = m.policy.RetryInitial
		b.MaxInterval = m.policy.RetryMax
		b.MaxElapsedTime = m.policy.RetryMaxElapsed
		b.Reset()
		for attempt := 1; ; attempt++ {
			if attempt > 1 {
				// The earlier attempt may have done part of the work.
				delete(msg.Metadata, metaFirstDelivery)
			}
			produced, err := h(msg)
			// Each attempt starts from the delivery's context, not the last attempt's.
			msg.SetContext(ctx)
			if err == nil || IsPermanent(err) {
				return produced, err
			}
			wait := b.NextBackOff()
			if wait == backoff.Stop || ctx.Err() != nil {
				return nil, fmt.Errorf("after %d attempts: %w", attempt, err)
			}
			m.log.Debug().Err(err).Str("messageId", msg.UUID).Int("attempt", attempt).Dur("retryIn", wait).Msg("transient failure; retrying")
			timer := time.NewTimer(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				timer.Stop()
				return nil, fmt.Errorf("after %d attempts (%v): %w", attempt, ctx.Err(), err)
			}
			if m.metrics != nil {
				m.metrics.retried(message.SubscribeTopicFromCtx(ctx), handlerLabel(message.HandlerNameFromCtx(ctx)))
			}
		}
	}
}

func (m middlewares) timeout(h message.HandlerFunc) message.HandlerFunc {
	return func(msg *message.Message) ([]*message.Message, error) {
		ctx, cancel := context.WithTimeout(msg.Context(), m.policy.HandlerTimeout)
		defer cancel()
		msg.SetContext(ctx)
		return h(msg)
	}
}

// handlerName and handlerRole: AddConsumer names handlers "<role>@<topic>#<n>"; the
// poison metadata and logs use "<role>@<topic>", the same for all n consumers.
func handlerName(role, topic string, n int) string {
	return fmt.Sprintf("%s@%s#%d", role, topic, n)
}

func handlerRole(name string) string {
	role, _, _ := strings.Cut(name, "#")
	return role
}

// AddConsumer has role consume topic handling up to n messages at once in this process
// (n <= 0: the transport's ConsumersPerQueue). On RabbitMQ they are spread over
// ceil(n/Prefetch) consumer channels that each hand over several messages at once; in
// process, n subscriptions take one each. Each message is settled on its own, so a slow
// one holds only its own place. Call it before router.Run.
func AddConsumer(r *message.Router, t *Transport, role, topic string, n int, h message.NoPublishHandlerFunc) (err error) {
	if err := validateName("role", role); err != nil {
		return err
	}
	if err := validateName("topic", topic); err != nil {
		return err
	}
	if h == nil {
		return errors.New("messaging: AddConsumer needs a handler")
	}
	if n <= 0 {
		n = t.Config().ConsumersPerQueue
	}
	defer func() {
		// Watermill panics on a duplicate handler name: the same role added twice to a topic.
		if p := recover(); p != nil {
			err = fmt.Errorf("add consumer %s@%s: %v", role, topic, p)
		}
	}()
	subscriptions, inFlight := t.backend.spread(n)
	sub := t.backend.subscriber(role, inFlight)
	for i := range subscriptions {
		r.AddConsumerHandler(handlerName(role, topic, i), topic, sub, h)
	}
	return nil
}

// AddPoisonConsumer registers n consumers of role on the poison topic, e.g. to record
// poisoned messages for operators. A poison consumer's own permanent failure is logged
// and the message acked: it is never poisoned again.
func AddPoisonConsumer(r *message.Router, t *Transport, role string, n int, h message.NoPublishHandlerFunc) error {
	return AddConsumer(r, t, role, TopicPoison, n, h)
}
