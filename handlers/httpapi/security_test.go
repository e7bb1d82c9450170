package httpapi

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/castiel/integration-manager/auth"
	"github.com/castiel/integration-manager/store"
)

// The User Management stand-in of these tests.
const (
	jwtIssuer   = "https://users.castiel.test"
	jwtAudience = "integration-manager"
	jwtKID      = "rsa-1"
)

// testIdP signs tokens with an RSA key generated for the test and serves its
// public half as a JWKS document, as User Management does.
type testIdP struct {
	key *rsa.PrivateKey
	srv *httptest.Server
}

func newTestIdP(t *testing.T) *testIdP {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate RSA key: %v", err)
	}
	doc, err := json.Marshal(map[string]any{"keys": []map[string]any{{
		"kty": "RSA", "kid": jwtKID, "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(key.PublicKey.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(key.PublicKey.E)).Bytes()),
	}}})
	if err != nil {
		t.Fatalf("encode JWKS: %v", err)
	}
	p := &testIdP{key: key}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(doc)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// claims are valid claims for a caller of tenant with role.
func (p *testIdP) claims(tenant, role string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": jwtIssuer, "aud": []string{jwtAudience}, "sub": "user-of-" + tenant + "-" + role,
		"tenantId": tenant, "roles": []string{role},
		"iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix(),
	}
}

// token is a valid RS256 token for tenant and role; change spoils it.
func (p *testIdP) token(t *testing.T, tenant, role string, change func(jwt.MapClaims)) string {
	t.Helper()
	c := p.claims(tenant, role)
	if change != nil {
		change(c)
	}
	return signJWT(t, jwt.SigningMethodRS256, jwtKID, p.key, c)
}

func signJWT(t *testing.T, m jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("sign %s token: %v", m.Alg(), err)
	}
	return s
}

// writeLog records every write the API makes to the store (that succeeds: a
// Delete refused as not found in the caller's own partition changed nothing)
// and every write attempt on Secret Management, so a refused request can be shown to have changed nothing and
// stored documents can be searched for secrets.
type writeLog struct {
	mu      sync.Mutex
	store   int
	secrets int
	bodies  []string // every document body written to the store
}

func (l *writeLog) storeWrite(body []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.store++
	if body != nil {
		l.bodies = append(l.bodies, string(body))
	}
}

func (l *writeLog) secretWrite() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.secrets++
}

func (l *writeLog) counts() (storeWrites, secretWrites int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.store, l.secrets
}

func (l *writeLog) documents() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.bodies...)
}

type loggingBackend struct {
	store.Backend
	log *writeLog
}

func (b loggingBackend) Container(name string) (store.Container, error) {
	c, err := b.Backend.Container(name)
	if err != nil {
		return nil, err
	}
	return loggingContainer{Container: c, log: b.log}, nil
}

type loggingContainer struct {
	store.Container
	log *writeLog
}

func (c loggingContainer) Create(ctx context.Context, pk, id string, body []byte) (string, error) {
	etag, err := c.Container.Create(ctx, pk, id, body)
	if err == nil {
		c.log.storeWrite(body)
	}
	return etag, err
}

func (c loggingContainer) Replace(ctx context.Context, pk, id string, body []byte, ifMatch string) (string, error) {
	etag, err := c.Container.Replace(ctx, pk, id, body, ifMatch)
	if err == nil {
		c.log.storeWrite(body)
	}
	return etag, err
}

func (c loggingContainer) Upsert(ctx context.Context, pk, id string, body []byte) (string, error) {
	etag, err := c.Container.Upsert(ctx, pk, id, body)
	if err == nil {
		c.log.storeWrite(body)
	}
	return etag, err
}

func (c loggingContainer) Delete(ctx context.Context, pk, id string, ifMatch string) error {
	err := c.Container.Delete(ctx, pk, id, ifMatch)
	if err == nil {
		c.log.storeWrite(nil)
	}
	return err
}

type loggingSecrets struct {
	Secrets
	log *writeLog
}

func (s loggingSecrets) Put(ctx context.Context, tenantID string, value []byte) (string, error) {
	s.log.secretWrite()
	return s.Secrets.Put(ctx, tenantID, value)
}

func (s loggingSecrets) Replace(ctx context.Context, tenantID, ref string, value []byte) error {
	s.log.secretWrite()
	return s.Secrets.Replace(ctx, tenantID, ref, value)
}

