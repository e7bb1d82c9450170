package syncrun_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/syncrun"
)

// The whole pull against an API that misbehaves the way real ones do: a 429
// burst with Retry-After, a page that answers 500 once, and an OAuth2 access
// token that expires in the middle of the run.
func TestRun_FullPullCopiesEveryRecordThroughRateLimitsErrorsAndTokenExpiry(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{
		Auth: fakeapi.AuthOAuth2RefreshToken, PageSize: 10,
	}}})
	recs := hs.srv.SeedN(entity, 95)
	hs.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts", Skip: 2, Count: 3, Status: http.StatusTooManyRequests, RetryAfter: "1"})
	hs.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts", Skip: 6, Count: 1, Status: http.StatusInternalServerError})
	hs.shards.onPut(func(n int64) {
		if n == 50 {
			hs.srv.ExpireTokens()
		}
	})
	hs.task("st-pull", domain.DirectionPull, domain.ModeIncremental)

	e := hs.run("run-1", "st-pull")

	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Added != 95 || s.Failed != 0 || s.Conflicts != 0 {
		t.Errorf("stats %+v, want 95 added and nothing else", s)
	}
	p := e.Sync
	if p.Pages != 10 || p.Read != 95 {
		t.Errorf("pages %d, read %d; want 10 pages and 95 records", p.Pages, p.Read)
	}
	if p.Throttled < 3 || p.Retries < 4 || p.RateLimitWaits < 3 || p.TokenRefreshes < 2 {
		t.Errorf("the execution does not show the API's trouble: throttled %d, retries %d, rate-limit waits %d, token refreshes %d",
			p.Throttled, p.Retries, p.RateLimitWaits, p.TokenRefreshes)
	}
	if hs.srv.Stats().Unauthorized == 0 {
		t.Error("the expired token was never presented: the test did not exercise the renewal on 401")
	}
	if p.APICalls < 10+3+1 {
		t.Errorf("apiCalls %d, want at least one per page plus the failed ones", p.APICalls)
	}
	for _, r := range recs {
		got, ok := hs.shardRecord(r.ID)
		if !ok {
			t.Fatalf("record %s is not in the shard", r.ID)
		}
		if domain.ContentHash(got) != domain.ContentHash(mapped(r)) {
			t.Fatalf("record %s in the shard is %v, want the mapped external record %v", r.ID, got, mapped(r))
		}
		if n := hs.shards.putsOf(r.ID); n != 1 {
			t.Errorf("record %s was written to the shard %d times, want once", r.ID, n)
		}
	}
	last := recs[len(recs)-1]
	if got := hs.storedTask("st-pull").Checkpoint.Cursor; got != domain.FormatTime(last.UpdatedAt) {
		t.Errorf("task checkpoint %q, want the newest updated_at %q", got, domain.FormatTime(last.UpdatedAt))
	}
	if n := len(hs.events.ofType(domain.TypeSyncStarted)); n != 1 {
		t.Errorf("%d sync.started events, want 1", n)
	}
	done := hs.events.ofType(domain.TypeSyncCompleted)
	if len(done) != 1 || done[0].(domain.SyncCompleted).Stats.Added != 95 {
		t.Errorf("sync.completed events %+v, want one with 95 added", done)
	}
	// The renewed token is back in Secret Management and its expiry on the connection.
	b, err := hs.secrets.Get(context.Background(), tenant, hs.credRef)
	if err != nil {
		t.Fatal(err)
	}
	cred, _ := connector.DecodeCredential(b)
	if !hs.srv.ValidRefreshToken(cred.RefreshToken) {
		t.Error("the rotated refresh token was not written back to Secret Management")
	}
	conn, _, _ := hs.conns.Get(context.Background(), integration, integration)
	if conn.TokenExpiresAt == nil || conn.TokenExpiresAt.Before(time.Now()) {
		t.Errorf("connection tokenExpiresAt = %v, want the renewed token's future expiry", conn.TokenExpiresAt)
	}
	if n := hs.audit.count(syncrun.AuditCredentialUse); n != 1 {
		t.Errorf("%d credential-use audit events, want 1 for the run", n)
	}
}

