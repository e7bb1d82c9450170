package domain

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// The versions a side can be in relative to the state, for the matrix below.
type sideCase string

const (
	sNoNews    sideCase = "no news"  // nil: not seen by this run
	sAbsent    sideCase = "absent"   // explicitly not there
	sSame      sideCase = "same"     // as at the last sync
	sChanged   sideCase = "changed"  // edited since the last sync
	sChangedEq sideCase = "changed=" // edited, to the same content as the other side's edit
)

var (
	recBase   = map[string]any{"name": "Ada", "v": 1.0}
	recExtNew = map[string]any{"name": "Ada E", "v": 2.0}
	recIntNew = map[string]any{"name": "Ada I", "v": 3.0}
	recBoth   = map[string]any{"name": "Ada B", "v": 4.0}
)

func side(c sideCase, changed map[string]any) *SideRecord {
	switch c {
	case sNoNews:
		return nil
	case sAbsent:
		return &SideRecord{Deleted: true}
	case sSame:
		return &SideRecord{Data: recBase}
	case sChanged:
		return &SideRecord{Data: changed}
	case sChangedEq:
		return &SideRecord{Data: recBoth}
	}
	panic(c)
}

func liveState() *RecordState {
	s := NewRecordState("t1", "task1", "k1")
	s.Agree(&SideRecord{Data: recBase}, &SideRecord{Data: recBase}, time.Unix(1, 0))
	return s
}

func deletedState() *RecordState {
	s := NewRecordState("t1", "task1", "k1")
	s.Agree(&SideRecord{Deleted: true}, &SideRecord{Deleted: true}, time.Unix(1, 0))
	return s
}

// TestClassify_Matrix covers every combination of state (none, live,
// agreed-deleted) and each side's version, for a bidirectional task.
func TestClassify_Matrix(t *testing.T) {
	type row struct {
		ext, in sideCase
		want    SyncAction
		kind    ConflictKind
	}
	matrix := map[string][]row{
		"never synced": {
			{sNoNews, sNoNews, ActionUnchanged, ""},
			{sNoNews, sAbsent, ActionUnchanged, ""},
			{sAbsent, sNoNews, ActionUnchanged, ""},
			{sAbsent, sAbsent, ActionUnchanged, ""},
			{sChanged, sNoNews, ActionPullAdd, ""},
			{sChanged, sAbsent, ActionPullAdd, ""},
			{sNoNews, sChanged, ActionPushAdd, ""},
			{sAbsent, sChanged, ActionPushAdd, ""},
			{sChanged, sChanged, ActionConflict, ConflictUpdateUpdate}, // created on both sides differently
			{sChangedEq, sChangedEq, ActionConverged, ""},
		},
		"live": {
			{sNoNews, sNoNews, ActionUnchanged, ""},
			{sSame, sSame, ActionUnchanged, ""},
			{sSame, sNoNews, ActionUnchanged, ""},
			{sNoNews, sSame, ActionUnchanged, ""},
			{sChanged, sSame, ActionPullUpdate, ""},
			{sChanged, sNoNews, ActionPullUpdate, ""},
			{sAbsent, sSame, ActionPullDelete, ""},
			{sAbsent, sNoNews, ActionPullDelete, ""},
			{sSame, sChanged, ActionPushUpdate, ""},
			{sNoNews, sChanged, ActionPushUpdate, ""},
			{sSame, sAbsent, ActionPushDelete, ""},
			{sNoNews, sAbsent, ActionPushDelete, ""},
			{sChanged, sChanged, ActionConflict, ConflictUpdateUpdate},
			{sAbsent, sChanged, ActionConflict, ConflictDeleteUpdate},
			{sChanged, sAbsent, ActionConflict, ConflictUpdateDelete},
			{sChangedEq, sChangedEq, ActionConverged, ""},
			{sAbsent, sAbsent, ActionConverged, ""},
		},
		"agreed deleted": {
			{sNoNews, sNoNews, ActionUnchanged, ""},
			{sAbsent, sAbsent, ActionUnchanged, ""},
			{sAbsent, sNoNews, ActionUnchanged, ""},
			{sChanged, sAbsent, ActionPullAdd, ""}, // re-created externally
			{sChanged, sNoNews, ActionPullAdd, ""},
			{sAbsent, sChanged, ActionPushAdd, ""},
			{sChanged, sChanged, ActionConflict, ConflictUpdateUpdate},
			{sChangedEq, sChangedEq, ActionConverged, ""},
		},
	}
	states := map[string]func() *RecordState{
		"never synced":   func() *RecordState { return nil },
		"live":           liveState,
		"agreed deleted": deletedState,
	}
	for stateName, rows := range matrix {
		for _, r := range rows {
			t.Run(fmt.Sprintf("%s/ext %s/int %s", stateName, r.ext, r.in), func(t *testing.T) {
				d := Classify(DirectionBidirectional, states[stateName](), side(r.ext, recExtNew), side(r.in, recIntNew))
				if d.Action != r.want || d.Conflict != r.kind {
					t.Fatalf("decision = %s %s, want %s %s (external %s, internal %s)", d.Action, d.Conflict, r.want, r.kind, d.External, d.Internal)
				}
				if d.Blocked != "" || d.Pending || d.Supersedes != "" {
					t.Errorf("unexpected extras: %+v", d)
				}
			})
		}
	}
}

