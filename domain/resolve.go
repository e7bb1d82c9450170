package domain

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Conflict resolution rules: pure functions from a conflict and the task's
// policy (or a person's decision) to a ResolutionPlan. The conflict resolver
// applies plans; nothing here does I/O.
//
// Records are compared field by field on their leaves: a key whose value is
// an object on both sides is descended into, anything else (a scalar, an
// array, an object present on one side only) is one field, named by its
// dotted path ("address.city"). FieldOverrides apply to a field and to every
// field below it; the most specific override wins.

// WholeRecord is the Field of a decision about the whole record (a delete
// against an edit, or a side chosen as a whole).
const WholeRecord = "*"

// States a resolution record passes through besides the outcomes a
// resolution ends with (applied, escalated, superseded, failed).
const (
	// OutcomeInProgress: a resolver claimed the conflict and is applying it.
	OutcomeInProgress ResolutionOutcome = "in_progress"
	// OutcomeAbandoned: the attempt stopped before finishing (a transient
	// error, or its resolver vanished); the next attempt takes over.
	OutcomeAbandoned ResolutionOutcome = "abandoned"
)

// FutureTolerance is how far past now a modification time may lie before
// newest_wins distrusts it (the clock-skew margin counts when larger).
const FutureTolerance = time.Minute

// ResolutionPlan is what resolving a conflict decided.
type ResolutionPlan struct {
	// Strategy that decided: the policy's strategy, its delete-edit policy,
	// or manual for a person's decision.
	Strategy ConflictStrategy
	// Escalate: no automatic decision; a person must choose. Reason says why.
	Escalate bool
	Reason   string
	// Decisions lists, for every field whose value differs between the
	// sides, which side's value the result holds (sorted by field). Fields
	// that need a person are in Undecided instead.
	Decisions []FieldDecision
	Undecided []string
	// Result is the winning record in Castiel's shape (nil when Delete or
	// Escalate); Delete means the winning outcome is that the record is gone.
	Result map[string]any
	Delete bool
	// WriteExternal / WriteInternal: the side does not hold the result yet.
	WriteExternal bool
	WriteInternal bool
}

// ErrManualDecision is matched (errors.Is) by every error of ApplyManual:
// the decision cannot be applied as given. Retrying does not help.
var ErrManualDecision = errors.New("invalid manual decision")

// DeletedSide returns the side a delete-versus-edit conflict deleted ("" for
// an update on both sides).
func (c Conflict) DeletedSide() Side {
	switch c.Kind {
	case ConflictDeleteUpdate:
		return SideExternal
	case ConflictUpdateDelete:
		return SideInternal
	}
	return ""
}

// Resolve decides conflict c by policy. now is the resolver's clock, used to
// distrust modification times in the future.
//
//   - external_wins / internal_wins: that side's value of every differing field.
//   - newest_wins: the side modified last (ExternalModifiedAt versus
//     InternalModifiedAt). Escalates when a time is unknown, lies more than
//     max(margin, FutureTolerance) in the future, or the two are within the
//     clock-skew margin of each other (inclusive, when the margin is set).
//     With no margin, equal times go to the external side: a fixed tie-break,
//     so every replica decides alike.
//   - merge: three-way against the base: a field changed on one side only
//     takes that side's value; one changed on both sides to different values
//     falls back to the field's override, and escalates without one.
//   - prefer_non_empty: a blank (absent, null, "", whitespace, [] or {})
//     never overwrites a filled value; two different filled values merge as
//     above; two different blanks keep the internal one.
//   - manual: escalate.
//
// A field's override replaces the record's strategy for that field, except
// that under merge or prefer_non_empty it is the fallback for fields changed
// on both sides. A field whose override is merge (or prefer_non_empty) under
// another strategy falls back to the record's strategy.
//
// A delete on one side against an edit on the other is decided as a whole by
// the policy's DeleteEdit strategy (external_wins, internal_wins,
// newest_wins; anything else escalates); overrides do not apply.
func Resolve(policy ConflictPolicy, c Conflict, now time.Time) ResolutionPlan {
	if deleted := c.DeletedSide(); deleted != "" {
		return resolveDeleteEdit(policy, c, now)
	}
	p := ResolutionPlan{Strategy: policy.Strategy}
	if !slices.Contains(ConflictStrategies(), policy.Strategy) {
		// Only a task that skipped validation gets here; a person decides.
		p.Strategy = StrategyManual
		for _, d := range DiffConflict(c) {
			p.Undecided = append(p.Undecided, d.Field)
		}
		return escalatePlan(p, fmt.Sprintf("unknown conflict strategy %q", policy.Strategy))
	}
	t := walkConflict(c)
	nw := newestSide(c, policy.SkewMargin(), now)
	var reasons []string
	result := t.skeleton()
	for _, f := range t.fields {
		if f.ext.equal(f.int) {
			f.ext.setIn(result, f.path)
			continue
		}
		side, why := decideField(policy, f, nw)
		if side == "" {
			p.Undecided = append(p.Undecided, f.name())
			reasons = append(reasons, fmt.Sprintf("%s: %s", f.name(), why))
			continue
		}
		v := f.of(side)
		v.setIn(result, f.path)
		p.Decisions = append(p.Decisions, FieldDecision{Field: f.name(), Chosen: side, Value: v.value()})
	}
	if len(p.Undecided) > 0 {
		return escalatePlan(p, "no automatic decision for "+joinReasons(reasons))
	}
	p.Result = result
	p.WriteExternal = !recordsEqual(result, c.External)
	p.WriteInternal = !recordsEqual(result, c.Internal)
	return p
}

