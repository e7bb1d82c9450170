package syncrun_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/syncrun"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

func internalRecord(name, email string) map[string]any {
	return map[string]any{"fullName": name, "contact": map[string]any{"email": email}, "source": "fake-crm"}
}

func TestRun_PushSendsCastielChangesToTheAPI(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10, Auth: fakeapi.AuthAPIKeyHeader}}})
	hs.srv.SeedN(entity, 5) // the API's own records: a push task does not import them
	hs.task("st-push", domain.DirectionPush, domain.ModeIncremental)
	hs.putInternal("p-1", internalRecord("Pushed One", "p1@example.com"))
	hs.putInternal("p-2", internalRecord("Pushed Two", "p2@example.com"))
	hs.putInternal("p-3", internalRecord("Pushed Three", "p3@example.com"))

	e := hs.run("run-1", "st-push")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Added != 3 {
		t.Errorf("stats %+v, want 3 added", s)
	}
	for _, id := range []string{"p-1", "p-2", "p-3"} {
		r, ok := hs.srv.Get(entity, id)
		if !ok || r.Deleted {
			t.Fatalf("%s was not created in the API", id)
		}
		if hs.srv.Writes(entity, id) != 1 {
			t.Errorf("%s was written %d times, want once", id, hs.srv.Writes(entity, id))
		}
	}
	if r, _ := hs.srv.Get(entity, "p-2"); r.Name != "Pushed Two" || r.Email != "p2@example.com" {
		t.Errorf("the API holds %+v, want the Castiel record mapped back (name, email)", r)
	}
	if _, ok := hs.shardRecord("c0000001"); ok {
		t.Error("a push-only task imported an external record into Castiel")
	}

	// Nothing changed: a second run writes nothing, even though it reads back
	// the records it created (their updated_at is past the checkpoint).
	e = hs.run("run-2", "st-push")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Added+s.Updated+s.Deleted != 0 {
		t.Errorf("an idle run changed something: %+v", s)
	}

	hs.putInternal("p-1", internalRecord("Pushed One v2", "p1@example.com"))
	if err := hs.shards.Local.Delete(context.Background(), tenant, entity, "p-2"); err != nil {
		t.Fatal(err)
	}
	e = hs.run("run-3", "st-push")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Updated != 1 || s.Deleted != 1 {
		t.Errorf("stats %+v, want 1 updated and 1 deleted", s)
	}
	if r, _ := hs.srv.Get(entity, "p-1"); r.Name != "Pushed One v2" {
		t.Errorf("p-1 in the API is named %q, want the Castiel edit", r.Name)
	}
	if r, _ := hs.srv.Get(entity, "p-2"); !r.Deleted {
		t.Error("p-2 deleted in Castiel is still live in the API")
	}
	if hs.srv.Writes(entity, "p-3") != 1 {
		t.Errorf("the untouched p-3 was written %d times, want once", hs.srv.Writes(entity, "p-3"))
	}
	if n := hs.audit.count(syncrun.AuditWriteBack); n != 5 {
		t.Errorf("%d write-back audit events, want 5 (3 creates, 1 update, 1 delete)", n)
	}
}

// An API that gives a created record an id of its own: the Castiel record
// moves to that id, so later runs pair the two sides instead of creating the
// record again; it is created once.
func TestRun_PushToAnAPIThatAssignsItsOwnIDsMovesTheCastielRecord(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}, AssignIDs: true}})
	hs.task("st-ids", domain.DirectionBidirectional, domain.ModeIncremental)
	hs.putInternal("local-1", internalRecord("Local One", "one@example.com"))

	mustStatus(t, hs.run("run-1", "st-ids"), domain.ExecCompleted)
	recs := hs.srv.Records(entity)
	if len(recs) != 1 || recs[0].ID == "local-1" || recs[0].Name != "Local One" {
		t.Fatalf("the API holds %+v, want the record created once under an id of its own", recs)
	}
	apiID := recs[0].ID
	if _, ok := hs.shardRecord("local-1"); ok {
		t.Error("the Castiel record is still under its old key")
	}
	if in, ok := hs.shardRecord(apiID); !ok || in["fullName"] != "Local One" {
		t.Errorf("Castiel holds %v under the API's id %s, want the record moved there", in, apiID)
	}

	e := hs.run("run-2", "st-ids")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Added+s.Updated+s.Deleted+s.Conflicts != 0 {
		t.Errorf("the next run changed something: %+v, want the two sides paired", s)
	}
	if n := len(hs.srv.Records(entity)); n != 1 || hs.srv.Writes(entity, apiID) != 1 {
		t.Errorf("the API holds %d records, %s written %d times; want one, written once", n, apiID, hs.srv.Writes(entity, apiID))
	}
}

