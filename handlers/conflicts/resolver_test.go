package conflicts

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
)

var (
	baseRec = map[string]any{"name": "Ada", "email": "a@x", "score": float64(1)}
	extRec  = map[string]any{"name": "Ada L", "email": "a@x", "score": float64(2)}
	inRec   = map[string]any{"name": "Ada", "email": "a@y", "score": float64(3)}
)

// bothEdited: since the base, the external system renamed the contact and
// changed its score; Castiel changed the email and the score.
func bothEdited(key string, policy domain.ConflictPolicy) record {
	now := time.Now().UTC()
	return record{key: key, base: baseRec, ext: extRec, in: inRec, extAt: now.Add(-time.Minute), inAt: now.Add(-2 * time.Minute), policy: policy}
}

// sum adds up every series of a counter (vector).
func sum(c prometheus.Collector) float64 {
	ch := make(chan prometheus.Metric, 64)
	go func() { c.Collect(ch); close(ch) }()
	total := 0.0
	for m := range ch {
		var d dto.Metric
		_ = m.Write(&d)
		total += d.GetCounter().GetValue()
	}
	return total
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestResolver_AppliesEachStrategyEndToEnd(t *testing.T) {
	now := time.Now().UTC()
	tests := []struct {
		name        string
		rec         record
		want        map[string]any // nil: deleted on both sides
		extWrites   []string       // "update", "create", "delete"
		shardWrites int
	}{
		{name: "external_wins", rec: bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyExternalWins}),
			want: extRec, shardWrites: 1},
		{name: "internal_wins", rec: bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyInternalWins}),
			want: inRec, extWrites: []string{"update"}},
		{name: "newest_wins", rec: bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyNewestWins, ClockSkewMargin: "10s"}),
			want: extRec, shardWrites: 1},
		{name: "merge with a field override",
			rec:  bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyMerge, FieldOverrides: map[string]domain.ConflictStrategy{"score": domain.StrategyInternalWins}}),
			want: map[string]any{"name": "Ada L", "email": "a@y", "score": float64(3)}, extWrites: []string{"update"}, shardWrites: 1},
		{name: "prefer_non_empty",
			rec: record{key: "c1", base: baseRec, policy: domain.ConflictPolicy{Strategy: domain.StrategyPreferNonEmpty},
				ext: map[string]any{"name": "Ada", "email": "", "score": float64(1), "phone": "555"},
				in:  map[string]any{"name": "Ada B", "email": "a@x", "score": float64(1)}},
			want: map[string]any{"name": "Ada B", "email": "a@x", "score": float64(1), "phone": "555"}, extWrites: []string{"update"}, shardWrites: 1},
		{name: "delete against edit: external_wins deletes in Castiel",
			rec:  record{key: "c1", base: baseRec, ext: nil, in: inRec, policy: domain.ConflictPolicy{Strategy: domain.StrategyMerge, DeleteEditPolicy: domain.StrategyExternalWins}},
			want: nil, shardWrites: 1},
		{name: "delete against edit: internal_wins recreates externally",
			rec:  record{key: "c1", base: baseRec, ext: nil, in: inRec, policy: domain.ConflictPolicy{Strategy: domain.StrategyMerge, DeleteEditPolicy: domain.StrategyInternalWins}},
			want: inRec, extWrites: []string{"create"}},
		{name: "edit against delete: newest_wins restores in Castiel",
			rec: record{key: "c1", base: baseRec, ext: extRec, in: nil, extAt: now, inAt: now.Add(-time.Hour),
				policy: domain.ConflictPolicy{Strategy: domain.StrategyMerge, DeleteEditPolicy: domain.StrategyNewestWins}},
			want: extRec, shardWrites: 1},
		{name: "edit against delete: internal_wins deletes externally",
			rec:  record{key: "c1", base: baseRec, ext: extRec, in: nil, policy: domain.ConflictPolicy{DeleteEditPolicy: domain.StrategyInternalWins, Strategy: domain.StrategyExternalWins}},
			want: nil, extWrites: []string{"delete"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.run(t, h.resolver(t, fastOptions()))
			c := h.seed(t, tt.rec)
			h.detect(t, c)

			got := h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
			h.assertConverged(t, tt.rec.key, tt.want)

			var ops []string
			for _, w := range h.external.allWrites() {
				switch {
				case w.Delete:
					ops = append(ops, "delete")
				case w.Create:
					ops = append(ops, "create")
				default:
					ops = append(ops, "update")
				}
			}
			if strings.Join(ops, ",") != strings.Join(tt.extWrites, ",") {
				t.Errorf("external writes %v, want %v", ops, tt.extWrites)
			}
			if n := int(h.shards.puts.Load() + h.shards.deletes.Load()); n != tt.shardWrites {
				t.Errorf("%d writes to Castiel's side, want %d", n, tt.shardWrites)
			}
			if tt.want != nil && len(tt.extWrites) > 0 {
				// The external system got the record in its own shape.
				wantRaw, _ := domain.ApplyMapping(testMapping(), tt.want, domain.MapToExternal)
				if raw := h.external.raw(tt.rec.key); domain.ContentHash(raw) != domain.ContentHash(wantRaw) {
					t.Errorf("external record %s; want the inverse mapping %s", domain.CanonicalJSON(raw), domain.CanonicalJSON(wantRaw))
				}
			}

			atts := h.attempts(t, c.ID)
			if len(atts) != 1 || atts[0].Outcome != domain.OutcomeApplied || atts[0].Actor != domain.ActorSystem || atts[0].ID != c.ID {
				t.Fatalf("resolution records %+v; want one applied by system under the conflict's id", outcomes(atts))
			}
			if atts[0].Strategy == "" || len(atts[0].Decisions) == 0 || atts[0].Before == nil {
				t.Errorf("resolution record lacks strategy, decisions or before: %+v", atts[0].ConflictResolution)
			}
			if got.ResolutionID != c.ID || got.Generation != 1 {
				t.Errorf("conflict points at resolution %q generation %d; want %q 1", got.ResolutionID, got.Generation, c.ID)
			}
			evs := h.events.ofType(domain.TypeConflictResolved)
			if len(evs) != 1 || evs[0].(domain.ConflictResolved).Outcome != domain.OutcomeApplied {
				t.Errorf("resolved events %+v; want one, applied", evs)
			}
		})
	}
}

