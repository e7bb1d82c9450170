package webhook

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
)

// HandleDeliver makes one attempt of one delivery.
//
// The order makes it idempotent and crash-safe:
//  1. An attempt whose record exists was made already (this is a redelivered
//     message): the endpoint is not called again; the follow-ups derived from
//     the record are published again and the message acked (nothing is
//     published when the record is marked settled: the safety copy of a
//     handed-off inline attempt, see attemptInline). The record is
//     read only when the message may have been handled before
//     (messaging.MayBeDuplicate: a broker redelivery, an in-process retry, a
//     copy marked by its producer, or a transport that cannot tell). A first
//     delivery of an unmarked message was never handled, so its record cannot
//     exist unless another copy of the command, published by a run that failed
//     before its ack, overtook it; step 3 settles that case.
//  2. Otherwise the endpoint is called (unless the endpoint is disabled, no
//     longer wants the event, or must be spared: breaker open, rate limit, too
//     many attempts in flight — then the delivery is deferred through the
//     Delayer with the same attempt number, nothing is recorded, and no attempt
//     is used up).
//  3. The attempt is recorded with create-if-absent. If a duplicate copy of
//     the message recorded it first (ErrConflict), that copy owns the
//     follow-ups and this one is just acked. The owner publishes them before
//     its ack; if it fails or crashes first, its message runs again (retried
//     in process or redelivered), reads the record and publishes them. So
//     skipping step 1's read never loses a follow-up or an attempt record; at
//     worst that rare overtaking copy calls the endpoint a second time with
//     the same webhook-id, which at-least-once delivery allows.
//  4. Follow-ups: the endpoint's health bookkeeping (or its disabling), the
//     result event, and the next attempt through the Delayer. Then the ack.
//
// A failure of the store, the secret store or the broker returns an error
// (the router retries, then nacks) before anything is recorded or after the
// record, so it never costs an attempt or changes the endpoint's health.
func (d *Dispatcher) HandleDeliver(msg *message.Message) error {
	cmd, err := messaging.Decode[domain.DeliverWebhook](msg, domain.TypeDeliverWebhook)
	if err != nil {
		return err
	}
	if err := cmd.Validate(); err != nil {
		return messaging.Permanent(err)
	}
	return d.attempt(msg.Context(), msg, msg, cmd)
}

// attempt makes one attempt of cmd, as HandleDeliver describes, while handling
// from: the DeliverWebhook message itself (self), or the event whose fan-out
// makes the first attempt inline (self nil). from decides whether the attempt
// may have been made before; what is published meanwhile inherits that.
func (d *Dispatcher) attempt(ctx context.Context, from, self *message.Message, cmd domain.DeliverWebhook) error {
	if messaging.MayBeDuplicate(from) {
		id := domain.AttemptExecutionID(cmd.DeliveryID, cmd.Attempt)
		prev, _, err := d.attempts.Get(ctx, cmd.TenantID, id)
		switch {
		case err == nil && prev.Settled:
			// The safety copy of a handed-off attempt that ended well.
			return nil
		case err == nil:
			d.metrics.redelivered.Inc()
			d.log.Debug().Str("tenantId", cmd.TenantID).Str("deliveryId", cmd.DeliveryID).Int("attempt", cmd.Attempt).
				Msg("attempt already recorded; re-publishing its follow-ups without calling the endpoint")
			return d.settle(ctx, from, cmd, prev, true)
		case !errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("read attempt %d of delivery %s: %w", cmd.Attempt, cmd.DeliveryID, err)
		}
	}

	e, err := d.endpoint(ctx, cmd.TenantID, cmd.WebhookID)
	if err != nil {
		return err
	}
	if rec, skip := d.notAttempted(cmd, e.ep); skip {
		return d.record(ctx, from, cmd, rec)
	}
	lease, def := d.health.acquire(ctx, endpointKey(cmd.TenantID, cmd.WebhookID), e.ep.RateLimitPerSecond, d.opts.Now())
	if def != nil {
		return d.deferDelivery(ctx, from, self, cmd, *def)
	}
	out, err := d.call(ctx, cmd, e)
	if err != nil {
		lease.release(errNotAttempted, 0)
		return err
	}
	dec := domain.DecideAttempt(out.result, cmd.Attempt, d.policy(), out.finished)
	if dec.Status != domain.ExecDelivered && ctx.Err() != nil {
		// Our own deadline or shutdown cut the attempt short: not the endpoint's fault.
		lease.release(errNotAttempted, 0)
		return fmt.Errorf("attempt %d of delivery %s interrupted on our side: %w", cmd.Attempt, cmd.DeliveryID, ctx.Err())
	}
	took := out.finished.Sub(out.started)
	if dec.EndpointFailed {
		lease.release(errAttemptFailed, took)
	} else {
		lease.release(nil, took)
	}
	d.metrics.duration.Observe(took.Seconds())
	return d.record(ctx, from, cmd, d.attemptRecord(cmd, e.ep, out, dec))
}

