package auth_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/auth"
)

const (
	testIssuer   = "https://users.castiel.test"
	testAudience = "integration-manager"
)

// idp is a stand-in User Management: keys generated in the test and a JWKS
// endpoint serving whichever of them the test chooses.
type idp struct {
	rsaKey *rsa.PrivateKey
	rsaKID string
	ecKey  *ecdsa.PrivateKey
	ecKID  string

	srv  *httptest.Server
	hits atomic.Int64
	fail atomic.Bool

	mu  sync.Mutex
	doc []byte
}

func newIdP(t *testing.T) *idp {
	t.Helper()
	p := &idp{rsaKey: newRSAKey(t), rsaKID: "rsa-1", ecKey: newECKey(t), ecKID: "ec-1"}
	p.serve(t, rsaJWK(p.rsaKID, &p.rsaKey.PublicKey), ecJWK(t, p.ecKID, &p.ecKey.PublicKey))
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		if p.fail.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		doc := p.doc
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(doc)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// serve replaces the JWKS document with the given keys.
func (p *idp) serve(t *testing.T, keys ...map[string]any) {
	t.Helper()
	doc, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatalf("encode JWKS: %v", err)
	}
	p.mu.Lock()
	p.doc = doc
	p.mu.Unlock()
}

func (p *idp) now() time.Time { return time.Now() }

// verifier starts a JWKS verifier against this IdP, closed at the end of the test.
func (p *idp) verifier(t *testing.T, cfg auth.JWKSConfig) *auth.JWKS {
	t.Helper()
	return p.verifierLogging(t, cfg, zerolog.Nop())
}

func (p *idp) verifierLogging(t *testing.T, cfg auth.JWKSConfig, log zerolog.Logger) *auth.JWKS {
	t.Helper()
	cfg.URL = p.srv.URL + "/.well-known/jwks.json"
	cfg.Issuer = testIssuer
	cfg.Audience = testAudience
	j, err := auth.NewJWKS(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("NewJWKS: %v", err)
	}
	t.Cleanup(func() { _ = j.Close() })
	return j
}

// claims are valid claims for tenant-1, to be spoilt by each test case.
func (p *idp) claims() jwt.MapClaims {
	now := p.now()
	return jwt.MapClaims{
		"iss":      testIssuer,
		"aud":      []string{"other-service", testAudience},
		"sub":      "user-1",
		"tenantId": "tenant-1",
		"roles":    []string{"tenant_admin", "viewer"},
		"iat":      now.Unix(),
		"exp":      now.Add(10 * time.Minute).Unix(),
	}
}

// sign signs claims with the IdP's key named kid (RS256 for the RSA key,
// ES256 for the EC key).
func (p *idp) sign(t *testing.T, kid string, claims jwt.MapClaims) string {
	t.Helper()
	switch kid {
	case p.ecKID:
		return signWith(t, jwt.SigningMethodES256, kid, p.ecKey, claims)
	default:
		return signWith(t, jwt.SigningMethodRS256, kid, p.rsaKey, claims)
	}
}

func signWith(t *testing.T, m jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s token: %v", m.Alg(), err)
	}
	return s
}

func newRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate RSA key: %v", err)
	}
	return k
}

func newECKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("generate EC key: %v", err)
	}
	return k
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, pub *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}
}

func ecJWK(t *testing.T, kid string, pub *ecdsa.PublicKey) map[string]any {
	t.Helper()
	point, err := pub.Bytes()
	if err != nil {
		t.Fatalf("encode EC key: %v", err)
	}
	return map[string]any{"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256", "crv": "P-256",
		"x": b64(point[1:33]), "y": b64(point[33:])}
}