// A Castiel record the shard store cannot read back (its data is not an
// object) fails alone: it is recorded, and the walk pushes the others.
func TestRun_AnUnreadableCastielRecordIsRecordedAndTheWalkGoesOn(t *testing.T) {
	hs := newHarness(t, harnessConfig{})
	hs.task("st-push", domain.DirectionPush, domain.ModeIncremental)
	hs.putInternal("good", internalRecord("Good", "good@example.com"))
	c, err := hs.db.Container(store.LocalShardsContainer)
	if err != nil {
		t.Fatal(err)
	}
	pk, id := shards.LocalPartition(tenant, entity), shards.LocalID(tenant, entity, "broken")
	body := fmt.Sprintf(`{"id":%q,"partition":%q,"tenantId":%q,"entity":%q,"recordKey":"broken","data":5,"dataHash":"x","modifiedAt":"2026-01-02T03:04:05Z","ttl":-1}`,
		id, pk, tenant, entity)
	if _, err := c.Create(context.Background(), pk, id, []byte(body)); err != nil {
		t.Fatal(err)
	}

	e := hs.run("run-1", "st-push")
	mustStatus(t, e, domain.ExecCompletedWithErrors)
	if s := stats(e); s.Added != 1 || s.Failed != 1 {
		t.Errorf("stats %+v, want the good record added and the broken one failed", s)
	}
	if len(e.Sync.Errors) != 1 || e.Sync.Errors[0].RecordKey != "broken" {
		t.Errorf("recorded errors %+v, want the broken record's", e.Sync.Errors)
	}
	if _, ok := hs.srv.Get(entity, "good"); !ok {
		t.Error("the readable record was not pushed")
	}
}

func TestRun_PushThatTheAPIRefusesIsRecordedAndSkipped(t *testing.T) {
	hs := newHarness(t, harnessConfig{})
	hs.task("st-push", domain.DirectionPush, domain.ModeIncremental)
	hs.putInternal("good", internalRecord("Good", "good@example.com"))
	hs.putInternal("bad", internalRecord("Bad", "not-an-address")) // the API answers 422

	e := hs.run("run-1", "st-push")
	mustStatus(t, e, domain.ExecCompletedWithErrors)
	if s := stats(e); s.Added != 1 || s.Failed != 1 {
		t.Errorf("stats %+v, want 1 added and 1 failed", s)
	}
	if len(e.Sync.Errors) != 1 || e.Sync.Errors[0].RecordKey != "bad" || e.Sync.Errors[0].Action != domain.ActionPushAdd {
		t.Errorf("recorded errors %+v, want the refused create of bad", e.Sync.Errors)
	}
	if _, ok := hs.srv.Get(entity, "good"); !ok {
		t.Error("the valid record was not pushed")
	}
	// The failed record is tried again next run (its state was not written).
	e = hs.run("run-2", "st-push")
	if stats(e).Failed != 1 {
		t.Errorf("the refused record was not retried on the next run: %+v", stats(e))
	}
}