func TestResolver_EscalatesAndAPersonDecides(t *testing.T) {
	h := newHarness(t)
	h.run(t, h.resolver(t, fastOptions()))
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyMerge}))
	h.detect(t, c)

	esc := h.waitEscalated(t, c.ID, 1)
	if !strings.Contains(esc.StatusReason, "score") {
		t.Errorf("escalation reason %q does not name the field changed on both sides", esc.StatusReason)
	}
	eventually(t, "conflict.escalated is published", func() bool { return len(h.events.ofType(domain.TypeConflictEscalated)) == 1 })
	atts := h.attempts(t, c.ID)
	if len(atts) != 1 || atts[0].Outcome != domain.OutcomeEscalated || len(atts[0].Decisions) != 2 {
		t.Fatalf("attempts %v; want one escalated with the two fields it could decide", outcomes(atts))
	}
	if esc.ResolutionID != atts[0].ID {
		t.Errorf("the conflict names resolution %q; want the escalation %q", esc.ResolutionID, atts[0].ID)
	}
	if n := len(h.external.allWrites()) + int(h.shards.puts.Load()); n != 0 {
		t.Fatalf("an escalation wrote %d times; want nothing written", n)
	}
	// The API's manual queue (GET /api/v1/conflicts?status=pending) lists it,
	// with a field-by-field diff naming the field a person must decide.
	queue := h.manualQueue(t)
	if len(queue) != 1 || queue[0].ID != c.ID {
		t.Fatalf("status=pending lists %d conflicts (%v); want the escalated %s", len(queue), queue, c.ID)
	}
	if diff := domain.DiffConflict(queue[0]); !diffNames(diff, "score") {
		t.Errorf("the listed conflict's diff %+v does not show the score changed on both sides", diff)
	}

	// A redelivered detection changes nothing.
	r := h.resolver(t, fastOptions())
	if err := r.HandleDetected(detectedMessage(t, c)); err != nil {
		t.Fatalf("a redelivered detection of the escalated conflict: %v; want it acked", err)
	}
	if n := sum(r.metrics.lost); n != 1 {
		t.Errorf("the redelivered detection counted %v lost; want 1 (changes nothing)", n)
	}
	if got := h.attempts(t, c.ID); len(got) != 1 {
		t.Fatalf("attempts %v after a redelivered detection; want only the escalation", outcomes(got))
	}
	h.detect(t, c)
	// The person keeps Castiel's version but types the score.
	h.publish(t, messaging.TopicCmdConflictResolve, resolveMessage(t, c, "user-1", domain.SideInternal, map[string]any{"score": 7}))
	h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
	want := map[string]any{"name": "Ada", "email": "a@y", "score": float64(7)}
	h.assertConverged(t, "c1", want)
	atts = h.attempts(t, c.ID)
	if len(atts) != 2 || atts[1].Outcome != domain.OutcomeApplied || atts[1].Actor != "user-1" || atts[1].Strategy != domain.StrategyManual {
		t.Fatalf("attempts %v (%+v); want escalated, then applied by user-1 with strategy manual", outcomes(atts), atts)
	}
	if len(h.events.ofType(domain.TypeConflictEscalated)) != 1 {
		t.Errorf("the redelivered detection published another escalation")
	}
	if queue := h.manualQueue(t); len(queue) != 0 {
		t.Errorf("status=pending still lists %d conflicts after the person decided", len(queue))
	}
}