func TestRun_IncrementalPullReadsOnlyChangesSinceTheCheckpoint(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 20}}})
	recs := hs.srv.SeedN(entity, 60)
	hs.task("st-inc", domain.DirectionPull, domain.ModeIncremental)
	mustStatus(t, hs.run("run-1", "st-inc"), domain.ExecCompleted)
	listsBefore := hs.srv.Stats().ListRequests

	for _, r := range recs[10:13] {
		hs.srv.Edit(entity, r.ID, func(r *fakeapi.Record) { r.Name += " (edited)" })
	}
	added := hs.srv.Seed(entity, fakeapi.Record{ID: "new-1", Name: "New One", Email: "new1@example.com"},
		fakeapi.Record{ID: "new-2", Name: "New Two", Email: "new2@example.com"})

	e := hs.run("run-2", "st-inc")
	mustStatus(t, e, domain.ExecCompleted)
	s := stats(e)
	if s.Added != 2 || s.Updated != 3 || s.Deleted != 0 {
		t.Errorf("stats %+v, want 2 added and 3 updated", s)
	}
	// updated_since is inclusive: the record at the old checkpoint is read
	// again and found unchanged; nothing older is read.
	if e.Sync.Read > 6 || e.Sync.Since == "" {
		t.Errorf("the incremental run read %d records since %q; want only the 5 changes (and the one at the cursor)", e.Sync.Read, e.Sync.Since)
	}
	if n := hs.srv.Stats().ListRequests - listsBefore; n > 2 {
		t.Errorf("the incremental run made %d list requests, want 1 page (and the deleted endpoint)", n)
	}
	for _, r := range append(recs[10:13], added...) {
		cur, _ := hs.srv.Get(entity, r.ID)
		got, _ := hs.shardRecord(r.ID)
		if domain.ContentHash(got) != domain.ContentHash(mapped(cur)) {
			t.Errorf("record %s in the shard is %v, want %v", r.ID, got, mapped(cur))
		}
	}
	if n := hs.shards.putsOf(recs[0].ID); n != 1 {
		t.Errorf("an unchanged record was written %d times, want once (the first run)", n)
	}
}

func TestRun_IncrementalPullDeletesWhatTheDeletedEndpointReports(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	recs := hs.srv.SeedN(entity, 25)
	hs.task("st-del", domain.DirectionPull, domain.ModeIncremental)
	mustStatus(t, hs.run("run-1", "st-del"), domain.ExecCompleted)

	hs.srv.Remove(entity, recs[4].ID)
	hs.srv.Remove(entity, recs[20].ID)
	e := hs.run("run-2", "st-del")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Deleted != 2 {
		t.Errorf("stats %+v, want 2 deleted", s)
	}
	for _, r := range []fakeapi.Record{recs[4], recs[20]} {
		if _, ok := hs.shardRecord(r.ID); ok {
			t.Errorf("record %s was deleted externally but is still in the shard", r.ID)
		}
	}
	if got := len(hs.shardKeys()); got != 23 {
		t.Errorf("the shard holds %d records, want 23", got)
	}
}

func TestRun_DeletedFlagInTheListDeletesTheRecord(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}, ListDeleted: true}})
	recs := hs.srv.SeedN(entity, 12)
	hs.task("st-flag", domain.DirectionPull, domain.ModeIncremental)
	mustStatus(t, hs.run("run-1", "st-flag"), domain.ExecCompleted)
	hs.srv.Remove(entity, recs[3].ID)

	e := hs.run("run-2", "st-flag")
	mustStatus(t, e, domain.ExecCompleted)
	if _, ok := hs.shardRecord(recs[3].ID); ok || stats(e).Deleted != 1 {
		t.Errorf("a record listed with deleted=true is still in the shard (stats %+v)", stats(e))
	}
}

