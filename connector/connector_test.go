package connector_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/secrets"
)

var pagedKinds = []domain.PaginationKind{
	domain.PaginationCursor, domain.PaginationPage, domain.PaginationOffset, domain.PaginationLinkHeader,
}

func TestListPage_EveryPaginationKindReadsEachRecordOnce(t *testing.T) {
	tests := []struct {
		kind      domain.PaginationKind
		wantPages int
	}{
		{domain.PaginationCursor, 5},     // 23 records, 5 a page: the cursor ends with the 5th page
		{domain.PaginationPage, 5},       // the short 5th page ends it
		{domain.PaginationOffset, 5},     // likewise
		{domain.PaginationLinkHeader, 5}, // the 5th page has no rel="next"
		{domain.PaginationNone, 1},       // a top-level array of everything
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Pagination: tt.kind, PageSize: 5}}, fastOptions())
			want := f.srv.SeedN("contacts", 23)

			ids, pages, maxCursor := readAll(t, f.client, "contacts", connector.PageRequest{})

			sameOnce(t, ids, idsOf(want))
			if pages != tt.wantPages {
				t.Errorf("read %d pages, want %d", pages, tt.wantPages)
			}
			last := want[len(want)-1].UpdatedAt
			if got, err := domain.TimeRFC3339.Parse(maxCursor); err != nil || !got.Equal(last) {
				t.Errorf("max cursor %q, want the newest updated_at %s", maxCursor, last.Format(time.RFC3339Nano))
			}
			if s := f.client.Stats(); s.APICalls != int64(tt.wantPages) || s.Retries != 0 {
				t.Errorf("stats %+v: want %d API calls and no retries", s, tt.wantPages)
			}
		})
	}
}

func TestListPage_ExactMultipleOfPageSizeEndsWithAnEmptyPage(t *testing.T) {
	for _, kind := range []domain.PaginationKind{domain.PaginationPage, domain.PaginationOffset} {
		t.Run(string(kind), func(t *testing.T) {
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Pagination: kind, PageSize: 5}}, fastOptions())
			want := f.srv.SeedN("contacts", 10)
			ids, pages, _ := readAll(t, f.client, "contacts", connector.PageRequest{})
			sameOnce(t, ids, idsOf(want))
			if pages != 3 {
				t.Fatalf("read %d pages, want 3 (two full, one empty)", pages)
			}
		})
	}
}

func TestListPage_EveryAuthKindPresentsItsCredential(t *testing.T) {
	modes := []fakeapi.AuthMode{
		fakeapi.AuthNone, fakeapi.AuthAPIKeyHeader, fakeapi.AuthAPIKeyQuery, fakeapi.AuthBearer,
		fakeapi.AuthBasic, fakeapi.AuthOAuth2ClientCredentials, fakeapi.AuthOAuth2RefreshToken,
	}
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: mode, PageSize: 4}}, fastOptions())
			want := f.srv.SeedN("contacts", 10)

			ids, _, _ := readAll(t, f.client, "contacts", connector.PageRequest{})

			sameOnce(t, ids, idsOf(want))
			st := f.srv.Stats()
			if st.Unauthorized != 0 {
				t.Errorf("the fake answered %d requests with 401", st.Unauthorized)
			}
			wantTokens := 0
			if mode == fakeapi.AuthOAuth2ClientCredentials || mode == fakeapi.AuthOAuth2RefreshToken {
				wantTokens = 1 // the first call obtains the token, later ones reuse it
			}
			if st.TokensIssued != wantTokens {
				t.Errorf("the fake issued %d tokens, want %d", st.TokensIssued, wantTokens)
			}
			assertNoSecrets(t, "the log", f.logs.String())
		})
	}
}

