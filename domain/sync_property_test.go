package domain

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strconv"
	"testing"
	"time"
)

// The property: two sides edited at random between runs of a simple sync loop
// built on Classify and ApplyMapping converge. Every change made on one side
// only lands on the other; every concurrent edit of a record that leaves the
// sides different becomes exactly one conflict and the loop leaves that record
// alone; once a conflict is resolved by picking a side, both sides are equal;
// nothing is lost (each side ends with the latest edit, checked against an
// oracle that compares contents, not hashes).
//
// The mapping is not the identity on purpose (rename, nested path, number
// conversion, constant), so the loop also proves push-then-pull stability.

var simMapping = []FieldMapping{
	{Source: "full_name", Target: "name"},
	{Source: "meta.score", Target: "score", Convert: ConvertNumber},
	{Target: "source", Constant: "crm"},
	{Source: "etag", Ignore: true},
}

const (
	simKeys   = 12 // a small key pool makes concurrent edits of one record common
	simRounds = 60
)

func TestSync_RandomEditsOnBothSidesConverge(t *testing.T) {
	seeds := []uint64{1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987, 1597, 2584, 4181, 6765, 10946}
	if testing.Short() {
		seeds = seeds[:4]
	}
	var total simStats
	for _, seed := range seeds {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			st := runSim(t, seed)
			total.add(st)
		})
	}
	t.Logf("over %d seeds × %d rounds: %d edits, %d pulls, %d pushes, %d converged, %d conflicts (%d superseded), %d resolutions",
		len(seeds), simRounds, total.edits, total.pulls, total.pushes, total.converged, total.conflicts, total.superseded, total.resolved)
	// The property is only meaningful if every path was taken.
	if total.pulls == 0 || total.pushes == 0 || total.conflicts == 0 || total.converged == 0 || total.resolved == 0 || total.superseded == 0 {
		t.Errorf("the simulation did not exercise every path: %+v", total)
	}
}

type simStats struct{ edits, pulls, pushes, converged, conflicts, superseded, resolved int }

func (s *simStats) add(o simStats) {
	s.edits += o.edits
	s.pulls += o.pulls
	s.pushes += o.pushes
	s.converged += o.converged
	s.conflicts += o.conflicts
	s.superseded += o.superseded
	s.resolved += o.resolved
}

type simConflict struct {
	id       string
	ext, int map[string]any // both versions in Castiel's shape (nil: deleted)
}

type sim struct {
	t       *testing.T
	rng     *rand.Rand
	ext     map[string]map[string]any // external shape
	int     map[string]map[string]any // Castiel shape
	states  map[string]*RecordState
	dirty   map[string]bool // "e:key"/"i:key": edited since the last run (else a run may pass nil)
	counter int
	run     int
	stats   simStats

	// The oracle, kept apart from RecordState: the last agreed content and
	// the open conflicts, by content.
	base    map[string]map[string]any
	pending map[string]simConflict
}

func runSim(t *testing.T, seed uint64) simStats {
	s := &sim{
		t: t, rng: rand.New(rand.NewPCG(seed, seed*7919)),
		ext: map[string]map[string]any{}, int: map[string]map[string]any{},
		states: map[string]*RecordState{}, dirty: map[string]bool{},
		base: map[string]map[string]any{}, pending: map[string]simConflict{},
	}
	for round := range simRounds {
		s.edit()
		s.syncAndCheck(round)
		if s.rng.IntN(3) == 0 {
			s.resolveSome()
		}
	}
	// Finally: every conflict resolved, one more run has nothing to do.
	for k := range s.pending {
		s.resolve(k)
	}
	decisions := s.sync()
	for k, d := range decisions {
		if d.Action != ActionUnchanged {
			t.Errorf("after resolving everything, the last run still does %s on %s", d.Action, k)
		}
	}
	for _, k := range s.keys() {
		if e, i := s.extMapped(k), s.int[k]; !reflect.DeepEqual(e, i) {
			t.Errorf("record %s differs at the end:\n external %s\n Castiel  %s", k, show(e), show(i))
		}
	}
	return s.stats
}

// edit makes a few random edits: on one side, or the same record on both.
func (s *sim) edit() {
	for range s.rng.IntN(6) {
		k := "k" + strconv.Itoa(s.rng.IntN(simKeys))
		switch s.rng.IntN(5) {
		case 0, 1:
			s.editSide(true, k)
		case 2, 3:
			s.editSide(false, k)
		default: // concurrent edit of one record
			s.editSide(true, k)
			s.editSide(false, k)
		}
	}
}