func diffNames(diff []domain.FieldDiff, field string) bool {
	for _, d := range diff {
		if d.Field == field {
			return true
		}
	}
	return false
}

// escalation stores an escalated attempt (generation 1) at conflict c.
func (h *harness) escalation(t testing.TB, c domain.Conflict, at time.Time) resolutionDoc {
	t.Helper()
	doc := resolutionDoc{ConflictResolution: domain.ConflictResolution{
		ID: c.ID, TenantID: testTenant, ConflictID: c.ID, Strategy: domain.StrategyManual, Actor: domain.ActorSystem,
		Outcome: domain.OutcomeEscalated, Reason: "no automatic decision for score", ResolvedAt: at, CreatedAt: at, UpdatedAt: at,
	}, Generation: 1, ClaimedBy: "a-resolver"}
	if _, err := h.resolutions.Upsert(context.Background(), doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

func TestResolver_CompletesAnEscalationThatStoppedBeforeItsStatus(t *testing.T) {
	h := newHarness(t)
	r := h.resolver(t, fastOptions())
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyMerge}))
	// The escalation was recorded, then its resolver died: the conflict is
	// pending as detected, naming no attempt.
	h.escalation(t, c, time.Now().UTC().Add(-time.Minute))

	if err := r.HandleDetected(detectedMessage(t, c)); err != nil {
		t.Fatal(err)
	}
	got := h.waitEscalated(t, c.ID, 1)
	if got.StatusReason != "no automatic decision for score" {
		t.Errorf("status reason %q; want the escalation's reason", got.StatusReason)
	}
	if n := len(h.events.ofType(domain.TypeConflictEscalated)); n != 1 {
		t.Errorf("%d conflict.escalated events; want the missing one published", n)
	}
	if atts := h.attempts(t, c.ID); len(atts) != 1 {
		t.Errorf("attempts %v; completing an escalation makes no new attempt", outcomes(atts))
	}
	// Now complete, another redelivery changes nothing and publishes nothing.
	if err := r.HandleDetected(detectedMessage(t, c)); err != nil {
		t.Fatal(err)
	}
	if n := len(h.events.ofType(domain.TypeConflictEscalated)); n != 1 {
		t.Errorf("%d conflict.escalated events after another redelivery; want still 1", n)
	}
}

func TestResolver_AcceptsALegacyEscalatedStatus(t *testing.T) {
	h := newHarness(t)
	r := h.resolver(t, fastOptions())
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyMerge}))
	h.escalation(t, c, time.Now().UTC().Add(-time.Hour))
	// As earlier versions stored it: status escalated, possibly naming no attempt.
	if _, _, err := h.conflicts.Update(context.Background(), testTenant, c.ID, func(d *conflictDoc) error {
		d.Status, d.StatusReason = domain.ConflictStatusEscalated, "no automatic decision for score"
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	if err := r.HandleDetected(detectedMessage(t, c)); err != nil {
		t.Fatal(err)
	}
	if got := h.conflict(t, c.ID); got.Status != domain.ConflictStatusEscalated {
		t.Errorf("a redelivered detection changed a legacy escalated conflict to %s", got.Status)
	}
	if n := len(h.events.ofType(domain.TypeConflictEscalated)); n != 0 {
		t.Errorf("a redelivered detection published %d conflict.escalated events; want none", n)
	}
	if err := r.HandleResolve(resolveMessage(t, c, "user-1", domain.SideExternal, nil)); err != nil {
		t.Fatal(err)
	}
	h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
	h.assertConverged(t, "c1", extRec)
}

func TestResolver_SameConflictDeliveredTwice_AppliesOnce(t *testing.T) {
	h := newHarness(t)
	replicas := []*Resolver{h.resolver(t, fastOptions()), h.resolver(t, fastOptions())}
	for _, r := range replicas {
		h.run(t, r)
	}
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyMerge, FieldOverrides: map[string]domain.ConflictStrategy{"score": domain.StrategyExternalWins}}))
	first := detectedMessage(t, c)
	copies := []*message.Message{first, first.Copy(), detectedMessage(t, c)} // a broker duplicate and a second publish
	var wg sync.WaitGroup
	for _, m := range copies {
		wg.Add(1)
		go func() { defer wg.Done(); h.publish(t, messaging.TopicEvtConflictDetected, m) }()
	}
	wg.Wait()

	h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
	eventually(t, "both duplicates are acked as lost", func() bool {
		return sum(replicas[0].metrics.lost)+sum(replicas[1].metrics.lost) == 2
	})
	want := map[string]any{"name": "Ada L", "email": "a@y", "score": float64(2)}
	h.assertConverged(t, "c1", want)
	if n := len(h.external.allWrites()); n != 1 {
		t.Errorf("%d writes to the external system; want 1", n)
	}
	if n := h.shards.puts.Load(); n != 1 {
		t.Errorf("%d writes to Castiel; want 1", n)
	}
	if atts := h.attempts(t, c.ID); len(atts) != 1 || atts[0].Outcome != domain.OutcomeApplied {
		t.Errorf("resolution records %v; want exactly one, applied", outcomes(atts))
	}
	if n := len(h.events.ofType(domain.TypeConflictResolved)); n != 1 {
		t.Errorf("%d conflict.resolved events; want 1", n)
	}
}

