package conflicts

import (
	"strconv"

	"github.com/castiel/integration-manager/domain"
)

// conflictDoc is a stored conflict; the resolver's bookkeeping (statusReason,
// resolutionId, resolutionGeneration) is part of domain.Conflict so the API
// shows why a conflict failed or was escalated.
type conflictDoc struct {
	domain.Conflict
}

// resolutionDoc is a domain.ConflictResolution with the bookkeeping of the
// claim it also is.
type resolutionDoc struct {
	domain.ConflictResolution
	// Generation numbers the attempts at one conflict from 1; 0 marks the
	// record of a decision that lost (not an attempt).
	Generation int `json:"generation"`
	// ClaimedBy is the id of the message that made the attempt.
	ClaimedBy string `json:"claimedBy,omitempty"`
	// WrittenHashes holds, per side, the content hash of the version this
	// attempt wrote there ("" for a deletion): a later attempt must not take
	// it for someone else's change.
	WrittenHashes map[domain.Side]string `json:"writtenHashes,omitempty"`
}

// ResolutionID is the id of attempt generation (from 1) at resolving a
// conflict in integration_sync_conflicts: the first is the conflict's id.
func ResolutionID(conflictID string, generation int) string {
	if generation <= 1 {
		return conflictID
	}
	return domain.DeterministicID("cres", conflictID, strconv.Itoa(generation))
}

// lostDecisionID is the id of the record of a person's decision that lost:
// one per message, so a redelivery rewrites the same record.
func lostDecisionID(conflictID, messageID string) string {
	return domain.DeterministicID("cres", conflictID, "lost", messageID)
}

// redetectedID is the id of the conflict that replaces conflictID when the
// sides changed since detection, from the new versions: a repeated attempt
// on the same versions finds the conflict its first attempt created.
func redetectedID(conflictID, extHash, intHash string) string {
	return domain.DeterministicID("cfl", conflictID, extHash, intHash)
}

// statusOf is the conflict status an outcome gives. An escalated conflict
// is pending again, now waiting for a person (the API lists the manual queue
// as status=pending); its resolutionId and resolutionGeneration name the
// escalating attempt, which is what tells it from a conflict not yet
// handled (see escalated).
func statusOf(o domain.ResolutionOutcome) domain.ConflictStatus {
	switch o {
	case domain.OutcomeApplied:
		return domain.ConflictStatusResolved
	case domain.OutcomeEscalated:
		return domain.ConflictStatusPending
	case domain.OutcomeSuperseded:
		return domain.ConflictStatusSuperseded
	case domain.OutcomeFailed:
		return domain.ConflictStatusFailed
	}
	return ""
}

// escalated reports whether c waits for a person's decision: pending with
// the status set by an attempt (only an escalation leaves a conflict
// pending), or the status "escalated" that earlier versions stored.
func escalated(c domain.Conflict) bool {
	switch c.Status {
	case domain.ConflictStatusEscalated:
		return true
	case domain.ConflictStatusPending:
		return c.Generation > 0 && c.ResolutionID != ""
	}
	return false
}

// reflects reports whether c's status was set from attempt a. An
// escalation leaves the status pending, as it was before, so its evidence is
// the attempt c names (resolutionId and resolutionGeneration); a legacy
// status "escalated" counts as set.
func reflects(c domain.Conflict, a resolutionDoc) bool {
	if a.Outcome == domain.OutcomeEscalated {
		return c.Status == domain.ConflictStatusEscalated ||
			c.Status == domain.ConflictStatusPending && c.Generation == a.Generation && c.ResolutionID == a.ID
	}
	return c.Status == statusOf(a.Outcome)
}
