package domain

import (
	"fmt"
	"strings"
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

func TestOrderedID_ShapeOrderAndUniqueness(t *testing.T) {
	// Pinned: changing the derivation would orphan every stored sync state
	// and local shard record.
	if got, want := RecordStateID("task-1", "c0000001"), "rst:"+DeterministicID("", "task-1")+":c0000001"; got != want {
		t.Fatalf("RecordStateID = %q, want %q", got, want)
	}
	if got := RecordStateID("task-1", "a b/c_d"); got != "rst:"+DeterministicID("", "task-1")+":a_20b_2fc_5fd" {
		t.Fatalf("escaped RecordStateID = %q", got)
	}

	// Sequential keys sort like the keys, so they land side by side.
	keys := []string{"1", "10", "2", "A-1", "a.b", "c0000001", "c0000002", "c0000010", "z"}
	for i := 1; i < len(keys); i++ {
		if a, b := OrderedID("rst", []string{"t"}, keys[i-1]), OrderedID("rst", []string{"t"}, keys[i]); a >= b {
			t.Errorf("id of %q (%s) does not sort before the id of %q (%s)", keys[i-1], a, keys[i], b)
		}
	}

	long := strings.Repeat("k", MaxIDLength)
	odd := []string{"", "a", "a_", "a_5f", "a/", "a\\", "a?", "a#", "a:", "a:b", "a b", "é", "\xff", "\x00", long, long + "x",
		strings.Repeat("/", 40), strings.Repeat("/", 41)}
	seen := map[string]string{}
	for _, scope := range [][]string{{"t1"}, {"t2"}, {"t1", "x"}, {"t1x"}} {
		for _, k := range odd {
			id := OrderedID("rst", scope, k)
			if !IsValidID(id) {
				t.Errorf("OrderedID(%v, %q) = %q is not a valid id", scope, k, id)
			}
			if strings.ContainsAny(id, `/\?#`) {
				t.Errorf("OrderedID(%v, %q) = %q holds a character Cosmos DB refuses", scope, k, id)
			}
			in := fmt.Sprintf("%q/%q", scope, k)
			if prev, dup := seen[id]; dup {
				t.Errorf("%s and %s share id %q", prev, in, id)
			}
			seen[id] = in
			if len(id) == len("rst_")+26 && id != DeterministicID("rst", append(append([]string(nil), scope...), k)...) {
				t.Errorf("OrderedID(%v, %q) = %q: a hashed id must be the DeterministicID", scope, k, id)
			}
		}
	}
	if id := OrderedID("rst", []string{"t"}, long); id != DeterministicID("rst", "t", long) {
		t.Errorf("a key too long to keep falls back to %q, got %q", DeterministicID("rst", "t", long), id)
	}
}