func TestResolver_ConcurrentHandlers_ApplyOnce(t *testing.T) {
	h := newHarness(t)
	replicas := []*Resolver{h.resolver(t, fastOptions()), h.resolver(t, fastOptions())}
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyInternalWins}))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := replicas[i%2]
			m := detectedMessage(t, c)
			for {
				err := r.HandleDetected(m)
				if !errors.Is(err, errBusy) {
					errs <- err
					return
				}
				time.Sleep(2 * time.Millisecond) // as the router's retry would
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("handler: %v", err)
		}
	}
	h.assertConverged(t, "c1", inRec)
	if n := len(h.external.allWrites()); n != 1 {
		t.Errorf("%d external writes from 16 concurrent deliveries; want 1", n)
	}
	if atts := h.attempts(t, c.ID); len(atts) != 1 {
		t.Errorf("resolution records %v; want one", outcomes(atts))
	}
	if n := len(h.events.ofType(domain.TypeConflictResolved)); n != 1 {
		t.Errorf("%d conflict.resolved events; want 1", n)
	}
	if lost := sum(replicas[0].metrics.lost) + sum(replicas[1].metrics.lost); lost != 15 {
		t.Errorf("%v deliveries recorded as lost; want 15", lost)
	}
}

func TestResolver_ManualDecisionRacingAutomatic_FirstClaimWins(t *testing.T) {
	t.Run("the automatic resolution claimed first", func(t *testing.T) {
		h := newHarness(t)
		r := h.resolver(t, fastOptions())
		h.run(t, r)
		hold, started := make(chan struct{}), make(chan struct{}, 4)
		h.external.configure(func(f *fakeExternal) { f.holdWrite, f.writeStarted = hold, started })
		c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyInternalWins}))
		h.detect(t, c)
		<-started // the automatic resolution holds the claim and is writing

		manual := resolveMessage(t, c, "user-1", domain.SideExternal, nil)
		h.publish(t, messaging.TopicCmdConflictResolve, manual)
		eventually(t, "the manual decision finds the conflict busy", func() bool { return sum(r.metrics.busy) > 0 })
		close(hold)

		h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
		var lost resolutionDoc
		eventually(t, "the manual decision is recorded as superseded", func() bool {
			var err error
			lost, _, err = h.resolutions.Get(context.Background(), testTenant, lostDecisionID(c.ID, manual.UUID))
			return err == nil
		})
		if lost.Outcome != domain.OutcomeSuperseded || lost.Actor != "user-1" || !strings.Contains(lost.Reason, "already resolved") {
			t.Errorf("the losing decision's record: %+v; want superseded by user-1 saying the conflict was already resolved", lost.ConflictResolution)
		}
		h.assertConverged(t, "c1", inRec) // internal_wins won; the person's choice was not applied
		if atts := h.attempts(t, c.ID); len(atts) != 1 || atts[0].Actor != domain.ActorSystem {
			t.Errorf("attempts %v; want one, by system", outcomes(atts))
		}
	})
	t.Run("the person claimed first", func(t *testing.T) {
		h := newHarness(t)
		r := h.resolver(t, fastOptions())
		h.run(t, r)
		c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyInternalWins}))
		decision := resolveMessage(t, c, "user-1", domain.SideExternal, nil)
		h.publish(t, messaging.TopicCmdConflictResolve, decision)
		h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
		h.detect(t, c)
		h.publish(t, messaging.TopicCmdConflictResolve, decision.Copy()) // redelivered
		eventually(t, "the automatic resolution and the redelivery are acked", func() bool { return sum(r.metrics.lost) == 2 })
		if _, _, err := h.resolutions.Get(context.Background(), testTenant, lostDecisionID(c.ID, decision.UUID)); err == nil {
			t.Error("the redelivered decision was recorded as not applied, yet it was")
		}
		h.assertConverged(t, "c1", extRec)
		if atts := h.attempts(t, c.ID); len(atts) != 1 || atts[0].Actor != "user-1" {
			t.Errorf("attempts %v; want one, by user-1", outcomes(atts))
		}
	})
}