func (s loggingSecrets) Delete(ctx context.Context, tenantID, ref string) error {
	s.log.secretWrite()
	return s.Secrets.Delete(ctx, tenantID, ref)
}

// securityHarness is the harness with the fleet's authenticator: the static
// keys of the harness chained with a real JWKS verifier of testIdP.
type securityHarness struct {
	*harness
	idp    *testIdP
	writes *writeLog
}

func newSecurityHarness(t *testing.T) *securityHarness {
	t.Helper()
	idp := newTestIdP(t)
	writes := &writeLog{}
	h := newHarness(t, func(d *Deps, o *Options) {
		// The verifier logs to the API's log so the secret checks see its lines too.
		jwks, err := auth.NewJWKS(t.Context(), auth.JWKSConfig{
			URL: idp.srv.URL + "/.well-known/jwks.json", Issuer: jwtIssuer, Audience: jwtAudience,
		}, o.Logger)
		if err != nil {
			t.Fatalf("NewJWKS: %v", err)
		}
		t.Cleanup(func() { _ = jwks.Close() })
		if err := jwks.Ready(); err != nil {
			t.Fatalf("the JWKS verifier did not load the test key set: %v", err)
		}
		d.Auth = auth.Chain(d.Auth, jwks)
		d.Store = loggingBackend{Backend: d.Store, log: writes}
		d.Secrets = loggingSecrets{Secrets: d.Secrets, log: writes}
	})
	return &securityHarness{harness: h, idp: idp, writes: writes}
}

// effects are the side effects a refused request must not have.
type effects struct{ sent, storeWrites, secretWrites int }

func (h *securityHarness) effects() effects {
	s, sec := h.writes.counts()
	return effects{sent: h.sender.count(), storeWrites: s, secretWrites: sec}
}

// assertNoEffects fails when anything was enqueued or written since before.
func (h *securityHarness) assertNoEffects(t *testing.T, what string, before effects) {
	t.Helper()
	if after := h.effects(); after != before {
		t.Errorf("%s had side effects: %d commands enqueued, %d store writes, %d secret writes; want none",
			what, after.sent-before.sent, after.storeWrites-before.storeWrites, after.secretWrites-before.secretWrites)
	}
}

// realPath fills a route's wildcards with tenant A's resources from the seed
// (and the poison message "poison-1"), so a request that slipped past a check
// would act on something that exists.
func realPath(rt route, w *world) string {
	a := w.tenants[tenantA]
	return strings.NewReplacer(
		"{id}/connection", a.integration+"/connection",
		"integrations/{id}", "integrations/"+a.integration,
		"webhooks/{id}", "webhooks/"+a.webhook,
		"sync-tasks/{id}", "sync-tasks/"+a.syncTask,
		"conflicts/{id}", "conflicts/"+a.conflict,
		"executions/{id}", "executions/"+a.execution,
		"catalog/{id}", "catalog/"+w.catalogEntry,
		"providers/{id}", "providers/acme-crm",
		"poison/{id}", "poison/poison-1",
		"{tenantId}", tenantA,
		"{catalogEntryId}", w.catalogEntry,
		"{integrationId}", a.integration,
	).Replace(rt.path)
}

// goodBody is a body each write route would accept, so that a request which
// slipped past authentication would really change something.
func goodBody(rt route, w *world) any {
	a := w.tenants[tenantA]
	bodies := map[string]any{
		"POST /api/v1/providers":                             func() any { p := testProvider(); p.ID = "acme-crm-2"; return p }(),
		"PUT /api/v1/providers/{id}":                         testProvider(),
		"POST /api/v1/catalog":                               map[string]any{"id": "entry-2", "category": "crm", "providerId": "acme-crm", "name": "Second"},
		"PUT /api/v1/catalog/{id}":                           map[string]any{"id": w.catalogEntry, "category": "crm", "providerId": "acme-crm", "name": "Renamed", "visibleByDefault": true},
		"PUT /api/v1/visibility/{tenantId}/{catalogEntryId}": map[string]any{"visible": false},
		"POST /api/v1/integrations":                          map[string]any{"catalogEntryId": w.catalogEntry, "name": "another"},
		"PATCH /api/v1/integrations/{id}":                    map[string]any{"name": "renamed"},
		"PUT /api/v1/integrations/{id}/connection":           map[string]any{"credentials": map[string]string{"apiKey": "replaced"}},
		"POST /api/v1/webhooks":                              map[string]any{"url": "https://hooks.example.com/new", "eventTypes": []string{"*"}},
		"PATCH /api/v1/webhooks/{id}":                        map[string]any{"description": "changed"},
		"POST /api/v1/webhooks/{id}/replay":                  map[string]any{"since": "2000-01-01T00:00:00Z"},
		"POST /api/v1/sync-tasks":                            validSyncTask(a.integration),
		"PUT /api/v1/sync-tasks/{id}":                        validSyncTask(a.integration),
		"POST /api/v1/events":                                map[string]any{"type": "contact.updated", "data": map[string]any{"id": 1}},
		"POST /api/v1/conflicts/{id}/resolution":             map[string]any{"side": "external"},
	}
	return bodies[rt.pattern()]
}