func (d *Dispatcher) policy() domain.RetryPolicy {
	return domain.RetryPolicy{Schedule: d.opts.Schedule, RetryAfterCap: d.opts.RetryAfterCap}
}

// notAttempted returns the record of a delivery the endpoint must not get:
// it is disabled (exhausted, replayable once re-enabled), or its filters no
// longer select the event (no_match).
func (d *Dispatcher) notAttempted(cmd domain.DeliverWebhook, ep domain.WebhookEndpoint) (domain.DeliveryAttempt, bool) {
	var status domain.ExecutionStatus
	var class, reason string
	switch {
	case ep.Status != domain.WebhookActive:
		status, class, reason = domain.ExecExhausted, domain.ErrorClassEndpointDisabled, "the endpoint is disabled"
		if ep.DisabledReason != "" {
			reason += ": " + ep.DisabledReason
		}
	case !domain.MatchesEventType(ep.EventTypes, cmd.EventType):
		status, reason = domain.ExecNoMatch, "the endpoint's event filters no longer select "+cmd.EventType
	default:
		return domain.DeliveryAttempt{}, false
	}
	now := d.now()
	rec := d.newRecord(cmd, now)
	rec.Status, rec.ErrorClass, rec.Error, rec.FinishedAt = status, class, sanitize(reason), &now
	return rec, true
}

func (d *Dispatcher) newRecord(cmd domain.DeliverWebhook, started time.Time) domain.DeliveryAttempt {
	now := d.now()
	rec := domain.DeliveryAttempt{Execution: domain.Execution{
		ID:         domain.AttemptExecutionID(cmd.DeliveryID, cmd.Attempt),
		TenantID:   cmd.TenantID,
		Kind:       domain.ExecutionWebhookDelivery,
		WebhookID:  cmd.WebhookID,
		DeliveryID: cmd.DeliveryID,
		EventID:    cmd.EventID,
		EventType:  cmd.EventType,
		Attempt:    cmd.Attempt,
		StartedAt:  started,
		CreatedAt:  now,
		UpdatedAt:  now,
	}}
	if cmd.Attempt == 1 {
		rec.Event = &domain.DeliveredEvent{Data: cmd.Data, OccurredAt: cmd.OccurredAt, FirstAttemptAt: cmd.FirstAttemptAt}
	}
	return rec
}