// ApplyManual turns a person's decision into a plan: side (external or
// internal) takes that side's version as a whole, deletion included; values,
// keyed by dotted field path, are then written over it. Without a side, the
// values must cover every field that differs between the sides (a value on a
// parent object covers the fields below it), or, for a delete against an
// edit, they edit the version that still exists (which keeps the record).
func ApplyManual(c Conflict, side Side, values map[string]any) (ResolutionPlan, error) {
	p := ResolutionPlan{Strategy: StrategyManual}
	if side != "" && side != SideExternal && side != SideInternal {
		return p, fmt.Errorf("%w: side must be %q or %q, not %q", ErrManualDecision, SideExternal, SideInternal, side)
	}
	if side == "" && len(values) == 0 {
		return p, fmt.Errorf("%w: choose a side or give values", ErrManualDecision)
	}
	deleted := c.DeletedSide()
	diff := DiffConflict(c)
	keys := slices.Sorted(maps.Keys(values))
	for _, k := range keys {
		if !validPath(k) {
			return p, fmt.Errorf("%w: %q is not a dotted field path", ErrManualDecision, k)
		}
	}

	start := side
	if start == "" {
		start = SideInternal
		if deleted == SideInternal {
			start = SideExternal
		}
		if deleted == "" {
			for _, d := range diff {
				if !fieldCovered(d.Field, keys) {
					return p, fmt.Errorf("%w: field %q differs between the sides: choose a side or give its value", ErrManualDecision, d.Field)
				}
			}
		}
	}
	if start == deleted {
		if len(values) > 0 {
			return p, fmt.Errorf("%w: the %s side deleted the record; values can only edit a side that holds it", ErrManualDecision, start)
		}
		p.Delete = true
		p.Decisions = []FieldDecision{{Field: WholeRecord, Chosen: start}}
	} else {
		result := cloneMap(c.sideData(start))
		for _, k := range keys {
			if err := setPath(result, splitPath(k), cloneValue(values[k], 0)); err != nil {
				return p, fmt.Errorf("%w: value of %q: %v", ErrManualDecision, k, err)
			}
		}
		p.Result = result
		p.Decisions = manualDecisions(diff, keys, values, start, deleted)
	}
	p.WriteExternal = !sideHolds(c, SideExternal, p.Result, p.Delete)
	p.WriteInternal = !sideHolds(c, SideInternal, p.Result, p.Delete)
	return p, nil
}