func TestJWKS_Authenticate(t *testing.T) {
	p := newIdP(t)
	j := p.verifier(t, auth.JWKSConfig{})
	otherRSA := newRSAKey(t)
	pubDER, err := x509.MarshalPKIXPublicKey(&p.rsaKey.PublicKey)
	if err != nil {
		t.Fatalf("marshal public key: %v", err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})

	with := func(change func(c jwt.MapClaims)) jwt.MapClaims {
		c := p.claims()
		change(c)
		return c
	}
	tests := []struct {
		name       string
		token      func(t *testing.T) string
		wantTenant string // "" when the token must be refused
		wantErr    error
		wantReason string
	}{
		{name: "good RS256 token",
			token:      func(t *testing.T) string { return p.sign(t, p.rsaKID, p.claims()) },
			wantTenant: "tenant-1"},
		{name: "good ES256 token",
			token:      func(t *testing.T) string { return p.sign(t, p.ecKID, p.claims()) },
			wantTenant: "tenant-1"},
		{name: "tenant from tid when tenantId is absent",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { delete(c, "tenantId"); c["tid"] = "tenant-2" }))
			},
			wantTenant: "tenant-2"},
		{name: "expired a few seconds ago, within the leeway",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { c["exp"] = p.now().Add(-5 * time.Second).Unix() }))
			},
			wantTenant: "tenant-1"},
		{name: "expired",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { c["exp"] = p.now().Add(-time.Hour).Unix() }))
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "token expired"},
		{name: "not valid yet",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { c["nbf"] = p.now().Add(time.Hour).Unix() }))
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "not valid yet"},
		{name: "without exp",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { delete(c, "exp") }))
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "lacks a required claim"},
		{name: "wrong audience",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { c["aud"] = "shard-manager" }))
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "another audience"},
		{name: "wrong issuer",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }))
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "unexpected issuer"},
		{name: "missing tenant claim",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { delete(c, "tenantId") }))
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "no tenantId claim"},
		{name: "tenant claim that is not a tenant id",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { c["tenantId"] = "../other" }))
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "not a valid tenant id"},
		{name: "missing subject",
			token: func(t *testing.T) string {
				return p.sign(t, p.rsaKID, with(func(c jwt.MapClaims) { delete(c, "sub") }))
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "no subject"},
		{name: "alg none",
			token: func(t *testing.T) string {
				return signWith(t, jwt.SigningMethodNone, p.rsaKID, jwt.UnsafeAllowNoneSignatureType, p.claims())
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "algorithm not accepted"},
		{name: "HS256 with the public key as secret",
			token: func(t *testing.T) string {
				return signWith(t, jwt.SigningMethodHS256, p.rsaKID, pubPEM, p.claims())
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "algorithm not accepted"},
		{name: "HS256 with the public key's DER as secret",
			token: func(t *testing.T) string {
				return signWith(t, jwt.SigningMethodHS256, p.rsaKID, pubDER, p.claims())
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "algorithm not accepted"},
		{name: "RS256 token naming the EC key",
			token: func(t *testing.T) string {
				return signWith(t, jwt.SigningMethodRS256, p.ecKID, p.rsaKey, p.claims())
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "does not match its key"},
		{name: "signed by another key under a known kid",
			token: func(t *testing.T) string {
				return signWith(t, jwt.SigningMethodRS256, p.rsaKID, otherRSA, p.claims())
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "invalid signature"},
		{name: "tampered payload",
			token: func(t *testing.T) string {
				parts := strings.Split(p.sign(t, p.rsaKID, p.claims()), ".")
				forged, _ := json.Marshal(with(func(c jwt.MapClaims) { c["tenantId"] = "tenant-2" }))
				return parts[0] + "." + b64(forged) + "." + parts[2]
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "invalid signature"},
		{name: "no kid",
			token: func(t *testing.T) string {
				return signWith(t, jwt.SigningMethodRS256, "", p.rsaKey, p.claims())
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "no key id"},
		{name: "unknown kid",
			token: func(t *testing.T) string {
				return signWith(t, jwt.SigningMethodRS256, "rsa-unknown", otherRSA, p.claims())
			},
			wantErr: auth.ErrUnauthenticated, wantReason: "unknown key"},
		{name: "three segments of garbage",
			token:   func(*testing.T) string { return "abc.def.ghi" },
			wantErr: auth.ErrNotRecognized, wantReason: "malformed JWT"},
		{name: "not a JWT at all",
			token:   func(*testing.T) string { return "im-api-key-0123456789" },
			wantErr: auth.ErrNotRecognized, wantReason: "not a JWT"},
		{name: "empty",
			token:   func(*testing.T) string { return "" },
			wantErr: auth.ErrUnauthenticated, wantReason: "missing bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := tt.token(t)
			got, err := j.Authenticate(t.Context(), token)
			if tt.wantTenant != "" {
				if err != nil {
					t.Fatalf("a valid token was refused: %v", err)
				}
				if got.TenantID != tt.wantTenant || got.Subject != "user-1" ||
					!got.Has(auth.RoleTenantAdmin) || !got.Has(auth.RoleViewer) {
					t.Fatalf("principal = %+v; want tenant %s, subject user-1, roles tenant_admin and viewer", got, tt.wantTenant)
				}
				return
			}
			if err == nil {
				t.Fatalf("token accepted as %+v; it must be refused (%s)", got, tt.wantReason)
			}
			if !errors.Is(err, auth.ErrUnauthenticated) || !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v; want it to wrap ErrUnauthenticated and %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantReason) {
				t.Fatalf("error %q; want the reason %q", err, tt.wantReason)
			}
			if token != "" && strings.Contains(err.Error(), token) {
				t.Fatalf("the error repeats the token")
			}
		})
	}
}

func TestJWKS_UnknownKIDTriggersOneRefetch(t *testing.T) {
	p := newIdP(t)
	j := p.verifier(t, auth.JWKSConfig{})
	if got := p.hits.Load(); got != 1 {
		t.Fatalf("JWKS fetched %d times at start-up, want 1", got)
	}

	// The IdP rotates in a new key and signs with it at once.
	rotated := newRSAKey(t)
	p.serve(t, rsaJWK(p.rsaKID, &p.rsaKey.PublicKey), rsaJWK("rsa-2", &rotated.PublicKey))
	token := signWith(t, jwt.SigningMethodRS256, "rsa-2", rotated, p.claims())
	if _, err := j.Authenticate(t.Context(), token); err != nil {
		t.Fatalf("a token signed with a freshly rotated key was refused: %v", err)
	}
	if got := p.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times, want 2 (start-up and one refetch for the new kid)", got)
	}
	if _, err := j.Authenticate(t.Context(), token); err != nil {
		t.Fatalf("second use of the rotated key: %v", err)
	}

	// Tokens naming random kids must not make us hammer the endpoint.
	for i := range 5 {
		bogus := signWith(t, jwt.SigningMethodRS256, "random-"+string(rune('a'+i)), rotated, p.claims())
		if _, err := j.Authenticate(t.Context(), bogus); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("token with unknown kid: error %v, want ErrUnauthenticated", err)
		}
	}
	if got := p.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times after 5 unknown kids within 30 s, want still 2 (rate limited)", got)
	}
}

func TestJWKS_ConcurrentUnknownKIDsShareOneRefetch(t *testing.T) {
	p := newIdP(t)
	j := p.verifier(t, auth.JWKSConfig{})
	rotated := newECKey(t)
	p.serve(t, ecJWK(t, "ec-2", &rotated.PublicKey))
	token := signWith(t, jwt.SigningMethodES256, "ec-2", rotated, p.claims())

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			if _, err := j.Authenticate(t.Context(), token); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent request with the rotated key refused: %v", err)
	}
	if got := p.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times for 20 concurrent requests with one new kid, want 2", got)
	}
}