func TestListPage_WrongCredentialFailsPermanentlyAfterOneRenewal(t *testing.T) {
	modes := []struct {
		mode     fakeapi.AuthMode
		wrong    connector.Credential
		requests int // data requests the fake sees
	}{
		{fakeapi.AuthAPIKeyHeader, connector.Credential{APIKey: "wrong-key-000"}, 1},
		{fakeapi.AuthBearer, connector.Credential{Token: "wrong-token-000"}, 1},
		{fakeapi.AuthBasic, connector.Credential{Username: fakeapi.Username, Password: "wrong-password"}, 1},
	}
	for _, tt := range modes {
		t.Run(string(tt.mode), func(t *testing.T) {
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: tt.mode}}, fastOptions())
			f.store.put(t, tt.wrong)
			f.srv.SeedN("contacts", 3)

			_, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{})

			e := asError(t, err)
			if !connector.IsPermanent(err) || e.Status != http.StatusUnauthorized {
				t.Fatalf("got %v; want a permanent 401 error", err)
			}
			if st := f.srv.Stats(); st.Requests != tt.requests {
				t.Fatalf("the fake saw %d requests, want %d (no retries of a rejected credential)", st.Requests, tt.requests)
			}
		})
	}

	t.Run("oauth2 endpoint keeps answering 401", func(t *testing.T) {
		f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthOAuth2ClientCredentials}}, fastOptions())
		f.srv.AddFault(fakeapi.Fault{Path: "/api/contacts", Count: 10, Status: http.StatusUnauthorized})

		_, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{})

		if e := asError(t, err); !connector.IsPermanent(err) || e.Status != http.StatusUnauthorized {
			t.Fatalf("got %v; want a permanent 401 error", err)
		}
		st := f.srv.Stats()
		if st.TokensIssued != 2 || st.ListRequests != 0 || st.Faults != 2 {
			t.Fatalf("fake stats %+v: want the first token, 2 rejected requests and exactly one renewal", st)
		}
	})
}

func TestListPage_CredentialRotatedInSecretManagementIsPickedUpOn401(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthAPIKeyHeader}}, fastOptions())
	f.store.put(t, connector.Credential{APIKey: "revoked-key-000"})
	f.srv.SeedN("contacts", 3)
	if _, err := f.creds.Current(context.Background()); err != nil { // caches the revoked key
		t.Fatal(err)
	}
	f.store.put(t, connector.Credential{APIKey: fakeapi.APIKey}) // an operator rotates it

	pg, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{})

	if err != nil || len(pg.Records) != 3 {
		t.Fatalf("got %d records, %v; want the rotated key to be read on 401", len(pg.Records), err)
	}
}

func TestListPage_SinceReadsOnlyChangesAndDeletionsAreReported(t *testing.T) {
	for _, kind := range pagedKinds {
		t.Run(string(kind), func(t *testing.T) {
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Pagination: kind, PageSize: 3}}, fastOptions())
			seeded := f.srv.SeedN("contacts", 10)
			_, _, cursor := readAll(t, f.client, "contacts", connector.PageRequest{})

			e1, _ := f.srv.Edit("contacts", seeded[2].ID, func(r *fakeapi.Record) { r.Name = "Renamed" })
			e2, _ := f.srv.Edit("contacts", seeded[5].ID, func(r *fakeapi.Record) { r.Email = "new@example.com" })
			f.srv.Remove("contacts", seeded[7].ID)

			ids, _, next := readAll(t, f.client, "contacts", connector.PageRequest{Since: cursor})

			// updated_since is inclusive: the newest record of the last run
			// comes again, then the two changes.
			sameOnce(t, ids, []string{seeded[9].ID, e1.ID, e2.ID})
			if got, _ := domain.TimeRFC3339.Parse(next); !got.Equal(e2.UpdatedAt) {
				t.Errorf("max cursor %q, want the last change's %s", next, e2.UpdatedAt.Format(time.RFC3339Nano))
			}

			del, err := f.client.ListDeletedPage(context.Background(), "contacts", connector.PageRequest{Since: cursor})
			if err != nil {
				t.Fatal(err)
			}
			if len(del.Records) != 1 || !f.client.IsDeleted("contacts", del.Records[0]) {
				t.Fatalf("deleted endpoint gave %v; want one record flagged deleted", del.Records)
			}
			if id, _ := f.client.RecordID("contacts", del.Records[0]); id != seeded[7].ID {
				t.Fatalf("deleted record is %s, want %s", id, seeded[7].ID)
			}
		})
	}
}