// manualDecisions lists which side (or the person's values) each differing
// field, and each edited field, took.
func manualDecisions(diff []FieldDiff, keys []string, values map[string]any, start, deleted Side) []FieldDecision {
	var out []FieldDecision
	if deleted != "" {
		// The record is kept: that is the decision about the whole record.
		out = append(out, FieldDecision{Field: WholeRecord, Chosen: start})
	}
	seen := map[string]bool{}
	for _, d := range diff {
		if k, ok := coveringKey(d.Field, keys); ok {
			if !seen[k] {
				seen[k] = true
				out = append(out, FieldDecision{Field: k, Chosen: SideEdited, Value: values[k]})
			}
			continue
		}
		if deleted == "" {
			v := d.External
			if start == SideInternal {
				v = d.Internal
			}
			out = append(out, FieldDecision{Field: d.Field, Chosen: start, Value: v.value()})
		}
	}
	for _, k := range keys {
		if !seen[k] {
			out = append(out, FieldDecision{Field: k, Chosen: SideEdited, Value: values[k]})
		}
	}
	slices.SortFunc(out, func(a, b FieldDecision) int { return strings.Compare(a.Field, b.Field) })
	return out
}

// FieldDiff is one field whose value differs between the sides, for a
// person deciding a conflict. A nil *FieldValue means the field is absent.
type FieldDiff struct {
	Field           string      `json:"field"`
	Base            *FieldValue `json:"base,omitempty"`
	External        *FieldValue `json:"external,omitempty"`
	Internal        *FieldValue `json:"internal,omitempty"`
	ExternalChanged bool        `json:"externalChanged"` // differs from the base
	InternalChanged bool        `json:"internalChanged"`
}

// FieldValue holds a present value (null included).
type FieldValue struct {
	Value any `json:"value"`
}

func (v *FieldValue) value() any {
	if v == nil {
		return nil
	}
	return v.Value
}

// DiffConflict lists, field by field and sorted, where the two sides of c
// differ, with the base value and which side changed it. A deleted side has
// no fields, so against it every field of the other side differs.
func DiffConflict(c Conflict) []FieldDiff {
	t := walkConflict(c)
	var out []FieldDiff
	for _, f := range t.fields {
		if f.ext.equal(f.int) {
			continue
		}
		out = append(out, FieldDiff{
			Field:           f.name(),
			Base:            f.base.ptr(),
			External:        f.ext.ptr(),
			Internal:        f.int.ptr(),
			ExternalChanged: !f.ext.equal(f.base),
			InternalChanged: !f.int.equal(f.base),
		})
	}
	return out
}

// ---- delete versus edit ----

func resolveDeleteEdit(policy ConflictPolicy, c Conflict, now time.Time) ResolutionPlan {
	s := policy.DeleteEdit()
	p := ResolutionPlan{Strategy: s}
	deleted := c.DeletedSide()
	var side Side
	switch s {
	case StrategyExternalWins:
		side = SideExternal
	case StrategyInternalWins:
		side = SideInternal
	case StrategyNewestWins:
		nw := newestSide(c, policy.SkewMargin(), now)
		if nw.side == "" {
			return escalatePlan(p, fmt.Sprintf("the record was deleted on the %s side and edited on the other; newest_wins cannot decide: %s", deleted, nw.why))
		}
		side = nw.side
	case StrategyManual:
		return escalatePlan(p, fmt.Sprintf("the record was deleted on the %s side and edited on the other", deleted))
	default:
		p.Strategy = StrategyManual
		return escalatePlan(p, fmt.Sprintf("the record was deleted on the %s side and edited on the other; delete-edit policy %q cannot decide that", deleted, s))
	}
	p.Decisions = []FieldDecision{{Field: WholeRecord, Chosen: side}}
	if side == deleted {
		p.Delete = true
	} else {
		p.Result = cloneMap(c.sideData(side))
	}
	p.WriteExternal = !sideHolds(c, SideExternal, p.Result, p.Delete)
	p.WriteInternal = !sideHolds(c, SideInternal, p.Result, p.Delete)
	return p
}

// ---- field decisions ----

