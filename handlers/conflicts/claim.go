package conflicts

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/store"
)

// claimed is a generation this message created: the claim it holds.
type claimed struct {
	doc  resolutionDoc
	etag string
	// written lists, per side, the hashes of versions earlier attempts wrote.
	written map[domain.Side][]string
}

// history is what earlier attempts at a conflict recorded.
type history struct {
	latest  *resolutionDoc // nil: no attempt yet
	etag    string
	written map[domain.Side][]string
	by      map[string]bool // ids of the messages that made attempts
}

// maxGenerations bounds the walk through a conflict's attempts; a conflict
// retried that often needs an operator, not another attempt.
const maxGenerations = 1000

// history reads a conflict's attempts, generation by generation until the
// first missing one (generations are created in order, without gaps).
func (r *Resolver) history(ctx context.Context, tenantID, conflictID string) (history, error) {
	h := history{written: map[domain.Side][]string{}, by: map[string]bool{}}
	for gen := 1; gen <= maxGenerations; gen++ {
		doc, etag, err := r.resolutions.Get(ctx, tenantID, ResolutionID(conflictID, gen))
		if errors.Is(err, store.ErrNotFound) {
			return h, nil
		}
		if err != nil {
			return h, fmt.Errorf("conflicts: read resolution attempt %d: %w", gen, err)
		}
		for side, hash := range doc.WrittenHashes {
			h.written[side] = append(h.written[side], hash)
		}
		h.latest, h.etag = &doc, etag
		h.by[doc.ClaimedBy] = true
	}
	return h, messaging.Permanent(fmt.Errorf("conflicts: conflict %s has more than %d resolution attempts", conflictID, maxGenerations))
}

type verdictKind int

const (
	verdictClaim  verdictKind = iota // create generation gen
	verdictBusy                      // another resolver is at work: retry later
	verdictLost                      // nothing to do: ack
	verdictRepair                    // the latest attempt finished without its event or status: complete them
)

type verdict struct {
	kind     verdictKind
	gen      int
	found    string
	takeover bool // gen replaces an in-progress attempt whose lease ran out
}

// judge decides what message q does given the latest attempt at its
// conflict and the conflict's status (see the package documentation).
func (r *Resolver) judge(latest *resolutionDoc, q request, c domain.Conflict, now time.Time) verdict {
	if latest == nil {
		return verdict{kind: verdictClaim, gen: 1}
	}
	next := latest.Generation + 1
	age := now.Sub(latest.UpdatedAt)
	switch latest.Outcome {
	case domain.OutcomeInProgress:
		if age < r.opts.ClaimLease {
			return verdict{kind: verdictBusy}
		}
		return verdict{kind: verdictClaim, gen: next, takeover: true}
	case domain.OutcomeApplied, domain.OutcomeSuperseded, domain.OutcomeEscalated, domain.OutcomeFailed:
	default: // abandoned, or an outcome this version does not know
		return verdict{kind: verdictClaim, gen: next}
	}

	found := string(latest.Outcome)
	reflected := reflects(c, *latest)
	behind := func() verdict {
		if age < r.opts.RepairAfter {
			return verdict{kind: verdictBusy} // its resolver is publishing the event and setting the status
		}
		return verdict{kind: verdictRepair, found: found}
	}
	if latest.ClaimedBy == q.messageID { // this very message was handled
		if reflected {
			return verdict{kind: verdictLost, found: "handled"}
		}
		return behind()
	}
	reopens := q.command && (latest.Outcome == domain.OutcomeEscalated || latest.Outcome == domain.OutcomeFailed)
	switch {
	case reopens && (reflected || q.manual()):
		return verdict{kind: verdictClaim, gen: next}
	case reflected:
		return verdict{kind: verdictLost, found: found}
	}
	return behind()
}

