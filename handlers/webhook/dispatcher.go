// Package webhook is the webhook dispatcher: it fans an event out to the
// tenant's matching endpoints and delivers each one, signed per Standard
// Webhooks, retrying on a durable schedule that holds no consumer while it
// waits, and keeping endpoints healthy (circuit breaker, rate limit, bounded
// in-flight attempts, auto-disable).
//
// Written once against Watermill and small interfaces; cmd/webhook-dispatcher
// and standalone wire it. The handlers never sleep and never nack for an
// endpoint's failure: a failed attempt is recorded, the next one is scheduled
// through the Delayer, then the message is acked. Only a failure of our own
// dependencies (store, secret store, broker) returns a transient error, so it
// never uses up an attempt nor touches an endpoint's health.
//
// Caching: an endpoint's document and its signing secrets are cached per
// process for Options.CacheTTL (default 5 s), as is each tenant's list of
// active endpoints for the fan-out. A rotation, a disable, a re-enable or a new
// endpoint therefore takes effect within that TTL; the previous secret's
// overlap is checked at signing time, so it ends on time.
//
// Breaker, rate limit and in-flight bound are per process: with n dispatcher
// replicas an endpoint may get up to n × its rateLimitPerSecond.
package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/webhook/egress"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
)

// Role is the consumer role of the dispatcher's queues.
const Role = "webhook-dispatcher"

// DefaultSource is the ce-source of the messages the dispatcher publishes.
const DefaultSource = "castiel/integration-manager/webhook-dispatcher"

// Delayer publishes a message to a role's queue after a delay without holding
// a consumer; *messaging.Transport implements it.
type Delayer interface {
	// Delay publishes msg so that it reaches role's queue of topic after at least delay (rounded up
	// to a tier, capped at the longest); returns the delay applied. nil error = durably scheduled.
	Delay(ctx context.Context, role, topic string, msg *message.Message, delay time.Duration) (time.Duration, error)
}

// EventSender publishes result events; *sender.Sender implements it.
type EventSender interface {
	Send(ctx context.Context, tenantID string, msg domain.Message) error
}

// SecretGetter reads signing secrets; secrets.Store implements it. Errors
// wrapping secrets.ErrUnavailable are transient, others permanent.
type SecretGetter interface {
	Get(ctx context.Context, tenantID, ref string) ([]byte, error)
}

// Options tune the dispatcher; zero values take the defaults listed.
type Options struct {
	Timeout         time.Duration   // per attempt, connect to last body byte; default 15s
	ResponseBodyCap int             // bytes of the response body recorded; default 4096
	Schedule        []time.Duration // wait before each attempt; default domain.DefaultRetrySchedule()
	RetryAfterCap   time.Duration   // longest wait a Retry-After can impose; default 1h
	// DelayJitter is how much shorter than requested the Delayer may make a
	// delay (messaging jitters its tiers by ±10 %); a delay the receiver asked
	// for with Retry-After is requested that much longer so it is never cut
	// short. Default 0.1; negative means none.
	DelayJitter            float64
	BreakerFailures        int           // consecutive failed attempts that open an endpoint's breaker; default 5
	BreakerCooldown        time.Duration // how long an open breaker defers deliveries; default 30s
	DisableAfter           time.Duration // continuous failure that disables an endpoint; default 120h; negative: never
	MaxInFlightPerEndpoint int           // concurrent attempts per endpoint and process; default 8
	CacheTTL               time.Duration // endpoint, secret and fan-out list cache; default 5s; negative: no cache
	DeferDelay             time.Duration // wait of a delivery deferred by the rate limit or the in-flight bound; default 1s
	InlineHandoff          time.Duration // how long a fan-out waits for its inline attempts before handing the slow ones off; default 1s
	InFlightWait           time.Duration // how long a delivery waits in process for a place under MaxInFlightPerEndpoint before it is deferred; default 100ms; negative: none
	InlineAttempts         int           // first attempts the fan-out makes itself at once per process, skipping the delivery queue; default 64; negative: none
	AllowHosts             []string      // host names, IPs or CIDRs the SSRF guard lets through (standalone: loopback)
	UserAgent              string        // default "Castiel-Webhooks/1.0"
	Source                 string        // ce-source of published messages; default DefaultSource
	Now                    func() time.Time
}

