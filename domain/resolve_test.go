package domain

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

var resolveNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) *time.Time {
	t := resolveNow.Add(d)
	return &t
}

// updateConflict: since the base, the external side renamed the contact and
// changed the phone; Castiel changed the email and the phone too.
func updateConflict() Conflict {
	return Conflict{
		ID: "cfl_1", TenantID: "t1", Kind: ConflictUpdateUpdate,
		Base:               map[string]any{"name": "Ada", "email": "a@x", "phone": "1", "city": "Paris"},
		External:           map[string]any{"name": "Ada L", "email": "a@x", "phone": "2", "city": "Paris"},
		Internal:           map[string]any{"name": "Ada", "email": "a@y", "phone": "3", "city": "Paris"},
		ExternalModifiedAt: at(-10 * time.Minute),
		InternalModifiedAt: at(-20 * time.Minute),
	}
}

func sameRecord(a, b map[string]any) bool {
	return string(CanonicalJSON(a)) == string(CanonicalJSON(b))
}

func decisionsOf(p ResolutionPlan) string {
	var parts []string
	for _, d := range p.Decisions {
		parts = append(parts, d.Field+"="+string(d.Chosen))
	}
	return strings.Join(parts, ",")
}

func TestResolve_UpdateOnBothSides(t *testing.T) {
	ext := updateConflict().External
	in := updateConflict().Internal
	merged := func(phone string) map[string]any {
		return map[string]any{"name": "Ada L", "email": "a@y", "phone": phone, "city": "Paris"}
	}
	tests := []struct {
		name          string
		policy        ConflictPolicy
		edit          func(*Conflict)
		want          map[string]any // nil: escalates
		wantDecisions string
		wantUndecided []string
		wantReason    string // part of the reason when escalated
		writeExt      bool
		writeInt      bool
	}{
		{
			name: "external_wins takes the external record", policy: ConflictPolicy{Strategy: StrategyExternalWins},
			want: ext, wantDecisions: "email=external,name=external,phone=external", writeInt: true,
		},
		{
			name: "internal_wins takes the internal record", policy: ConflictPolicy{Strategy: StrategyInternalWins},
			want: in, wantDecisions: "email=internal,name=internal,phone=internal", writeExt: true,
		},
		{
			name: "newest_wins takes the side modified last (external)", policy: ConflictPolicy{Strategy: StrategyNewestWins},
			want: ext, wantDecisions: "email=external,name=external,phone=external", writeInt: true,
		},
		{
			name: "newest_wins takes the side modified last (internal)", policy: ConflictPolicy{Strategy: StrategyNewestWins},
			edit: func(c *Conflict) { c.InternalModifiedAt = at(-time.Minute) },
			want: in, wantDecisions: "email=internal,name=internal,phone=internal", writeExt: true,
		},
		{
			name: "newest_wins breaks an exact tie for the external side", policy: ConflictPolicy{Strategy: StrategyNewestWins},
			edit: func(c *Conflict) { c.InternalModifiedAt = c.ExternalModifiedAt },
			want: ext, wantDecisions: "email=external,name=external,phone=external", writeInt: true,
		},
		{
			name:          "newest_wins escalates inside the clock-skew margin",
			policy:        ConflictPolicy{Strategy: StrategyNewestWins, ClockSkewMargin: "15m"},
			wantUndecided: []string{"email", "name", "phone"}, wantReason: "within the clock-skew margin of 15m0s",
		},
		{
			name:          "newest_wins escalates exactly at the margin",
			policy:        ConflictPolicy{Strategy: StrategyNewestWins, ClockSkewMargin: "10m"},
			wantUndecided: []string{"email", "name", "phone"}, wantReason: "within the clock-skew margin",
		},
		{
			name:   "newest_wins decides just outside the margin",
			policy: ConflictPolicy{Strategy: StrategyNewestWins, ClockSkewMargin: "9m59s"},
			want:   ext, wantDecisions: "email=external,name=external,phone=external", writeInt: true,
		},
		{
			name: "newest_wins escalates when a time is unknown", policy: ConflictPolicy{Strategy: StrategyNewestWins},
			edit:          func(c *Conflict) { c.InternalModifiedAt = nil },
			wantUndecided: []string{"email", "name", "phone"}, wantReason: "internal modification time is unknown",
		},
		{
			name: "newest_wins distrusts a time in the future", policy: ConflictPolicy{Strategy: StrategyNewestWins},
			edit:          func(c *Conflict) { c.ExternalModifiedAt = at(2 * time.Hour) },
			wantUndecided: []string{"email", "name", "phone"}, wantReason: "lies in the future",
		},
		{
			name: "merge escalates a field changed on both sides", policy: ConflictPolicy{Strategy: StrategyMerge},
			wantUndecided: []string{"phone"}, wantDecisions: "email=internal,name=external", wantReason: "phone: changed on both sides",
		},
		{
			name:   "merge falls back to the field's override",
			policy: ConflictPolicy{Strategy: StrategyMerge, FieldOverrides: map[string]ConflictStrategy{"phone": StrategyInternalWins}},
			want:   merged("3"), wantDecisions: "email=internal,name=external,phone=internal", writeExt: true, writeInt: true,
		},
		{
			name:   "merge keeps one-sided changes even on an overridden field",
			policy: ConflictPolicy{Strategy: StrategyMerge, FieldOverrides: map[string]ConflictStrategy{"name": StrategyInternalWins, "phone": StrategyExternalWins}},
			want:   merged("2"), wantDecisions: "email=internal,name=external,phone=external", writeExt: true, writeInt: true,
		},
		{
			name:          "merge with a manual override escalates that field",
			policy:        ConflictPolicy{Strategy: StrategyMerge, FieldOverrides: map[string]ConflictStrategy{"phone": StrategyManual}},
			wantUndecided: []string{"phone"}, wantDecisions: "email=internal,name=external", wantReason: "phone",
		},
		{
			name:   "merge accepts both sides making the same change",
			policy: ConflictPolicy{Strategy: StrategyMerge},
			edit:   func(c *Conflict) { c.Internal["phone"] = "2" },
			want:   merged("2"), wantDecisions: "email=internal,name=external", writeExt: true, writeInt: true,
		},
		{
			name:   "merge without a base takes fields added on one side",
			policy: ConflictPolicy{Strategy: StrategyMerge},
			edit: func(c *Conflict) {
				c.Base = nil
				c.External = map[string]any{"name": "Ada", "fax": "9"}
				c.Internal = map[string]any{"name": "Ada", "mobile": "7"}
			},
			want: map[string]any{"name": "Ada", "fax": "9", "mobile": "7"}, wantDecisions: "fax=external,mobile=internal",
			writeExt: true, writeInt: true,
		},
		{
			name:   "an override of merge under external_wins merges that field",
			policy: ConflictPolicy{Strategy: StrategyExternalWins, FieldOverrides: map[string]ConflictStrategy{"email": StrategyMerge, "phone": StrategyMerge}},
			want:   map[string]any{"name": "Ada L", "email": "a@y", "phone": "2", "city": "Paris"},
			// email changed on Castiel only; phone on both, so the record's strategy decides it.
			wantDecisions: "email=internal,name=external,phone=external", writeExt: true, writeInt: true,
		},
		{
			name:          "a field override replaces the record strategy",
			policy:        ConflictPolicy{Strategy: StrategyExternalWins, FieldOverrides: map[string]ConflictStrategy{"email": StrategyInternalWins}},
			want:          map[string]any{"name": "Ada L", "email": "a@y", "phone": "2", "city": "Paris"},
			wantDecisions: "email=internal,name=external,phone=external", writeExt: true, writeInt: true,
		},
		{
			name: "manual escalates", policy: ConflictPolicy{Strategy: StrategyManual},
			wantUndecided: []string{"email", "name", "phone"}, wantReason: "manual decision",
		},
		{
			name:          "manual with overrides still escalates the fields left to it",
			policy:        ConflictPolicy{Strategy: StrategyManual, FieldOverrides: map[string]ConflictStrategy{"name": StrategyExternalWins}},
			wantUndecided: []string{"email", "phone"}, wantDecisions: "name=external",
		},
		{
			name: "prefer_non_empty never lets a blank overwrite a value", policy: ConflictPolicy{Strategy: StrategyPreferNonEmpty},
			edit: func(c *Conflict) {
				c.Base = map[string]any{"name": "Ada", "email": "a@x", "tags": []any{"vip"}}
				c.External = map[string]any{"name": "  ", "email": "a@x", "tags": []any{}, "fax": "9"}
				c.Internal = map[string]any{"name": "Ada", "email": nil, "tags": []any{"vip"}}
			},
			want:          map[string]any{"name": "Ada", "email": "a@x", "tags": []any{"vip"}, "fax": "9"},
			wantDecisions: "email=external,fax=external,name=internal,tags=internal", writeExt: true, writeInt: true,
		},
		{
			name: "prefer_non_empty merges two filled values", policy: ConflictPolicy{Strategy: StrategyPreferNonEmpty},
			wantUndecided: []string{"phone"}, wantDecisions: "email=internal,name=external",
		},
		{
			name: "prefer_non_empty keeps the internal blank of two blanks", policy: ConflictPolicy{Strategy: StrategyPreferNonEmpty},
			edit: func(c *Conflict) {
				c.Base = map[string]any{"note": "x"}
				c.External = map[string]any{"note": ""}
				c.Internal = map[string]any{"note": nil}
			},
			want: map[string]any{"note": nil}, wantDecisions: "note=internal", writeExt: true,
		},
		{
			name: "an unknown strategy escalates", policy: ConflictPolicy{Strategy: "coin_flip"},
			wantUndecided: []string{"email", "name", "phone"}, wantReason: `unknown conflict strategy "coin_flip"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := updateConflict()
			if tt.edit != nil {
				tt.edit(&c)
			}
			before := string(CanonicalJSON(c))
			p := Resolve(tt.policy, c, resolveNow)
			if string(CanonicalJSON(c)) != before {
				t.Fatal("Resolve modified the conflict it was given")
			}
			if got := decisionsOf(p); got != tt.wantDecisions {
				t.Errorf("decisions = %q, want %q", got, tt.wantDecisions)
			}
			if !slices.Equal(p.Undecided, tt.wantUndecided) {
				t.Errorf("fields left to a person = %v, want %v", p.Undecided, tt.wantUndecided)
			}
			if tt.want == nil {
				if !p.Escalate {
					t.Fatalf("plan decided %v; want an escalation", p.Result)
				}
				if !strings.Contains(p.Reason, tt.wantReason) {
					t.Errorf("escalation reason %q does not say %q", p.Reason, tt.wantReason)
				}
				if p.Result != nil || p.WriteExternal || p.WriteInternal {
					t.Errorf("an escalated plan writes nothing; got result %v, writes ext=%v int=%v", p.Result, p.WriteExternal, p.WriteInternal)
				}
				return
			}
			if p.Escalate {
				t.Fatalf("plan escalated (%s); want %v", p.Reason, tt.want)
			}
			if !sameRecord(p.Result, tt.want) {
				t.Errorf("result = %s, want %s", CanonicalJSON(p.Result), CanonicalJSON(tt.want))
			}
			if p.WriteExternal != tt.writeExt || p.WriteInternal != tt.writeInt {
				t.Errorf("writes external=%v internal=%v, want %v %v", p.WriteExternal, p.WriteInternal, tt.writeExt, tt.writeInt)
			}
		})
	}
}

func TestResolve_NestedFieldsAndOverridesOnParents(t *testing.T) {
	c := Conflict{
		Kind:     ConflictUpdateUpdate,
		Base:     map[string]any{"address": map[string]any{"city": "Paris", "zip": "75001"}, "meta": map[string]any{}},
		External: map[string]any{"address": map[string]any{"city": "Lyon", "zip": "75001"}, "meta": map[string]any{}},
		Internal: map[string]any{"address": map[string]any{"city": "Nice", "zip": "06000"}, "meta": map[string]any{}},
	}
	p := Resolve(ConflictPolicy{Strategy: StrategyMerge, FieldOverrides: map[string]ConflictStrategy{"address": StrategyExternalWins}}, c, resolveNow)
	if p.Escalate {
		t.Fatalf("escalated: %s", p.Reason)
	}
	want := map[string]any{"address": map[string]any{"city": "Lyon", "zip": "06000"}, "meta": map[string]any{}}
	if !sameRecord(p.Result, want) {
		t.Errorf("result = %s, want %s (city changed on both: the override on address decides; zip changed in Castiel only)", CanonicalJSON(p.Result), CanonicalJSON(want))
	}
	if got := decisionsOf(p); got != "address.city=external,address.zip=internal" {
		t.Errorf("decisions = %s", got)
	}

	// external_wins gives exactly the external record, empty objects included.
	p = Resolve(ConflictPolicy{Strategy: StrategyExternalWins}, c, resolveNow)
	if !sameRecord(p.Result, c.External) {
		t.Errorf("external_wins result = %s, want the external record %s", CanonicalJSON(p.Result), CanonicalJSON(c.External))
	}

	// An object on one side against a scalar on the other is one field.
	c.Internal = map[string]any{"address": "unknown", "meta": map[string]any{}}
	p = Resolve(ConflictPolicy{Strategy: StrategyInternalWins}, c, resolveNow)
	if got := decisionsOf(p); got != "address=internal" || !sameRecord(p.Result, c.Internal) {
		t.Errorf("decisions %s, result %s; want address=internal and the internal record", got, CanonicalJSON(p.Result))
	}
}

func TestResolve_DeleteAgainstEdit(t *testing.T) {
	edited := map[string]any{"name": "Ada L"}
	deleteUpdate := Conflict{Kind: ConflictDeleteUpdate, Internal: edited, Base: map[string]any{"name": "Ada"}, ExternalModifiedAt: at(-time.Minute), InternalModifiedAt: at(-time.Hour)}
	updateDelete := Conflict{Kind: ConflictUpdateDelete, External: edited, Base: map[string]any{"name": "Ada"}, ExternalModifiedAt: at(-time.Hour), InternalModifiedAt: at(-time.Minute)}
	tests := []struct {
		name       string
		c          Conflict
		policy     ConflictPolicy
		escalate   string // part of the reason; "" when decided
		wantSide   Side
		wantDelete bool
		writeExt   bool
		writeInt   bool
	}{
		{name: "escalates by default", c: deleteUpdate, policy: ConflictPolicy{Strategy: StrategyExternalWins}, escalate: "deleted on the external side"},
		{name: "manual escalates", c: updateDelete, policy: ConflictPolicy{Strategy: StrategyExternalWins, DeleteEditPolicy: StrategyManual}, escalate: "deleted on the internal side"},
		{name: "external_wins deletes in Castiel", c: deleteUpdate, policy: ConflictPolicy{Strategy: StrategyMerge, DeleteEditPolicy: StrategyExternalWins}, wantSide: SideExternal, wantDelete: true, writeInt: true},
		{name: "internal_wins recreates externally", c: deleteUpdate, policy: ConflictPolicy{DeleteEditPolicy: StrategyInternalWins}, wantSide: SideInternal, writeExt: true},
		{name: "external_wins restores in Castiel", c: updateDelete, policy: ConflictPolicy{DeleteEditPolicy: StrategyExternalWins}, wantSide: SideExternal, writeInt: true},
		{name: "internal_wins deletes externally", c: updateDelete, policy: ConflictPolicy{DeleteEditPolicy: StrategyInternalWins}, wantSide: SideInternal, wantDelete: true, writeExt: true},
		{name: "newest_wins: the later delete wins", c: deleteUpdate, policy: ConflictPolicy{DeleteEditPolicy: StrategyNewestWins}, wantSide: SideExternal, wantDelete: true, writeInt: true},
		{name: "newest_wins: the later edit wins", c: updateDelete, policy: ConflictPolicy{DeleteEditPolicy: StrategyNewestWins, ClockSkewMargin: "1m"}, wantSide: SideInternal, wantDelete: true, writeExt: true},
		{name: "newest_wins escalates inside the margin", c: deleteUpdate, policy: ConflictPolicy{DeleteEditPolicy: StrategyNewestWins, ClockSkewMargin: "1h"}, escalate: "clock-skew margin"},
		{name: "newest_wins escalates without the deletion time", c: func() Conflict { c := deleteUpdate; c.ExternalModifiedAt = nil; return c }(), policy: ConflictPolicy{DeleteEditPolicy: StrategyNewestWins}, escalate: "external modification time is unknown"},
		{name: "merge cannot decide a deletion", c: updateDelete, policy: ConflictPolicy{DeleteEditPolicy: StrategyMerge}, escalate: `delete-edit policy "merge"`},
		{name: "overrides do not apply", c: updateDelete, policy: ConflictPolicy{Strategy: StrategyExternalWins, FieldOverrides: map[string]ConflictStrategy{"name": StrategyExternalWins}}, escalate: "edited on the other"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Resolve(tt.policy, tt.c, resolveNow)
			if tt.escalate != "" {
				if !p.Escalate || !strings.Contains(p.Reason, tt.escalate) {
					t.Fatalf("escalate=%v reason %q; want an escalation saying %q", p.Escalate, p.Reason, tt.escalate)
				}
				if !slices.Contains(ConflictStrategies(), p.Strategy) {
					t.Errorf("plan strategy %q is not a strategy an event can carry", p.Strategy)
				}
				return
			}
			if p.Escalate {
				t.Fatalf("escalated: %s", p.Reason)
			}
			if len(p.Decisions) != 1 || p.Decisions[0].Field != WholeRecord || p.Decisions[0].Chosen != tt.wantSide {
				t.Errorf("decisions = %+v, want the whole record from %s", p.Decisions, tt.wantSide)
			}
			if p.Delete != tt.wantDelete {
				t.Errorf("delete = %v, want %v", p.Delete, tt.wantDelete)
			}
			if !tt.wantDelete && !sameRecord(p.Result, edited) {
				t.Errorf("result = %v, want the edited record", p.Result)
			}
			if p.WriteExternal != tt.writeExt || p.WriteInternal != tt.writeInt {
				t.Errorf("writes external=%v internal=%v, want %v %v", p.WriteExternal, p.WriteInternal, tt.writeExt, tt.writeInt)
			}
		})
	}
}

func TestApplyManual_TakesASideOrEditedValues(t *testing.T) {
	deleteUpdate := Conflict{Kind: ConflictDeleteUpdate, Internal: map[string]any{"name": "Ada L", "phone": "3"}, Base: map[string]any{"name": "Ada"}}
	tests := []struct {
		name      string
		c         Conflict
		side      Side
		values    map[string]any
		want      map[string]any
		delete    bool
		decisions string
		writeExt  bool
		writeInt  bool
		err       string
	}{
		{name: "the external side", c: updateConflict(), side: SideExternal, want: updateConflict().External,
			decisions: "email=external,name=external,phone=external", writeInt: true},
		{name: "the internal side", c: updateConflict(), side: SideInternal, want: updateConflict().Internal,
			decisions: "email=internal,name=internal,phone=internal", writeExt: true},
		{name: "a side with an edited field", c: updateConflict(), side: SideInternal, values: map[string]any{"phone": "+33 1"},
			want:      map[string]any{"name": "Ada", "email": "a@y", "phone": "+33 1", "city": "Paris"},
			decisions: "email=internal,name=internal,phone=edited", writeExt: true, writeInt: true},
		{name: "values for every differing field", c: updateConflict(), values: map[string]any{"name": "Ada L", "email": "a@y", "phone": "5"},
			want:      map[string]any{"name": "Ada L", "email": "a@y", "phone": "5", "city": "Paris"},
			decisions: "email=edited,name=edited,phone=edited", writeExt: true, writeInt: true},
		{name: "values that miss a differing field", c: updateConflict(), values: map[string]any{"name": "Ada L", "email": "a@y"},
			err: `field "phone" differs`},
		{name: "a new nested value", c: updateConflict(), side: SideExternal, values: map[string]any{"address.city": "Lyon"},
			want:      map[string]any{"name": "Ada L", "email": "a@x", "phone": "2", "city": "Paris", "address": map[string]any{"city": "Lyon"}},
			decisions: "address.city=edited,email=external,name=external,phone=external", writeExt: true, writeInt: true},
		{name: "a value below a scalar", c: updateConflict(), side: SideExternal, values: map[string]any{"name.first": "Ada"}, err: `value of "name.first"`},
		{name: "the deleting side", c: deleteUpdate, side: SideExternal, delete: true, decisions: "*=external", writeInt: true},
		{name: "the side that kept the record", c: deleteUpdate, side: SideInternal, want: deleteUpdate.Internal, decisions: "*=internal", writeExt: true},
		{name: "values keep a deleted record, edited", c: deleteUpdate, values: map[string]any{"phone": "4"},
			want: map[string]any{"name": "Ada L", "phone": "4"}, decisions: "*=internal,phone=edited", writeExt: true, writeInt: true},
		{name: "values on the deleting side", c: deleteUpdate, side: SideExternal, values: map[string]any{"phone": "4"}, err: "deleted the record"},
		{name: "an unknown side", c: updateConflict(), side: SideBase, err: "side must be"},
		{name: "nothing chosen", c: updateConflict(), err: "choose a side or give values"},
		{name: "a bad path", c: updateConflict(), values: map[string]any{"a..b": 1}, err: "not a dotted field path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ApplyManual(tt.c, tt.side, tt.values)
			if tt.err != "" {
				if err == nil || !errors.Is(err, ErrManualDecision) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want an ErrManualDecision saying %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Strategy != StrategyManual || p.Escalate {
				t.Errorf("strategy %q escalate %v; a person's decision is manual and final", p.Strategy, p.Escalate)
			}
			if p.Delete != tt.delete || !tt.delete && !sameRecord(p.Result, tt.want) {
				t.Errorf("delete=%v result=%s; want delete=%v %s", p.Delete, CanonicalJSON(p.Result), tt.delete, CanonicalJSON(tt.want))
			}
			if got := decisionsOf(p); got != tt.decisions {
				t.Errorf("decisions = %q, want %q", got, tt.decisions)
			}
			if p.WriteExternal != tt.writeExt || p.WriteInternal != tt.writeInt {
				t.Errorf("writes external=%v internal=%v, want %v %v", p.WriteExternal, p.WriteInternal, tt.writeExt, tt.writeInt)
			}
		})
	}
}

func TestDiffConflict_ListsDifferingFieldsWithTheBase(t *testing.T) {
	c := updateConflict()
	c.External["address"] = map[string]any{"city": "Lyon", "zip": "1"}
	c.Internal["address"] = map[string]any{"city": "Nice", "zip": "1"}
	c.Internal["fax"] = nil
	got := DiffConflict(c)
	var fields []string
	for _, d := range got {
		fields = append(fields, d.Field)
	}
	if want := []string{"address.city", "email", "fax", "name", "phone"}; !slices.Equal(fields, want) {
		t.Fatalf("fields = %v, want %v", fields, want)
	}
	email := got[1]
	if email.Base.value() != "a@x" || email.External.value() != "a@x" || email.Internal.value() != "a@y" || email.ExternalChanged || !email.InternalChanged {
		t.Errorf("email diff = %+v: want base a@x, external a@x (unchanged), internal a@y (changed)", email)
	}
	fax := got[2]
	if fax.External != nil || fax.Internal == nil || fax.Internal.Value != nil || fax.Base != nil {
		t.Errorf("fax diff = %+v: want absent externally and in the base, null in Castiel", fax)
	}

	del := Conflict{Kind: ConflictUpdateDelete, External: map[string]any{"a": 1, "b": 2}, Internal: map[string]any{"a": 1}}
	if d := DiffConflict(del); len(d) != 2 || d[0].Internal != nil || d[1].Internal != nil {
		t.Errorf("against a deleted side every field differs and is absent there; got %+v", d)
	}
}
