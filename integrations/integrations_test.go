package integrations_test

import (
	"context"
	"crypto/rand"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/integrations"
	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

const (
	tenant = "tenant-a"
	intID  = "int-crm"
)

type fixture struct {
	db        *embedded.Backend
	secretsDB *embedded.Backend // Secret Management's own store (secrets.Local)
	srv       *fakeapi.Server
	secrets   *secrets.Local
	credRef   string
	ints      *store.Repository[domain.Integration]
	provs     *store.Repository[domain.Provider]
	conns     *store.Repository[domain.Connection]
	f         *integrations.Factory
}

// newFixture installs and connects an integration to a fake API with OAuth2
// refresh-token auth, on the real embedded store and local secret store.
func newFixture(t *testing.T, auth fakeapi.AuthMode) *fixture {
	t.Helper()
	openDB := func(name string) *embedded.Backend {
		db, err := embedded.Open(filepath.Join(t.TempDir(), name), store.Containers(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	// Secrets live in a store of their own so a test can take Secret
	// Management down without the integrations store.
	db, secretsDB := openDB("db"), openDB("secrets")
	container := func(db *embedded.Backend, name string) store.Container {
		c, err := db.Container(name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	open := func(name string) store.Container { return container(db, name) }
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	local, err := secrets.NewLocal(container(secretsDB, store.LocalSecretsContainer), key)
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{
		db: db, secretsDB: secretsDB, secrets: local,
		srv:   fakeapi.New(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: auth, PageSize: 5}}),
		ints:  store.NewRepository[domain.Integration](open(domain.ContainerIntegrations)),
		provs: store.NewRepository[domain.Provider](open(domain.ContainerProviders)),
		conns: store.NewRepository[domain.Connection](open(domain.ContainerConnections)),
	}
	ctx := context.Background()
	p := fx.srv.Provider()
	if _, err := fx.provs.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if _, err := fx.ints.Create(ctx, domain.Integration{ID: intID, TenantID: tenant, CatalogEntryID: "cat", ProviderID: p.ID,
		ProviderCategory: p.Category, Name: "CRM", Status: domain.IntegrationActive, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	conn := domain.Connection{ID: intID, IntegrationID: intID, TenantID: tenant, Status: domain.ConnectionConnected, CreatedAt: now, UpdatedAt: now}
	if auth == fakeapi.AuthOAuth2RefreshToken {
		b, _ := connector.EncodeCredential(connector.Credential{ClientID: fakeapi.ClientID, ClientSecret: fakeapi.ClientSecret, RefreshToken: fx.srv.IssueRefreshToken()})
		if conn.CredentialRef, err = local.Put(ctx, tenant, b); err != nil {
			t.Fatal(err)
		}
		fx.credRef = conn.CredentialRef
	}
	if _, err := fx.conns.Create(ctx, conn); err != nil {
		t.Fatal(err)
	}
	fx.f, err = integrations.NewFactory(db, local, integrations.Options{Connector: connector.Options{BackoffInitial: time.Millisecond, BackoffMax: 5 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	return fx
}

func (fx *fixture) client(t *testing.T) *connector.Client {
	t.Helper()
	c, p, err := fx.f.Client(context.Background(), tenant, intID)
	if err != nil {
		t.Fatalf("Client: %v", err)
	}
	if p.ID != fx.srv.Provider().ID {
		t.Fatalf("provider %q, want the integration's %q", p.ID, fx.srv.Provider().ID)
	}
	return c
}

func TestFactory_ClientReadsWithTheConnectionsStoredCredentials(t *testing.T) {
	fx := newFixture(t, fakeapi.AuthOAuth2RefreshToken)
	fx.srv.SeedN("contacts", 7)
	page, err := fx.client(t).ListPage(context.Background(), "contacts", connector.PageRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Records) != 5 || page.NextPageToken == "" {
		t.Errorf("first page: %d records, next %q; want 5 and a next page", len(page.Records), page.NextPageToken)
	}
	conn, _, _ := fx.conns.Get(context.Background(), intID, intID)
	if conn.TokenExpiresAt == nil || !conn.TokenExpiresAt.After(time.Now()) {
		t.Errorf("the connection's tokenExpiresAt is %v after the first token was issued, want its future expiry", conn.TokenExpiresAt)
	}
}

// Clients of one connection share its credentials: when the token expires
// under several concurrent callers, it is renewed once.
func TestFactory_OneConnectionRenewsItsTokenOnceForAllClients(t *testing.T) {
	fx := newFixture(t, fakeapi.AuthOAuth2RefreshToken)
	fx.srv.SeedN("contacts", 3)
	first := fx.client(t)
	if _, err := first.ListPage(context.Background(), "contacts", connector.PageRequest{}); err != nil {
		t.Fatal(err)
	}
	issued := fx.srv.Stats().TokensIssued
	fx.srv.ExpireTokens()

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _, err := fx.f.Client(context.Background(), tenant, intID)
			if err == nil {
				_, err = c.ListPage(context.Background(), "contacts", connector.PageRequest{})
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a caller failed after the token expired: %v", err)
		}
	}
	if n := fx.srv.Stats().TokensIssued - issued; n != 1 {
		t.Errorf("%d tokens issued for 8 concurrent callers after expiry, want 1 (single-flight per connection)", n)
	}
	b, _ := fx.secrets.Get(context.Background(), tenant, fx.credRef)
	cred, _ := connector.DecodeCredential(b)
	if !fx.srv.ValidRefreshToken(cred.RefreshToken) {
		t.Error("Secret Management does not hold the rotated refresh token")
	}
}

// An edited provider definition is used at once; an unchanged one keeps its
// client (and its rate limiter).
func TestFactory_RebuildsTheClientWhenTheDefinitionChanges(t *testing.T) {
	fx := newFixture(t, fakeapi.AuthNone)
	a, b := fx.client(t), fx.client(t)
	if a != b {
		t.Error("two calls with nothing changed built two clients")
	}
	p := fx.srv.Provider()
	p.RateLimit = domain.RateLimit{RequestsPerSecond: 50, Burst: 5}
	if _, err := fx.provs.Upsert(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	c := fx.client(t)
	if c == a || c.Provider().RateLimit.RequestsPerSecond != 50 {
		t.Error("the edited provider definition was not picked up")
	}
}

func TestFactory_ConfigurationErrorsArePermanentAndNamed(t *testing.T) {
	fx := newFixture(t, fakeapi.AuthOAuth2RefreshToken)
	ctx := context.Background()
	if _, _, err := fx.f.Client(ctx, tenant, "int-missing"); !errors.Is(err, integrations.ErrNotFound) || !integrations.IsPermanent(err) {
		t.Errorf("missing integration: %v, want ErrNotFound", err)
	}
	if _, _, err := fx.f.Client(ctx, "tenant-other", intID); !errors.Is(err, integrations.ErrNotFound) {
		t.Errorf("another tenant's integration: %v, want ErrNotFound", err)
	}
	if _, _, err := fx.conns.Update(ctx, intID, intID, func(c *domain.Connection) error {
		c.CredentialRef, c.Status = "", domain.ConnectionPending
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fx.f.Client(ctx, tenant, intID); !errors.Is(err, integrations.ErrNotConnected) {
		t.Errorf("connection without credentials: %v, want ErrNotConnected", err)
	}
	if _, _, err := fx.ints.Update(ctx, tenant, intID, func(i *domain.Integration) error {
		i.Status = domain.IntegrationPaused
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fx.f.Client(ctx, tenant, intID); !errors.Is(err, integrations.ErrInactive) {
		t.Errorf("paused integration: %v, want ErrInactive", err)
	}
}