// Both sides edited one record since the last sync: the run stores a conflict
// with the three versions, announces it, and leaves the record alone on both
// sides, while every other change goes through.
func TestRun_BidirectionalConflictIsStoredAnnouncedAndLeftAlone(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	recs := hs.srv.SeedN(entity, 15)
	hs.task("st-bi", domain.DirectionBidirectional, domain.ModeIncremental)
	hs.putInternal("local-1", internalRecord("Local One", "local1@example.com"))
	e := hs.run("run-1", "st-bi")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Added != 16 {
		t.Fatalf("first run stats %+v, want 15 pulled and 1 pushed", s)
	}
	base, _ := hs.shardRecord(recs[0].ID)

	// Concurrent edits of record 1; one-sided edits of records 2 and 3.
	hs.srv.Edit(entity, recs[0].ID, func(r *fakeapi.Record) { r.Name = "External edit" })
	hs.putInternal(recs[0].ID, withName(base, "Castiel edit"))
	hs.srv.Edit(entity, recs[1].ID, func(r *fakeapi.Record) { r.Name = "Only external" })
	rec3, _ := hs.shardRecord(recs[2].ID)
	hs.putInternal(recs[2].ID, withName(rec3, "Only Castiel"))
	writesBefore := hs.srv.Writes(entity, recs[0].ID)
	putsBefore := hs.shards.putsOf(recs[0].ID)

	e = hs.run("run-2", "st-bi")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Conflicts != 1 || s.Updated != 2 {
		t.Errorf("stats %+v, want 1 conflict and 2 updates", s)
	}
	id := domain.ConflictID("run-2", entity, recs[0].ID)
	c, _, err := hs.conflicts.Get(context.Background(), tenant, id)
	if err != nil {
		t.Fatalf("conflict %s not stored: %v", id, err)
	}
	if c.Kind != domain.ConflictUpdateUpdate || c.Status != domain.ConflictStatusPending ||
		c.External["fullName"] != "External edit" || c.Internal["fullName"] != "Castiel edit" || c.Base["fullName"] != base["fullName"] {
		t.Errorf("conflict = kind %s status %s external %v internal %v base %v; want update_update pending with the three versions",
			c.Kind, c.Status, c.External["fullName"], c.Internal["fullName"], c.Base["fullName"])
	}
	got := hs.events.ofType(domain.TypeConflictDetected)
	if len(got) != 1 || got[0].(domain.ConflictDetected).ConflictID != id || got[0].(domain.ConflictDetected).RecordKey != recs[0].ID {
		t.Errorf("conflict.detected events %+v, want one for %s", got, id)
	}
	if r, _ := hs.srv.Get(entity, recs[0].ID); r.Name != "External edit" || hs.srv.Writes(entity, recs[0].ID) != writesBefore {
		t.Error("the run wrote the conflicting record to the API")
	}
	if in, _ := hs.shardRecord(recs[0].ID); in["fullName"] != "Castiel edit" || hs.shards.putsOf(recs[0].ID) != putsBefore {
		t.Error("the run wrote the conflicting record to the shard")
	}
	if in, _ := hs.shardRecord(recs[1].ID); in["fullName"] != "Only external" {
		t.Errorf("the external-only edit did not reach Castiel: %v", in["fullName"])
	}
	if r, _ := hs.srv.Get(entity, recs[2].ID); r.Name != "Only Castiel" {
		t.Errorf("the Castiel-only edit did not reach the API: %q", r.Name)
	}

	// Until it is resolved, later runs neither raise it again nor touch it.
	e = hs.run("run-3", "st-bi")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Conflicts != 0 || s.Added+s.Updated+s.Deleted != 0 {
		t.Errorf("the run after the conflict did %+v, want nothing", s)
	}
	if n := len(hs.events.ofType(domain.TypeConflictDetected)); n != 1 {
		t.Errorf("%d conflict.detected events after a quiet run, want still 1", n)
	}
}

func withName(rec map[string]any, name string) map[string]any {
	out := map[string]any{}
	for k, v := range rec {
		out[k] = v
	}
	out["fullName"] = name
	return out
}

// The run is cancelled (a shutdown, a crash of the consumer) in the middle of
// a page; redelivering the message resumes from the saved page and no record
// is written twice on either side.
func TestRun_KilledMidwayResumesOnRedeliveryWithoutDuplicateWrites(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 20}}})
	hs.srv.SeedN(entity, 200)
	for i := range 60 {
		hs.putInternal(keyN("local", i), internalRecord("Local", "local@example.com"))
	}
	hs.task("st-kill", domain.DirectionBidirectional, domain.ModeIncremental)

	// Kill 1: after 50 records reached the shard (page 3 of the pull). Two
	// pages are in flight at once, so page 3 may write before page 2 is
	// checkpointed: one or two pages are.
	ctx, cancel := context.WithCancel(context.Background())
	hs.shards.onPut(func(n int64) {
		if n == 50 {
			cancel()
		}
	})
	if err := hs.h.Run(ctx, runCmd("run-1", "st-kill")); err == nil {
		t.Fatal("the killed run was acked; want an error so the message is redelivered")
	}
	e := hs.execution("run-1")
	if e.Status != domain.ExecRunning || e.Sync.Phase != domain.PhasePull || e.Sync.Pages < 1 || e.Sync.Pages > 2 {
		t.Fatalf("after the kill: status %s, phase %s, pages %d; want running, pull, 1 or 2 pages checkpointed", e.Status, e.Sync.Phase, e.Sync.Pages)
	}
	hs.shards.onPut(func(int64) {})

	// Kill 2: during the push walk, after 25 records reached the API.
	ctx, cancel = context.WithCancel(context.Background())
	hs.writes.after.Store(ptr(func(n int64) {
		if n == 25 {
			cancel()
		}
	}))
	if err := hs.h.Run(ctx, runCmd("run-1", "st-kill")); err == nil {
		t.Fatal("the run killed during the push was acked")
	}
	hs.writes.after.Store(ptr(func(int64) {}))

	e = hs.run("run-1", "st-kill") // the last redelivery finishes it
	mustStatus(t, e, domain.ExecCompleted)
	if e.Sync.Attempts != 3 {
		t.Errorf("attempts %d, want 3 (two kills, one completion)", e.Sync.Attempts)
	}
	for k, n := range hs.shards.allPuts() {
		if n != 1 {
			t.Errorf("record %s was written to the shard %d times", k, n)
		}
	}
	if got := len(hs.shards.allPuts()); got != 200 {
		t.Errorf("%d records written to the shard, want 200", got)
	}
	for i := range 60 {
		if n := hs.srv.Writes(entity, keyN("local", i)); n != 1 {
			t.Errorf("record %s was written to the API %d times, want once", keyN("local", i), n)
		}
	}
	// Records applied in a page that was cut short are counted when the page
	// is replayed, as unchanged (pull) or not at all (push walk): the counts
	// may fall short after a kill but never count a record twice. Two pages
	// are in flight at once, so a kill replays up to two pages of 20.
	s := stats(e)
	if s.Added+s.Unchanged > 260 || s.Added < 160 || s.Failed != 0 || s.Conflicts != 0 {
		t.Errorf("stats %+v: want no record counted twice, none failed", s)
	}
	if n := len(hs.events.ofType(domain.TypeSyncStarted)); n != 1 {
		t.Errorf("%d sync.started events, want 1 for the one run", n)
	}
}

