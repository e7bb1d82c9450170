package conflicts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
)

// request is what one message asks of the resolver.
type request struct {
	tenantID   string
	conflictID string
	actor      string // domain.ActorSystem: apply the task's policy; else a person's user id
	side       domain.Side
	values     map[string]any
	// command: a ResolveConflict, which may retry a failed conflict or
	// re-plan an escalated one; a redelivered conflict.detected may not.
	command   bool
	messageID string
}

func (q request) manual() bool { return q.actor != domain.ActorSystem }

// errBusy: another resolver holds the claim and is still applying. The
// message is retried later, so the work survives that resolver dying.
var errBusy = errors.New("conflicts: another resolver is applying this conflict")

// lostError: the conflict was claimed or closed by someone else; the message
// changes nothing and is acked.
type lostError struct{ found string }

func (e *lostError) Error() string { return "conflicts: conflict already " + e.found }

// HandleDetected resolves a conflict a sync run detected, by its task's policy.
func (r *Resolver) HandleDetected(msg *message.Message) error {
	ev, err := messaging.Decode[domain.ConflictDetected](msg, domain.TypeConflictDetected)
	if err != nil {
		return err
	}
	if err := ev.Validate(); err != nil {
		return messaging.Permanent(err)
	}
	return r.resolve(msg.Context(), request{
		tenantID: ev.TenantID, conflictID: ev.ConflictID, actor: domain.ActorSystem, messageID: msg.UUID,
	})
}

// HandleResolve applies a ResolveConflict command: actor "system" applies
// the task's policy (again, for a failed or escalated conflict); a user id
// with a side or values applies that person's decision.
func (r *Resolver) HandleResolve(msg *message.Message) error {
	cmd, err := messaging.Decode[domain.ResolveConflict](msg, domain.TypeResolveConflict)
	if err != nil {
		return err
	}
	if err := cmd.Validate(); err != nil {
		return messaging.Permanent(err)
	}
	return r.resolve(msg.Context(), request{
		tenantID: cmd.TenantID, conflictID: cmd.ConflictID, actor: cmd.Actor, side: cmd.Side, values: cmd.Values,
		command: true, messageID: msg.UUID,
	})
}

// maxClaimRounds bounds how often one message re-reads the attempts after
// losing the creation of a generation to another resolver.
const maxClaimRounds = 4

func (r *Resolver) resolve(ctx context.Context, q request) error {
	// Bounded to half the lease, so no attempt outlives its claim.
	ctx, cancel := context.WithTimeout(ctx, r.opts.ClaimLease/2)
	defer cancel()
	log := r.log.With().Str("tenantId", q.tenantID).Str("conflictId", q.conflictID).
		Str("actor", q.actor).Str("messageId", q.messageID).Logger()

	c, err := r.loadConflict(ctx, q)
	if err != nil {
		return err
	}
	if found, closed := gate(c.Conflict, q); closed {
		return r.lose(ctx, log, q, c, found)
	}
	task, _, err := r.tasks.Get(ctx, q.tenantID, c.SyncTaskID)
	if errors.Is(err, store.ErrNotFound) {
		return messaging.Permanent(fmt.Errorf("conflicts: sync task %s of conflict %s not found", c.SyncTaskID, c.ID))
	}
	if err != nil {
		return fmt.Errorf("conflicts: read sync task %s: %w", c.SyncTaskID, err)
	}

	var plan domain.ResolutionPlan
	if q.manual() {
		if plan, err = domain.ApplyManual(c.Conflict, q.side, q.values); err != nil {
			return r.rejectDecision(ctx, log, q, c, err)
		}
	} else {
		plan = domain.Resolve(task.ConflictPolicy, c.Conflict, r.now())
	}

	cl, err := r.claim(ctx, log, q, &c, plan)
	var lost *lostError
	switch {
	case errors.Is(err, errBusy):
		r.metrics.busy.Inc()
		log.Debug().Msg("another resolver is applying this conflict; retrying later")
		return err
	case errors.As(err, &lost):
		return r.lose(ctx, log, q, c, lost.found)
	case err != nil:
		return err
	}
	start := time.Now()
	defer func() { r.metrics.duration.Observe(time.Since(start).Seconds()) }()
	log = log.With().Int("generation", cl.doc.Generation).Str("strategy", string(plan.Strategy)).Logger()
	if plan.Escalate {
		return r.escalate(ctx, log, c, plan, cl)
	}
	return r.apply(ctx, log, c, task, plan, cl)
}

