package domain

import (
	"testing"
	"time"
)

func TestDeterministicID_IsStableAcrossRunsAndReleases(t *testing.T) {
	// Pinned: changing the derivation would orphan every stored record.
	if got, want := DeterministicID("dlv", "evt-1", "wh-1"), DeliveryID("evt-1", "wh-1"); got != want {
		t.Fatalf("DeliveryID differs from DeterministicID(\"dlv\", ...): %q vs %q", want, got)
	}
	pinned := []struct{ got, want string }{
		{DeliveryID("evt-1", "wh-1"), "dlv_hhyy2v75yy35vlsi6ht2yzca2k"},
		{AttemptExecutionID("dlv_abc", 3), "att_d334u4wp7s7wdwpvq7ahq22l55"},
		{ScheduledRunID("task-1", time.Date(2025, 1, 2, 3, 4, 0, 0, time.UTC)), "run_laqseah4wvsaxau2j7bbuk7oiz"},
		{ConflictID("run_abc", "contacts", "42"), "cfl_kdfogd72c4p4rebkcqulbuqywz"},
		{DeterministicID("", "x"), "fvyrmqvxe2yeialcpsu7xlbs6x"},
	}
	for _, p := range pinned {
		if p.got != p.want {
			t.Errorf("id = %q, want pinned %q", p.got, p.want)
		}
	}
}

func TestDeterministicID_ShapeAndSeparation(t *testing.T) {
	id := DeterministicID("dlv", "evt-1", "wh-1")
	if len(id) != len("dlv_")+26 || id[:4] != "dlv_" {
		t.Fatalf("id %q is not prefix + '_' + 26 characters", id)
	}
	if !IsValidID(id) {
		t.Fatalf("id %q does not satisfy the id grammar", id)
	}
	distinct := []string{
		DeterministicID("dlv", "evt-1", "wh-1"),
		DeterministicID("dlv", "evt-1", "wh-2"),
		DeterministicID("dlv", "evt-1wh-1"),         // parts are separated, not concatenated
		DeterministicID("dlv", "evt-1", "wh-1", ""), // an empty part still counts
		DeterministicID("att", "evt-1", "wh-1"),
		AttemptExecutionID("dlv_x", 1),
		AttemptExecutionID("dlv_x", 2),
	}
	seen := map[string]bool{}
	for _, id := range distinct {
		if seen[id] {
			t.Fatalf("two different inputs produced the same id %q", id)
		}
		seen[id] = true
	}
}

func TestScheduledRunID_IgnoresTimeZoneOfTheSlot(t *testing.T) {
	slot := time.Date(2025, 1, 2, 3, 4, 0, 0, time.UTC)
	oslo := time.FixedZone("CET", 3600)
	if ScheduledRunID("task-1", slot) != ScheduledRunID("task-1", slot.In(oslo)) {
		t.Fatal("the same instant in another zone produced a different run id; replicas would run a slot twice")
	}
}