func TestClassify_ReportsWhatEachSideDid(t *testing.T) {
	d := Classify(DirectionBidirectional, liveState(), side(sAbsent, nil), side(sChanged, recIntNew))
	if d.External != ChangeDeleted || d.Internal != ChangeUpdated {
		t.Errorf("changes = %s/%s, want deleted/updated", d.External, d.Internal)
	}
	d = Classify(DirectionBidirectional, nil, side(sChanged, recExtNew), nil)
	if d.External != ChangeAdded || d.Internal != ChangeNone {
		t.Errorf("changes = %s/%s, want added/none", d.External, d.Internal)
	}
}

func TestClassify_DirectionBlocksWritesAgainstIt(t *testing.T) {
	cases := []struct {
		dir         SyncDirection
		ext, in     sideCase
		state       func() *RecordState
		wantAction  SyncAction
		wantBlocked SyncAction
	}{
		{DirectionPull, sSame, sChanged, liveState, ActionUnchanged, ActionPushUpdate},
		{DirectionPull, sSame, sAbsent, liveState, ActionUnchanged, ActionPushDelete},
		{DirectionPull, sNoNews, sChanged, func() *RecordState { return nil }, ActionUnchanged, ActionPushAdd},
		{DirectionPull, sChanged, sSame, liveState, ActionPullUpdate, ""},
		{DirectionPull, sAbsent, sSame, liveState, ActionPullDelete, ""},
		{DirectionPull, sChanged, sChanged, liveState, ActionConflict, ""}, // a Castiel edit is never silently lost
		{DirectionPush, sChanged, sSame, liveState, ActionUnchanged, ActionPullUpdate},
		{DirectionPush, sAbsent, sSame, liveState, ActionUnchanged, ActionPullDelete},
		{DirectionPush, sChanged, sNoNews, func() *RecordState { return nil }, ActionUnchanged, ActionPullAdd},
		{DirectionPush, sSame, sChanged, liveState, ActionPushUpdate, ""},
		{DirectionPush, sNoNews, sAbsent, liveState, ActionPushDelete, ""},
		{DirectionPush, sChanged, sAbsent, liveState, ActionConflict, ""},
		{DirectionBidirectional, sChanged, sSame, liveState, ActionPullUpdate, ""},
		{DirectionBidirectional, sSame, sChanged, liveState, ActionPushUpdate, ""},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%s/ext %s/int %s", tc.dir, tc.ext, tc.in), func(t *testing.T) {
			d := Classify(tc.dir, tc.state(), side(tc.ext, recExtNew), side(tc.in, recIntNew))
			if d.Action != tc.wantAction || d.Blocked != tc.wantBlocked {
				t.Fatalf("decision = %s (blocked %q), want %s (blocked %q)", d.Action, d.Blocked, tc.wantAction, tc.wantBlocked)
			}
			if d.Action.Writes() && (tc.dir == DirectionPull && isPush(d.Action) || tc.dir == DirectionPush && isPull(d.Action)) {
				t.Fatalf("a %s task would write %s", tc.dir, d.Action)
			}
		})
	}
}

