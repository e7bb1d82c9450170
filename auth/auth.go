// Package auth says who is calling the command API: it turns a bearer token
// (a User Management JWT or a static API key) into a Principal holding the
// caller's tenant and roles. The tenant always comes from here, never from a
// request body, which is what keeps one tenant out of another's data.
package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Errors callers branch on with errors.Is.
var (
	// ErrUnauthenticated: the token is missing, malformed, expired, signed by an
	// unknown key or otherwise unacceptable (HTTP 401). It is wrapped with a
	// short reason that is safe to show to the caller; the token itself never
	// appears in an error.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrNotRecognized, wrapped together with ErrUnauthenticated, says the
	// token is not of this authenticator's kind (not a known API key, not a
	// JWT), so Chain prefers another authenticator's more specific reason.
	ErrNotRecognized = errors.New("token not recognized")
	// ErrUnavailable: the token could not be checked because a dependency (the
	// JWKS endpoint) is unreachable and nothing usable is cached (HTTP 503).
	// It is our fault, not the caller's.
	ErrUnavailable = errors.New("authentication unavailable")
)

// unauthenticated wraps ErrUnauthenticated with a reason safe to show.
func unauthenticated(reason string) error {
	return fmt.Errorf("%w: %s", ErrUnauthenticated, reason)
}

// notRecognized is unauthenticated(reason) that Chain may pass over.
func notRecognized(reason string) error {
	return fmt.Errorf("%w: %w: %s", ErrUnauthenticated, ErrNotRecognized, reason)
}

// Authenticator turns a bearer token into the calling Principal.
type Authenticator interface {
	// Authenticate returns the principal of token, or an error wrapping
	// ErrUnauthenticated (the caller's fault) or ErrUnavailable (ours).
	Authenticate(ctx context.Context, bearerToken string) (Principal, error)
}

// Role is a permission level granted to a principal.
//
// The rule, enforced through the Principal methods below:
//   - platform_admin manages what all tenants share (providers, the catalog,
//     visibility) and, being the operator, may also change its own tenant's
//     configuration;
//   - tenant_admin manages everything of its own tenant (integrations,
//     connections, webhooks, sync tasks, conflicts) and nothing shared;
//   - viewer reads its own tenant's data and changes nothing.
//
// Every role reads. No role reaches another tenant: the tenant is the
// principal's own, taken from its credentials.
type Role string

// The roles the Integration Manager understands. Tokens may carry other roles
// (for other products); they are kept but grant nothing here.
const (
	RolePlatformAdmin Role = "platform_admin"
	RoleTenantAdmin   Role = "tenant_admin"
	RoleViewer        Role = "viewer"
)

// ParseRole returns s as a Role if it is one the Integration Manager knows.
func ParseRole(s string) (Role, bool) {
	switch r := Role(s); r {
	case RolePlatformAdmin, RoleTenantAdmin, RoleViewer:
		return r, true
	default:
		return r, false
	}
}

// Principal is an authenticated caller.
type Principal struct {
	TenantID string // the only tenant this caller may act on
	Subject  string // who it is, for audit: a user id, a client id, "apikey:<hash prefix>"
	Roles    []Role
}

// Has reports whether the principal holds role.
func (p Principal) Has(role Role) bool { return slices.Contains(p.Roles, role) }

// CanRead reports whether the principal may read its tenant's data: any role
// the Integration Manager knows allows reading.
func (p Principal) CanRead() bool {
	return p.Has(RoleViewer) || p.Has(RoleTenantAdmin) || p.Has(RolePlatformAdmin)
}

// CanWriteTenant reports whether the principal may change its own tenant's
// configuration (integrations, connections, webhooks, sync tasks, conflict
// decisions).
func (p Principal) CanWriteTenant() bool {
	return p.Has(RoleTenantAdmin) || p.Has(RolePlatformAdmin)
}

// CanManagePlatform reports whether the principal may change what all tenants
// share: provider definitions, the catalog and visibility rules.
func (p Principal) CanManagePlatform() bool { return p.Has(RolePlatformAdmin) }

// BearerToken extracts the token from an Authorization header value
// ("Bearer <token>", scheme case-insensitive).
func BearerToken(authorization string) (string, error) {
	if authorization == "" {
		return "", unauthenticated("missing Authorization header")
	}
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", unauthenticated("Authorization header is not a Bearer token")
	}
	token = strings.TrimSpace(token)
	if token == "" {
		return "", unauthenticated("empty bearer token")
	}
	return token, nil
}

// principalKey is the context key of the authenticated Principal.
type principalKey struct{}

// WithPrincipal returns ctx carrying p, for handlers behind the auth middleware.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal stored by WithPrincipal.
func PrincipalFrom(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// Chain tries each authenticator in turn and returns the first principal one
// accepts. The fleet may accept JWTs from User Management and static keys for
// service-to-service calls at the same time.
//
// When all refuse, the error is the most useful one: ErrUnavailable if any
// could not check the token (so the caller gets 503 and retries rather than a
// misleading 401), else the first reason from an authenticator that
// recognised the token (an expired JWT says "token expired", not "unknown API
// key"), else the first error.
func Chain(authenticators ...Authenticator) Authenticator {
	return chain(slices.Clone(authenticators))
}

type chain []Authenticator

func (c chain) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, unauthenticated("missing bearer token")
	}
	var unavailable, specific, first error
	for _, a := range c {
		p, err := a.Authenticate(ctx, token)
		if err == nil {
			return p, nil
		}
		switch {
		case !errors.Is(err, ErrUnauthenticated):
			unavailable = cmpOr(unavailable, err)
		case !errors.Is(err, ErrNotRecognized):
			specific = cmpOr(specific, err)
		}
		first = cmpOr(first, err)
	}
	if err := cmpOr(unavailable, specific, first); err != nil {
		return Principal{}, err
	}
	return Principal{}, notRecognized("no authenticator configured")
}

// cmpOr returns the first non-nil error.
func cmpOr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