func (s *sim) editSide(external bool, k string) {
	s.counter++
	s.stats.edits++
	present := s.int[k] != nil
	if external {
		present = s.ext[k] != nil
	}
	if present && s.rng.IntN(4) == 0 {
		if external {
			delete(s.ext, k)
		} else {
			delete(s.int, k)
		}
	} else if external {
		// The external system adds its own volatile etag, which the mapping ignores.
		s.ext[k] = map[string]any{"id": k, "full_name": fmt.Sprintf("ext %d", s.counter),
			"meta": map[string]any{"score": strconv.Itoa(s.counter)}, "etag": fmt.Sprintf("W/%d", s.rng.IntN(1000))}
	} else {
		s.int[k] = map[string]any{"id": k, "name": fmt.Sprintf("int %d", s.counter), "score": float64(s.counter), "source": "crm"}
	}
	s.dirty[side2(external)+k] = true
}

func side2(external bool) string {
	if external {
		return "e:"
	}
	return "i:"
}

func (s *sim) keys() []string {
	set := map[string]bool{}
	for k := range s.ext {
		set[k] = true
	}
	for k := range s.int {
		set[k] = true
	}
	for k := range s.states {
		set[k] = true
	}
	keys := make([]string, 0, len(set))
	for k := range set {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// extMapped is the external record in Castiel's shape (nil when absent).
func (s *sim) extMapped(k string) map[string]any {
	rec := s.ext[k]
	if rec == nil {
		return nil
	}
	m, err := ApplyMapping(simMapping, rec, MapToInternal)
	if err != nil {
		s.t.Fatalf("pull mapping of %s: %v", k, err)
	}
	return m
}

func sideOf(rec map[string]any) *SideRecord {
	if rec == nil {
		return &SideRecord{Deleted: true}
	}
	return &SideRecord{Data: rec}
}

// sync is the loop a worker runs: classify each record, apply, record state.
// A side not edited since the last run is passed as nil half of the time, as
// an incremental run that did not see it would.
func (s *sim) sync() map[string]Decision {
	s.run++
	now := time.Unix(int64(s.run), 0)
	out := map[string]Decision{}
	for _, k := range s.keys() {
		extSide, intSide := sideOf(s.extMapped(k)), sideOf(s.int[k])
		if !s.dirty["e:"+k] && s.rng.IntN(2) == 0 {
			extSide = nil
		}
		if !s.dirty["i:"+k] && s.rng.IntN(2) == 0 {
			intSide = nil
		}
		state := s.states[k]
		d := Classify(DirectionBidirectional, state, extSide, intSide)
		out[k] = d
		if state == nil {
			state = NewRecordState("tenant", "task", k)
		}
		// A pull or push decided on a nil side works on that side's real
		// record, as a worker reads it (or takes it from the conflict).
		extNow, intNow := sideOf(s.extMapped(k)), sideOf(s.int[k])
		switch d.Action {
		case ActionPullAdd, ActionPullUpdate:
			s.int[k] = cloneMap(extNow.Data)
			state.Agree(extNow, sideOf(s.int[k]), now)
			s.stats.pulls++
		case ActionPullDelete:
			delete(s.int, k)
			state.Agree(extNow, sideOf(nil), now)
			s.stats.pulls++
		case ActionPushAdd, ActionPushUpdate:
			sent, err := ApplyMapping(simMapping, intNow.Data, MapToExternal)
			if err != nil {
				s.t.Fatalf("push mapping of %s: %v", k, err)
			}
			s.ext[k] = roundTripJSON(s.t, sent) // over the wire
			state.Agree(sideOf(s.extMapped(k)), intNow, now)
			s.stats.pushes++
		case ActionPushDelete:
			delete(s.ext, k)
			state.Agree(sideOf(nil), intNow, now)
			s.stats.pushes++
		case ActionConverged:
			state.Agree(extSide, intSide, now)
			s.stats.converged++
		case ActionConflict:
			if !d.Pending {
				id := ConflictID(fmt.Sprintf("run%d", s.run), "contacts", k)
				state.MarkConflict(id, extSide, intSide, now)
				s.stats.conflicts++
			}
		case ActionUnchanged:
		default:
			s.t.Fatalf("unexpected action %s", d.Action)
		}
		if d.Supersedes != "" {
			s.stats.superseded++
			if state.Conflict != nil && state.Conflict.ConflictID == d.Supersedes {
				state.Conflict = nil
			}
		}
		s.states[k] = state
	}
	clear(s.dirty)
	return out
}

// syncAndCheck runs the loop and holds every record against the oracle.
func (s *sim) syncAndCheck(round int) {
	t := s.t
	type expect struct {
		conflict bool           // a new conflict, record left alone
		pending  bool           // the same conflict as before, record left alone
		value    map[string]any // otherwise both sides end equal to this
	}
	before := map[string][2]map[string]any{}
	want := map[string]expect{}
	for _, k := range s.keys() {
		e, i := s.extMapped(k), s.int[k]
		before[k] = [2]map[string]any{e, i}
		if p, ok := s.pending[k]; ok && reflect.DeepEqual(p.ext, e) && reflect.DeepEqual(p.int, i) {
			want[k] = expect{pending: true}
			continue
		}
		base := s.base[k]
		extChanged, intChanged := !reflect.DeepEqual(e, base), !reflect.DeepEqual(i, base)
		switch {
		case extChanged && intChanged && !reflect.DeepEqual(e, i):
			want[k] = expect{conflict: true}
		case extChanged:
			want[k] = expect{value: e}
		default:
			want[k] = expect{value: i} // Castiel changed, or nothing did (then e equals i)
		}
	}

	decisions := s.sync()

	newConflicts := 0
	for k, w := range want {
		d := decisions[k]
		e, i := s.extMapped(k), s.int[k]
		switch {
		case w.pending:
			if d.Action != ActionConflict || !d.Pending {
				t.Fatalf("round %d, %s: an unresolved, unchanged conflict came back as %+v", round, k, d)
			}
		case w.conflict:
			if d.Action != ActionConflict || d.Pending {
				t.Fatalf("round %d, %s: both sides changed differently (external %s, Castiel %s, base %s) but the run decided %+v",
					round, k, show(before[k][0]), show(before[k][1]), show(s.base[k]), d)
			}
			newConflicts++
			s.pending[k] = simConflict{id: s.states[k].Conflict.ConflictID, ext: e, int: i}
		default:
			if d.Action == ActionConflict {
				t.Fatalf("round %d, %s: a conflict was raised where only one side changed (external %s, Castiel %s, base %s)",
					round, k, show(before[k][0]), show(before[k][1]), show(s.base[k]))
			}
			if !reflect.DeepEqual(e, w.value) || !reflect.DeepEqual(i, w.value) {
				t.Fatalf("round %d, %s: the change was not carried over (decision %s):\n want     %s\n external %s\n Castiel  %s",
					round, k, d.Action, show(w.value), show(e), show(i))
			}
			s.base[k] = w.value
			delete(s.pending, k)
		}
		if w.pending || w.conflict {
			if !reflect.DeepEqual(before[k], [2]map[string]any{e, i}) {
				t.Fatalf("round %d, %s: a record in conflict was written by the run", round, k)
			}
		}
	}
	conflictsThisRun := 0
	for _, d := range decisions {
		if d.Action == ActionConflict && !d.Pending {
			conflictsThisRun++
		}
	}
	if conflictsThisRun != newConflicts {
		t.Fatalf("round %d: %d conflicts raised, want exactly %d (one per concurrent edit)", round, conflictsThisRun, newConflicts)
	}
}

func (s *sim) resolveSome() {
	keys := make([]string, 0, len(s.pending))
	for k := range s.pending {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if s.rng.IntN(2) == 0 {
			s.resolve(k)
		}
	}
}

// resolve picks a side at random, copies it over the other and agrees.
func (s *sim) resolve(k string) {
	s.stats.resolved++
	if s.rng.IntN(2) == 0 { // external wins
		if e := s.extMapped(k); e != nil {
			s.int[k] = cloneMap(e)
		} else {
			delete(s.int, k)
		}
	} else if i := s.int[k]; i != nil {
		sent, err := ApplyMapping(simMapping, i, MapToExternal)
		if err != nil {
			s.t.Fatalf("push mapping of %s: %v", k, err)
		}
		raw, _ := json.Marshal(sent)
		var back map[string]any
		_ = json.Unmarshal(raw, &back)
		s.ext[k] = back
	} else {
		delete(s.ext, k)
	}
	e, i := s.extMapped(k), s.int[k]
	if !reflect.DeepEqual(e, i) {
		s.t.Fatalf("%s: after resolving, the sides differ:\n external %s\n Castiel  %s", k, show(e), show(i))
	}
	st := s.states[k]
	st.Agree(sideOf(e), sideOf(i), time.Unix(int64(s.run), 500))
	if st.Conflict != nil {
		s.t.Fatalf("%s: resolution left the conflict pending", k)
	}
	s.base[k] = i
	delete(s.pending, k)
}

// show prints a record for a failure message; nil is a record that is not there.
func show(m map[string]any) string {
	if m == nil {
		return "(absent)"
	}
	return string(CanonicalJSON(m))
}
