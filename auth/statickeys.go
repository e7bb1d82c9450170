package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"

	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/domain"
)

// StaticKeys accepts the API keys of auth.staticKeys: the standalone stand-in
// for User Management, and service-to-service credentials in the fleet.
//
// Only SHA-256 hashes of the keys are kept. A presented token is hashed and
// compared with every stored hash in constant time, so neither an early exit
// nor a byte-by-byte comparison tells an attacker how close a guess was.
type StaticKeys struct {
	keys []staticKey
}

type staticKey struct {
	hash      [sha256.Size]byte
	principal Principal
}

var _ Authenticator = (*StaticKeys)(nil)

// NewStaticKeys builds the authenticator from configuration. It refuses empty
// or duplicate keys, a missing or malformed tenant and roles the Integration
// Manager does not know (a misspelt role would otherwise silently grant
// nothing).
func NewStaticKeys(keys []config.StaticKey) (*StaticKeys, error) {
	s := &StaticKeys{keys: make([]staticKey, 0, len(keys))}
	seen := make(map[[sha256.Size]byte]int, len(keys))
	for i, k := range keys {
		if !k.Key.IsSet() {
			return nil, fmt.Errorf("auth: static key %d: key is empty", i)
		}
		if !domain.IsValidID(k.TenantID) {
			return nil, fmt.Errorf("auth: static key %d: tenantId %q is not a valid tenant id", i, k.TenantID)
		}
		if len(k.Roles) == 0 {
			return nil, fmt.Errorf("auth: static key %d: no roles", i)
		}
		roles := make([]Role, 0, len(k.Roles))
		for _, name := range k.Roles {
			r, ok := ParseRole(name)
			if !ok {
				return nil, fmt.Errorf("auth: static key %d: unknown role %q (want %s, %s or %s)",
					i, name, RolePlatformAdmin, RoleTenantAdmin, RoleViewer)
			}
			roles = append(roles, r)
		}
		h := sha256.Sum256([]byte(k.Key.Reveal()))
		if j, dup := seen[h]; dup {
			return nil, fmt.Errorf("auth: static keys %d and %d are the same key", j, i)
		}
		seen[h] = i
		s.keys = append(s.keys, staticKey{
			hash: h,
			principal: Principal{
				TenantID: k.TenantID,
				Subject:  "apikey:" + hex.EncodeToString(h[:])[:8],
				Roles:    roles,
			},
		})
	}
	return s, nil
}

// Authenticate returns the principal bound to token.
func (s *StaticKeys) Authenticate(_ context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, unauthenticated("missing bearer token")
	}
	h := sha256.Sum256([]byte(token))
	match := -1
	// No early exit: every stored hash is compared, whatever matches.
	for i := range s.keys {
		if subtle.ConstantTimeCompare(h[:], s.keys[i].hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return Principal{}, notRecognized("unknown API key")
	}
	p := s.keys[match].principal
	p.Roles = append([]Role(nil), p.Roles...) // callers must not reach our copy
	return p, nil
}