// Defaults of Options.
const (
	DefaultTimeout                = 15 * time.Second
	DefaultResponseBodyCap        = 4 << 10
	DefaultRetryAfterCap          = time.Hour
	DefaultDelayJitter            = 0.1
	DefaultBreakerFailures        = 5
	DefaultBreakerCooldown        = 30 * time.Second
	DefaultDisableAfter           = 120 * time.Hour
	DefaultMaxInFlightPerEndpoint = 8
	DefaultCacheTTL               = 5 * time.Second
	DefaultDeferDelay             = time.Second
	DefaultInlineAttempts         = 64
	DefaultInlineHandoff          = time.Second
	DefaultInFlightWait           = 100 * time.Millisecond
	DefaultUserAgent              = "Castiel-Webhooks/1.0"
)

// WithDefaults returns o with every unset field given its default.
func (o Options) WithDefaults() Options {
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	if o.ResponseBodyCap == 0 {
		o.ResponseBodyCap = DefaultResponseBodyCap
	}
	if len(o.Schedule) == 0 {
		o.Schedule = domain.DefaultRetrySchedule()
	}
	if o.RetryAfterCap == 0 {
		o.RetryAfterCap = DefaultRetryAfterCap
	}
	if o.DelayJitter == 0 {
		o.DelayJitter = DefaultDelayJitter
	}
	if o.BreakerFailures == 0 {
		o.BreakerFailures = DefaultBreakerFailures
	}
	if o.BreakerCooldown == 0 {
		o.BreakerCooldown = DefaultBreakerCooldown
	}
	if o.DisableAfter == 0 {
		o.DisableAfter = DefaultDisableAfter
	}
	if o.MaxInFlightPerEndpoint == 0 {
		o.MaxInFlightPerEndpoint = DefaultMaxInFlightPerEndpoint
	}
	if o.CacheTTL == 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.DeferDelay == 0 {
		o.DeferDelay = DefaultDeferDelay
	}
	if o.InFlightWait == 0 {
		o.InFlightWait = DefaultInFlightWait
	}
	if o.InlineHandoff == 0 {
		o.InlineHandoff = DefaultInlineHandoff
	}
	if o.InlineAttempts == 0 {
		o.InlineAttempts = DefaultInlineAttempts
	}
	if o.UserAgent == "" {
		o.UserAgent = DefaultUserAgent
	}
	if o.Source == "" {
		o.Source = DefaultSource
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Validate reports the first unusable value, naming the option.
func (o Options) Validate() error {
	switch {
	case o.Timeout <= 0:
		return errors.New("webhook: Timeout must be > 0")
	case o.ResponseBodyCap < 0:
		return errors.New("webhook: ResponseBodyCap must be >= 0")
	case len(o.Schedule) > domain.MaxAttempts:
		return fmt.Errorf("webhook: Schedule has %d attempts; at most %d", len(o.Schedule), domain.MaxAttempts)
	case o.RetryAfterCap < 0:
		return errors.New("webhook: RetryAfterCap must be >= 0")
	case o.DelayJitter >= 1:
		return errors.New("webhook: DelayJitter must be below 1")
	case o.BreakerFailures < 1:
		return errors.New("webhook: BreakerFailures must be >= 1")
	case o.BreakerCooldown <= 0:
		return errors.New("webhook: BreakerCooldown must be > 0")
	case o.MaxInFlightPerEndpoint < 1:
		return errors.New("webhook: MaxInFlightPerEndpoint must be >= 1")
	case o.DeferDelay <= 0:
		return errors.New("webhook: DeferDelay must be > 0")
	case o.InlineHandoff <= 0:
		return errors.New("webhook: InlineHandoff must be > 0")
	}
	for i, d := range o.Schedule {
		if d < 0 {
			return fmt.Errorf("webhook: Schedule[%d] is negative", i)
		}
	}
	return nil
}

// Deps are the dispatcher's collaborators; all but Resolver and Metrics are required.
type Deps struct {
	Store     store.Backend     // integration_webhooks and integration_executions
	Secrets   SecretGetter      // signing secrets by reference
	Publisher message.Publisher // fan-out: DeliverWebhook commands (Transport.Publisher())
	Delayer   Delayer           // retries and deferrals
	Events    EventSender       // result events
	Logger    zerolog.Logger    // never receives secrets, payloads or response bodies
	Resolver  egress.Resolver   // DNS for the SSRF guard; nil: the system resolver
	Metrics   prometheus.Registerer
	// WrapTransport, when set, wraps the delivery client's transport (tracing).
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// Dispatcher holds the fan-out and delivery handlers.
type Dispatcher struct {
	opts      Options
	log       zerolog.Logger
	publisher message.Publisher
	delayer   Delayer
	events    EventSender
	secrets   SecretGetter
	webhooks  *store.Repository[domain.WebhookEndpoint]
	attempts  *store.Repository[domain.DeliveryAttempt]
	client    *http.Client
	endpoints *ttlCache[*endpointEntry]
	lists     *ttlCache[[]domain.WebhookEndpoint]
	health    *healthTracker
	metrics   *metrics
	inline    chan struct{} // a slot per inline first attempt in flight

	// Inline attempts run on past their fan-out's handler; Close stops them.
	background     context.Context
	stopBackground context.CancelFunc
	running        sync.WaitGroup
}

// New builds a dispatcher; it refuses missing dependencies and bad options.
func New(deps Deps, opts Options) (*Dispatcher, error) {
	var missing []string
	if deps.Store == nil {
		missing = append(missing, "Store")
	}
	if deps.Secrets == nil {
		missing = append(missing, "Secrets")
	}
	if deps.Publisher == nil {
		missing = append(missing, "Publisher")
	}
	if deps.Delayer == nil {
		missing = append(missing, "Delayer")
	}
	if deps.Events == nil {
		missing = append(missing, "Events")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("webhook: missing dependencies: %v", missing)
	}
	opts = opts.WithDefaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	webhooksC, err := deps.Store.Container(domain.ContainerWebhooks)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	executionsC, err := deps.Store.Container(domain.ContainerExecutions)
	if err != nil {
		return nil, fmt.Errorf("webhook: %w", err)
	}
	guard, err := egress.NewGuard(opts.AllowHosts, deps.Resolver)
	if err != nil {
		return nil, fmt.Errorf("webhook: AllowHosts: %w", err)
	}
	m, err := newMetrics(deps.Metrics)
	if err != nil {
		return nil, err
	}
	d := &Dispatcher{
		opts:      opts,
		log:       deps.Logger.With().Str("component", Role).Logger(),
		publisher: deps.Publisher,
		delayer:   deps.Delayer,
		events:    deps.Events,
		secrets:   deps.Secrets,
		webhooks:  store.NewRepository[domain.WebhookEndpoint](webhooksC),
		attempts:  store.NewRepository[domain.DeliveryAttempt](executionsC),
		client:    egress.NewClient(guard, egress.ClientOptions{MaxIdleConnsPerHost: max(64, opts.MaxInFlightPerEndpoint)}),
		metrics:   m,
		inline:    make(chan struct{}, max(opts.InlineAttempts, 0)),
	}
	if deps.WrapTransport != nil {
		d.client.Transport = deps.WrapTransport(d.client.Transport)
	}
	d.background, d.stopBackground = context.WithCancel(context.Background())
	d.endpoints = newTTLCache[*endpointEntry](opts.CacheTTL, opts.Now)
	d.lists = newTTLCache[[]domain.WebhookEndpoint](opts.CacheTTL, opts.Now)
	d.health = newHealthTracker(opts, m.circuitChanged)
	return d, nil
}

// Register adds the dispatcher's consumers to the router: fanOut consumers of
// TopicCmdEventPublish and deliver consumers of TopicCmdWebhookDeliver (n <= 0:
// the transport's ConsumersPerQueue). Each consumer handles one message at a
// time, so deliver (plus InlineAttempts, made by the fan-out) bounds the
// concurrent attempts per process; keep it well above MaxInFlightPerEndpoint
// so a few slow endpoints cannot hold all of them. (The fan-out's consumers
// are held by an attempt for at most InlineHandoff.)
func (d *Dispatcher) Register(r *message.Router, t *messaging.Transport, fanOut, deliver int) error {
	if err := messaging.AddConsumer(r, t, Role, messaging.TopicCmdEventPublish, fanOut, d.HandlePublishEvent); err != nil {
		return err
	}
	return messaging.AddConsumer(r, t, Role, messaging.TopicCmdWebhookDeliver, deliver, d.HandleDeliver)
}

// Topics are the topics the dispatcher consumes, for queue declaration.
func Topics() []string {
	return []string{messaging.TopicCmdEventPublish, messaging.TopicCmdWebhookDeliver}
}

// Close releases idle outbound connections.
// inlineStopWait bounds how long Close waits for the inline attempts it
// interrupts to put their deliveries back in the queue.
const inlineStopWait = 5 * time.Second

// Close interrupts the inline attempts still running (handed off by their
// fan-out): each puts its delivery back in the delivery queue unspent, as a
// delivery consumer's attempt is nacked back at shutdown. Then it releases
// idle outbound connections. Call it after the router has stopped and before
// the transport closes.
func (d *Dispatcher) Close() error {
	d.stopBackground()
	stopped := make(chan struct{})
	go func() {
		d.running.Wait()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(inlineStopWait):
		d.log.Warn().Msg("inline attempts did not stop in time; their safety copies will make them")
	}
	d.client.CloseIdleConnections()
	return nil
}

func (d *Dispatcher) now() time.Time { return d.opts.Now().UTC() }
