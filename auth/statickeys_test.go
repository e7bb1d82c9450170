package auth_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/castiel/integration-manager/auth"
	"github.com/castiel/integration-manager/config"
)

func TestStaticKeys_AcceptsConfiguredKeysOnly(t *testing.T) {
	const adminKey = "admin-key-0123456789abcdef"
	const viewKey = "viewer-key-0123456789abcdef"
	keys, err := auth.NewStaticKeys([]config.StaticKey{
		{Key: adminKey, TenantID: "tenant-a", Roles: []string{"tenant_admin"}},
		{Key: viewKey, TenantID: "tenant-b", Roles: []string{"viewer"}},
	})
	if err != nil {
		t.Fatalf("NewStaticKeys: %v", err)
	}
	sum := sha256.Sum256([]byte(adminKey))

	tests := []struct {
		name        string
		token       string
		wantTenant  string
		wantRole    auth.Role
		wantSubject string
	}{
		{"admin key", adminKey, "tenant-a", auth.RoleTenantAdmin, "apikey:" + hex.EncodeToString(sum[:])[:8]},
		{"viewer key", viewKey, "tenant-b", auth.RoleViewer, ""},
		{"unknown key", "not-a-configured-key-000", "", "", ""},
		{"prefix of a key", adminKey[:10], "", "", ""},
		{"key with trailing byte", adminKey + "x", "", "", ""},
		{"empty", "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := keys.Authenticate(t.Context(), tt.token)
			if tt.wantTenant == "" {
				if !errors.Is(err, auth.ErrUnauthenticated) {
					t.Fatalf("Authenticate(%s) = %+v, %v; want ErrUnauthenticated", tt.name, p, err)
				}
				if tt.token != "" && strings.Contains(err.Error(), tt.token) {
					t.Fatalf("the error %q repeats the presented key", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Authenticate(%s): %v", tt.name, err)
			}
			if p.TenantID != tt.wantTenant || !p.Has(tt.wantRole) {
				t.Fatalf("principal = %+v; want tenant %s with role %s", p, tt.wantTenant, tt.wantRole)
			}
			if tt.wantSubject != "" && p.Subject != tt.wantSubject {
				t.Fatalf("subject = %q, want %q", p.Subject, tt.wantSubject)
			}
			if strings.Contains(p.Subject, tt.token) {
				t.Fatalf("subject %q contains the key itself", p.Subject)
			}
		})
	}
}

func TestStaticKeys_PrincipalRolesAreACopy(t *testing.T) {
	keys, err := auth.NewStaticKeys([]config.StaticKey{{Key: "key-0123456789abcdef", TenantID: "t", Roles: []string{"viewer"}}})
	if err != nil {
		t.Fatalf("NewStaticKeys: %v", err)
	}
	p, _ := keys.Authenticate(t.Context(), "key-0123456789abcdef")
	p.Roles[0] = auth.RolePlatformAdmin
	again, _ := keys.Authenticate(t.Context(), "key-0123456789abcdef")
	if again.Has(auth.RolePlatformAdmin) {
		t.Fatal("changing a returned principal's roles escalated the key's roles")
	}
}

func TestNewStaticKeys_RefusesBadConfiguration(t *testing.T) {
	tests := []struct {
		name string
		keys []config.StaticKey
		want string
	}{
		{"empty key", []config.StaticKey{{Key: "", TenantID: "t", Roles: []string{"viewer"}}}, "key is empty"},
		{"no tenant", []config.StaticKey{{Key: "k-0123456789abcdef", Roles: []string{"viewer"}}}, "not a valid tenant id"},
		{"tenant with slash", []config.StaticKey{{Key: "k-0123456789abcdef", TenantID: "a/b", Roles: []string{"viewer"}}}, "not a valid tenant id"},
		{"no roles", []config.StaticKey{{Key: "k-0123456789abcdef", TenantID: "t"}}, "no roles"},
		{"unknown role", []config.StaticKey{{Key: "k-0123456789abcdef", TenantID: "t", Roles: []string{"admin"}}}, `unknown role "admin"`},
		{"duplicate key", []config.StaticKey{
			{Key: "k-0123456789abcdef", TenantID: "t1", Roles: []string{"viewer"}},
			{Key: "k-0123456789abcdef", TenantID: "t2", Roles: []string{"viewer"}},
		}, "same key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.NewStaticKeys(tt.keys)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewStaticKeys error = %v; want one saying %q", err, tt.want)
			}
			for _, k := range tt.keys {
				if k.Key != "" && strings.Contains(err.Error(), k.Key.Reveal()) {
					t.Fatalf("the error %q repeats a key", err)
				}
			}
		})
	}
}
