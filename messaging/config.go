package messaging

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Config is what the messaging layer needs from the application's configuration. The
// zero value of every field but URL means "use the default" (see WithDefaults).
type Config struct {
	// URL of the broker, amqp://user:pass@host:5672/vhost.
	URL string
	// Exchange is the one durable topic exchange every topic is published to.
	Exchange string
	// QueuePrefix is put in front of every queue name: <QueuePrefix><topic>.<role>.
	QueuePrefix string
	// QuorumQueues declares queues with x-queue-type=quorum. No delivery limit is set:
	// our own outages must never dead-letter work. On RabbitMQ 3.x that means unlimited;
	// RabbitMQ 4.x applies a default limit of 20 redeliveries, which must be lifted by a
	// policy there. Existing queues keep their type, so switching needs new queue names
	// (a different QueuePrefix) or a migration.
	QuorumQueues bool
	// Prefetch is the most messages one consumer channel holds and handles at once (its
	// QoS prefetch count): AddConsumer spreads a concurrency of n over ceil(n/Prefetch)
	// channels. Every message sent ahead is handed to a handler at once, so none waits
	// behind a slow one; fewer, fuller channels save the broker a round trip per message.
	Prefetch int
	// ConsumersPerQueue is how many messages per queue AddConsumer handles at once in
	// this process when asked for n <= 0: the process's concurrency per (topic, role).
	ConsumersPerQueue int
	// PublishChannels is the number of pooled confirm-mode channels used for publishing:
	// the number of publishes that can wait for a broker confirm at the same time.
	PublishChannels int
	// PublishTimeout bounds how long Publish waits for the broker's confirm.
	PublishTimeout time.Duration
	// ReconnectInitial and ReconnectMax bound the backoff between connection attempts,
	// at start-up and after a lost connection. There is no give-up.
	ReconnectInitial time.Duration
	ReconnectMax     time.Duration
	// MaxBacklog (in process only) bounds the messages published and not yet acked by
	// every role group taking them; BacklogWait is how long Publish waits for room.
	MaxBacklog  int
	BacklogWait time.Duration
	// DrainTimeout is how long a closing subscription waits for the message in hand to be
	// acked or nacked before returning it to the queue.
	DrainTimeout time.Duration
	// ConnectionName is shown in the RabbitMQ management UI (with " publish"/" consume").
	ConnectionName string
	// DelayTiers are the delays Transport.Delay can apply: a requested delay is rounded
	// up to the next tier and capped at the longest. On RabbitMQ each tier is a queue
	// per (role, topic) whose name carries the tier, so changing the tiers makes new
	// queues (drain the old ones before deleting them). Whole milliseconds, > 0.
	DelayTiers []time.Duration
}

// Defaults used by WithDefaults.
const (
	DefaultExchange          = "castiel.integration"
	DefaultPrefetch          = 16
	DefaultConsumersPerQueue = 4
	DefaultPublishChannels   = 16
	DefaultPublishTimeout    = 30 * time.Second
	DefaultReconnectInitial  = 250 * time.Millisecond
	DefaultReconnectMax      = 5 * time.Second
	DefaultDrainTimeout      = 15 * time.Second
	DefaultMaxBacklog        = 2000
	DefaultBacklogWait       = 5 * time.Second
	DefaultConnectionName    = "castiel-integration"
)

// DefaultDelayTiers covers the webhook retry schedule (5 s, 5 min, 30 min, 2 h, 5 h,
// 10 h) and short deferrals (1 s), with 30 s in between.
func DefaultDelayTiers() []time.Duration {
	return []time.Duration{
		time.Second, 5 * time.Second, 30 * time.Second, 5 * time.Minute,
		30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour,
	}
}

// ErrInvalidConfig is wrapped by every error Validate returns.
var ErrInvalidConfig = errors.New("invalid messaging config")

