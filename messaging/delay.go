package messaging

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
)

// Jitter: a tier of at least jitterMinTier is spread over three sibling delays,
// tier×0.9, tier and tier×1.1, so that the retries of many messages that failed
// together (an endpoint down for everyone) do not all come back in the same second.
const (
	jitterMinTier  = 5 * time.Second
	jitterPercent  = 10
	jitterSiblings = 3
)

// Delay publishes msg so that it reaches role's queue of topic (and no other role's)
// after the delay, rounded UP to the next of Config.DelayTiers and capped at the
// longest tier; a delay <= 0 publishes to role's queue at once. Tiers of 5 s and more
// are jittered by ±10 %: the returned duration is the delay actually applied, which
// may therefore be up to 10 % shorter than the tier.
//
// A nil error means the message is durably scheduled, so the caller may ack the
// message it is handling: on RabbitMQ the broker confirmed the message in a durable
// delay queue; in process it is in the ScheduleStore when there is one (without one,
// pending delays are lost with the process). Waiting holds no consumer and no
// goroutine. While the broker is away it fails at once with ErrNotConnected, which
// is transient, like Publish; after Close it fails with ErrClosed. Broker-owned headers the message picked up on its way (x-death,
// x-first-death-*, x-delivery-count, ...) are not carried over; count attempts in a
// header of your own. The message keeps its UUID, payload and other metadata; the
// correlation id and traceparent of ctx are added when it has none.
func (t *Transport) Delay(ctx context.Context, role, topic string, msg *message.Message, delay time.Duration) (time.Duration, error) {
	if err := validateName("role", role); err != nil {
		return 0, err
	}
	if err := validateName("topic", topic); err != nil {
		return 0, err
	}
	if msg == nil {
		return 0, errors.New("messaging: Delay needs a message")
	}
	ttl := planDelay(t.cfg.DelayTiers, delay, rand.IntN(jitterSiblings))
	if err := t.backend.delay(ctx, role, topic, delayedCopy(ctx, msg), ttl); err != nil {
		return 0, fmt.Errorf("delay message %s for %s on %s by %v: %w", msg.UUID, role, topic, ttl, err)
	}
	return ttl, nil
}

// delayedCopy is the message that goes back on the wire: same id, payload and
// metadata, minus the headers the broker owns. Republished as strings (which is
// what our marshaler turned them into), a stale x-death is of the wrong type for the
// broker's next dead-lettering: RabbitMQ 3.10 logs "Message has invalid x-death
// header" and resets it on every cycle. Dropping them gives a clean x-death each time.
func delayedCopy(ctx context.Context, msg *message.Message) *message.Message {
	out := message.NewMessage(msg.UUID, slices.Clone(msg.Payload))
	out.Metadata = make(message.Metadata, len(msg.Metadata))
	for k, v := range msg.Metadata {
		if !brokerHeader(k) {
			out.Metadata[k] = v
		}
	}
	propagate(ctx, out)
	propagate(msg.Context(), out)
	out.SetContext(ctx)
	return out
}

// brokerHeader reports whether a header is set by RabbitMQ (dead-lettering, quorum
// queue delivery counts), not by a producer.
func brokerHeader(key string) bool {
	switch key {
	case "x-death", "x-delivery-count", "x-received-from":
		return true
	}
	return strings.HasPrefix(key, "x-first-death-") || strings.HasPrefix(key, "x-last-death-")
}

// planDelay returns the delay to apply for a requested one: 0 for none, else the
// smallest tier >= requested (the longest when none is), jittered to sibling pick
// (0, 1 or 2: ×0.9, ×1, ×1.1) when the tier is at least jitterMinTier. tiers is
// sorted ascending (Config.WithDefaults does that).
func planDelay(tiers []time.Duration, requested time.Duration, pick int) time.Duration {
	if requested <= 0 || len(tiers) == 0 {
		return 0
	}
	i, _ := slices.BinarySearch(tiers, requested)
	siblings := tierSiblings(tiers[min(i, len(tiers)-1)])
	return siblings[min(max(pick, 0), len(siblings)-1)]
}

// tierSiblings returns the delays a tier is spread over: itself alone below
// jitterMinTier, else tier×0.9, tier, tier×1.1 (whole milliseconds).
func tierSiblings(tier time.Duration) []time.Duration {
	if tier < jitterMinTier {
		return []time.Duration{tier}
	}
	spread := func(percent int64) time.Duration {
		return (tier * time.Duration(percent) / 100).Round(time.Millisecond)
	}
	return []time.Duration{spread(100 - jitterPercent), tier, spread(100 + jitterPercent)}
}

// delayName renders a delay for a queue name: 5s, 4.5s, 5m, 4m30s, 2h, 1h48m, 500ms.
func delayName(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// DelayQueueName is the queue that holds role's messages for topic during a delay
// of ttl; expired, they go to QueueName(topic, role).
func (c Config) DelayQueueName(topic, role string, ttl time.Duration) string {
	return c.QueuePrefix + "delay." + role + "." + topic + "." + delayName(ttl)
}

// DelayQueueNames lists every delay queue Delay may use for role on topic with the
// configured tiers (jitter siblings included), e.g. for an operator or for a test's
// cleanup. Call it on a Config that has had WithDefaults applied.
func (c Config) DelayQueueNames(topic, role string) []string {
	var names []string
	for _, ttl := range delayTTLs(c.DelayTiers) {
		names = append(names, c.DelayQueueName(topic, role, ttl))
	}
	return names
}

// delayTTLs is every queue TTL of the tiers, siblings included, ascending and unique.
func delayTTLs(tiers []time.Duration) []time.Duration {
	set := map[time.Duration]bool{}
	for _, tier := range tiers {
		for _, d := range tierSiblings(tier) {
			set[d] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}
