package conflicts

import (
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
)

func TestJudge_DecidesWhatAMessageDoes(t *testing.T) {
	r := &Resolver{opts: Options{ClaimLease: time.Minute, RepairAfter: 10 * time.Second}}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	attempt := func(gen int, o domain.ResolutionOutcome, age time.Duration, by string) *resolutionDoc {
		return &resolutionDoc{ConflictResolution: domain.ConflictResolution{
			ID: ResolutionID("c1", gen), Outcome: o, UpdatedAt: now.Add(-age),
		}, Generation: gen, ClaimedBy: by}
	}
	// set is the conflict with status s, set by generation gen (0: by no attempt).
	set := func(s domain.ConflictStatus, gen int) domain.Conflict {
		c := domain.Conflict{ID: "c1", Status: s}
		if gen > 0 {
			c.ResolutionID, c.Generation = ResolutionID("c1", gen), gen
		}
		return c
	}
	detected := request{actor: domain.ActorSystem, messageID: "m2"}
	retry := request{actor: domain.ActorSystem, command: true, messageID: "m2"}
	person := request{actor: "user-1", command: true, messageID: "m2"}
	var (
		pending  = set(domain.ConflictStatusPending, 0) // as detected: no attempt has set it
		resolved = set(domain.ConflictStatusResolved, 1)
		failed   = set(domain.ConflictStatusFailed, 1)
		// An escalation leaves the conflict pending, naming the attempt.
		escalated  = set(domain.ConflictStatusPending, 1)
		escalated2 = set(domain.ConflictStatusPending, 2)
		legacy     = set(domain.ConflictStatusEscalated, 1) // stored by earlier versions
		legacyBare = domain.Conflict{ID: "c1", Status: domain.ConflictStatusEscalated}
	)
	tests := []struct {
		name     string
		latest   *resolutionDoc
		q        request
		conflict domain.Conflict
		want     verdictKind
		gen      int
		takeover bool
	}{
		{"no attempt yet: claim generation 1", nil, detected, pending, verdictClaim, 1, false},
		{"an attempt in progress: busy", attempt(1, domain.OutcomeInProgress, time.Second, "m1"), detected, pending, verdictBusy, 0, false},
		{"a person waits for an attempt in progress", attempt(1, domain.OutcomeInProgress, time.Second, "m1"), person, pending, verdictBusy, 0, false},
		{"an attempt past its lease: take over", attempt(1, domain.OutcomeInProgress, 2*time.Minute, "m1"), detected, pending, verdictClaim, 2, true},
		{"an abandoned attempt: the next generation", attempt(3, domain.OutcomeAbandoned, 0, "m1"), detected, pending, verdictClaim, 4, false},
		{"applied: lost", attempt(1, domain.OutcomeApplied, time.Second, "m1"), detected, resolved, verdictLost, 0, false},
		{"applied, status not yet set: busy", attempt(1, domain.OutcomeApplied, time.Second, "m1"), detected, pending, verdictBusy, 0, false},
		{"applied, status never set: repair", attempt(1, domain.OutcomeApplied, time.Minute, "m1"), detected, pending, verdictRepair, 0, false},
		{"a person after an applied resolution: lost", attempt(1, domain.OutcomeApplied, time.Second, "m1"), person, resolved, verdictLost, 0, false},
		{"escalated: a redelivered detection is lost", attempt(1, domain.OutcomeEscalated, time.Second, "m1"), detected, escalated, verdictLost, 0, false},
		{"escalated long ago: a redelivered detection is still lost", attempt(1, domain.OutcomeEscalated, time.Hour, "m1"), detected, escalated, verdictLost, 0, false},
		{"escalated: a person claims the next generation", attempt(1, domain.OutcomeEscalated, time.Second, "m1"), person, escalated, verdictClaim, 2, false},
		{"escalating: a person need not wait for the event", attempt(1, domain.OutcomeEscalated, time.Second, "m1"), person, pending, verdictClaim, 2, false},
		{"escalated: a system command re-plans", attempt(1, domain.OutcomeEscalated, time.Second, "m1"), retry, escalated, verdictClaim, 2, false},
		{"escalating, status not yet set: busy", attempt(1, domain.OutcomeEscalated, time.Second, "m1"), detected, pending, verdictBusy, 0, false},
		{"escalated, status never set: repair", attempt(1, domain.OutcomeEscalated, time.Minute, "m1"), detected, pending, verdictRepair, 0, false},
		{"escalated, status never set: a system command repairs", attempt(1, domain.OutcomeEscalated, time.Minute, "m1"), retry, pending, verdictRepair, 0, false},
		{"escalated again, the conflict names the earlier escalation: busy", attempt(2, domain.OutcomeEscalated, time.Second, "m1"), detected, escalated, verdictBusy, 0, false},
		{"escalated again, the conflict names the earlier escalation: repair", attempt(2, domain.OutcomeEscalated, time.Minute, "m1"), detected, escalated, verdictRepair, 0, false},
		{"escalated again, the conflict names it: lost", attempt(2, domain.OutcomeEscalated, time.Minute, "m1"), detected, escalated2, verdictLost, 0, false},
		{"escalated after a failure, status still failed: repair", attempt(2, domain.OutcomeEscalated, time.Minute, "m1"), detected, failed, verdictRepair, 0, false},
		{"legacy status escalated: a redelivered detection is lost", attempt(1, domain.OutcomeEscalated, time.Hour, "m1"), detected, legacy, verdictLost, 0, false},
		{"legacy status escalated without a generation: lost", attempt(1, domain.OutcomeEscalated, time.Hour, "m1"), detected, legacyBare, verdictLost, 0, false},
		{"legacy status escalated: a person claims the next generation", attempt(1, domain.OutcomeEscalated, time.Hour, "m1"), person, legacy, verdictClaim, 2, false},
		{"legacy status escalated: a system command re-plans", attempt(1, domain.OutcomeEscalated, time.Hour, "m1"), retry, legacy, verdictClaim, 2, false},
		{"failed: a redelivered detection is lost", attempt(1, domain.OutcomeFailed, time.Second, "m1"), detected, failed, verdictLost, 0, false},
		{"failed: a command retries", attempt(1, domain.OutcomeFailed, time.Second, "m1"), retry, failed, verdictClaim, 2, false},
		{"failed: a person's decision retries", attempt(2, domain.OutcomeFailed, time.Second, "m1"), person, set(domain.ConflictStatusFailed, 2), verdictClaim, 3, false},
		{"the message that made the attempt, redelivered: handled", attempt(1, domain.OutcomeFailed, time.Second, "m2"), retry, failed, verdictLost, 0, false},
		{"the message that made the escalation, redelivered: handled", attempt(1, domain.OutcomeEscalated, time.Hour, "m2"), detected, escalated, verdictLost, 0, false},
		{"the message that made the attempt, status missing: repair", attempt(1, domain.OutcomeEscalated, time.Minute, "m2"), retry, pending, verdictRepair, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := r.judge(tt.latest, tt.q, tt.conflict, now)
			if v.kind != tt.want || v.gen != tt.gen || v.takeover != tt.takeover {
				t.Errorf("verdict %+v; want kind %d gen %d takeover %v", v, tt.want, tt.gen, tt.takeover)
			}
		})
	}
}