func TestIsDeleted_FlagInListedRecords(t *testing.T) {
	f := newFixture(t, fakeapi.Options{ListDeleted: true}, fastOptions())
	seeded := f.srv.SeedN("contacts", 4)
	f.srv.Remove("contacts", seeded[1].ID)

	pg, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{})
	if err != nil {
		t.Fatal(err)
	}
	deleted := map[string]bool{}
	for _, r := range pg.Records {
		id, _ := f.client.RecordID("contacts", r)
		deleted[id] = f.client.IsDeleted("contacts", r)
	}
	want := map[string]bool{seeded[0].ID: false, seeded[1].ID: true, seeded[2].ID: false, seeded[3].ID: false}
	for id, w := range want {
		if deleted[id] != w {
			t.Errorf("IsDeleted(%s) = %v, want %v", id, deleted[id], w)
		}
	}
}

func TestListPage_ResumesFromASavedPageTokenWithNoRecordTwice(t *testing.T) {
	for _, kind := range pagedKinds {
		t.Run(string(kind), func(t *testing.T) {
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Pagination: kind, PageSize: 4}}, fastOptions())
			want := f.srv.SeedN("contacts", 18)
			since := want[1].UpdatedAt.Format(time.RFC3339Nano)

			// A run reads two pages, saves its checkpoint, and dies.
			var got []string
			req := connector.PageRequest{Since: since}
			for range 2 {
				pg, err := f.client.ListPage(context.Background(), "contacts", req)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range pg.Records {
					id, _ := f.client.RecordID("contacts", r)
					got = append(got, id)
				}
				req.PageToken = pg.NextPageToken
			}
			saved := req

			// The redelivered run starts from the checkpoint with a new client.
			rest, _, _ := readAll(t, f.newClient(t, fastOptions()), "contacts", saved)

			sameOnce(t, append(got, rest...), idsOf(want[1:]))
		})
	}
}

func TestListPage_RefusesAPageTokenOfAnotherPaginationKind(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Pagination: domain.PaginationCursor}}, fastOptions())
	_, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{PageToken: "p:3"})
	if !errors.Is(err, connector.ErrBadPageToken) || !connector.IsPermanent(err) {
		t.Fatalf("got %v; want a permanent ErrBadPageToken", err)
	}
	if st := f.srv.Stats(); st.Requests != 0 {
		t.Fatalf("the fake saw %d requests for a bad token", st.Requests)
	}
}

func TestCredentials_TokenExpiringMidRunIsRenewedOnceForConcurrentCallers(t *testing.T) {
	for _, mode := range []fakeapi.AuthMode{fakeapi.AuthOAuth2ClientCredentials, fakeapi.AuthOAuth2RefreshToken} {
		t.Run(string(mode), func(t *testing.T) {
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: mode, PageSize: 5}}, fastOptions())
			want := f.srv.SeedN("contacts", 40)
			firstRefresh := f.store.stored(t).RefreshToken

			first, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{})
			if err != nil {
				t.Fatal(err)
			}
			before := f.store.stored(t)
			f.srv.ExpireTokens() // mid-run

			// Eight workers hit the expired token at once.
			const workers = 8
			var wg sync.WaitGroup
			errs := make([]error, workers)
			for i := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, errs[i] = f.client.ListPage(context.Background(), "contacts", connector.PageRequest{PageToken: first.NextPageToken})
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("worker %d: %v", i, err)
				}
			}
			st := f.srv.Stats()
			if st.TokensIssued != 2 {
				t.Fatalf("the fake issued %d tokens; want 2 (the first, then one renewal shared by %d callers)", st.TokensIssued, workers)
			}
			if got := f.client.Stats().TokenRefreshes; got != 2 {
				t.Errorf("client counted %d token refreshes, want 2", got)
			}
			after := f.store.stored(t)
			if after.Token == "" || after.Token == before.Token || after.ExpiresAt.IsZero() {
				t.Fatal("the renewed access token was not written back to Secret Management")
			}
			if mode == fakeapi.AuthOAuth2RefreshToken {
				if after.RefreshToken == before.RefreshToken || !f.srv.ValidRefreshToken(after.RefreshToken) {
					t.Fatal("the rotated refresh token was not written back to Secret Management")
				}
				if f.srv.ValidRefreshToken(firstRefresh) {
					t.Fatal("the original refresh token should have been used up")
				}
			}
			// The run still reads everything exactly once.
			all, _, _ := readAll(t, f.client, "contacts", connector.PageRequest{})
			sameOnce(t, all, idsOf(want))
			assertNoSecrets(t, "the log", f.logs.String())
		})
	}
}

