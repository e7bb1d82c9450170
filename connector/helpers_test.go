package connector_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/secrets"
)

const (
	tenant  = "tenant-1"
	credRef = "cred-1"
)

// memSecrets is an in-memory Secret Management for tests.
type memSecrets struct {
	mu          sync.Mutex
	values      map[string][]byte
	replaces    int
	failReplace error
}

func newMemSecrets() *memSecrets { return &memSecrets{values: map[string][]byte{}} }

func (m *memSecrets) Get(_ context.Context, tenantID, ref string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[tenantID+"/"+ref]
	if !ok {
		return nil, secrets.ErrNotFound
	}
	return append([]byte(nil), v...), nil
}

func (m *memSecrets) Replace(_ context.Context, tenantID, ref string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failReplace != nil {
		return m.failReplace
	}
	if _, ok := m.values[tenantID+"/"+ref]; !ok {
		return secrets.ErrNotFound
	}
	m.values[tenantID+"/"+ref] = append([]byte(nil), value...)
	m.replaces++
	return nil
}

func (m *memSecrets) put(t testing.TB, c connector.Credential) {
	t.Helper()
	b, err := connector.EncodeCredential(c)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.values[tenant+"/"+credRef] = b
	m.mu.Unlock()
}

func (m *memSecrets) stored(t testing.TB) connector.Credential {
	t.Helper()
	b, err := m.Get(context.Background(), tenant, credRef)
	if err != nil {
		t.Fatal(err)
	}
	c, err := connector.DecodeCredential(b)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (m *memSecrets) setFailReplace(err error) {
	m.mu.Lock()
	m.failReplace = err
	m.mu.Unlock()
}

// credentialFor is what a connection to the fake would hold after setup.
func credentialFor(srv *fakeapi.Server, mode fakeapi.AuthMode) connector.Credential {
	switch mode {
	case fakeapi.AuthAPIKeyHeader, fakeapi.AuthAPIKeyQuery:
		return connector.Credential{APIKey: fakeapi.APIKey}
	case fakeapi.AuthBearer:
		return connector.Credential{Token: fakeapi.BearerToken}
	case fakeapi.AuthBasic:
		return connector.Credential{Username: fakeapi.Username, Password: fakeapi.Password}
	case fakeapi.AuthOAuth2ClientCredentials:
		return connector.Credential{ClientID: fakeapi.ClientID, ClientSecret: fakeapi.ClientSecret}
	case fakeapi.AuthOAuth2RefreshToken:
		return connector.Credential{ClientID: fakeapi.ClientID, ClientSecret: fakeapi.ClientSecret, RefreshToken: srv.IssueRefreshToken()}
	}
	return connector.Credential{}
}

type fixture struct {
	srv    *fakeapi.Server
	store  *memSecrets
	creds  *connector.SecretCredentials
	client *connector.Client
	logs   *syncBuffer
}

// fastOptions keeps retries quick in tests.
func fastOptions() connector.Options {
	return connector.Options{BackoffInitial: time.Millisecond, BackoffMax: 10 * time.Millisecond, Timeout: 5 * time.Second}
}

// newFixture starts a fake with opts and a client for it whose credentials
// live in an in-memory secret store; every log line goes to fixture.logs.
func newFixture(t testing.TB, opts fakeapi.Options, copts connector.Options) *fixture {
	t.Helper()
	f := &fixture{srv: fakeapi.New(t, opts), store: newMemSecrets(), logs: &syncBuffer{}}
	f.store.put(t, credentialFor(f.srv, opts.Auth))
	log := zerolog.New(f.logs).Level(zerolog.DebugLevel)
	p := f.srv.Provider()
	var err error
	f.creds, err = connector.NewSecretCredentials(f.store, tenant, credRef, p.Auth, connector.SecretCredentialsOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	copts.Logger = log
	f.client, err = connector.New(p, f.creds, copts)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// newClient is another client (a resumed run) on the same fake and secrets.
func (f *fixture) newClient(t testing.TB, copts connector.Options) *connector.Client {
	t.Helper()
	p := f.srv.Provider()
	creds, err := connector.NewSecretCredentials(f.store, tenant, credRef, p.Auth, connector.SecretCredentialsOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, err := connector.New(p, creds, copts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readAll walks every page from req, returning the ids in order, the number
// of pages and the last page's max cursor.
func readAll(t testing.TB, c *connector.Client, entity string, req connector.PageRequest) (ids []string, pages int, maxCursor string) {
	t.Helper()
	for {
		pg, err := c.ListPage(context.Background(), entity, req)
		if err != nil {
			t.Fatalf("reading page %d of %s: %v", pages+1, entity, err)
		}
		pages++
		for _, r := range pg.Records {
			id, err := c.RecordID(entity, r)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if pg.MaxCursor != "" {
			maxCursor = pg.MaxCursor
		}
		if pg.NextPageToken == "" {
			return ids, pages, maxCursor
		}
		if pages > 10_000 {
			t.Fatal("pagination does not end")
		}
		req.PageToken = pg.NextPageToken
	}
}

func idsOf(recs []fakeapi.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

// sameOnce fails unless got holds every id of want exactly once, in order.
func sameOnce(t testing.TB, got, want []string) {
	t.Helper()
	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("record %s was read %d times", id, n)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("read %d records, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("record %d is %s, want %s (list order)", i, got[i], want[i])
		}
	}
}

// syncBuffer collects log output from concurrent goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func asError(t testing.TB, err error) *connector.Error {
	t.Helper()
	var e *connector.Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not a *connector.Error", err, err)
	}
	return e
}

var allSecrets = []string{fakeapi.APIKey, fakeapi.BearerToken, fakeapi.Password, fakeapi.ClientSecret, "fk_rt_", "fk_at_"}

func assertNoSecrets(t testing.TB, where, text string) {
	t.Helper()
	for _, s := range allSecrets {
		if bytes.Contains([]byte(text), []byte(s)) {
			t.Fatalf("%s shows a credential (%s…): %s", where, s[:min(len(s), 8)], text)
		}
	}
}