func TestResolver_SideChangedSinceDetection_SupersedesAndRedetects(t *testing.T) {
	tests := []struct {
		name         string
		change       func(t *testing.T, h *harness)
		changed      string
		redetected   bool
		wantFinal    map[string]any
		wantNewState domain.ConflictStatus
	}{
		{
			name: "Castiel edited again: a new conflict, resolved by the policy",
			change: func(t *testing.T, h *harness) {
				if _, err := h.shards.Store.Put(context.Background(), testTenant, testEntity, "c1", map[string]any{"name": "Ada", "email": "a@z", "score": float64(3)}); err != nil {
					t.Fatal(err)
				}
			},
			changed: "Castiel", redetected: true, wantFinal: extRec,
		},
		{
			name: "the external system edited again: a new conflict, resolved by the policy",
			change: func(t *testing.T, h *harness) {
				h.external.set(t, "c1", map[string]any{"name": "Ada K", "score": float64(9)}, time.Now())
			},
			changed: "external", redetected: true, wantFinal: map[string]any{"name": "Ada K", "score": float64(9)},
		},
		{
			name: "Castiel went back to the base: no conflict left, the next sync run pulls",
			change: func(t *testing.T, h *harness) {
				if _, err := h.shards.Store.Put(context.Background(), testTenant, testEntity, "c1", baseRec); err != nil {
					t.Fatal(err)
				}
			},
			changed: "Castiel",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			h.run(t, h.resolver(t, fastOptions()))
			c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyExternalWins}))
			tt.change(t, h)
			h.detect(t, c)

			old := h.waitStatus(t, c.ID, domain.ConflictStatusSuperseded)
			if !strings.Contains(old.StatusReason, "the "+tt.changed+" side changed") {
				t.Errorf("superseded reason %q does not name the %s side", old.StatusReason, tt.changed)
			}
			atts := h.attempts(t, c.ID)
			if len(atts) != 1 || atts[0].Outcome != domain.OutcomeSuperseded || len(atts[0].WrittenHashes) != 0 {
				t.Fatalf("attempts %v; want one superseded that wrote nothing", outcomes(atts))
			}
			eventually(t, "conflict.resolved (superseded) is published", func() bool {
				evs := h.events.ofType(domain.TypeConflictResolved)
				return len(evs) > 0 && evs[0].(domain.ConflictResolved).Outcome == domain.OutcomeSuperseded
			})
			detected := h.events.ofType(domain.TypeConflictDetected)
			if !tt.redetected {
				if len(detected) != 0 {
					t.Errorf("published %d conflict.detected; the sides no longer conflict", len(detected))
				}
				state, _, _ := h.states.Get(context.Background(), testTask, domain.RecordStateID(testTask, "c1"))
				if state.Conflict != nil {
					t.Errorf("the state still marks conflict %s pending", state.Conflict.ConflictID)
				}
				ext, in := h.sidesNow(t, "c1")
				if d := domain.Classify(domain.DirectionBidirectional, &state, ext, in); d.Action != domain.ActionPullUpdate {
					t.Errorf("the next sync run would %s; want a pull of the external edit", d.Action)
				}
				if n := len(h.external.allWrites()) + int(h.shards.puts.Load()); n != 0 {
					t.Errorf("%d writes; a superseded conflict writes nothing", n)
				}
				return
			}
			if len(detected) != 1 {
				t.Fatalf("published %d conflict.detected; want one for the new versions", len(detected))
			}
			newID := detected[0].(domain.ConflictDetected).ConflictID
			if !strings.Contains(old.StatusReason, newID) {
				t.Errorf("superseded reason %q does not name the new conflict %s", old.StatusReason, newID)
			}
			h.waitStatus(t, newID, domain.ConflictStatusResolved)
			h.assertConverged(t, "c1", tt.wantFinal)
		})
	}
}