func TestCredentials_RenewAheadOfExpiryWithoutA401(t *testing.T) {
	clock := struct {
		sync.Mutex
		now time.Time
	}{now: time.Now()}
	now := func() time.Time { clock.Lock(); defer clock.Unlock(); return clock.now }
	srv := fakeapi.New(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthOAuth2RefreshToken}, TokenTTL: time.Hour})
	srv.SeedN("contacts", 3)
	store := newMemSecrets()
	store.put(t, credentialFor(srv, fakeapi.AuthOAuth2RefreshToken))
	var notified []time.Time
	creds, err := connector.NewSecretCredentials(store, tenant, credRef, srv.Provider().Auth, connector.SecretCredentialsOptions{
		Now: now, RefreshSkew: time.Minute,
		OnRefresh: func(_ context.Context, exp time.Time) { notified = append(notified, exp) },
	})
	if err != nil {
		t.Fatal(err)
	}
	c, err := connector.New(srv.Provider(), creds, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	read := func() {
		t.Helper()
		if _, err := c.ListPage(context.Background(), "contacts", connector.PageRequest{}); err != nil {
			t.Fatal(err)
		}
	}

	read()
	clock.Lock()
	clock.now = clock.now.Add(58 * time.Minute) // still 2 minutes left: no renewal
	clock.Unlock()
	read()
	if st := srv.Stats(); st.TokensIssued != 1 {
		t.Fatalf("renewed %d times with 2 minutes left; want no renewal yet", st.TokensIssued-1)
	}
	clock.Lock()
	clock.now = clock.now.Add(90 * time.Second) // 30 s left, inside the 60 s skew
	clock.Unlock()
	read()

	st := srv.Stats()
	if st.TokensIssued != 2 || st.Unauthorized != 0 {
		t.Fatalf("fake stats %+v: want one renewal ahead of expiry and no 401", st)
	}
	if len(notified) != 2 || !store.stored(t).ExpiresAt.Equal(notified[1]) {
		t.Fatalf("OnRefresh saw %v; want both expiries, the last one stored", notified)
	}
}

func TestCredentials_RefreshTokenRotatedByAnotherProcessIsAdopted(t *testing.T) {
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	srv := fakeapi.New(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthOAuth2RefreshToken}})
	store := newMemSecrets()
	store.put(t, credentialFor(srv, fakeapi.AuthOAuth2RefreshToken))
	newCreds := func() *connector.SecretCredentials {
		c, err := connector.NewSecretCredentials(store, tenant, credRef, srv.Provider().Auth, connector.SecretCredentialsOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := context.Background()
	b := newCreds() // process B renews first...
	if _, err := b.Current(ctx); err != nil {
		t.Fatal(err)
	}
	a := newCreds() // ...process A starts later and reads B's tokens
	if _, err := a.Current(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	clock = clock.Add(59*time.Minute + 30*time.Second) // both tokens are due
	mu.Unlock()
	ca, err := a.Current(ctx) // A renews and rotates the refresh token B holds
	if err != nil {
		t.Fatal(err)
	}

	cb, err := b.Current(ctx) // B's refresh token is dead now

	if err != nil {
		t.Fatalf("process B failed instead of adopting A's tokens: %v", err)
	}
	if cb.Token != ca.Token || srv.Stats().TokensIssued != 2 {
		t.Fatalf("B did not adopt A's renewal (tokens issued: %d)", srv.Stats().TokensIssued)
	}
	if !srv.ValidRefreshToken(store.stored(t).RefreshToken) {
		t.Fatal("Secret Management holds a dead refresh token")
	}
}

func TestCredentials_TokenEndpointWantingClientSecretInTheBodyIsLearnt(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthOAuth2ClientCredentials}, ClientAuthInBody: true}, fastOptions())
	f.srv.SeedN("contacts", 2)
	ctx := context.Background()

	if _, err := f.client.ListPage(ctx, "contacts", connector.PageRequest{}); err != nil {
		t.Fatal(err)
	}
	f.srv.ExpireTokens()
	if _, err := f.client.ListPage(ctx, "contacts", connector.PageRequest{}); err != nil {
		t.Fatal(err)
	}

	if st := f.srv.Stats(); st.TokensIssued != 2 || st.TokenRequests != 3 {
		t.Fatalf("fake stats %+v: want 2 tokens in 3 token requests (basic auth refused once, then the body every time)", st)
	}
}