// TestSecurity_EveryAuthenticatedRouteRefusesBadCredentials walks every route
// that needs a principal, with the fleet's authenticator (static keys chained
// with a JWKS verifier): a missing or malformed Authorization header and every
// kind of bad JWT get 401 problem+json with a WWW-Authenticate challenge, and
// change nothing. A valid JWT then gets past authentication on every route,
// so the refusals are the tokens' doing.
func TestSecurity_EveryAuthenticatedRouteRefusesBadCredentials(t *testing.T) {
	h := newSecurityHarness(t)
	w := h.seed()
	h.poison.items = []PoisonMessage{{ID: "poison-1", Topic: "commands.events", Handler: "dispatcher", Reason: "test"}}

	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatalf("generate RSA key: %v", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&h.idp.key.PublicKey)
	if err != nil {
		t.Fatalf("marshal public key: %v", err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	good := h.idp.claims(tenantA, "tenant_admin")
	spoilt := func(change func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{}
		for k, v := range good {
			c[k] = v
		}
		change(c)
		return c
	}

	bad := []struct {
		name          string
		authorization string // "" sends no header
		detail        string // what the problem's detail must mention
	}{
		{name: "no Authorization header", detail: "missing"},
		{name: "Basic scheme", authorization: "Basic " + base64.StdEncoding.EncodeToString([]byte("user:pass")), detail: "not a Bearer"},
		{name: "Bearer without a token", authorization: "Bearer", detail: "not a Bearer"},
		{name: "Bearer with blanks only", authorization: "Bearer    ", detail: "empty"},
		{name: "token without a scheme", authorization: tokAdminA, detail: "not a Bearer"},
		{name: "unknown API key", authorization: "Bearer not-a-known-key", detail: "unknown"},
		{name: "garbage three-part token", authorization: "Bearer aaa.bbb.ccc", detail: "not recognized"},
		{name: "expired JWT", detail: "expired",
			authorization: "Bearer " + signJWT(t, jwt.SigningMethodRS256, jwtKID, h.idp.key, spoilt(func(c jwt.MapClaims) {
				c["iat"], c["exp"] = time.Now().Add(-2*time.Hour).Unix(), time.Now().Add(-time.Hour).Unix()
			}))},
		{name: "JWT without exp", detail: "required claim",
			authorization: "Bearer " + signJWT(t, jwt.SigningMethodRS256, jwtKID, h.idp.key, spoilt(func(c jwt.MapClaims) { delete(c, "exp") }))},
		{name: "JWT for another audience", detail: "audience",
			authorization: "Bearer " + signJWT(t, jwt.SigningMethodRS256, jwtKID, h.idp.key, spoilt(func(c jwt.MapClaims) { c["aud"] = []string{"billing"} }))},
		{name: "JWT from another issuer", detail: "issuer",
			authorization: "Bearer " + signJWT(t, jwt.SigningMethodRS256, jwtKID, h.idp.key, spoilt(func(c jwt.MapClaims) { c["iss"] = "https://evil.example.com" }))},
		{name: "JWT signed by an unknown key", detail: "unknown key",
			authorization: "Bearer " + signJWT(t, jwt.SigningMethodRS256, "rsa-unknown", otherKey, good)},
		{name: "JWT signed by another key under the known kid", detail: "signature",
			authorization: "Bearer " + signJWT(t, jwt.SigningMethodRS256, jwtKID, otherKey, good)},
		{name: "JWT with alg none", detail: "algorithm",
			authorization: "Bearer " + signJWT(t, jwt.SigningMethodNone, jwtKID, jwt.UnsafeAllowNoneSignatureType, good)},
		{name: "JWT HS256 keyed with the public key", detail: "algorithm",
			authorization: "Bearer " + signJWT(t, jwt.SigningMethodHS256, jwtKID, pubPEM, good)},
		{name: "JWT without a tenant", detail: "tenantId",
			authorization: "Bearer " + signJWT(t, jwt.SigningMethodRS256, jwtKID, h.idp.key, spoilt(func(c jwt.MapClaims) { delete(c, "tenantId") }))},
	}

	checked := 0
	for _, rt := range h.api.routes() {
		if rt.access == accessPublic {
			continue
		}
		path := realPath(rt, w)
		t.Run(rt.pattern(), func(t *testing.T) {
			for _, b := range bad {
				var headers []string
				if b.authorization != "" {
					headers = []string{"Authorization", b.authorization}
				}
				before := h.effects()
				r := h.do(rt.method, path, "", goodBody(rt, w), headers...)
				if r.Code != http.StatusUnauthorized {
					t.Errorf("%s: %s answered %d, want 401: %s", b.name, rt.pattern(), r.Code, r.body)
					continue
				}
				p := r.problem(t)
				if !strings.Contains(p.Detail, b.detail) {
					t.Errorf("%s: the 401 says %q, want it to mention %q", b.name, p.Detail, b.detail)
				}
				if r.Header().Get("WWW-Authenticate") == "" {
					t.Errorf("%s: 401 without a WWW-Authenticate challenge", b.name)
				}
				if tok := strings.TrimSpace(strings.TrimPrefix(b.authorization, "Bearer")); len(tok) > 8 && strings.Contains(r.body, tok) {
					t.Errorf("%s: the 401 echoes the token: %s", b.name, r.body)
				}
				h.assertNoEffects(t, b.name+" on "+rt.pattern(), before)
				checked++
			}
		})
	}
	if checked == 0 {
		t.Fatal("no route needing a principal was found in the route table")
	}

	// Positive control, after every refusal: a valid JWT of the right role
	// gets past authentication and authorisation on every route (deletes
	// last, so most requests find what they act on and succeed).
	admin := h.idp.token(t, tenantA, "tenant_admin", nil)
	platform := h.idp.token(t, tenantOps, "platform_admin", nil)
	routes := h.api.routes()
	slices.SortStableFunc(routes, func(x, y route) int {
		return cmp.Compare(boolInt(x.method == http.MethodDelete), boolInt(y.method == http.MethodDelete))
	})
	for _, rt := range routes {
		if rt.access == accessPublic {
			continue
		}
		tok := admin
		if rt.access == accessPlatform {
			tok = platform
		}
		r := h.do(rt.method, realPath(rt, w), tok, goodBody(rt, w))
		if r.Code == http.StatusUnauthorized || r.Code == http.StatusForbidden || r.Code >= 500 {
			t.Errorf("valid JWT: %s answered %d: %s", rt.pattern(), r.Code, r.body)
		}
	}

	logs := h.logs.String()
	for _, b := range bad {
		if tok := strings.TrimSpace(strings.TrimPrefix(b.authorization, "Bearer")); len(tok) > 8 && strings.Contains(logs, tok) {
			t.Errorf("the log holds the token of %q", b.name)
		}
	}
	for _, tok := range []string{admin, platform} {
		if strings.Contains(logs, tok) {
			t.Errorf("the log holds a valid JWT")
		}
	}
}

// TestSecurity_JWTPrincipalsAreIsolatedByTenant replays the tenant isolation
// walk with JWT principals of tenant B against tenant A's resources: the
// tenant of a JWT goes through the same path as a static key's, so B gets 404
// (or an empty list) everywhere and A's data is unchanged.
func TestSecurity_JWTPrincipalsAreIsolatedByTenant(t *testing.T) {
	h := newSecurityHarness(t)
	w := h.seed()
	victim := w.tenants[tenantA]
	attacker := &tenantWorld{
		token:  h.idp.token(t, tenantB, "tenant_admin", nil),
		viewer: h.idp.token(t, tenantB, "viewer", nil),
	}
	attacker.integration = w.tenants[tenantB].integration
	victimReader := h.idp.token(t, tenantA, "viewer", nil)

	// The JWT path works: each tenant reads its own resources with a JWT.
	h.must(200, "GET", v1+"/webhooks/"+victim.webhook, victimReader, nil)
	h.must(200, "GET", v1+"/webhooks/"+w.tenants[tenantB].webhook, attacker.viewer, nil)

	snapshot := func() map[string]string {
		out := make(map[string]string)
		for _, p := range []string{
			v1 + "/integrations/" + victim.integration, v1 + "/integrations/" + victim.integration + "/connection",
			v1 + "/webhooks/" + victim.webhook, v1 + "/sync-tasks/" + victim.syncTask,
			v1 + "/conflicts/" + victim.conflict, v1 + "/executions/" + victim.execution,
		} {
			out[p] = h.must(200, "GET", p, victimReader, nil).body
		}
		return out
	}
	before := snapshot()
	effectsBefore := h.effects()
	victimIDs := []string{victim.integration, victim.webhook, victim.syncTask, victim.conflict, victim.execution, tenantA}
	cases := isolationCases()
	walked := 0
	for _, rt := range h.api.routes() {
		tc, ok := cases[rt.pattern()]
		if !rt.tenant || !ok {
			continue
		}
		path := pathWithVictim(rt)
		if tc.path != nil {
			path = tc.path
		}
		var body any
		if tc.body != nil {
			body = tc.body(attacker, victim)
		}
		tokens := []string{attacker.token}
		if rt.method == http.MethodGet {
			tokens = append(tokens, attacker.viewer)
		}
		for _, tok := range tokens {
			before := h.effects()
			r := h.do(rt.method, path(victim), tok, body)
			h.assertNoEffects(t, fmt.Sprintf("%s %s with a tenant B JWT", rt.method, path(victim)), before)
			if r.Code != tc.want {
				t.Errorf("%s %s with a tenant B JWT answered %d, want %d: %s", rt.method, path(victim), r.Code, tc.want, r.body)
				continue
			}
			if r.Code >= 400 {
				r.problem(t)
			}
			for _, id := range victimIDs {
				if strings.Contains(r.body, id) {
					t.Errorf("%s %s with a tenant B JWT leaked %q of tenant A: %s", rt.method, path(victim), id, r.body)
				}
			}
		}
		walked++
	}
	if walked < 20 {
		t.Fatalf("only %d tenant routes walked; the isolation cases no longer match the route table", walked)
	}
	h.assertNoEffects(t, "tenant B's JWT attempts on tenant A", effectsBefore)
	after := snapshot()
	for p, b := range before {
		if after[p] != b {
			t.Errorf("tenant A's %s changed after tenant B's JWT attempts:\nbefore %s\nafter  %s", p, b, after[p])
		}
	}
}

// TestSecurity_OversizedAndMalformedBodiesAreRefused sends every POST, PUT
// and PATCH route a body one byte over MaxBodyBytes (413) and a truncated
// JSON document (400), as a principal the route admits, with a JWT: both are
// problems and neither enqueues nor writes anything.
func TestSecurity_OversizedAndMalformedBodiesAreRefused(t *testing.T) {
	h := newSecurityHarness(t)
	w := h.seed()
	h.poison.items = []PoisonMessage{{ID: "poison-1", Topic: "commands.events", Handler: "dispatcher", Reason: "test"}}
	admin := h.idp.token(t, tenantA, "tenant_admin", nil)
	platform := h.idp.token(t, tenantOps, "platform_admin", nil)

	limit := h.api.opts.MaxBodyBytes
	// Well-formed JSON, just too big: only the size can be the reason.
	filler := int(limit+1) - len(`{"name":""}`)
	oversized := []byte(`{"name":"` + strings.Repeat("x", filler) + `"}`)
	if int64(len(oversized)) != limit+1 {
		t.Fatalf("oversized body is %d bytes, want %d", len(oversized), limit+1)
	}
	malformed := []byte(`{"name": "x", "settings": {`)

	walked := 0
	for _, rt := range h.api.routes() {
		switch rt.method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
		default:
			continue
		}
		tok := ""
		switch rt.access {
		case accessPlatform:
			tok = platform
		case accessRead, accessTenantWrite:
			tok = admin
		}
		path := realPath(rt, w)
		t.Run(rt.pattern(), func(t *testing.T) {
			before := h.effects()
			r := h.do(rt.method, path, tok, oversized)
			if r.Code != http.StatusRequestEntityTooLarge {
				t.Errorf("a body of MaxBodyBytes+1 = %d bytes answered %d, want 413: %.300s", len(oversized), r.Code, r.body)
			} else {
				r.problem(t)
			}
			h.assertNoEffects(t, "the oversized body", before)

			// Ingress keeps any bytes as sent (and answers an unsigned post 401),
			// so only the JSON routes must refuse malformed JSON.
			if rt.body == bodyRaw {
				return
			}
			before = h.effects()
			r = h.do(rt.method, path, tok, malformed)
			if r.Code != http.StatusBadRequest {
				t.Errorf("a truncated JSON body answered %d, want 400: %s", r.Code, r.body)
			} else if p := r.problem(t); strings.Contains(r.body, `"settings": {`) {
				t.Errorf("the 400 quotes the body: %+v", p)
			}
			h.assertNoEffects(t, "the malformed body", before)
		})
		walked++
	}
	if walked < 20 {
		t.Fatalf("only %d write routes walked; expected every POST, PUT and PATCH of the table", walked)
	}
}

// TestSecurity_SecretsAndTokensNeverLeak runs a session through JWT and static
// key principals that handles every kind of secret: a webhook created with a
// caller-chosen secret, rotated to another chosen one and then to a generated
// one (the create replayed through its Idempotency-Key), an integration's
// ingress secret, a connection's credentials, an event and a signed ingress
// post. Then no secret value and no bearer token may appear in the log, in
// any GET answer, in the JSON of any command sent, or in any stored document.
func TestSecurity_SecretsAndTokensNeverLeak(t *testing.T) {
	h := newSecurityHarness(t)
	platform := h.idp.token(t, tenantOps, "platform_admin", nil)
	admin := h.idp.token(t, tenantA, "tenant_admin", nil)
	viewer := h.idp.token(t, tenantA, "viewer", nil)
	whsec := func(seed string) string {
		return "whsec_" + base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("%-32s", seed)))
	}
	chosenSecret, rotatedSecret := whsec("chosen-signing-secret"), whsec("rotated-signing-secret")
	apiKey, password := "credential-api-key-7f3a9c", "credential-password-b41e02"

	h.must(201, "POST", v1+"/providers", platform, testProvider())
	h.must(201, "POST", v1+"/catalog", platform, map[string]any{
		"id": "acme-crm-entry", "category": "crm", "providerId": "acme-crm", "name": "Acme CRM", "visibleByDefault": true,
	})

	var in integrationCreated
	h.must(201, "POST", v1+"/integrations", admin, map[string]any{"catalogEntryId": "acme-crm-entry", "name": "CRM"}).json(t, &in)
	h.must(200, "PUT", v1+"/integrations/"+in.ID+"/connection", admin,
		map[string]any{"credentials": map[string]string{"apiKey": apiKey, "password": password}})

	createBody := map[string]any{"url": "https://hooks.example.com/a", "eventTypes": []string{"contact.*"}, "secret": chosenSecret}
	var wh webhookCreated
	h.must(201, "POST", v1+"/webhooks", admin, createBody, HeaderIdempotencyKey, "create-hook-1").json(t, &wh)
	// The replay shows the secret again (a POST answer), from the secret store.
	var again webhookCreated
	h.must(201, "POST", v1+"/webhooks", admin, createBody, HeaderIdempotencyKey, "create-hook-1").json(t, &again)
	if wh.Secret != chosenSecret || again.Secret != chosenSecret || again.ID != wh.ID {
		t.Fatalf("create and its replay answered secrets %q and %q for %s/%s, want the chosen one", wh.Secret, again.Secret, wh.ID, again.ID)
	}
	var rot1, rot2 secretRotated
	h.must(200, "POST", v1+"/webhooks/"+wh.ID+"/rotate-secret", admin, map[string]any{"secret": rotatedSecret}).json(t, &rot1)
	h.must(200, "POST", v1+"/webhooks/"+wh.ID+"/rotate-secret", tokAdminA, nil).json(t, &rot2)
	if rot1.Secret != rotatedSecret || rot2.Secret == "" {
		t.Fatalf("rotations answered %q and %q", rot1.Secret, rot2.Secret)
	}

	var st struct{ ID string }
	h.must(201, "POST", v1+"/sync-tasks", admin, validSyncTask(in.ID)).json(t, &st)
	var run runAccepted
	h.must(202, "POST", v1+"/sync-tasks/"+st.ID+"/runs", admin, nil).json(t, &run)
	h.must(202, "POST", v1+"/events", admin, map[string]any{"type": "contact.updated", "data": map[string]any{"id": 42}})
	ingressBody := []byte(`{"event":"contact.updated","id":42}`)
	sig := ingressSpec.Sign([]byte(in.IngressSecret), ingressBody, h.clock())
	sig["Authorization"] = "Bearer " + admin // must not travel with the post
	if r := h.postIngress(in.ID, ingressBody, sig); r.Code != 202 {
		t.Fatalf("signed ingress post answered %d: %s", r.Code, r.body)
	}
	if len(h.sender.all()) < 3 {
		t.Fatalf("the session sent %d commands, want the run, the event and the ingress post", len(h.sender.all()))
	}

	secrets := map[string]string{
		"chosen webhook secret":    chosenSecret,
		"rotated webhook secret":   rotatedSecret,
		"generated webhook secret": rot2.Secret,
		"ingress secret":           in.IngressSecret,
		"credential apiKey":        apiKey,
		"credential password":      password,
		"platform JWT":             platform,
		"tenant admin JWT":         admin,
		"viewer JWT":               viewer,
		"static key":               tokAdminA,
		"static platform key":      tokPlatform,
	}
	for name, s := range secrets {
		if s == "" {
			t.Fatalf("the %s is empty: the session did not run as scripted", name)
		}
	}
	// The secrets are real: Secret Management holds each of them.
	h.secrets.mu.Lock()
	var stored []string
	for _, v := range h.secrets.values {
		stored = append(stored, string(v))
	}
	h.secrets.mu.Unlock()
	for _, name := range []string{"rotated webhook secret", "generated webhook secret", "ingress secret", "credential apiKey", "credential password"} {
		if !strings.Contains(strings.Join(stored, "\n"), secrets[name]) {
			t.Errorf("Secret Management does not hold the %s", name)
		}
	}

	// Read everything back, as viewer, admin (JWT and static key) and platform admin.
	a := &world{catalogEntry: "acme-crm-entry", tenants: map[string]*tenantWorld{tenantA: {
		integration: in.ID, webhook: wh.ID, syncTask: st.ID, conflict: "no-conflict", execution: run.ExecutionID,
	}}}
	var haystacks []struct{ where, text string }
	add := func(where, text string) { haystacks = append(haystacks, struct{ where, text string }{where, text}) }
	for _, rt := range h.api.routes() {
		if rt.method != http.MethodGet || rt.path == "/metrics" {
			continue
		}
		tokens := []string{viewer, admin, tokAdminA}
		if rt.access == accessPlatform {
			tokens = []string{platform, tokPlatform}
		}
		path := realPath(rt, a)
		for _, tok := range tokens {
			r := h.do("GET", path, tok, nil)
			add("GET "+path, r.body)
		}
	}
	for _, s := range h.sender.all() {
		raw, err := json.Marshal(s.msg)
		if err != nil {
			t.Fatalf("encode sent %s: %v", s.msg.CEType(), err)
		}
		add("sent "+s.msg.CEType(), string(raw)+" "+s.tenantID+" "+s.correlationID)
	}
	for i, doc := range h.writes.documents() {
		add(fmt.Sprintf("stored document %d", i), doc)
	}
	logs := h.logs.String()
	if !strings.Contains(logs, "http request") {
		t.Fatal("nothing was logged")
	}
	add("the log", logs)

	for _, hs := range haystacks {
		for name, s := range secrets {
			if strings.Contains(hs.text, s) {
				t.Errorf("%s holds the %s: %.400s", hs.where, name, hs.text)
			}
		}
	}
	// Sanity: the haystacks hold what was read, so an empty search proves something.
	all := ""
	for _, hs := range haystacks {
		all += hs.text
	}
	for _, want := range []string{wh.ID, in.ID, st.ID, run.ExecutionID, "contact.updated"} {
		if !strings.Contains(all, want) {
			t.Errorf("the searched texts lack %q: the reads did not see the session", want)
		}
	}
	for _, ref := range []string{`"credentialRef"`, `"secretRef"`, `"previousSecretRef"`, `"ingressSecretRef"`} {
		if !strings.Contains(all, ref) {
			t.Errorf("the searched texts hold no %s: the reads missed a document that refers to a secret", ref)
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
