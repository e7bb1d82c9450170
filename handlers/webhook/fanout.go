package webhook

import (
	"errors"
	"fmt"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
)

// HandlePublishEvent fans an event out: one DeliverWebhook (attempt 1) per
// active endpoint of the tenant whose filters match, published in one batch.
// With no match it records a no_match execution instead.
//
// Idempotent: a redelivered event publishes the same delivery ids again, and
// the delivery handler recognises an attempt it has already recorded; the
// no_match record has a deterministic id and is created only if absent.
func (d *Dispatcher) HandlePublishEvent(msg *message.Message) error {
	ev, err := messaging.Decode[domain.PublishEvent](msg, domain.TypePublishEvent)
	if err != nil {
		return err
	}
	if err := ev.Validate(); err != nil {
		return messaging.Permanent(err)
	}
	ctx := msg.Context()
	endpoints, err := d.activeEndpoints(ctx, ev.TenantID)
	if err != nil {
		return err
	}
	now := d.now()
	var out []*message.Message
	for _, ep := range endpoints {
		if !ep.Accepts(ev.Type) {
			continue
		}
		cmd := domain.DeliverWebhook{
			DeliveryID:     domain.DeliveryID(ev.EventID, ep.ID),
			EventID:        ev.EventID,
			TenantID:       ev.TenantID,
			WebhookID:      ep.ID,
			EventType:      ev.Type,
			Data:           ev.Data,
			OccurredAt:     ev.OccurredAt,
			Attempt:        1,
			FirstAttemptAt: now,
		}
		m, err := messaging.NewMessage(ctx, domain.TypeDeliverWebhook, d.opts.Source, ev.TenantID, cmd)
		if err != nil {
			return messaging.Permanent(err)
		}
		out = append(out, m)
	}
	if len(out) == 0 {
		return d.recordNoMatch(msg, ev)
	}
	// A redelivered event may have been fanned out already: its deliveries then
	// check for their record before calling the endpoint.
	messaging.MarkMaybeDuplicate(msg, out...)
	if first := d.opts.Schedule[0]; first > 0 {
		// A schedule that waits before the first attempt: each goes through the Delayer.
		for _, m := range out {
			if _, err := d.delayer.Delay(ctx, Role, messaging.TopicCmdWebhookDeliver, m, first); err != nil {
				return fmt.Errorf("schedule first attempts of event %s: %w", ev.EventID, err)
			}
		}
	} else if err := d.publisher.Publish(messaging.TopicCmdWebhookDeliver, out...); err != nil {
		return fmt.Errorf("publish %d deliveries of event %s: %w", len(out), ev.EventID, err)
	}
	d.metrics.fannedOut.Add(float64(len(out)))
	d.log.Debug().Str("tenantId", ev.TenantID).Str("eventId", ev.EventID).Str("eventType", ev.Type).
		Int("deliveries", len(out)).Msg("event fanned out")
	return nil
}

func (d *Dispatcher) recordNoMatch(msg *message.Message, ev domain.PublishEvent) error {
	now := d.now()
	rec := domain.Execution{
		ID:         domain.NoMatchExecutionID(ev.EventID),
		TenantID:   ev.TenantID,
		Kind:       domain.ExecutionWebhookDelivery,
		Status:     domain.ExecNoMatch,
		EventID:    ev.EventID,
		EventType:  ev.Type,
		StartedAt:  now,
		FinishedAt: &now,
		CreatedAt:  now,
		UpdatedAt:  now,
	}
	if _, err := d.attempts.Create(msg.Context(), domain.DeliveryAttempt{Execution: rec}); err != nil && !errors.Is(err, store.ErrConflict) {
		return fmt.Errorf("record that event %s matched no endpoint: %w", ev.EventID, err)
	}
	d.metrics.noMatch.Inc()
	return nil
}