func keyN(prefix string, i int) string {
	return prefix + "-" + string(rune('a'+i/26)) + string(rune('a'+i%26))
}

func ptr[T any](v T) *T { return &v }

// While a run holds the task's lease, another trigger of the task is
// recorded as skipped (coalesced into the running one) and acked.
func TestRun_OneRunAtATimeASecondTriggerIsSkipped(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	hs.srv.SeedN(entity, 30)
	hs.task("st-one", domain.DirectionPull, domain.ModeIncremental)
	hs.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts", Skip: 1, Delay: 700 * time.Millisecond})

	var wg sync.WaitGroup
	wg.Add(1)
	var firstErr error
	go func() {
		defer wg.Done()
		firstErr = hs.h.Run(context.Background(), runCmd("run-first", "st-one"))
	}()
	waitFor(t, "the first run to start", func() bool {
		e, _, err := hs.execs.Get(context.Background(), tenant, "run-first")
		return err == nil && e.Status == domain.ExecRunning
	})

	if err := hs.h.Run(context.Background(), runCmd("run-second", "st-one")); err != nil {
		t.Fatalf("the second trigger returned %v; want it acked as skipped", err)
	}
	second := hs.execution("run-second")
	mustStatus(t, second, domain.ExecSkipped)
	if second.Sync.CoalescedInto != "run-first" {
		t.Errorf("the skipped run names %q as the run it was coalesced into, want run-first", second.Sync.CoalescedInto)
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatalf("first run: %v", firstErr)
	}
	mustStatus(t, hs.execution("run-first"), domain.ExecCompleted)
	for k, n := range hs.shards.allPuts() {
		if n != 1 {
			t.Errorf("record %s written %d times", k, n)
		}
	}
	// The lease is released: the next trigger runs.
	mustStatus(t, hs.run("run-third", "st-one"), domain.ExecCompleted)
}

// Two workers receive triggers of the same task at the same moment: exactly
// one runs.
func TestRun_ConcurrentTriggersRunOnce(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	hs.srv.SeedN(entity, 20)
	hs.task("st-race", domain.DirectionPull, domain.ModeIncremental)
	hs.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts", Count: 1, Delay: 300 * time.Millisecond})
	ids := []string{"run-a", "run-b", "run-c", "run-d"}
	var wg sync.WaitGroup
	errs := make([]error, len(ids))
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = hs.h.Run(context.Background(), runCmd(id, "st-race"))
		}()
	}
	wg.Wait()
	completed, skipped := 0, 0
	for i, id := range ids {
		if errs[i] != nil {
			t.Fatalf("%s: %v", id, errs[i])
		}
		switch hs.execution(id).Status {
		case domain.ExecCompleted:
			completed++
		case domain.ExecSkipped:
			skipped++
		}
	}
	if completed < 1 || completed+skipped != len(ids) {
		t.Errorf("%d completed and %d skipped of %d simultaneous triggers", completed, skipped, len(ids))
	}
	for k, n := range hs.shards.allPuts() {
		if n != 1 {
			t.Errorf("record %s written %d times: two runs overlapped", k, n)
		}
	}
}

