package fakeapi_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
)

func TestProvider_EveryModeIsAValidDefinition(t *testing.T) {
	for _, pg := range []domain.PaginationKind{domain.PaginationCursor, domain.PaginationPage, domain.PaginationOffset, domain.PaginationLinkHeader, domain.PaginationNone} {
		for _, auth := range []fakeapi.AuthMode{fakeapi.AuthNone, fakeapi.AuthAPIKeyHeader, fakeapi.AuthAPIKeyQuery, fakeapi.AuthBearer,
			fakeapi.AuthBasic, fakeapi.AuthOAuth2ClientCredentials, fakeapi.AuthOAuth2RefreshToken} {
			p := fakeapi.Provider("http://127.0.0.1:8080", fakeapi.Mode{Pagination: pg, Auth: auth, RateLimit: domain.RateLimit{RequestsPerSecond: 50, Burst: 5}})
			if err := p.Validate(); err != nil {
				t.Errorf("%s/%s: the provider definition is invalid: %v", pg, auth, err)
			}
		}
	}
}

func TestServer_ListIsOrderedByUpdatedAtThenIDAndFilteredInclusively(t *testing.T) {
	srv := fakeapi.New(t, fakeapi.Options{Mode: fakeapi.Mode{Pagination: domain.PaginationNone}})
	t0 := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	srv.Seed("contacts",
		fakeapi.Record{ID: "b", UpdatedAt: t0.Add(time.Second)},
		fakeapi.Record{ID: "a", UpdatedAt: t0.Add(time.Second)},
		fakeapi.Record{ID: "z", UpdatedAt: t0},
		fakeapi.Record{ID: "c", UpdatedAt: t0.Add(2 * time.Second)},
	)
	get := func(query string) []string {
		t.Helper()
		resp, err := http.Get(srv.URL + "/api/contacts" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var recs []fakeapi.Record
		if err := json.NewDecoder(resp.Body).Decode(&recs); err != nil {
			t.Fatal(err)
		}
		ids := make([]string, len(recs))
		for i, r := range recs {
			ids[i] = r.ID
		}
		return ids
	}
	if got := get(""); !equal(got, []string{"z", "a", "b", "c"}) {
		t.Fatalf("list order %v, want z a b c", got)
	}
	if got := get("?updated_since=" + t0.Add(time.Second).Format(time.RFC3339Nano)); !equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("updated_since list %v, want a b c (inclusive)", got)
	}
}

func TestServer_RefreshTokensRotate(t *testing.T) {
	srv := fakeapi.New(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthOAuth2RefreshToken}})
	rt := srv.IssueRefreshToken()
	post := func(tok string) int {
		t.Helper()
		resp, err := http.PostForm(srv.URL+"/oauth/token", map[string][]string{"grant_type": {"refresh_token"}, "refresh_token": {tok}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := post(rt); s != http.StatusOK {
		t.Fatalf("first use of a refresh token answered %d", s)
	}
	if s := post(rt); s != http.StatusBadRequest {
		t.Fatalf("second use of a rotated refresh token answered %d, want 400 invalid_grant", s)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