func TestCredentials_FailedWriteBackIsRetriedBeforeTheTokenIsUsed(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthOAuth2RefreshToken}}, fastOptions())
	f.srv.SeedN("contacts", 2)
	f.store.setFailReplace(fmt.Errorf("%w: connection refused", secrets.ErrUnavailable))

	_, err := f.creds.Current(context.Background())
	if err == nil || connector.IsPermanent(err) {
		t.Fatalf("got %v; want a transient error while Secret Management is down", err)
	}
	f.store.setFailReplace(nil)

	if _, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{}); err != nil {
		t.Fatal(err)
	}
	stored := f.store.stored(t)
	if st := f.srv.Stats(); st.TokensIssued != 1 || !f.srv.ValidRefreshToken(stored.RefreshToken) {
		t.Fatalf("fake issued %d tokens; want the first renewal's tokens kept and stored once the store is back", st.TokensIssued)
	}
}

func TestClient_429BurstHonoursRetryAfter(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{PageSize: 5}}, fastOptions())
	want := f.srv.SeedN("contacts", 12)
	f.srv.AddFault(fakeapi.Fault{Path: "/api/contacts", Skip: 1, Count: 2, Status: http.StatusTooManyRequests, RetryAfter: "1"})

	start := time.Now()
	ids, _, _ := readAll(t, f.client, "contacts", connector.PageRequest{})
	elapsed := time.Since(start)

	sameOnce(t, ids, idsOf(want))
	if elapsed < 1900*time.Millisecond {
		t.Fatalf("read in %v despite two 429s asking for 1 s each", elapsed)
	}
	s := f.client.Stats()
	if s.Throttled != 2 || s.Retries != 2 || s.RateLimitWaits != 2 || s.RateLimitWaitTime < 1900*time.Millisecond {
		t.Fatalf("stats %+v: want 2 throttled, 2 retries, 2 rate-limit waits of about 1 s", s)
	}
}

func TestClient_RetryAfterIsCapped(t *testing.T) {
	opts := fastOptions()
	opts.RetryAfterCap = 50 * time.Millisecond
	f := newFixture(t, fakeapi.Options{}, opts)
	f.srv.SeedN("contacts", 1)
	f.srv.AddFault(fakeapi.Fault{Status: http.StatusServiceUnavailable, RetryAfter: "3600"})

	start := time.Now()
	if _, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("waited %v for a Retry-After of an hour capped at 50 ms", d)
	}
}

func TestClient_QuotaHeadersPauseBeforeA429(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{PageSize: 2}}, fastOptions())
	want := f.srv.SeedN("contacts", 9) // 5 pages
	f.srv.SetQuota(3, time.Second)

	ids, _, _ := readAll(t, f.client, "contacts", connector.PageRequest{})

	sameOnce(t, ids, idsOf(want))
	if st := f.srv.Stats(); st.Throttled != 0 {
		t.Fatalf("the fake answered %d requests with 429; the client should have paused on X-RateLimit-Remaining: 0", st.Throttled)
	}
	if s := f.client.Stats(); s.RateLimitWaits < 1 {
		t.Fatalf("stats %+v: want at least one rate-limit wait", s)
	}
}

