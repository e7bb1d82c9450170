package connector_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/connector/fakeapi"
)

func TestGet_ReadsOneRecordByID(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthBearer}}, fastOptions())
	want := f.srv.SeedN("contacts", 3)[1]

	rec, found, err := f.client.Get(context.Background(), "contacts", want.ID)

	if err != nil || !found {
		t.Fatalf("Get(%s) = found %v, %v; want the record", want.ID, found, err)
	}
	if rec["id"] != want.ID || rec["name"] != want.Name || rec["email"] != want.Email {
		t.Errorf("Get(%s) = %v; want %+v", want.ID, rec, want)
	}
	if st := f.srv.Stats(); st.ListRequests != 0 {
		t.Errorf("Get listed the collection %d times; it must read the one record", st.ListRequests)
	}
}

func TestGet_NumbersKeepEveryDigit(t *testing.T) {
	srv := httpJSON(t, `{"id": 12345678901234567890, "price": 0.1000000000000000055511151231257827}`)
	c := clientFor(t, srv)

	rec, found, err := c.Get(context.Background(), "contacts", "12345678901234567890")

	if err != nil || !found {
		t.Fatalf("Get = found %v, %v", found, err)
	}
	if n, ok := rec["id"].(json.Number); !ok || n.String() != "12345678901234567890" {
		t.Errorf("id = %#v; want json.Number 12345678901234567890", rec["id"])
	}
}

// A record the API no longer has is an answer, not a failure: the caller
// takes it as deleted.
func TestGet_MissingOrGoneRecordIsNotFoundWithoutError(t *testing.T) {
	f := newFixture(t, fakeapi.Options{}, fastOptions())
	recs := f.srv.SeedN("contacts", 2)
	f.srv.Remove("contacts", recs[0].ID)
	ctx := context.Background()

	for name, id := range map[string]string{"never existed": "c-999", "deleted at the API": recs[0].ID} {
		rec, found, err := f.client.Get(ctx, "contacts", id)
		if err != nil || found || rec != nil {
			t.Errorf("%s: Get = %v, found %v, %v; want not found and no error", name, rec, found, err)
		}
	}

	f.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts/" + recs[1].ID, Status: http.StatusGone})
	if rec, found, err := f.client.Get(ctx, "contacts", recs[1].ID); err != nil || found || rec != nil {
		t.Errorf("410 Gone: Get = %v, found %v, %v; want not found and no error", rec, found, err)
	}
}

func TestGet_TransientFailuresAreRetriedAndThrottlingWaitedOut(t *testing.T) {
	f := newFixture(t, fakeapi.Options{}, fastOptions())
	want := f.srv.SeedN("contacts", 1)[0]
	path := "/api/contacts/" + want.ID
	f.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: path, Status: http.StatusBadGateway})
	f.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: path, Status: http.StatusTooManyRequests, RetryAfter: "0"})

	rec, found, err := f.client.Get(context.Background(), "contacts", want.ID)

	if err != nil || !found || rec["id"] != want.ID {
		t.Fatalf("Get after a 502 and a 429 = %v, found %v, %v; want the record", rec, found, err)
	}
	if s := f.client.Stats(); s.Retries != 2 || s.Throttled != 1 {
		t.Errorf("stats %+v; want 2 retries, 1 throttled", s)
	}
}

func TestGet_ExpiredTokenIsRenewedOnce(t *testing.T) {
	f := newFixture(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthOAuth2RefreshToken}}, fastOptions())
	want := f.srv.SeedN("contacts", 1)[0]
	ctx := context.Background()
	if _, _, err := f.client.Get(ctx, "contacts", want.ID); err != nil {
		t.Fatal(err)
	}
	issued := f.srv.Stats().TokensIssued
	f.srv.ExpireTokens()

	_, found, err := f.client.Get(ctx, "contacts", want.ID)

	if err != nil || !found {
		t.Fatalf("Get after the token expired: found %v, %v; want the record", found, err)
	}
	if n := f.srv.Stats().TokensIssued - issued; n != 1 {
		t.Errorf("%d tokens issued after expiry, want 1", n)
	}
}

func TestGet_ClientErrorsOtherThanNotFoundArePermanent(t *testing.T) {
	for _, status := range []int{http.StatusBadRequest, http.StatusForbidden, http.StatusUnprocessableEntity} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			f := newFixture(t, fakeapi.Options{}, fastOptions())
			f.srv.AddFault(fakeapi.Fault{Count: 5, Status: status, Body: "nope"})

			_, found, err := f.client.Get(context.Background(), "contacts", "c-1")

			if e := asError(t, err); !connector.IsPermanent(err) || e.Status != status || e.Op != "get contacts" || found {
				t.Fatalf("got found %v, %+v; want a permanent %d error for op \"get contacts\"", found, e, status)
			}
			if st := f.srv.Stats(); st.Requests != 1 {
				t.Errorf("the fake saw %d requests; a %d must not be retried", st.Requests, status)
			}
		})
	}
}

func TestGet_RefusesWhatTheDefinitionCannotServe(t *testing.T) {
	f := newFixture(t, fakeapi.Options{}, fastOptions())
	ctx := context.Background()
	if _, _, err := f.client.Get(ctx, "tickets", "t-1"); !errors.Is(err, connector.ErrUnknownEntity) {
		t.Errorf("unknown entity: %v; want ErrUnknownEntity", err)
	}
	if _, _, err := f.client.Get(ctx, "contacts", ""); err == nil || !connector.IsPermanent(err) {
		t.Errorf("empty id: %v; want a permanent error (it would address the collection)", err)
	}
	p := f.srv.Provider()
	p.Entities[0].Get = nil
	c, err := connector.New(p, nil, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Get(ctx, "contacts", "c-1"); !errors.Is(err, connector.ErrUnsupported) || !connector.IsPermanent(err) {
		t.Errorf("entity without a get request: %v; want a permanent ErrUnsupported", err)
	}
	if st := f.srv.Stats(); st.Requests != 0 {
		t.Errorf("the fake saw %d requests; none of these may be sent", st.Requests)
	}
}

func TestGet_AnswerThatIsNotARecordIsPermanent(t *testing.T) {
	c := clientFor(t, httpJSON(t, `[{"id": "c-1"}]`))

	_, found, err := c.Get(context.Background(), "contacts", "c-1")

	if err == nil || found || !connector.IsPermanent(err) {
		t.Fatalf("a JSON array answer: found %v, %v; want a permanent error", found, err)
	}
}

// httpJSON is an API that answers every request with body.
func httpJSON(t *testing.T, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// clientFor is a client with the fake's definition (no auth) pointed at srv.
func clientFor(t *testing.T, srv *httptest.Server) *connector.Client {
	t.Helper()
	c, err := connector.New(fakeapi.Provider(srv.URL, fakeapi.Mode{}), nil, fastOptions())
	if err != nil {
		t.Fatal(err)
	}
	return c
}