// attemptRecord is the execution record of an attempt that was made. An
// endpoint failing for longer than DisableAfter is disabled by this attempt,
// which then ends the delivery.
func (d *Dispatcher) attemptRecord(cmd domain.DeliverWebhook, ep domain.WebhookEndpoint, out callOutcome, dec domain.AttemptDecision) domain.DeliveryAttempt {
	rec := d.newRecord(cmd, out.started.UTC())
	finished := out.finished.UTC()
	rec.Status, rec.ErrorClass, rec.Error = dec.Status, dec.ErrorClass, sanitize(out.reason)
	rec.RequestHeaders = domain.RedactHeaders(out.headers)
	rec.ResponseStatus, rec.ResponseBody = out.result.StatusCode, out.body
	rec.DurationMs = finished.Sub(rec.StartedAt).Milliseconds()
	rec.FinishedAt = &finished
	if dec.DisableEndpoint {
		rec.DisablesEndpoint = domain.ReasonGone
		return rec
	}
	if h := domain.NextEndpointHealth(ep, dec.EndpointFailed, rec.StartedAt, d.opts.DisableAfter); h.Disable {
		rec.Status, rec.DisablesEndpoint = domain.ExecExhausted, h.Reason
		rec.Error = sanitize(rec.Error + "; " + h.Reason)
		return rec
	}
	if dec.Status == domain.ExecFailedRetrying {
		next := finished.Add(dec.Delay)
		rec.NextAttemptAt, rec.NotBefore = &next, dec.NotBefore
	}
	return rec
}

// record stores the attempt (create-if-absent), then publishes its follow-ups.
func (d *Dispatcher) record(ctx context.Context, from *message.Message, cmd domain.DeliverWebhook, rec domain.DeliveryAttempt) error {
	if _, err := d.attempts.Create(ctx, rec); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// A duplicate copy of this message recorded the attempt first and owns its follow-ups.
			return nil
		}
		return fmt.Errorf("record attempt %d of delivery %s: %w", rec.Attempt, rec.DeliveryID, err)
	}
	d.metrics.attempts.WithLabelValues(string(rec.Status), rec.ErrorClass, statusClass(rec.ResponseStatus)).Inc()
	ev := d.log.Debug()
	if rec.Status == domain.ExecExhausted {
		ev = d.log.Info()
	}
	ev.Str("tenantId", rec.TenantID).Str("webhookId", rec.WebhookID).Str("deliveryId", rec.DeliveryID).
		Int("attempt", rec.Attempt).Str("status", string(rec.Status)).Str("errorClass", rec.ErrorClass).
		Int("responseStatus", rec.ResponseStatus).Int64("durationMs", rec.DurationMs).Msg("delivery attempt recorded")
	return d.settle(ctx, from, cmd, rec, false)
}

// settle publishes what follows from a recorded attempt. It runs again, from
// the record, when the message is redelivered (redelivered=true), so each
// step is safe to repeat: the endpoint update is conditional on its current
// state, and events and the next attempt may be published twice (the next
// attempt's deterministic id makes a duplicate harmless).
func (d *Dispatcher) settle(ctx context.Context, from *message.Message, cmd domain.DeliverWebhook, rec domain.DeliveryAttempt, redelivered bool) error {
	switch {
	case rec.DisablesEndpoint != "":
		if err := d.disable(ctx, rec, redelivered); err != nil {
			return err
		}
	case attempted(rec):
		if err := d.trackHealth(ctx, rec); err != nil {
			return err
		}
	}
	if err := d.sendResult(ctx, rec); err != nil {
		return err
	}
	if rec.Status == domain.ExecFailedRetrying && rec.NextAttemptAt != nil {
		return d.scheduleNext(ctx, from, cmd, rec)
	}
	return nil
}

// attempted reports whether the record is of a real HTTP attempt.
func attempted(rec domain.DeliveryAttempt) bool {
	return rec.Status != domain.ExecNoMatch && rec.ErrorClass != domain.ErrorClassEndpointDisabled
}