// decideField picks the side whose value field f takes, or returns "" and
// why a person must decide.
func decideField(policy ConflictPolicy, f rvField, nw rvNewest) (Side, string) {
	record := policy.Strategy
	override, hasOverride := fieldOverride(policy, f.path)
	s := record
	if hasOverride {
		s = override
	}
	merging := isMerging(s) || isMerging(record) && hasOverride
	if !merging {
		return decideSimple(s, nw)
	}
	mergeKind := s
	if !isMerging(mergeKind) {
		mergeKind = record // an override under a merging record strategy is its fallback
	}
	if mergeKind == StrategyPreferNonEmpty {
		eb, ib := f.ext.blank(), f.int.blank()
		switch {
		case eb && !ib:
			return SideInternal, ""
		case ib && !eb:
			return SideExternal, ""
		}
		if side, ok := threeWayField(f); ok {
			return side, ""
		}
		if eb && ib {
			return SideInternal, "" // two blanks: nothing is lost either way
		}
	} else if side, ok := threeWayField(f); ok {
		return side, ""
	}
	// Changed on both sides to different values: the fallback.
	fallback := StrategyManual
	switch {
	case isMerging(record) && hasOverride && !isMerging(override):
		fallback = override
	case !isMerging(record):
		fallback = record // the field's own override is merge
	}
	if fallback == StrategyManual {
		return "", "changed on both sides to different values"
	}
	side, why := decideSimple(fallback, nw)
	if side == "" {
		return "", "changed on both sides; " + why
	}
	return side, ""
}

func isMerging(s ConflictStrategy) bool { return s == StrategyMerge || s == StrategyPreferNonEmpty }

// decideSimple applies a strategy that does not look at the base.
func decideSimple(s ConflictStrategy, nw rvNewest) (Side, string) {
	switch s {
	case StrategyExternalWins:
		return SideExternal, ""
	case StrategyInternalWins:
		return SideInternal, ""
	case StrategyNewestWins:
		if nw.side == "" {
			return "", "newest_wins cannot decide: " + nw.why
		}
		return nw.side, ""
	case StrategyManual:
		return "", "the policy asks for a manual decision"
	}
	return "", fmt.Sprintf("strategy %q cannot decide this field", s)
}

// threeWay takes the value of the only side that changed the field since
// the base; false when both did (to different values).
func threeWayField(f rvField) (Side, bool) {
	extChanged, intChanged := !f.ext.equal(f.base), !f.int.equal(f.base)
	switch {
	case extChanged && !intChanged:
		return SideExternal, true
	case intChanged && !extChanged:
		return SideInternal, true
	}
	return "", false
}

// fieldOverride returns the override of the field at path, or of its
// nearest parent that has one.
func fieldOverride(policy ConflictPolicy, path []string) (ConflictStrategy, bool) {
	for n := len(path); n > 0; n-- {
		if s, ok := policy.FieldOverrides[strings.Join(path[:n], ".")]; ok {
			return s, true
		}
	}
	return "", false
}

// newest is the outcome of comparing the sides' modification times.
type rvNewest struct {
	side Side   // "" when no side can be trusted to be newer
	why  string // why not
}

func newestSide(c Conflict, margin time.Duration, now time.Time) rvNewest {
	e, i := c.ExternalModifiedAt, c.InternalModifiedAt
	switch {
	case e == nil || e.IsZero():
		return rvNewest{why: "the external modification time is unknown"}
	case i == nil || i.IsZero():
		return rvNewest{why: "the internal modification time is unknown"}
	}
	if !now.IsZero() {
		limit := now.Add(max(margin, FutureTolerance))
		for _, s := range []struct {
			side Side
			t    time.Time
		}{{SideExternal, *e}, {SideInternal, *i}} {
			if s.t.After(limit) {
				return rvNewest{why: fmt.Sprintf("the %s modification time %s lies in the future (clock skew)", s.side, FormatTime(s.t))}
			}
		}
	}
	d := e.Sub(*i)
	if margin > 0 && d.Abs() <= margin {
		return rvNewest{why: fmt.Sprintf("the modification times are %s apart, within the clock-skew margin of %s", d.Abs(), margin)}
	}
	if d < 0 {
		return rvNewest{side: SideInternal}
	}
	return rvNewest{side: SideExternal} // later, or a tie: the fixed tie-break
}

func escalatePlan(p ResolutionPlan, reason string) ResolutionPlan {
	p.Escalate = true
	p.Reason = truncateText(reason, MaxDescriptionLength)
	p.Result, p.Delete, p.WriteExternal, p.WriteInternal = nil, false, false, false
	return p
}

func joinReasons(reasons []string) string {
	const show = 5
	if len(reasons) <= show {
		return strings.Join(reasons, "; ")
	}
	return strings.Join(reasons[:show], "; ") + fmt.Sprintf("; and %d more fields", len(reasons)-show)
}

