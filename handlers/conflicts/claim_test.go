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
		return &resolutionDoc{ConflictResolution: domain.ConflictResolution{Outcome: o, UpdatedAt: now.Add(-age)}, Generation: gen, ClaimedBy: by}
	}
	detected := request{actor: domain.ActorSystem, messageID: "m2"}
	retry := request{actor: domain.ActorSystem, command: true, messageID: "m2"}
	person := request{actor: "user-1", command: true, messageID: "m2"}
	const (
		pending   = domain.ConflictStatusPending
		resolved  = domain.ConflictStatusResolved
		escalated = domain.ConflictStatusEscalated
		failed    = domain.ConflictStatusFailed
	)
	tests := []struct {
		name     string
		latest   *resolutionDoc
		q        request
		status   domain.ConflictStatus
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
		{"escalated: a person claims the next generation", attempt(1, domain.OutcomeEscalated, time.Second, "m1"), person, escalated, verdictClaim, 2, false},
		{"escalating: a person need not wait for the event", attempt(1, domain.OutcomeEscalated, time.Second, "m1"), person, pending, verdictClaim, 2, false},
		{"escalated: a system command re-plans", attempt(1, domain.OutcomeEscalated, time.Second, "m1"), retry, escalated, verdictClaim, 2, false},
		{"failed: a redelivered detection is lost", attempt(1, domain.OutcomeFailed, time.Second, "m1"), detected, failed, verdictLost, 0, false},
		{"failed: a command retries", attempt(1, domain.OutcomeFailed, time.Second, "m1"), retry, failed, verdictClaim, 2, false},
		{"failed: a person's decision retries", attempt(2, domain.OutcomeFailed, time.Second, "m1"), person, failed, verdictClaim, 3, false},
		{"the message that made the attempt, redelivered: handled", attempt(1, domain.OutcomeFailed, time.Second, "m2"), retry, failed, verdictLost, 0, false},
		{"the message that made the attempt, status missing: repair", attempt(1, domain.OutcomeEscalated, time.Minute, "m2"), retry, pending, verdictRepair, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := r.judge(tt.latest, tt.q, tt.status, now)
			if v.kind != tt.want || v.gen != tt.gen || v.takeover != tt.takeover {
				t.Errorf("verdict %+v; want kind %d gen %d takeover %v", v, tt.want, tt.gen, tt.takeover)
			}
		})
	}
}