// syncBuffer is a log sink safe for the refresh goroutine and the test.
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

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after 5 s waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJWKS_RefreshFailureKeepsServingTheLastGoodKeys(t *testing.T) {
	p := newIdP(t)
	var logs syncBuffer
	j := p.verifierLogging(t, auth.JWKSConfig{Refresh: 20 * time.Millisecond}, zerolog.New(&logs))
	token := p.sign(t, p.rsaKID, p.claims())

	p.fail.Store(true)
	failedFrom := p.hits.Load()
	eventually(t, "three failed background refreshes", func() bool { return p.hits.Load() >= failedFrom+3 })
	if _, err := j.Authenticate(t.Context(), token); err != nil {
		t.Fatalf("while the JWKS endpoint fails, a token signed with a cached key was refused: %v", err)
	}
	if !strings.Contains(logs.String(), "keeping the last good keys") {
		t.Fatalf("failed refreshes were not logged; log:\n%s", logs.String())
	}

	// A document without usable keys must not replace the good set either.
	p.serve(t, map[string]any{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"})
	p.fail.Store(false)
	from := p.hits.Load()
	eventually(t, "two refreshes of an unusable document", func() bool { return p.hits.Load() >= from+2 })
	if _, err := j.Authenticate(t.Context(), token); err != nil {
		t.Fatalf("a JWKS document without usable keys replaced the good ones: %v", err)
	}

	// The endpoint heals with a rotated set: the background refresh picks it
	// up and the retired key stops working.
	rotated := newECKey(t)
	p.serve(t, ecJWK(t, "ec-2", &rotated.PublicKey))
	from = p.hits.Load()
	eventually(t, "two refreshes after recovery", func() bool { return p.hits.Load() >= from+2 })
	if _, err := j.Authenticate(t.Context(), signWith(t, jwt.SigningMethodES256, "ec-2", rotated, p.claims())); err != nil {
		t.Fatalf("after recovery, a token with the new key was refused: %v", err)
	}
	if _, err := j.Authenticate(t.Context(), token); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("after rotation, a token with the retired key: error %v, want ErrUnauthenticated", err)
	}
}

func TestJWKS_EndpointDownAtStartIsUnavailableUntilKeysArrive(t *testing.T) {
	p := newIdP(t)
	p.fail.Store(true)
	j := p.verifier(t, auth.JWKSConfig{Refresh: 20 * time.Millisecond})
	token := p.sign(t, p.rsaKID, p.claims())

	if err := j.Ready(); !errors.Is(err, auth.ErrUnavailable) {
		t.Fatalf("Ready() = %v before any key set was fetched, want ErrUnavailable", err)
	}
	_, err := j.Authenticate(t.Context(), token)
	if !errors.Is(err, auth.ErrUnavailable) || errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("Authenticate without any key set: error %v, want ErrUnavailable (our fault, 503), not ErrUnauthenticated", err)
	}

	p.fail.Store(false)
	eventually(t, "the background retry to load the keys", func() bool { return j.Ready() == nil })
	if _, err := j.Authenticate(t.Context(), token); err != nil {
		t.Fatalf("after the endpoint came back: %v", err)
	}
}