func TestClassify_PendingConflictIsNotRaisedTwice(t *testing.T) {
	s := liveState()
	ext, in := side(sChanged, recExtNew), side(sChanged, recIntNew)
	first := Classify(DirectionBidirectional, s, ext, in)
	if first.Action != ActionConflict || first.Pending {
		t.Fatalf("first run: %+v, want a new conflict", first)
	}
	s.MarkConflict("cfl_1", ext, in, time.Unix(2, 0))

	again := Classify(DirectionBidirectional, s, ext, in)
	if again.Action != ActionConflict || !again.Pending || again.Supersedes != "" {
		t.Errorf("same versions again: %+v, want the pending conflict and nothing new", again)
	}
	// An incremental run that does not see the external record again: same versions.
	if d := Classify(DirectionBidirectional, s, nil, in); !d.Pending {
		t.Errorf("no news from external: %+v, want pending", d)
	}

	newer := Classify(DirectionBidirectional, s, &SideRecord{Data: map[string]any{"name": "newer"}}, in)
	if newer.Action != ActionConflict || newer.Pending || newer.Supersedes != "cfl_1" {
		t.Errorf("external changed again: %+v, want a new conflict superseding cfl_1", newer)
	}

	// The external side went back to the base version: only Castiel changed now.
	back := Classify(DirectionBidirectional, s, side(sSame, nil), in)
	if back.Action != ActionPushUpdate || back.Supersedes != "cfl_1" {
		t.Errorf("external reverted: %+v, want push_update superseding cfl_1", back)
	}
}

func TestRecordState_AgreeMakesTheNextRunSeeNoChange(t *testing.T) {
	s := liveState()
	ext, in := side(sChanged, recExtNew), side(sSame, nil)
	d := Classify(DirectionBidirectional, s, ext, in)
	if d.Action != ActionPullUpdate {
		t.Fatalf("action = %s", d.Action)
	}
	written := &SideRecord{Data: recExtNew, ModifiedAt: time.Unix(5, 0)}
	s.Agree(ext, written, time.Unix(6, 0))
	if d := Classify(DirectionBidirectional, s, ext, written); d.Action != ActionUnchanged {
		t.Errorf("after agreeing, the next run sees %s", d.Action)
	}
	if s.BaseSnapshot["name"] != "Ada E" || !s.InternalModifiedAt.Equal(time.Unix(5, 0)) || !s.LastSyncedAt.Equal(time.Unix(6, 0)) {
		t.Errorf("state after agree: %+v", s)
	}
	// The snapshot is a copy: later edits of the record do not change the base.
	recCopy := map[string]any{"name": "x"}
	s.Agree(&SideRecord{Data: recCopy}, &SideRecord{Data: recCopy}, time.Unix(7, 0))
	recCopy["name"] = "y"
	if s.BaseSnapshot["name"] != "x" {
		t.Error("the base snapshot shares memory with the caller's record")
	}

	// A nil side in Agree keeps that side's hash.
	extHash := s.ExternalHash
	s.Agree(nil, &SideRecord{Data: map[string]any{"name": "z"}}, time.Unix(8, 0))
	if s.ExternalHash != extHash || s.Deleted {
		t.Errorf("agree with no news from external changed its hash or deleted: %+v", s)
	}

	s.Agree(&SideRecord{Deleted: true}, &SideRecord{Deleted: true}, time.Unix(9, 0))
	if !s.Deleted || s.BaseSnapshot != nil || s.ExternalHash != "" {
		t.Errorf("both deleted: %+v", s)
	}
}

func TestRecordState_KeyIsPerTaskAndRecord(t *testing.T) {
	a := NewRecordState("t1", "task1", "k1")
	pk, id := a.Key()
	if pk != "task1" || !IsValidID(id) {
		t.Errorf("key = %q/%q", pk, id)
	}
	if NewRecordState("t1", "task2", "k1").ID == id || NewRecordState("t1", "task1", "k2").ID == id {
		t.Error("ids collide across tasks or records")
	}
}