func TestClient_TokenBucketSpacesRequests(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{PageSize: 1, RateLimit: domain.RateLimit{RequestsPerSecond: 20, Burst: 2}}}, fastOptions())
	f.srv.SeedN("contacts", 7) // 7 requests: 2 from the burst, 5 at 50 ms

	start := time.Now()
	readAll(t, f.client, "contacts", connector.PageRequest{})
	elapsed := time.Since(start)

	if elapsed < 230*time.Millisecond {
		t.Fatalf("7 requests at 20/s with a burst of 2 took %v, want at least 250 ms", elapsed)
	}
	if s := f.client.Stats(); s.RateLimitWaits < 1 || s.RateLimitWaitTime <= 0 {
		t.Fatalf("stats %+v: want the waits counted", s)
	}
}

func TestClient_ServerErrorOnceIsRetried(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{PageSize: 5}}, fastOptions())
	want := f.srv.SeedN("contacts", 12)
	f.srv.AddFault(fakeapi.Fault{Path: "/api/contacts", Skip: 1, Status: http.StatusInternalServerError})

	ids, _, _ := readAll(t, f.client, "contacts", connector.PageRequest{})

	sameOnce(t, ids, idsOf(want))
	if s := f.client.Stats(); s.Retries != 1 || s.APICalls != 4 {
		t.Fatalf("stats %+v: want 1 retry and 4 API calls", s)
	}
}

func TestClient_SlowPageTimesOutAndIsRetried(t *testing.T) {
	opts := fastOptions()
	opts.Timeout = 300 * time.Millisecond
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{PageSize: 5}}, opts)
	want := f.srv.SeedN("contacts", 8)
	f.srv.AddFault(fakeapi.Fault{Path: "/api/contacts", Skip: 1, Delay: 10 * time.Second})

	start := time.Now()
	ids, _, _ := readAll(t, f.client, "contacts", connector.PageRequest{})

	sameOnce(t, ids, idsOf(want))
	if s := f.client.Stats(); s.Retries < 1 || time.Since(start) > 5*time.Second {
		t.Fatalf("stats %+v after %v: want the slow page abandoned after 300 ms and retried", s, time.Since(start))
	}
}

func TestClient_GivesUpAfterMaxRetriesWithATransientError(t *testing.T) {
	opts := fastOptions()
	opts.MaxRetries = 2
	f := newFixture(t, fakeapi.Options{}, opts)
	f.srv.AddFault(fakeapi.Fault{Count: 10, Status: http.StatusBadGateway})

	_, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{})

	if e := asError(t, err); e.Status != http.StatusBadGateway || connector.IsPermanent(err) {
		t.Fatalf("got %v; want a transient 502 error", err)
	}
	if st := f.srv.Stats(); st.Requests != 3 {
		t.Fatalf("the fake saw %d requests, want 3 (1 + MaxRetries)", st.Requests)
	}
}

func TestClient_ClientErrorsFailFast(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusUnprocessableEntity} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthAPIKeyHeader}}, fastOptions())
			f.srv.AddFault(fakeapi.Fault{Count: 5, Status: status, Body: "nope"})

			_, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{})

			e := asError(t, err)
			if !connector.IsPermanent(err) || e.Status != status || e.Op != "list contacts" {
				t.Fatalf("got %+v; want a permanent %d error for op \"list contacts\"", e, status)
			}
			if !strings.Contains(err.Error(), "nope") {
				t.Errorf("error %q does not say what the API said", err)
			}
			if st := f.srv.Stats(); st.Requests != 1 {
				t.Fatalf("the fake saw %d requests; a %d must not be retried", st.Requests, status)
			}
		})
	}
}

