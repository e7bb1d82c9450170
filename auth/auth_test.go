package auth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/castiel/integration-manager/auth"
	"github.com/castiel/integration-manager/config"
)

func TestPrincipal_PermissionsFollowRoles(t *testing.T) {
	tests := []struct {
		name                              string
		roles                             []auth.Role
		read, writeTenant, managePlatform bool
	}{
		{"viewer reads only", []auth.Role{auth.RoleViewer}, true, false, false},
		{"tenant admin manages its tenant", []auth.Role{auth.RoleTenantAdmin}, true, true, false},
		{"platform admin manages the platform and its tenant", []auth.Role{auth.RolePlatformAdmin}, true, true, true},
		{"viewer and tenant admin", []auth.Role{auth.RoleViewer, auth.RoleTenantAdmin}, true, true, false},
		{"no role grants nothing", nil, false, false, false},
		{"foreign role grants nothing", []auth.Role{"crm_editor"}, false, false, false},
		{"role names are case-sensitive", []auth.Role{"Tenant_Admin"}, false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := auth.Principal{TenantID: "t1", Subject: "s", Roles: tt.roles}
			if got := p.CanRead(); got != tt.read {
				t.Errorf("CanRead() = %v, want %v", got, tt.read)
			}
			if got := p.CanWriteTenant(); got != tt.writeTenant {
				t.Errorf("CanWriteTenant() = %v, want %v", got, tt.writeTenant)
			}
			if got := p.CanManagePlatform(); got != tt.managePlatform {
				t.Errorf("CanManagePlatform() = %v, want %v", got, tt.managePlatform)
			}
		})
	}
}

func TestBearerToken_ExtractsTheTokenOrSaysWhatIsWrong(t *testing.T) {
	tests := []struct {
		header, want, wantReason string
	}{
		{"Bearer abc.def.ghi", "abc.def.ghi", ""},
		{"bearer  tok ", "tok", ""},
		{"", "", "missing Authorization header"},
		{"Basic dXNlcjpwYXNz", "", "not a Bearer token"},
		{"Bearer", "", "not a Bearer token"},
		{"Bearer   ", "", "empty bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.header, func(t *testing.T) {
			got, err := auth.BearerToken(tt.header)
			if tt.wantReason == "" {
				if err != nil || got != tt.want {
					t.Fatalf("BearerToken(%q) = %q, %v; want %q", tt.header, got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), tt.wantReason) {
				t.Fatalf("BearerToken(%q) error = %v; want ErrUnauthenticated saying %q", tt.header, err, tt.wantReason)
			}
		})
	}
}

func TestPrincipalFrom_ReturnsWhatWithPrincipalStored(t *testing.T) {
	if _, ok := auth.PrincipalFrom(context.Background()); ok {
		t.Fatal("a bare context claims to carry a principal")
	}
	want := auth.Principal{TenantID: "t1", Subject: "u1", Roles: []auth.Role{auth.RoleViewer}}
	got, ok := auth.PrincipalFrom(auth.WithPrincipal(context.Background(), want))
	if !ok || got.TenantID != want.TenantID || got.Subject != want.Subject {
		t.Fatalf("PrincipalFrom = %+v, %v; want %+v", got, ok, want)
	}
}

// fixed is an Authenticator that always answers the same, to test Chain's
// choice of error without a JWKS endpoint.
type fixed struct {
	p   auth.Principal
	err error
}

func (f fixed) Authenticate(context.Context, string) (auth.Principal, error) { return f.p, f.err }

func TestChain_ReturnsTheFirstAcceptanceOrTheMostUsefulRefusal(t *testing.T) {
	accept := fixed{p: auth.Principal{TenantID: "t1", Subject: "ok"}}
	notMine := fixed{err: fmt.Errorf("%w: %w: unknown API key", auth.ErrUnauthenticated, auth.ErrNotRecognized)}
	expired := fixed{err: fmt.Errorf("%w: token expired", auth.ErrUnauthenticated)}
	down := fixed{err: fmt.Errorf("%w: signing keys could not be fetched", auth.ErrUnavailable)}

	tests := []struct {
		name       string
		chain      []auth.Authenticator
		wantErr    error
		wantReason string
	}{
		{"second accepts", []auth.Authenticator{notMine, accept}, nil, ""},
		{"specific reason beats not-recognised", []auth.Authenticator{notMine, expired}, auth.ErrUnauthenticated, "token expired"},
		{"unavailable beats a refusal", []auth.Authenticator{expired, down}, auth.ErrUnavailable, "could not be fetched"},
		{"only not-recognised", []auth.Authenticator{notMine}, auth.ErrNotRecognized, "unknown API key"},
		{"empty chain refuses", nil, auth.ErrUnauthenticated, "no authenticator"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := auth.Chain(tt.chain...).Authenticate(context.Background(), "some-token")
			if tt.wantErr == nil {
				if err != nil || p.Subject != "ok" {
					t.Fatalf("Authenticate = %+v, %v; want the accepting authenticator's principal", p, err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.wantReason) {
				t.Fatalf("Authenticate error = %v; want %v saying %q", err, tt.wantErr, tt.wantReason)
			}
		})
	}
}

func TestChain_StaticKeyAndJWTBothWork(t *testing.T) {
	idp := newIdP(t)
	j := idp.verifier(t, auth.JWKSConfig{})
	keys, err := auth.NewStaticKeys([]config.StaticKey{{Key: "service-key-0123456789", TenantID: "svc-tenant", Roles: []string{"tenant_admin"}}})
	if err != nil {
		t.Fatalf("NewStaticKeys: %v", err)
	}
	c := auth.Chain(keys, j)

	p, err := c.Authenticate(t.Context(), "service-key-0123456789")
	if err != nil || p.TenantID != "svc-tenant" {
		t.Fatalf("static key through the chain: %+v, %v", p, err)
	}
	p, err = c.Authenticate(t.Context(), idp.sign(t, idp.rsaKID, idp.claims()))
	if err != nil || p.TenantID != "tenant-1" {
		t.Fatalf("JWT through the chain: %+v, %v", p, err)
	}
	expired := idp.claims()
	expired["exp"] = idp.now().Add(-time.Hour).Unix()
	_, err = c.Authenticate(t.Context(), idp.sign(t, idp.rsaKID, expired))
	if !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), "token expired") {
		t.Fatalf("expired JWT through the chain: error %v; want the JWT's reason (token expired), not the static keys' one", err)
	}
}