func TestResolver_FailedWriteBack_FailsThenARetryResolves(t *testing.T) {
	h := newHarness(t)
	r := h.resolver(t, fastOptions())
	h.run(t, r)
	h.external.configure(func(f *fakeExternal) { f.failWrites = 1000 })
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyInternalWins}))
	h.detect(t, c)

	failed := h.waitStatus(t, c.ID, domain.ConflictStatusFailed)
	if !strings.Contains(failed.StatusReason, "HTTP 503") {
		t.Errorf("failed reason %q does not carry the external API's answer", failed.StatusReason)
	}
	if n := len(h.external.allWrites()); n != fastOptions().WriteAttempts {
		t.Errorf("%d write attempts; want %d (bounded retries)", n, fastOptions().WriteAttempts)
	}
	if sum(r.metrics.sideRetries) != float64(fastOptions().WriteAttempts-1) {
		t.Errorf("write retries counted %v; want %d", sum(r.metrics.sideRetries), fastOptions().WriteAttempts-1)
	}
	if atts := h.attempts(t, c.ID); len(atts) != 1 || atts[0].Outcome != domain.OutcomeFailed || atts[0].Reason == "" {
		t.Fatalf("attempts %v; want one failed with its reason", outcomes(atts))
	}

	// A redelivered detection does not retry on its own.
	h.detect(t, c)
	eventually(t, "the redelivered detection is acked", func() bool { return sum(r.metrics.lost) == 1 })
	if h.conflict(t, c.ID).Status != domain.ConflictStatusFailed {
		t.Fatal("a redelivered detection reopened a failed conflict")
	}

	// The external API recovers; a command retries with the policy.
	h.external.configure(func(f *fakeExternal) { f.failWrites = 0 })
	h.publish(t, messaging.TopicCmdConflictResolve, resolveMessage(t, c, domain.ActorSystem, "", nil))
	h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
	h.assertConverged(t, "c1", inRec)
	if atts := h.attempts(t, c.ID); len(atts) != 2 || atts[1].Outcome != domain.OutcomeApplied {
		t.Errorf("attempts %v; want failed then applied", outcomes(atts))
	}
}

func TestResolver_RejectedWrite_FailsWithoutRetrying(t *testing.T) {
	h := newHarness(t)
	h.run(t, h.resolver(t, fastOptions()))
	h.external.configure(func(f *fakeExternal) { f.rejectWrites = true })
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyInternalWins}))
	h.detect(t, c)
	failed := h.waitStatus(t, c.ID, domain.ConflictStatusFailed)
	if !strings.Contains(failed.StatusReason, "422") {
		t.Errorf("failed reason %q does not carry the rejection", failed.StatusReason)
	}
	if n := len(h.external.allWrites()); n != 1 {
		t.Errorf("%d attempts at a write the API rejected; want 1", n)
	}
}

// The shard store is ours: its outage during the write-back retries the
// message instead of failing the resolution, and the retry takes the
// external side it already wrote for its own (no rewrite, no supersede).
func TestResolver_ShardStoreDownDuringWriteBack_RetriesWithoutRewriting(t *testing.T) {
	h := newHarness(t)
	h.run(t, h.resolver(t, fastOptions()))
	policy := domain.ConflictPolicy{Strategy: domain.StrategyMerge, FieldOverrides: map[string]domain.ConflictStrategy{"score": domain.StrategyExternalWins}}
	c := h.seed(t, bothEdited("c1", policy))
	// The external write succeeds; Castiel's first attempt uses up its
	// retries, the next one gets through on its second try.
	h.shards.failPuts.Store(int32(fastOptions().WriteAttempts) + 1)
	h.detect(t, c)
	h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
	h.assertConverged(t, "c1", map[string]any{"name": "Ada L", "email": "a@y", "score": float64(2)})
	if n := len(h.external.allWrites()); n != 1 {
		t.Errorf("%d external writes; the retry must not write the side that already holds the result", n)
	}
	atts := h.attempts(t, c.ID)
	if got := outcomes(atts); len(got) != 2 || got[0] != domain.OutcomeAbandoned || got[1] != domain.OutcomeApplied {
		t.Fatalf("attempts %v; want abandoned (shard store down) then applied", got)
	}
	if atts[0].WrittenHashes[domain.SideExternal] == "" {
		t.Errorf("the abandoned attempt does not record its external write: %+v", atts[0].WrittenHashes)
	}
}