func waitFor(t testing.TB, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A worker that died holding a task's lease stops renewing it; once it has
// expired the next run takes it over. While it is live, a redelivery of the
// very run it belongs to is handed back (transient), not skipped.
func TestRun_ExpiredLeaseOfADeadWorkerIsTakenOver(t *testing.T) {
	hs := newHarness(t, harnessConfig{})
	hs.srv.SeedN(entity, 5)
	hs.task("st-lease", domain.DirectionPull, domain.ModeIncremental)
	c, err := hs.db.Container("integration_sync_state")
	if err != nil {
		t.Fatal(err)
	}
	putLease := func(execID string, expires time.Time) {
		body := fmt.Sprintf(`{"id":%q,"syncTaskId":"st-lease","tenantId":%q,"kind":"lease","executionId":%q,"owner":"dead-worker","expiresAt":%q}`,
			domain.SyncLeaseID("st-lease"), tenant, execID, expires.UTC().Format(time.RFC3339Nano))
		if _, err := c.Upsert(context.Background(), "st-lease", domain.SyncLeaseID("st-lease"), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}

	putLease("run-1", time.Now().Add(time.Minute))
	if err := hs.h.Run(context.Background(), runCmd("run-1", "st-lease")); err == nil {
		t.Fatal("a redelivery of a run whose lease is live elsewhere was acked; want it handed back until the lease expires")
	}
	if e := hs.execution("run-1"); e.Status.Terminal() {
		t.Fatalf("the run was ended (%s) while another worker may still run it", e.Status)
	}

	putLease("run-1", time.Now().Add(-time.Second))
	mustStatus(t, hs.run("run-1", "st-lease"), domain.ExecCompleted)
	if len(hs.shardKeys()) != 5 {
		t.Error("the run that took over the expired lease did not sync")
	}
	if _, err := c.Read(context.Background(), "st-lease", domain.SyncLeaseID("st-lease")); err == nil {
		t.Error("the lease was not released at the end of the run")
	}
}

// The external system deleted a record Castiel edited since the last sync:
// that is a conflict (delete against edit), not a silent delete.
func TestRun_ExternalDeleteOfACastielEditIsAConflict(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	recs := hs.srv.SeedN(entity, 5)
	hs.task("st-de", domain.DirectionBidirectional, domain.ModeIncremental)
	mustStatus(t, hs.run("run-1", "st-de"), domain.ExecCompleted)

	rec, _ := hs.shardRecord(recs[1].ID)
	hs.putInternal(recs[1].ID, withName(rec, "Edited in Castiel"))
	hs.srv.Remove(entity, recs[1].ID)
	e := hs.run("run-2", "st-de")
	mustStatus(t, e, domain.ExecCompleted)
	c, _, err := hs.conflicts.Get(context.Background(), tenant, domain.ConflictID("run-2", entity, recs[1].ID))
	if err != nil {
		t.Fatalf("no conflict stored for the delete against the edit (stats %+v): %v", stats(e), err)
	}
	if c.Kind != domain.ConflictDeleteUpdate || c.External != nil || c.Internal["fullName"] != "Edited in Castiel" {
		t.Errorf("conflict kind %s external %v internal %v; want delete_update with no external version", c.Kind, c.External, c.Internal)
	}
	if got, ok := hs.shardRecord(recs[1].ID); !ok || got["fullName"] != "Edited in Castiel" {
		t.Error("the Castiel edit was deleted or overwritten")
	}
	if r, _ := hs.srv.Get(entity, recs[1].ID); !r.Deleted {
		t.Error("the record was pushed back to the API")
	}
}

// A run whose lease this very worker left behind (its release failed, say while
// the store was down) resumes on redelivery at once, without waiting for the
// lease to expire; another worker's live lease still holds it back.
func TestRun_OwnLeftBehindLeaseIsTakenBackAtOnce(t *testing.T) {
	hs := newHarness(t, harnessConfig{})
	hs.srv.SeedN(entity, 5)
	hs.task("st-own", domain.DirectionPull, domain.ModeIncremental)
	c, err := hs.db.Container("integration_sync_state")
	if err != nil {
		t.Fatal(err)
	}
	body := fmt.Sprintf(`{"id":%q,"syncTaskId":"st-own","tenantId":%q,"kind":"lease","executionId":"run-1","owner":%q,"expiresAt":%q}`,
		domain.SyncLeaseID("st-own"), tenant, syncrun.LeaseOwner(hs.h), time.Now().Add(time.Hour).UTC().Format(time.RFC3339Nano))
	if _, err := c.Upsert(context.Background(), "st-own", domain.SyncLeaseID("st-own"), []byte(body)); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, hs.run("run-1", "st-own"), domain.ExecCompleted)
	if len(hs.shardKeys()) != 5 {
		t.Error("the run that took back its own lease did not sync")
	}
}