// claim creates the next generation of the conflict's attempts for plan,
// or reports why this message must not (errBusy, *lostError). An escalation
// is recorded done at once: it writes nowhere, so it holds no claim.
func (r *Resolver) claim(ctx context.Context, log zerolog.Logger, q request, c *conflictDoc, plan domain.ResolutionPlan) (*claimed, error) {
	for round := range maxClaimRounds {
		if round > 0 {
			// Another resolver created the generation first: look again.
			fresh, err := r.loadConflict(ctx, q)
			if err != nil {
				return nil, err
			}
			*c = fresh
			if found, closed := gate(c.Conflict, q); closed {
				return nil, &lostError{found: found}
			}
		}
		h, err := r.history(ctx, q.tenantID, c.ID)
		if err != nil {
			return nil, err
		}
		now := r.now()
		v := r.judge(h.latest, q, c.Conflict, now)
		switch v.kind {
		case verdictBusy:
			return nil, errBusy
		case verdictLost:
			return nil, &lostError{found: v.found}
		case verdictRepair:
			log.Warn().Int("generation", h.latest.Generation).Str("outcome", string(h.latest.Outcome)).
				Msg("completing a resolution whose resolver stopped before publishing its event or setting the status")
			if err := r.finish(ctx, *c, *h.latest); err != nil {
				return nil, err
			}
			return nil, &lostError{found: v.found}
		}
		doc := newAttempt(*c, q, plan, v.gen, now)
		etag, err := r.resolutions.Create(ctx, doc)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("conflicts: claim the conflict: %w", err)
		}
		if v.takeover {
			log.Warn().Int("abandonedGeneration", h.latest.Generation).Msg("taking over a claim whose lease ran out")
			old := claimed{doc: *h.latest, etag: h.etag}
			r.abandon(ctx, log, &old, nil, errors.New("its resolver did not finish within the claim lease"))
		}
		return &claimed{doc: doc, etag: etag, written: h.written}, nil
	}
	return nil, errBusy
}

// newAttempt is the record that claims generation gen for plan.
func newAttempt(c conflictDoc, q request, plan domain.ResolutionPlan, gen int, now time.Time) resolutionDoc {
	doc := resolutionDoc{
		ConflictResolution: domain.ConflictResolution{
			ID: ResolutionID(c.ID, gen), TenantID: c.TenantID, ConflictID: c.ID,
			Strategy: plan.Strategy, Decisions: plan.Decisions, Actor: q.actor,
			Before:  sides(c.External, c.Internal),
			Outcome: domain.OutcomeInProgress, CreatedAt: now, UpdatedAt: now,
		},
		Generation: gen,
		ClaimedBy:  q.messageID,
	}
	if plan.Escalate {
		doc.Outcome, doc.Reason, doc.ResolvedAt = domain.OutcomeEscalated, plan.Reason, now
	}
	return doc
}

// sides is the before (or after) of a resolution: each side's record, nil
// when deleted.
func sides(external, internal map[string]any) map[string]any {
	return map[string]any{string(domain.SideExternal): external, string(domain.SideInternal): internal}
}

// abandon marks an attempt that stops before finishing, so the next one
// claims the conflict at once instead of waiting for the lease. Safe even
// after a side was written: the next attempt takes a side holding the
// winning version (or a version in WrittenHashes) for its own. Best effort:
// if it cannot be recorded, the lease runs out instead.
func (r *Resolver) abandon(ctx context.Context, log zerolog.Logger, cl *claimed, written map[domain.Side]string, cause error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	doc := cl.doc
	doc.Outcome = domain.OutcomeAbandoned
	doc.Reason = truncate("stopped before finishing: " + cause.Error())
	if len(written) > 0 {
		doc.WrittenHashes = maps.Clone(doc.WrittenHashes)
		if doc.WrittenHashes == nil {
			doc.WrittenHashes = map[domain.Side]string{}
		}
		maps.Copy(doc.WrittenHashes, written)
	}
	doc.UpdatedAt = r.now()
	if _, err := r.resolutions.Replace(ctx, doc, cl.etag); err != nil {
		log.Warn().Err(err).Msg("could not mark the attempt abandoned; the claim lease will free the conflict")
	}
}