// The hand-written encoders must write what json.Marshal writes, byte for
// byte, whatever a record holds.
func TestRecordStateEncodeJSON_MatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	values := []any{nil, "", "plain", "<html>&", `q"\`, "é☃\u2028", "bad\xff", true, false, 0.0, -0.0, 1.0, 1.5, -2.25e-7, 1e21, 123456789012345678.0,
		1e-6, 5e-324, json.Number("12.50"), json.Number(""), json.Number("-0e+3"), map[string]any(nil), []any(nil), []any{}, map[string]any{},
		int64(7), time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC), []string{"a"}, map[string]string{"k": "<v>"}}
	var value func(depth int) any
	value = func(depth int) any {
		switch n := rng.IntN(10); {
		case depth < 3 && n == 0:
			m := map[string]any{}
			for i := range rng.IntN(5) {
				m[fmt.Sprintf("k%d<%c>", i, 'a'+rng.IntN(26))] = value(depth + 1)
			}
			return m
		case depth < 3 && n == 1:
			s := make([]any, rng.IntN(4))
			for i := range s {
				s[i] = value(depth + 1)
			}
			return s
		default:
			return values[rng.IntN(len(values))]
		}
	}
	times := []time.Time{{}, time.Date(2026, 11, 26, 2, 0, 0, 123456789, time.UTC), time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("x", 3600)),
		time.Date(2026, 1, 1, 0, 0, 0, 0, time.FixedZone("odd", 3600+17)), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	pick := func(s ...string) string { return s[rng.IntN(len(s))] }
	for range 2000 {
		st := RecordState{
			ID: pick("rst:abc:c1", `odd"id<>`), SyncTaskID: pick("task", ""), TenantID: "tenant-a", RecordKey: pick("c1", "é/\\"),
			ExternalHash: pick("", "abc"), InternalHash: pick("", "def"),
			ExternalModifiedAt: times[rng.IntN(len(times))], InternalModifiedAt: times[rng.IntN(len(times))], LastSyncedAt: times[rng.IntN(len(times))],
			Deleted: rng.IntN(2) == 0,
		}
		if rng.IntN(3) > 0 {
			if m, ok := value(0).(map[string]any); ok {
				st.BaseSnapshot = m
			} else {
				st.BaseSnapshot = map[string]any{"v": value(1)}
			}
		}
		if rng.IntN(3) == 0 {
			st.Conflict = &PendingConflict{ConflictID: "cfl_1", ExternalHash: pick("", "e"), InternalHash: pick("", "i"), DetectedAt: times[rng.IntN(len(times))]}
		}
		want, wantErr := json.Marshal(st)
		got, err := st.EncodeJSON()
		if (err != nil) != (wantErr != nil) || string(got) != string(want) {
			t.Fatalf("EncodeJSON of %+v:\n got %s (%v)\nwant %s (%v)", st, got, err, want, wantErr)
		}
	}
	for _, bad := range []any{math.NaN(), math.Inf(1), json.Number("1x"), func() {}} {
		st := RecordState{BaseSnapshot: map[string]any{"x": bad}}
		if _, err := st.EncodeJSON(); err == nil {
			t.Errorf("a snapshot holding %#v encoded without error", bad)
		}
	}
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	if _, err := (&RecordState{BaseSnapshot: cyclic}).EncodeJSON(); err == nil {
		t.Error("a self-referencing snapshot encoded without error")
	}
}

func TestRecordState_AgreeTakingKeepsWhatAgreeKeeps(t *testing.T) {
	deep := any("leaf")
	for range maxCanonicalDepth + 3 {
		deep = map[string]any{"d": deep}
	}
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for name, data := range map[string]func() map[string]any{
		"record": func() map[string]any {
			return map[string]any{"id": "c1", "n": 1.5, "tags": []any{"a", map[string]any{"b": true}}}
		},
		"nil object": func() map[string]any { return map[string]any{"id": "c2", "o": map[string]any(nil)} },
		"too deep":   func() map[string]any { return map[string]any{"id": "c3", "deep": deep} },
		"no data":    func() map[string]any { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			ext := &SideRecord{Data: data()}
			want, got := NewRecordState("t", "st", "k"), NewRecordState("t", "st", "k")
			want.Agree(ext, &SideRecord{Data: data()}, now)
			got.AgreeTaking(ext, &SideRecord{Data: data()}, now)
			wb, err := want.EncodeJSON()
			if err != nil {
				t.Fatal(err)
			}
			gb, err := got.EncodeJSON()
			if err != nil {
				t.Fatal(err)
			}
			if string(gb) != string(wb) {
				t.Errorf("the state stored would differ:\n got  %s\n want %s", gb, wb)
			}
		})
	}
}