// Full refresh: what a completed read did not list was deleted; a read that
// failed half way deletes nothing.
func TestRun_FullRefreshDeletesUnseenRecordsOnlyAfterACompletedRead(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	recs := hs.srv.SeedN(entity, 30)
	hs.task("st-full", domain.DirectionPull, domain.ModeFullRefresh)
	mustStatus(t, hs.run("run-1", "st-full"), domain.ExecCompleted)

	hs.srv.Remove(entity, recs[2].ID)
	hs.srv.Remove(entity, recs[27].ID)
	// The second page is refused for good: the run fails before reading everything.
	hs.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts", Skip: 1, Count: 1, Status: http.StatusForbidden})
	e := hs.run("run-2", "st-full")
	mustStatus(t, e, domain.ExecFailed)
	if e.ErrorClass != "external_api" {
		t.Errorf("errorClass %q, want external_api", e.ErrorClass)
	}
	if got := len(hs.shardKeys()); got != 30 {
		t.Fatalf("after a failed full read the shard holds %d records, want all 30 (nothing deleted)", got)
	}
	if n := len(hs.events.ofType(domain.TypeSyncFailed)); n != 1 {
		t.Errorf("%d sync.failed events, want 1", n)
	}

	e = hs.run("run-3", "st-full")
	mustStatus(t, e, domain.ExecCompleted)
	if s := stats(e); s.Deleted != 2 || s.Unchanged != 28 || s.Added != 0 {
		t.Errorf("stats %+v, want 2 deleted and 28 unchanged", s)
	}
	keys := hs.shardKeys()
	if len(keys) != 28 || slices.Contains(keys, recs[2].ID) || slices.Contains(keys, recs[27].ID) {
		t.Errorf("the shard holds %d records (%v...), want 28 without the two removed", len(keys), keys[:3])
	}
	if n := hs.shards.putsOf(recs[5].ID); n != 1 {
		t.Errorf("an unchanged record was rewritten by the full refresh (%d puts)", n)
	}
}

// A record that cannot be synced is counted and listed; the others go on.
func TestRun_RecordsThatFailAreSkippedAndTheRunCompletesWithErrors(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	hs.srv.Seed(entity,
		fakeapi.Record{ID: "ok-1", Name: "12", Email: "a@example.com"},
		fakeapi.Record{ID: "bad-1", Name: "not a number", Email: "b@example.com"},
		fakeapi.Record{ID: "ok-2", Name: "7.5", Email: "c@example.com"},
	)
	hs.task("st-err", domain.DirectionPull, domain.ModeIncremental, func(t *domain.SyncTask) {
		t.Mapping = []domain.FieldMapping{{Source: "name", Target: "score", Convert: domain.ConvertNumber}}
	})
	e := hs.run("run-1", "st-err")
	mustStatus(t, e, domain.ExecCompletedWithErrors)
	if s := stats(e); s.Added != 2 || s.Failed != 1 {
		t.Errorf("stats %+v, want 2 added and 1 failed", s)
	}
	if len(e.Sync.Errors) != 1 || e.Sync.Errors[0].RecordKey != "bad-1" {
		t.Fatalf("recorded errors %+v, want one for bad-1", e.Sync.Errors)
	}
	if _, ok := hs.shardRecord("bad-1"); ok {
		t.Error("the record that failed to map reached the shard")
	}
	if got := hs.events.ofType(domain.TypeSyncCompleted); len(got) != 1 || got[0].(domain.SyncCompleted).Status != domain.ExecCompletedWithErrors {
		t.Errorf("sync.completed %+v, want status completed_with_errors", got)
	}
}

// A run whose integration was deleted fails for good with a clear reason.
func TestRun_MissingTaskOrIntegrationFailsTheRunForGood(t *testing.T) {
	hs := newHarness(t, harnessConfig{})
	e := hs.run("run-x", "st-missing")
	mustStatus(t, e, domain.ExecFailed)

	hs.task("st-orphan", domain.DirectionPull, domain.ModeIncremental, func(t *domain.SyncTask) { t.IntegrationID = "int-gone" })
	e = hs.run("run-y", "st-orphan")
	mustStatus(t, e, domain.ExecFailed)
	if e.ErrorClass != "configuration" {
		t.Errorf("errorClass %q, want configuration", e.ErrorClass)
	}
}