func TestClient_WriteBackCreatesUpdatesAndDeletes(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthBearer}}, fastOptions())
	ctx := context.Background()

	created, err := f.client.Create(ctx, "contacts", map[string]any{"name": "Ada", "email": "ada@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := f.client.RecordID("contacts", created)
	if err != nil {
		t.Fatalf("create answered %v without an id: %v", created, err)
	}
	if _, err := f.client.Update(ctx, "contacts", id, map[string]any{"name": "Ada Lovelace"}); err != nil {
		t.Fatal(err)
	}
	if r, _ := f.srv.Get("contacts", id); r.Name != "Ada Lovelace" || r.Email != "ada@example.com" {
		t.Fatalf("after update the API holds %+v", r)
	}
	if err := f.client.Delete(ctx, "contacts", id); err != nil {
		t.Fatal(err)
	}
	if r, _ := f.srv.Get("contacts", id); !r.Deleted {
		t.Fatal("the record is not deleted at the API")
	}
	if err := f.client.Delete(ctx, "contacts", id); err != nil {
		t.Fatalf("deleting an already deleted record (a redelivery) failed: %v", err)
	}

	log := f.srv.WriteLog()
	if len(log) != 3 || log[0].Method != http.MethodPost || log[1].Method != http.MethodPatch || log[2].Method != http.MethodDelete {
		t.Fatalf("write log %+v; want exactly one create, one update, one delete", log)
	}
	if n := f.srv.Writes("contacts", id); n != 3 {
		t.Fatalf("%d writes for %s, want 3", n, id)
	}

	_, err = f.client.Update(ctx, "contacts", "c-999", map[string]any{"name": "x"})
	if e := asError(t, err); e.Status != http.StatusNotFound || !connector.IsPermanent(err) {
		t.Fatalf("update of a missing record: %v; want a permanent 404", err)
	}
	_, err = f.client.Create(ctx, "contacts", map[string]any{"name": "Bad", "email": "not-an-address"})
	if e := asError(t, err); e.Status != http.StatusUnprocessableEntity || !connector.IsPermanent(err) {
		t.Fatalf("create of an invalid record: %v; want a permanent 422", err)
	}
}

func TestClient_CreateIsNotResentWhenTheAPIMayHaveAppliedIt(t *testing.T) {
	f := newFixture(t, fakeapi.Options{}, fastOptions())
	f.srv.AddFault(fakeapi.Fault{Method: http.MethodPost, Status: http.StatusInternalServerError})

	_, err := f.client.Create(context.Background(), "contacts", map[string]any{"name": "Ada"})

	if err == nil || connector.IsPermanent(err) || !strings.Contains(err.Error(), "not re-sent") {
		t.Fatalf("got %v; want a transient error saying the POST was not re-sent", err)
	}
	if st := f.srv.Stats(); st.Requests != 1 {
		t.Fatalf("the fake saw %d POSTs, want 1", st.Requests)
	}

	// A 429 means the API did not take it: that is re-sent.
	f.srv.AddFault(fakeapi.Fault{Method: http.MethodPost, Status: http.StatusTooManyRequests, RetryAfter: "0"})
	if _, err := f.client.Create(context.Background(), "contacts", map[string]any{"name": "Ada"}); err != nil {
		t.Fatal(err)
	}
	if n := len(f.srv.WriteLog()); n != 1 {
		t.Fatalf("%d records created, want 1", n)
	}
}

func TestClient_NoCredentialInErrorsOrLogs(t *testing.T) {
	modes := []fakeapi.AuthMode{fakeapi.AuthAPIKeyHeader, fakeapi.AuthAPIKeyQuery, fakeapi.AuthBearer, fakeapi.AuthBasic,
		fakeapi.AuthOAuth2ClientCredentials, fakeapi.AuthOAuth2RefreshToken}
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			opts := fastOptions()
			opts.MaxRetries = 1
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: mode}}, opts)
			f.srv.SeedN("contacts", 2)
			ctx := context.Background()
			var errs []error

			// The API echoes the credential it received in an error body.
			f.srv.AddFault(fakeapi.Fault{Status: http.StatusBadRequest, Body: "rejected", EchoCredentials: true})
			_, err := f.client.ListPage(ctx, "contacts", connector.PageRequest{})
			if err == nil || !strings.Contains(err.Error(), "[REDACTED]") {
				t.Fatalf("got %v; want the echoed credential shown as [REDACTED]", err)
			}
			errs = append(errs, err)
			// A run with a retry, a renewal and a rate limit, at debug level.
			f.srv.AddFault(fakeapi.Fault{Status: http.StatusInternalServerError})
			f.srv.AddFault(fakeapi.Fault{Status: http.StatusTooManyRequests, RetryAfter: "0"})
			f.srv.ExpireTokens()
			if _, err := f.client.ListPage(ctx, "contacts", connector.PageRequest{}); err != nil {
				t.Fatal(err)
			}
			// The API goes away (connection refused): the transport error
			// must not quote the URL with its api_key parameter.
			f.srv.Close()
			_, err = f.client.ListPage(ctx, "contacts", connector.PageRequest{})
			errs = append(errs, err)

			for _, err := range errs {
				if err == nil {
					t.Fatal("expected an error")
				}
				assertNoSecrets(t, "an error", err.Error())
				for e := err; e != nil; e = errors.Unwrap(e) {
					assertNoSecrets(t, "a wrapped error", e.Error())
				}
			}
			assertNoSecrets(t, "the log", f.logs.String())
			if !strings.Contains(f.logs.String(), "retrying") {
				t.Fatalf("the debug log shows no retry; the test did not exercise logging: %s", f.logs.String())
			}
		})
	}
}