func TestGate_StopsWhatAConflictsStatusLeavesNothingFor(t *testing.T) {
	detected := request{actor: domain.ActorSystem, messageID: "m2"}
	command := request{actor: "user-1", command: true, messageID: "m2"}
	escalatedBy := func(s domain.ConflictStatus, gen int) domain.Conflict {
		return domain.Conflict{ID: "c1", Status: s, ResolutionID: ResolutionID("c1", gen), Generation: gen}
	}
	tests := []struct {
		name      string
		c         domain.Conflict
		q         request
		wantFound string
		closed    bool
	}{
		{"pending, not yet handled: go on", domain.Conflict{Status: domain.ConflictStatusPending}, detected, "", false},
		{"escalated (pending, naming its escalation): a detection stops", escalatedBy(domain.ConflictStatusPending, 1), detected, "escalated", true},
		{"escalated (pending, naming its escalation): a command goes on", escalatedBy(domain.ConflictStatusPending, 1), command, "", false},
		{"legacy status escalated: a detection stops", domain.Conflict{Status: domain.ConflictStatusEscalated}, detected, "escalated", true},
		{"legacy status escalated: a command goes on", domain.Conflict{Status: domain.ConflictStatusEscalated}, command, "", false},
		{"failed: a detection stops", escalatedBy(domain.ConflictStatusFailed, 1), detected, "failed", true},
		{"failed: a command goes on", escalatedBy(domain.ConflictStatusFailed, 1), command, "", false},
		{"resolved: a command stops", escalatedBy(domain.ConflictStatusResolved, 2), command, "resolved", true},
		{"superseded: a detection stops", domain.Conflict{Status: domain.ConflictStatusSuperseded}, detected, "superseded", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			found, closed := gate(tt.c, tt.q)
			if found != tt.wantFound || closed != tt.closed {
				t.Errorf("gate = (%q, %v); want (%q, %v)", found, closed, tt.wantFound, tt.closed)
			}
		})
	}
}