// A transient failure of our own dependencies is not a failed run: the
// message comes back and the run continues from its checkpoint.
func TestRun_APIDownIsTransientAndTheRunResumesLater(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{PageSize: 10}}})
	hs.srv.SeedN(entity, 30)
	hs.task("st-down", domain.DirectionPull, domain.ModeIncremental)
	// Page 2 keeps failing with 503 past the connector's retries.
	hs.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts", Skip: 1, Count: 20, Status: http.StatusBadGateway})

	err := hs.h.Run(context.Background(), runCmd("run-1", "st-down"))
	if err == nil {
		t.Fatal("the handler acked a run whose API was down; want a transient error so the message comes back")
	}
	e := hs.execution("run-1")
	if e.Status != domain.ExecRunning || e.Sync.PageToken == "" || e.Sync.LastTransientFail == "" {
		t.Fatalf("after the transient failure: status %s, page token %q, last error %q; want running with the checkpoint of page 1",
			e.Status, e.Sync.PageToken, e.Sync.LastTransientFail)
	}
	for range 20 {
		if err := hs.h.Run(context.Background(), runCmd("run-1", "st-down")); err == nil {
			break
		}
	}
	e = hs.execution("run-1")
	mustStatus(t, e, domain.ExecCompleted)
	if got := len(hs.shardKeys()); got != 30 {
		t.Errorf("the shard holds %d records after the resumed run, want 30", got)
	}
	for k, n := range hs.shards.allPuts() {
		if n != 1 {
			t.Errorf("record %s was written %d times", k, n)
		}
	}
	if e.Sync.Attempts < 2 {
		t.Errorf("attempts %d, want the run resumed at least once", e.Sync.Attempts)
	}
}

func TestRun_PausedTaskIsSkipped(t *testing.T) {
	hs := newHarness(t, harnessConfig{})
	hs.srv.SeedN(entity, 3)
	hs.task("st-paused", domain.DirectionPull, domain.ModeIncremental, func(t *domain.SyncTask) { t.Enabled = false })
	e := hs.run("run-1", "st-paused")
	mustStatus(t, e, domain.ExecSkipped)
	if len(hs.shardKeys()) != 0 {
		t.Error("a paused task wrote to the shard")
	}
}

// Redelivering a finished run does nothing at all.
func TestRun_RedeliveryOfAFinishedRunIsAcked(t *testing.T) {
	hs := newHarness(t, harnessConfig{})
	hs.srv.SeedN(entity, 5)
	hs.task("st-re", domain.DirectionPull, domain.ModeIncremental)
	mustStatus(t, hs.run("run-1", "st-re"), domain.ExecCompleted)
	calls := hs.srv.Stats().Requests
	mustStatus(t, hs.run("run-1", "st-re"), domain.ExecCompleted)
	if hs.srv.Stats().Requests != calls || len(hs.events.ofType(domain.TypeSyncCompleted)) != 1 {
		t.Error("a redelivered finished run called the API or published again")
	}
}

// A record edited while a run pages the API can be listed on two pages in a
// row (offset pagination: the edit moves it to the end). The next page is
// planned while the one before is still being written, so this checks the
// second listing waits for the first: it is applied as an update of what the
// first wrote, never taken for a second record or a conflict.
func TestRun_ARecordListedOnTwoPagesInARowIsAppliedInOrder(t *testing.T) {
	hs := newHarness(t, harnessConfig{fake: fakeapi.Options{Mode: fakeapi.Mode{Pagination: domain.PaginationOffset, PageSize: 20}}})
	hs.srv.SeedN(entity, 40)
	hs.task("st-twice", domain.DirectionPull, domain.ModeIncremental)
	hs.writes.afterRead.Store(ptr(func(n int64) {
		if n == 1 { // page 1 is answered; page 2 is asked for next
			if _, ok := hs.srv.Edit(entity, "c0000005", func(r *fakeapi.Record) { r.Name = "Edited" }); !ok {
				t.Error("the fake has no record c0000005")
			}
		}
	}))

	e := hs.run("run-twice", "st-twice")
	mustStatus(t, e, domain.ExecCompleted)
	s := stats(e)
	if s.Updated != 1 || s.Conflicts != 0 || s.Failed != 0 {
		t.Errorf("stats %+v: want the second listing of c0000005 applied as one update, no conflict", s)
	}
	if got, ok := hs.shardRecord("c0000005"); !ok || got["fullName"] != "Edited" {
		t.Errorf("c0000005 in the shard is %v, want the edited version", got)
	}
	if n := hs.shards.putsOf("c0000005"); n != 2 {
		t.Errorf("c0000005 was written to the shard %d times, want 2 (added, then updated)", n)
	}
	if n := len(hs.events.ofType(domain.TypeConflictDetected)); n != 0 {
		t.Errorf("%d conflicts announced, want none", n)
	}
}
