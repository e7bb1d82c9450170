package webhook

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
)

// HandlePublishEvent fans an event out to every active endpoint of the
// tenant whose filters match: one delivery (attempt 1) each. With no match it
// records a no_match execution instead.
//
// While the process has spare inline slots (Options.InlineAttempts) the
// fan-out makes the first attempts itself, concurrently, and acks the event
// once each is recorded and settled: a delivery then costs one broker hop
// fewer. The other deliveries are published to the delivery queue in one
// batch. Either way an attempt goes through the same steps (HandleDeliver's),
// including the endpoint's gatekeepers: an endpoint that cannot take it now
// gets it deferred through the Delayer, so a slow endpoint holds at most its
// in-flight bound of inline slots and events.
//
// Idempotent: a redelivered event publishes the same delivery ids again, and
// an attempt first looks for its record (the event may be a duplicate); the
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
	var cmds []domain.DeliverWebhook
	for _, ep := range endpoints {
		if !ep.Accepts(ev.Type) {
			continue
		}
		cmds = append(cmds, domain.DeliverWebhook{
			DeliveryID:     domain.DeliveryID(ev.EventID, ep.ID),
			EventID:        ev.EventID,
			TenantID:       ev.TenantID,
			WebhookID:      ep.ID,
			EventType:      ev.Type,
			Data:           ev.Data,
			OccurredAt:     ev.OccurredAt,
			Attempt:        1,
			FirstAttemptAt: now,
		})
	}
	if len(cmds) == 0 {
		return d.recordNoMatch(msg, ev)
	}
	n := 0
	if d.opts.Schedule[0] == 0 {
		n = d.reserveInline(len(cmds))
	}
	inline, queued := cmds[:n], cmds[n:]
	if err := d.enqueue(ctx, msg, ev, queued); err != nil {
		d.releaseInline(n)
		return err
	}
	d.metrics.fannedOut.WithLabelValues(pathInline).Add(float64(len(inline)))
	d.metrics.fannedOut.WithLabelValues(pathQueue).Add(float64(len(queued)))
	d.log.Debug().Str("tenantId", ev.TenantID).Str("eventId", ev.EventID).Str("eventType", ev.Type).
		Int("deliveries", len(cmds)).Int("inline", len(inline)).Msg("event fanned out")
	return d.attemptInline(ctx, msg, inline)
}

// Paths of a first attempt, the fan-out metric's label.
const (
	pathInline = "inline"
	pathQueue  = "queue"
)

// enqueue publishes the first attempts of cmds to the delivery queue, in one
// batch, or each through the Delayer when the schedule waits before it.
func (d *Dispatcher) enqueue(ctx context.Context, event *message.Message, ev domain.PublishEvent, cmds []domain.DeliverWebhook) error {
	if len(cmds) == 0 {
		return nil
	}
	out := make([]*message.Message, 0, len(cmds))
	for _, cmd := range cmds {
		m, err := d.deliverMessage(ctx, event, cmd)
		if err != nil {
			return err
		}
		out = append(out, m)
	}
	if first := d.opts.Schedule[0]; first > 0 {
		for _, m := range out {
			if _, err := d.delayer.Delay(ctx, Role, messaging.TopicCmdWebhookDeliver, m, first); err != nil {
				return fmt.Errorf("schedule first attempts of event %s: %w", ev.EventID, err)
			}
		}
		return nil
	}
	if err := d.publisher.Publish(messaging.TopicCmdWebhookDeliver, out...); err != nil {
		return fmt.Errorf("publish %d deliveries of event %s: %w", len(out), ev.EventID, err)
	}
	return nil
}

// deliverMessage is the DeliverWebhook message of cmd, published while
// handling from: if from may have been handled before, so may the message.
func (d *Dispatcher) deliverMessage(ctx context.Context, from *message.Message, cmd domain.DeliverWebhook) (*message.Message, error) {
	m, err := messaging.NewMessage(ctx, domain.TypeDeliverWebhook, d.opts.Source, cmd.TenantID, cmd)
	if err != nil {
		return nil, messaging.Permanent(err)
	}
	messaging.MarkMaybeDuplicate(from, m)
	return m, nil
}

// reserveInline takes up to n inline slots without waiting and returns how many.
func (d *Dispatcher) reserveInline(n int) int {
	for i := range n {
		select {
		case d.inline <- struct{}{}:
		default:
			return i
		}
	}
	return n
}

func (d *Dispatcher) releaseInline(n int) {
	for range n {
		<-d.inline
	}
}