func TestJWKS_CloseStopsTheBackgroundRefresh(t *testing.T) {
	p := newIdP(t)
	j := p.verifier(t, auth.JWKSConfig{Refresh: 10 * time.Millisecond})
	eventually(t, "a background refresh", func() bool { return p.hits.Load() >= 2 })
	if err := j.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// A request cancelled by Close may still reach the server just after it:
	// let it land before counting.
	time.Sleep(50 * time.Millisecond)
	stopped := p.hits.Load()
	time.Sleep(100 * time.Millisecond)
	if got := p.hits.Load(); got != stopped {
		t.Fatalf("JWKS fetched %d more times after Close", got-stopped)
	}
}

func TestNewJWKS_RefusesIncompleteConfiguration(t *testing.T) {
	tests := []struct {
		name string
		cfg  auth.JWKSConfig
		want string
	}{
		{"no URL", auth.JWKSConfig{Issuer: testIssuer, Audience: testAudience}, "absolute http(s) URL"},
		{"relative URL", auth.JWKSConfig{URL: "/jwks.json", Issuer: testIssuer, Audience: testAudience}, "absolute http(s) URL"},
		{"no issuer", auth.JWKSConfig{URL: "https://u.test/jwks", Audience: testAudience}, "issuer"},
		{"no audience", auth.JWKSConfig{URL: "https://u.test/jwks", Issuer: testIssuer}, "audience"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := auth.NewJWKS(t.Context(), tt.cfg, zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewJWKS error = %v; want one mentioning %q", err, tt.want)
			}
		})
	}
}