func TestListPage_PageTokensNeverHoldTheAPIKey(t *testing.T) {
	for _, kind := range pagedKinds {
		t.Run(string(kind), func(t *testing.T) {
			// The fake copies the request's query (api_key included) into its Link.
			f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Pagination: kind, Auth: fakeapi.AuthAPIKeyQuery, PageSize: 2}}, fastOptions())
			want := f.srv.SeedN("contacts", 5)
			req := connector.PageRequest{}
			var ids []string
			for {
				pg, err := f.client.ListPage(context.Background(), "contacts", req)
				if err != nil {
					t.Fatal(err)
				}
				assertNoSecrets(t, "a page token (saved in checkpoints)", pg.NextPageToken)
				for _, r := range pg.Records {
					id, _ := f.client.RecordID("contacts", r)
					ids = append(ids, id)
				}
				if pg.NextPageToken == "" {
					break
				}
				req.PageToken = pg.NextPageToken
			}
			sameOnce(t, ids, idsOf(want))
		})
	}
}

func TestClient_RefusesANextLinkToAnotherHost(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Pagination: domain.PaginationLinkHeader, Auth: fakeapi.AuthBearer}}, fastOptions())
	_, err := f.client.ListPage(context.Background(), "contacts", connector.PageRequest{PageToken: "l:https://evil.example/steal"})
	if !connector.IsPermanent(err) || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("got %v; want a permanent refusal", err)
	}
	if st := f.srv.Stats(); st.Requests != 0 {
		t.Fatal("a request was sent")
	}
}

func TestClient_UnknownEntityAndUnsupportedOperations(t *testing.T) {
	f := newFixture(t, fakeapi.Options{}, fastOptions())
	ctx := context.Background()
	if _, err := f.client.ListPage(ctx, "tickets", connector.PageRequest{}); !errors.Is(err, connector.ErrUnknownEntity) {
		t.Fatalf("unknown entity: %v", err)
	}
	p := f.srv.Provider()
	p.Entities[0].Create, p.Entities[0].DeletedPath, p.Entities[0].CursorParam, p.Entities[0].CursorField = nil, "", "", ""
	c, err := connector.New(p, nil, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"create":  func() error { _, err := c.Create(ctx, "contacts", map[string]any{}); return err }(),
		"deleted": func() error { _, err := c.ListDeletedPage(ctx, "contacts", connector.PageRequest{}); return err }(),
		"incremental": func() error {
			_, err := c.ListPage(ctx, "contacts", connector.PageRequest{Since: "2025-01-01T00:00:00Z"})
			return err
		}(),
	} {
		if !errors.Is(err, connector.ErrUnsupported) || !connector.IsPermanent(err) {
			t.Errorf("%s: %v; want a permanent ErrUnsupported", name, err)
		}
	}
}

func TestClient_CancelledContextStopsWaiting(t *testing.T) {
	f := newFixture(t, fakeapi.Options{}, fastOptions())
	f.srv.AddFault(fakeapi.Fault{Status: http.StatusTooManyRequests, RetryAfter: "30"})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()

	start := time.Now()
	_, err := f.client.ListPage(ctx, "contacts", connector.PageRequest{})

	if !errors.Is(err, context.DeadlineExceeded) || connector.IsPermanent(err) {
		t.Fatalf("got %v; want the context's deadline, not permanent", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("the client kept waiting after its context ended")
	}
}