// WithDefaults returns c with every unset field given its default.
func (c Config) WithDefaults() Config {
	if c.Exchange == "" {
		c.Exchange = DefaultExchange
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.ConsumersPerQueue == 0 {
		c.ConsumersPerQueue = DefaultConsumersPerQueue
	}
	if c.PublishChannels == 0 {
		c.PublishChannels = DefaultPublishChannels
	}
	if c.PublishTimeout == 0 {
		c.PublishTimeout = DefaultPublishTimeout
	}
	if c.ReconnectInitial == 0 {
		c.ReconnectInitial = DefaultReconnectInitial
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = DefaultReconnectMax
	}
	if c.MaxBacklog == 0 {
		c.MaxBacklog = DefaultMaxBacklog
	}
	if c.BacklogWait == 0 {
		c.BacklogWait = DefaultBacklogWait
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.ConnectionName == "" {
		c.ConnectionName = DefaultConnectionName
	}
	if len(c.DelayTiers) == 0 {
		c.DelayTiers = DefaultDelayTiers()
	} else {
		// A sorted copy: tier lookup needs the order, and the caller's slice stays theirs.
		c.DelayTiers = slices.Compact(slices.Sorted(slices.Values(c.DelayTiers)))
	}
	return c
}

// namePattern is what we allow in exchange names, queue prefixes, topics and roles:
// AMQP allows more, but routing keys must not contain topic-exchange wildcards.
var namePattern = regexp.MustCompile(`^[A-Za-z0-9._:-]*$`)

// Validate reports the first invalid field of a Config that has had WithDefaults applied.
func (c Config) Validate() error {
	u, err := url.Parse(c.URL)
	switch {
	case c.URL == "":
		return fmt.Errorf("%w: URL is empty", ErrInvalidConfig)
	case err != nil:
		return fmt.Errorf("%w: URL: %v", ErrInvalidConfig, redactURLError(err))
	case u.Scheme != "amqp" && u.Scheme != "amqps":
		return fmt.Errorf("%w: URL scheme must be amqp or amqps, got %q", ErrInvalidConfig, u.Scheme)
	case c.Exchange == "" || !namePattern.MatchString(c.Exchange):
		return fmt.Errorf("%w: Exchange %q must be non-empty and use only letters, digits, '.', '_', ':', '-'", ErrInvalidConfig, c.Exchange)
	case !namePattern.MatchString(c.QueuePrefix):
		return fmt.Errorf("%w: QueuePrefix %q may use only letters, digits, '.', '_', ':', '-'", ErrInvalidConfig, c.QueuePrefix)
	case c.Prefetch < 0:
		return fmt.Errorf("%w: Prefetch must be >= 0, got %d", ErrInvalidConfig, c.Prefetch)
	case c.ConsumersPerQueue < 1:
		return fmt.Errorf("%w: ConsumersPerQueue must be >= 1, got %d", ErrInvalidConfig, c.ConsumersPerQueue)
	case c.PublishChannels < 1:
		return fmt.Errorf("%w: PublishChannels must be >= 1, got %d", ErrInvalidConfig, c.PublishChannels)
	case c.PublishTimeout <= 0, c.ReconnectInitial <= 0, c.ReconnectMax < c.ReconnectInitial, c.DrainTimeout <= 0:
		return fmt.Errorf("%w: PublishTimeout, ReconnectInitial and DrainTimeout must be > 0 and ReconnectMax >= ReconnectInitial", ErrInvalidConfig)
	}
	return validateTiers(c.DelayTiers)
}

// validateTiers checks delay tiers: a queue's x-message-ttl is whole milliseconds.
func validateTiers(tiers []time.Duration) error {
	if len(tiers) == 0 {
		return fmt.Errorf("%w: DelayTiers is empty", ErrInvalidConfig)
	}
	for _, d := range tiers {
		if d < time.Millisecond || d%time.Millisecond != 0 {
			return fmt.Errorf("%w: DelayTiers: %v is not a positive whole number of milliseconds", ErrInvalidConfig, d)
		}
	}
	return nil
}

// QueueName is the durable queue that role consumes topic from. Replicas of one role
// share it (competing consumers); every role has its own (each gets a copy).
func (c Config) QueueName(topic, role string) string {
	return c.QueuePrefix + topic + "." + role
}

// validateName checks a topic or role before it becomes a routing key or queue name.
func validateName(kind, name string) error {
	if name == "" || !namePattern.MatchString(name) || strings.HasPrefix(name, "amq.") {
		return fmt.Errorf("invalid %s %q: use letters, digits, '.', '_', ':', '-' (not starting with amq.)", kind, name)
	}
	return nil
}

// redactURLError keeps a password in the URL out of the error text.
func redactURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}