func truncateText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n-len("…")], "") + "…"
}

// ---- the field walk ----

// rvValue is one side's value of a field; ok is false when absent.
type rvValue struct {
	v  any
	ok bool
}

func (f rvValue) equal(g rvValue) bool {
	if f.ok != g.ok {
		return false
	}
	return !f.ok || bytes.Equal(CanonicalJSON(f.v), CanonicalJSON(g.v))
}

func (f rvValue) value() any {
	if !f.ok {
		return nil
	}
	return f.v
}

func (f rvValue) ptr() *FieldValue {
	if !f.ok {
		return nil
	}
	return &FieldValue{Value: f.v}
}

// blank: absent, null, text of only spaces, or an empty array or object.
func (f rvValue) blank() bool {
	if !f.ok || f.v == nil {
		return true
	}
	switch x := f.v.(type) {
	case string:
		return strings.TrimSpace(x) == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}

// setIn writes a present value into rec at path (parents exist: see skeleton).
func (f rvValue) setIn(rec map[string]any, path []string) {
	if f.ok {
		_ = setPath(rec, path, cloneValue(f.v, 0)) // parents are objects by construction
	}
}

// field is one leaf of the walk, with each side's value.
type rvField struct {
	path           []string
	base, ext, int rvValue
}

func (f rvField) name() string { return strings.Join(f.path, ".") }

func (f rvField) of(s Side) rvValue {
	if s == SideExternal {
		return f.ext
	}
	return f.int
}

// tree is the walk of a conflict: its fields and the objects both sides hold
// (which the result holds too, even if every field below was removed).
type rvTree struct {
	fields  []rvField
	objects [][]string
}

func (t rvTree) skeleton() map[string]any {
	out := map[string]any{}
	for _, p := range t.objects {
		if _, ok := getPath(out, p); !ok {
			_ = setPath(out, p, map[string]any{})
		}
	}
	return out
}

func walkConflict(c Conflict) rvTree {
	var t rvTree
	ext, in := c.External, c.Internal
	switch c.DeletedSide() {
	case SideExternal:
		ext = nil
	case SideInternal:
		in = nil
	}
	rvWalk(&t, nil, c.Base, ext, in, 0)
	return t
}

func rvWalk(t *rvTree, prefix []string, base, ext, in map[string]any, depth int) {
	keys := map[string]struct{}{}
	for _, m := range []map[string]any{base, ext, in} {
		for k := range m {
			keys[k] = struct{}{}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		path := append(slices.Clone(prefix), k)
		bv, bok := base[k]
		ev, eok := ext[k]
		iv, iok := in[k]
		em, eIsMap := ev.(map[string]any)
		im, iIsMap := iv.(map[string]any)
		if eok && iok && eIsMap && iIsMap && depth < maxCanonicalDepth {
			bm, _ := bv.(map[string]any)
			t.objects = append(t.objects, path)
			rvWalk(t, path, bm, em, im, depth+1)
			continue
		}
		t.fields = append(t.fields, rvField{path: path, base: rvValue{bv, bok}, ext: rvValue{ev, eok}, int: rvValue{iv, iok}})
	}
}

// ---- helpers ----

// sideData is a side's record (nil when that side deleted it).
func (c Conflict) sideData(s Side) map[string]any {
	if s == c.DeletedSide() {
		return nil
	}
	if s == SideExternal {
		return c.External
	}
	return c.Internal
}

// sideHolds reports whether side s of c already holds the outcome.
func sideHolds(c Conflict, s Side, result map[string]any, deleted bool) bool {
	if deleted || s == c.DeletedSide() {
		return deleted && s == c.DeletedSide()
	}
	return recordsEqual(result, c.sideData(s))
}

func recordsEqual(a, b map[string]any) bool {
	return bytes.Equal(CanonicalJSON(a), CanonicalJSON(b))
}

// covered reports whether a value keyed by one of keys covers field.
func fieldCovered(field string, keys []string) bool {
	_, ok := coveringKey(field, keys)
	return ok
}

func coveringKey(field string, keys []string) (string, bool) {
	for _, k := range keys {
		if k == field || strings.HasPrefix(field, k+".") {
			return k, true
		}
	}
	return "", false
}