func (r *Resolver) loadConflict(ctx context.Context, q request) (conflictDoc, error) {
	c, _, err := r.conflicts.Get(ctx, q.tenantID, q.conflictID)
	if errors.Is(err, store.ErrNotFound) {
		return c, messaging.Permanent(fmt.Errorf("conflicts: conflict %s of tenant %s not found", q.conflictID, q.tenantID))
	}
	if err != nil {
		return c, fmt.Errorf("conflicts: read conflict %s: %w", q.conflictID, err)
	}
	return c, nil
}

// gate stops, before any work, a message its conflict's status leaves
// nothing to do for.
func gate(c domain.Conflict, q request) (found string, closed bool) {
	switch {
	case c.Status == domain.ConflictStatusResolved, c.Status == domain.ConflictStatusSuperseded:
		return string(c.Status), true
	case q.command:
		return "", false // a command may reopen a failed or escalated conflict
	case c.Status == domain.ConflictStatusFailed:
		return string(c.Status), true // a redelivered detection changes nothing
	case escalated(c):
		return string(domain.OutcomeEscalated), true // likewise: it waits for a person
	}
	return "", false
}

// lose acks a message that found its conflict claimed or closed. A person's
// decision that lost is recorded, so they can see it was not applied.
func (r *Resolver) lose(ctx context.Context, log zerolog.Logger, q request, c conflictDoc, found string) error {
	r.metrics.lost.WithLabelValues(found).Inc()
	log.Info().Str("found", found).Msg("conflict already claimed or closed; this message changes nothing")
	if !q.manual() || found == "handled" {
		return nil
	}
	h, err := r.history(ctx, c.TenantID, c.ID)
	if err != nil {
		return err
	}
	if h.by[q.messageID] {
		return nil // a redelivery of the decision that made an attempt: nothing lost
	}
	now := r.now()
	doc := resolutionDoc{ConflictResolution: domain.ConflictResolution{
		ID: lostDecisionID(c.ID, q.messageID), TenantID: c.TenantID, ConflictID: c.ID,
		Strategy: domain.StrategyManual, Actor: q.actor, Outcome: domain.OutcomeSuperseded,
		Reason:     fmt.Sprintf("not applied: the conflict was already %s when this decision was handled", found),
		ResolvedAt: now, CreatedAt: now, UpdatedAt: now,
	}, ClaimedBy: q.messageID}
	if _, err := r.resolutions.Upsert(ctx, doc); err != nil {
		return fmt.Errorf("conflicts: record the decision that lost: %w", err)
	}
	return nil
}

// rejectDecision records a person's decision that cannot be applied as
// given (e.g. values that leave a differing field undecided) and acks: the
// conflict stays as it is, open to a corrected decision.
func (r *Resolver) rejectDecision(ctx context.Context, log zerolog.Logger, q request, c conflictDoc, cause error) error {
	r.metrics.outcomes.WithLabelValues(string(domain.StrategyManual), "rejected").Inc()
	log.Warn().Err(cause).Msg("manual decision rejected")
	now := r.now()
	doc := resolutionDoc{ConflictResolution: domain.ConflictResolution{
		ID: lostDecisionID(c.ID, q.messageID), TenantID: c.TenantID, ConflictID: c.ID,
		Strategy: domain.StrategyManual, Actor: q.actor, Outcome: domain.OutcomeFailed,
		Reason:     truncate("decision rejected: " + cause.Error()),
		ResolvedAt: now, CreatedAt: now, UpdatedAt: now,
	}, ClaimedBy: q.messageID}
	if _, err := r.resolutions.Upsert(ctx, doc); err != nil {
		return fmt.Errorf("conflicts: record the rejected decision: %w", err)
	}
	return nil
}

// truncate keeps reasons within what events and records accept.
func truncate(s string) string {
	const max = domain.MaxDescriptionLength
	if len(s) <= max {
		return s
	}
	return strings.ToValidUTF8(s[:max-len("…")], "") + "…"
}