func TestResolver_TransientReadError_AbandonsAndRetries(t *testing.T) {
	h := newHarness(t)
	h.run(t, h.resolver(t, fastOptions()))
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyExternalWins}))
	h.shards.failGets.Store(2)
	h.detect(t, c)
	h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
	h.assertConverged(t, "c1", extRec)
	atts := h.attempts(t, c.ID)
	got := outcomes(atts)
	if len(got) != 3 || got[0] != domain.OutcomeAbandoned || got[1] != domain.OutcomeAbandoned || got[2] != domain.OutcomeApplied {
		t.Errorf("attempts %v; want two abandoned (shard store down) then applied", got)
	}
}

func TestResolver_ExternalSideUnreadable_RetriesThenFails(t *testing.T) {
	h := newHarness(t)
	h.run(t, h.resolver(t, fastOptions()))
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyExternalWins}))
	// Two failed reads are absorbed by the retries.
	h.external.configure(func(f *fakeExternal) { f.failReads = 2 })
	h.detect(t, c)
	h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
	h.assertConverged(t, "c1", extRec)

	c2 := h.seed(t, bothEdited("c2", domain.ConflictPolicy{Strategy: domain.StrategyExternalWins}))
	h.external.configure(func(f *fakeExternal) { f.failReads = 1000 })
	h.detect(t, c2)
	failed := h.waitStatus(t, c2.ID, domain.ConflictStatusFailed)
	if !strings.Contains(failed.StatusReason, "read the external side") {
		t.Errorf("failed reason %q does not say the external side could not be read", failed.StatusReason)
	}
	if n := int(h.shards.puts.Load()); n != 1 {
		t.Errorf("%d writes to Castiel; want only the first conflict's", n)
	}
}

func TestResolver_TakesOverAClaimWhoseLeaseRanOut(t *testing.T) {
	h := newHarness(t)
	r := h.resolver(t, fastOptions())
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyExternalWins}))
	claim := func(age time.Duration) {
		t.Helper()
		at := time.Now().UTC().Add(-age)
		doc := resolutionDoc{ConflictResolution: domain.ConflictResolution{
			ID: c.ID, TenantID: testTenant, ConflictID: c.ID, Strategy: domain.StrategyExternalWins, Actor: domain.ActorSystem,
			Outcome: domain.OutcomeInProgress, CreatedAt: at, UpdatedAt: at,
		}, Generation: 1, ClaimedBy: "a-resolver-that-died"}
		if _, err := h.resolutions.Upsert(context.Background(), doc); err != nil {
			t.Fatal(err)
		}
	}

	claim(time.Second)
	if err := r.HandleDetected(detectedMessage(t, c)); !errors.Is(err, errBusy) {
		t.Fatalf("with a live claim held elsewhere: %v; want errBusy (retried later)", err)
	}
	claim(2 * DefaultClaimLease)
	if err := r.HandleDetected(detectedMessage(t, c)); err != nil {
		t.Fatalf("after the lease ran out: %v", err)
	}
	h.assertConverged(t, "c1", extRec)
	if got := outcomes(h.attempts(t, c.ID)); len(got) != 2 || got[0] != domain.OutcomeAbandoned || got[1] != domain.OutcomeApplied {
		t.Errorf("attempts %v; want the dead claim abandoned, then applied", got)
	}
}

func TestResolver_CompletesAResolutionThatStoppedBeforeItsEvent(t *testing.T) {
	h := newHarness(t)
	r := h.resolver(t, fastOptions())
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyExternalWins}))
	at := time.Now().UTC().Add(-time.Minute)
	doc := resolutionDoc{ConflictResolution: domain.ConflictResolution{
		ID: c.ID, TenantID: testTenant, ConflictID: c.ID, Strategy: domain.StrategyExternalWins, Actor: domain.ActorSystem,
		Outcome: domain.OutcomeApplied, ResolvedAt: at, CreatedAt: at, UpdatedAt: at,
	}, Generation: 1, ClaimedBy: "a-resolver-that-died"}
	if _, err := h.resolutions.Upsert(context.Background(), doc); err != nil {
		t.Fatal(err)
	}
	if err := r.HandleDetected(detectedMessage(t, c)); err != nil {
		t.Fatal(err)
	}
	if got := h.conflict(t, c.ID); got.Status != domain.ConflictStatusResolved {
		t.Errorf("conflict is %s; want resolved (completed from the record)", got.Status)
	}
	if n := len(h.events.ofType(domain.TypeConflictResolved)); n != 1 {
		t.Errorf("%d conflict.resolved events; want the missing one published", n)
	}
	if n := len(h.external.allWrites()) + int(h.shards.puts.Load()); n != 0 {
		t.Errorf("%d writes; completing a resolution writes no side", n)
	}
}