// attemptInline makes the first attempts of cmds concurrently, each holding
// one reserved inline slot until it is settled, and returns their failures.
//
// The event (and the consumer handling it) is held for at most
// Options.InlineHandoff: attempts still running then are handed off. Each
// gets a safety copy of its delivery scheduled through the Delayer for after
// the attempt's deadline, and the event is acked while the attempts go on.
// The copy finds the attempt recorded and settled and does nothing, unless
// this process died first; then it makes the attempt. So an endpoint that
// hangs holds no fan-out consumer for longer than the hand-off time.
func (d *Dispatcher) attemptInline(ctx context.Context, event *message.Message, cmds []domain.DeliverWebhook) error {
	if len(cmds) == 0 {
		return nil
	}
	// Attempts may outlive the handler, and with it ctx. They end before
	// their safety copies can arrive (the Delayer may cut a delay by its
	// jitter, 10 %). Close stops them.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.safetyDelay()*8/10)
	stopWithDispatcher := context.AfterFunc(d.background, cancel)
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(cmds))
	handedOff := make([]atomic.Bool, len(cmds))
	var running sync.WaitGroup
	for i, cmd := range cmds {
		running.Add(1)
		d.running.Add(1)
		go func() {
			defer d.running.Done()
			defer running.Done()
			defer d.releaseInline(1)
			err := d.attempt(actx, event, nil, cmd)
			switch {
			case !handedOff[i].Load():
			case err == nil:
				d.markSettled(actx, cmd)
			default:
				// Nobody retries a handed-off attempt but its safety copy, due
				// much later: put the delivery back in the queue now.
				d.requeue(ctx, event, cmd, err)
			}
			results <- result{i, err}
		}()
	}
	go func() {
		running.Wait()
		stopWithDispatcher()
		cancel()
	}()
	errs := make([]error, len(cmds))
	done := make([]bool, len(cmds))
	handoff := time.NewTimer(d.opts.InlineHandoff)
	defer handoff.Stop()
	ctxDone := ctx.Done()
	for left := len(cmds); left > 0; {
		select {
		case r := <-results:
			errs[r.i], done[r.i] = r.err, true
			left--
		case <-handoff.C:
			// An attempt that failed on our side gets the event retried: wait for all then.
			if joinAttemptErrors(errs) == nil && d.handOff(ctx, event, cmds, done, handedOff) {
				return nil
			}
		case <-ctxDone:
			// The handler's deadline: interrupt what is left (not the endpoints'
			// failure, nothing recorded); the event goes back for all of them.
			ctxDone = nil
			cancel()
		}
	}
	return joinAttemptErrors(errs)
}

// handOff schedules a safety copy of every delivery not done yet, then marks
// them handed off; false if a copy could not be scheduled (the caller then
// waits for the attempts: the event must not be acked without a copy). An
// attempt that ends between its copy and its mark is left to the copy, which
// settles it again at worst.
func (d *Dispatcher) handOff(ctx context.Context, event *message.Message, cmds []domain.DeliverWebhook, done []bool, handedOff []atomic.Bool) bool {
	var pending []int
	for i, cmd := range cmds {
		if done[i] {
			continue
		}
		m, err := d.deliverMessage(ctx, event, cmd)
		if err != nil {
			return false
		}
		// The copy runs while (or after) this attempt runs: it must look for the record.
		m.Metadata.Set(messaging.MetaMaybeDuplicate, "true")
		applied, err := d.delayer.Delay(ctx, Role, messaging.TopicCmdWebhookDeliver, m, d.safetyDelay())
		if err != nil {
			d.log.Warn().Err(err).Str("tenantId", cmd.TenantID).Str("deliveryId", cmd.DeliveryID).
				Msg("could not hand off a slow inline attempt; the event waits for it")
			return false
		}
		pending = append(pending, i)
		d.log.Debug().Str("tenantId", cmd.TenantID).Str("webhookId", cmd.WebhookID).Str("deliveryId", cmd.DeliveryID).
			Dur("safetyCopyIn", applied).Msg("slow inline attempt handed off")
	}
	for _, i := range pending {
		handedOff[i].Store(true)
	}
	d.metrics.handedOff.Add(float64(len(pending)))
	return true
}

func (d *Dispatcher) safetyDelay() time.Duration {
	return SafetyDelay(d.opts.Timeout, d.opts.InlineHandoff)
}

// SafetyDelay is when the safety copy of a handed-off inline attempt is due:
// after the attempt's deadline (timeout), and as long again to record and
// settle it. The broker needs a delay tier of exactly this length, or the
// copy waits for the next longer one.
func SafetyDelay(timeout, inlineHandoff time.Duration) time.Duration {
	return inlineHandoff + 2*timeout
}

// requeue publishes a handed-off delivery whose attempt failed on our side
// (a shutdown, a store or broker failure) back to the delivery queue, unspent.
// If that fails too, the safety copy makes the attempt later.
func (d *Dispatcher) requeue(ctx context.Context, event *message.Message, cmd domain.DeliverWebhook, cause error) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), inlineStopWait)
	defer cancel()
	m, err := d.deliverMessage(pctx, event, cmd)
	if err == nil {
		m.Metadata.Set(messaging.MetaMaybeDuplicate, "true")
		err = d.publisher.Publish(messaging.TopicCmdWebhookDeliver, m)
	}
	ev := d.log.Info()
	if err != nil {
		ev = d.log.Warn().AnErr("requeueError", err)
	}
	ev.Err(cause).Str("tenantId", cmd.TenantID).Str("deliveryId", cmd.DeliveryID).Bool("requeued", err == nil).
		Msg("a handed-off attempt was not completed on our side")
}

// markSettled notes on a handed-off attempt's record that its follow-ups were
// published. If this fails the safety copy publishes them again, which is
// allowed (at-least-once), so the failure is only logged.
func (d *Dispatcher) markSettled(ctx context.Context, cmd domain.DeliverWebhook) {
	id := domain.AttemptExecutionID(cmd.DeliveryID, cmd.Attempt)
	_, _, err := d.attempts.Update(ctx, cmd.TenantID, id, func(a *domain.DeliveryAttempt) error {
		if a.Settled {
			return store.ErrSkipUpdate
		}
		a.Settled = true
		return nil
	})
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		d.log.Warn().Err(err).Str("tenantId", cmd.TenantID).Str("deliveryId", cmd.DeliveryID).
			Msg("could not mark a handed-off attempt settled; its safety copy will publish its follow-ups again")
	}
}

// joinAttemptErrors joins the failures of a fan-out's attempts. A transient
// one must get the event retried, so permanent ones are only reported with it
// when there is no transient one (they would poison the event instead).
func joinAttemptErrors(errs []error) error {
	var transient []error
	for _, err := range errs {
		if err != nil && !messaging.IsPermanent(err) {
			transient = append(transient, err)
		}
	}
	if len(transient) > 0 {
		return errors.Join(transient...)
	}
	return errors.Join(errs...)
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