// trackHealth writes the endpoint's failingSince/lastSuccessAt on transitions
// only. The cached document tells whether a transition is due, so a steady
// endpoint costs no store access; the update itself re-checks the stored one.
func (d *Dispatcher) trackHealth(ctx context.Context, rec domain.DeliveryAttempt) error {
	failed := rec.Status != domain.ExecDelivered
	if e, ok := d.endpoints.get(endpointKey(rec.TenantID, rec.WebhookID)); ok &&
		!domain.NextEndpointHealth(e.ep, failed, rec.StartedAt, -1).Changes() {
		return nil
	}
	updated, _, err := d.webhooks.Update(ctx, rec.TenantID, rec.WebhookID, func(w *domain.WebhookEndpoint) error {
		// Disabling is decided when recording (DisablesEndpoint), not here.
		h := domain.NextEndpointHealth(*w, failed, rec.StartedAt, -1)
		if !h.Apply(w, rec.StartedAt) {
			return store.ErrSkipUpdate
		}
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil // deleted meanwhile: nothing to keep track of
	case err != nil:
		return fmt.Errorf("update the health of webhook %s: %w", rec.WebhookID, err)
	}
	d.refreshEndpoint(updated)
	return nil
}

// disable disables the endpoint as the record says, and publishes
// webhook.endpoint_disabled when this attempt did it (or, redelivered, when
// the endpoint is still disabled for this reason: the first run may have
// stopped before publishing).
func (d *Dispatcher) disable(ctx context.Context, rec domain.DeliveryAttempt, redelivered bool) error {
	at := d.now()
	if rec.FinishedAt != nil {
		at = *rec.FinishedAt
	}
	var changed bool
	updated, _, err := d.webhooks.Update(ctx, rec.TenantID, rec.WebhookID, func(w *domain.WebhookEndpoint) error {
		changed = false
		// A failing period judged on a cached document is confirmed on the stored one:
		// another replica may have seen the endpoint recover meanwhile.
		if rec.ErrorClass != domain.ErrorClassGone && !domain.NextEndpointHealth(*w, true, rec.StartedAt, d.opts.DisableAfter).Disable {
			return store.ErrSkipUpdate
		}
		changed = domain.DisableEndpoint(w, rec.DisablesEndpoint, at)
		if !changed {
			return store.ErrSkipUpdate
		}
		return nil
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("disable webhook %s: %w", rec.WebhookID, err)
	}
	d.refreshEndpoint(updated)
	if !changed && !(redelivered && updated.Status == domain.WebhookDisabled && updated.DisabledReason == rec.DisablesEndpoint) {
		return nil
	}
	if changed {
		d.log.Warn().Str("tenantId", rec.TenantID).Str("webhookId", rec.WebhookID).Str("reason", rec.DisablesEndpoint).
			Msg("webhook endpoint disabled")
	}
	return d.send(ctx, rec.TenantID, domain.WebhookEndpointDisabled{
		TenantID: rec.TenantID, WebhookID: rec.WebhookID, Reason: rec.DisablesEndpoint,
		FailingSince: updated.FailingSince, DisabledAt: at,
	})
}

// sendResult publishes the event of the attempt's outcome; a no_match has none.
func (d *Dispatcher) sendResult(ctx context.Context, rec domain.DeliveryAttempt) error {
	at := rec.StartedAt
	if rec.FinishedAt != nil {
		at = *rec.FinishedAt
	}
	reason := rec.Error
	if reason == "" {
		reason = rec.ErrorClass
	}
	class := rec.ErrorClass
	if class == "" {
		class = domain.ErrorClassConnection
	}
	var ev domain.Message
	switch rec.Status {
	case domain.ExecDelivered:
		ev = domain.WebhookDelivered{
			TenantID: rec.TenantID, WebhookID: rec.WebhookID, DeliveryID: rec.DeliveryID, EventID: rec.EventID,
			EventType: rec.EventType, ExecutionID: rec.ID, Attempt: rec.Attempt, ResponseStatus: rec.ResponseStatus,
			DurationMs: rec.DurationMs, DeliveredAt: at,
		}
	case domain.ExecFailedRetrying:
		var next time.Time
		if rec.NextAttemptAt != nil {
			next = *rec.NextAttemptAt
		}
		ev = domain.WebhookAttemptFailed{
			TenantID: rec.TenantID, WebhookID: rec.WebhookID, DeliveryID: rec.DeliveryID, EventID: rec.EventID,
			EventType: rec.EventType, ExecutionID: rec.ID, Attempt: rec.Attempt, ResponseStatus: rec.ResponseStatus,
			ErrorClass: class, Reason: reason, NextAttemptAt: next, FailedAt: at,
		}
	case domain.ExecExhausted:
		ev = domain.WebhookExhausted{
			TenantID: rec.TenantID, WebhookID: rec.WebhookID, DeliveryID: rec.DeliveryID, EventID: rec.EventID,
			EventType: rec.EventType, ExecutionID: rec.ID, Attempts: rec.Attempt, LastResponseStatus: rec.ResponseStatus,
			ErrorClass: class, Reason: reason, ExhaustedAt: at,
		}
	default:
		return nil
	}
	return d.send(ctx, rec.TenantID, ev)
}

func (d *Dispatcher) send(ctx context.Context, tenantID string, ev domain.Message) error {
	if err := d.events.Send(ctx, tenantID, ev); err != nil {
		return fmt.Errorf("publish %s: %w", ev.CEType(), err)
	}
	return nil
}

// scheduleNext publishes the next attempt through the Delayer, due at the
// record's NextAttemptAt.
func (d *Dispatcher) scheduleNext(ctx context.Context, from *message.Message, cmd domain.DeliverWebhook, rec domain.DeliveryAttempt) error {
	next := cmd
	next.Attempt = rec.Attempt + 1
	delay := max(rec.NextAttemptAt.Sub(d.now()), 0)
	if rec.NotBefore {
		delay = d.notBefore(delay)
	}
	m, err := d.deliverMessage(ctx, from, next)
	if err != nil {
		return err
	}
	applied, err := d.delayer.Delay(ctx, Role, messaging.TopicCmdWebhookDeliver, m, delay)
	if err != nil {
		return fmt.Errorf("schedule attempt %d of delivery %s: %w", next.Attempt, cmd.DeliveryID, err)
	}
	d.metrics.retries.Inc()
	d.log.Debug().Str("tenantId", cmd.TenantID).Str("deliveryId", cmd.DeliveryID).Int("attempt", next.Attempt).
		Dur("delay", applied).Msg("next attempt scheduled")
	return nil
}

// notBefore lengthens a delay the Delayer may shorten by its jitter, so that
// the receiver's Retry-After is honoured.
func (d *Dispatcher) notBefore(delay time.Duration) time.Duration {
	if d.opts.DelayJitter <= 0 || delay <= 0 {
		return delay
	}
	return time.Duration(math.Ceil(float64(delay) / (1 - d.opts.DelayJitter)))
}

// deferDelivery puts the delivery back through the Delayer with the same
// attempt number: nothing is recorded and no attempt is used up. self is the
// DeliverWebhook message being handled, or nil for an inline first attempt
// (a message is made of cmd).
func (d *Dispatcher) deferDelivery(ctx context.Context, from, self *message.Message, cmd domain.DeliverWebhook, def deferral) error {
	m := self
	if m == nil {
		var err error
		if m, err = d.deliverMessage(ctx, from, cmd); err != nil {
			return err
		}
	} else {
		// The deferred copy arrives as a first delivery: keep what this one knew.
		messaging.MarkMaybeDuplicate(from, m)
	}
	applied, err := d.delayer.Delay(ctx, Role, messaging.TopicCmdWebhookDeliver, m, def.delay)
	if err != nil {
		return fmt.Errorf("defer delivery %s (%s): %w", cmd.DeliveryID, def.reason, err)
	}
	d.metrics.deferred.WithLabelValues(def.reason).Inc()
	d.log.Debug().Str("tenantId", cmd.TenantID).Str("webhookId", cmd.WebhookID).Str("deliveryId", cmd.DeliveryID).
		Int("attempt", cmd.Attempt).Str("reason", def.reason).Dur("delay", applied).Msg("delivery deferred")
	return nil
}