func TestResolver_RejectsBadMessagesPermanently(t *testing.T) {
	h := newHarness(t)
	r := h.resolver(t, fastOptions())
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyExternalWins}))

	unknown := c
	unknown.ID = "cfl_unknown"
	undecodable := message.NewMessage("m1", []byte("{not json"))
	undecodable.Metadata.Set(messaging.MetaType, domain.TypeConflictDetected)
	invalid := detectedMessage(t, c)
	invalid.Payload = []byte(`{"conflictId":"x"}`)
	otherTenant := c
	otherTenant.TenantID = "tenant-b"
	tests := []struct {
		name string
		msg  *message.Message
	}{
		{"unknown conflict", detectedMessage(t, unknown)},
		{"conflict of another tenant", detectedMessage(t, otherTenant)},
		{"undecodable payload", undecodable},
		{"invalid payload", invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := r.HandleDetected(tt.msg); !messaging.IsPermanent(err) {
				t.Errorf("err = %v; want a permanent error (poison queue)", err)
			}
		})
	}
	t.Run("unknown sync task", func(t *testing.T) {
		if err := h.tasks.Delete(context.Background(), testTenant, testTask, ""); err != nil {
			t.Fatal(err)
		}
		if err := r.HandleDetected(detectedMessage(t, c)); !messaging.IsPermanent(err) {
			t.Errorf("err = %v; want a permanent error", err)
		}
	})
}

func TestResolver_RecordsAManualDecisionThatCannotApply(t *testing.T) {
	h := newHarness(t)
	r := h.resolver(t, fastOptions())
	c := h.seed(t, bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyManual}))
	m := resolveMessage(t, c, "user-1", "", map[string]any{"name": "Ada"})
	if err := r.HandleResolve(m); err != nil {
		t.Fatalf("a decision that cannot apply is recorded and acked; got %v", err)
	}
	rec, _, err := h.resolutions.Get(context.Background(), testTenant, lostDecisionID(c.ID, m.UUID))
	if err != nil {
		t.Fatalf("no record of the rejected decision: %v", err)
	}
	if rec.Outcome != domain.OutcomeFailed || !strings.Contains(rec.Reason, `"email" differs`) {
		t.Errorf("record %+v; want failed naming the undecided field", rec.ConflictResolution)
	}
	if got := h.conflict(t, c.ID); got.Status != domain.ConflictStatusPending {
		t.Errorf("conflict is %s; a rejected decision leaves it pending", got.Status)
	}
}

func TestResolver_PullOnlyTaskNeverWritesToTheExternalSystem(t *testing.T) {
	h := newHarness(t)
	h.run(t, h.resolver(t, fastOptions()))
	rec := bothEdited("c1", domain.ConflictPolicy{Strategy: domain.StrategyInternalWins})
	rec.direction = domain.DirectionPull
	c := h.seed(t, rec)
	h.detect(t, c)
	h.waitStatus(t, c.ID, domain.ConflictStatusResolved)
	if n := len(h.external.allWrites()); n != 0 {
		t.Errorf("%d writes to the external system of a pull-only task", n)
	}
	atts := h.attempts(t, c.ID)
	if len(atts) != 1 || !strings.Contains(atts[0].Reason, "pull only") {
		t.Errorf("attempts %+v; want the record to say the external side was left alone", atts)
	}
	state, _, _ := h.states.Get(context.Background(), testTask, domain.RecordStateID(testTask, "c1"))
	ext, in := h.sidesNow(t, "c1")
	if d := domain.Classify(domain.DirectionPull, &state, ext, in); d.Action != domain.ActionUnchanged {
		t.Errorf("the next sync run would %s; want no change", d.Action)
	}
}

func TestNew_RefusesMissingDependenciesAndBadOptions(t *testing.T) {
	if _, err := New(Deps{}, Options{}); err == nil || !strings.Contains(err.Error(), "Store") {
		t.Errorf("New without dependencies: %v; want an error naming them", err)
	}
	h := newHarness(t)
	deps := Deps{Store: h.db, Shards: h.shards, External: h.external, Writer: h.external, Events: h.events}
	if _, err := New(deps, Options{}); err != nil {
		t.Errorf("New with the default options: %v", err)
	}
	if _, err := New(deps, Options{ClaimLease: time.Second, WriteMaxElapsed: time.Second}); err == nil || !strings.Contains(err.Error(), "WriteMaxElapsed") {
		t.Errorf("write retries longer than the lease allows: %v; want an error naming WriteMaxElapsed", err)
	}
}
