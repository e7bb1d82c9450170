package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
)

// Defaults of JWKSConfig.
const (
	DefaultJWKSRefresh        = 15 * time.Minute
	DefaultLeeway             = 30 * time.Second
	DefaultMinRefetchInterval = 30 * time.Second
)

const (
	jwksFetchTimeout = 10 * time.Second
	maxJWKSBytes     = 1 << 20
	// retryMin is the first delay after a failed background refresh; it
	// doubles up to min(Refresh, retryMax) so a JWKS endpoint that was down
	// at start-up is picked up quickly without being hammered.
	retryMin = time.Second
	retryMax = time.Minute
	// minRSABits: smaller RSA keys are refused in a JWKS document.
	minRSABits = 2048
)

// acceptedAlgs returns the only signing algorithms accepted. Listing them
// (rather than trusting the token's "alg") is what stops algorithm confusion:
// "none" and HS256-with-the-public-key-as-secret are refused before any key
// is used.
func acceptedAlgs() []string { return []string{"RS256", "ES256"} }

// JWKSConfig configures NewJWKS.
type JWKSConfig struct {
	URL      string // the JWKS document (services.userManagement.jwksUrl)
	Issuer   string // required "iss"
	Audience string // required among "aud"
	// Refresh is how often the key set is refetched in the background
	// (DefaultJWKSRefresh if zero).
	Refresh time.Duration
	// HTTPClient fetches the document (a client with a 10 s timeout if nil).
	HTTPClient *http.Client
	// Leeway tolerates clock skew on exp and nbf (DefaultLeeway if zero).
	Leeway time.Duration
	// MinRefetchInterval bounds the refetches a token with an unknown "kid"
	// can trigger, so random kids cannot make us hammer the endpoint
	// (DefaultMinRefetchInterval if zero).
	MinRefetchInterval time.Duration
}

// JWKS verifies JWTs issued by User Management against the public keys of its
// JWKS document. Keys are cached and refreshed in the background every
// Refresh, and on demand when a token names an unknown key (rotation). A
// failed refresh keeps the last good key set, so an outage of the JWKS
// endpoint does not log everybody out.
type JWKS struct {
	cfg    JWKSConfig
	client *http.Client
	log    zerolog.Logger

	keys atomic.Pointer[keySet] // nil until the first successful fetch

	// fetching holds one token: a fetch happens at most once at a time.
	fetching chan struct{}
	// lastOnDemand is when a token last triggered a fetch; guarded by fetching.
	lastOnDemand time.Time

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

var _ Authenticator = (*JWKS)(nil)

// keySet is one fetched JWKS document: usable keys by "kid".
type keySet struct {
	byKID map[string]verificationKey
}

type verificationKey struct {
	alg string // "RS256" or "ES256": the only algorithm this key verifies
	key crypto.PublicKey
}

// NewJWKS starts a verifier. It fetches the key set once before returning;
// if that fails it logs a warning and keeps retrying in the background
// (tokens are answered with ErrUnavailable until a key set arrives, so a
// start-up race with User Management heals itself). The background refresh
// runs until ctx ends or Close is called.
func NewJWKS(ctx context.Context, cfg JWKSConfig, logger zerolog.Logger) (*JWKS, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("auth: JWKS URL %q must be an absolute http(s) URL", cfg.URL)
	}
	if cfg.Issuer == "" {
		return nil, errors.New("auth: JWKS verification needs an issuer (auth.issuer)")
	}
	if cfg.Audience == "" {
		return nil, errors.New("auth: JWKS verification needs an audience (auth.audience)")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultJWKSRefresh
	}
	if cfg.Leeway <= 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.MinRefetchInterval <= 0 {
		cfg.MinRefetchInterval = DefaultMinRefetchInterval
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: jwksFetchTimeout}
	}
	runCtx, stop := context.WithCancel(ctx)
	j := &JWKS{
		cfg:      cfg,
		client:   client,
		log:      logger.With().Str("component", "jwks").Str("url", cfg.URL).Logger(),
		fetching: make(chan struct{}, 1),
		stop:     stop,
		done:     make(chan struct{}),
	}
	if err := j.refresh(ctx, false); err != nil {
		j.log.Warn().Err(err).Msg("JWKS not loaded at start-up; tokens are refused as unavailable until it is")
	}
	go j.run(runCtx)
	return j, nil
}

// Close stops the background refresh and waits for it.
func (j *JWKS) Close() error {
	j.closeOnce.Do(j.stop)
	<-j.done
	return nil
}

// Ready reports whether a key set is loaded (for /readyz): an error wrapping
// ErrUnavailable until the first successful fetch.
func (j *JWKS) Ready() error {
	if j.keys.Load() == nil {
		return fmt.Errorf("%w: JWKS not loaded yet", ErrUnavailable)
	}
	return nil
}

// run refreshes the key set every Refresh, and sooner after a failure.
func (j *JWKS) run(ctx context.Context) {
	defer close(j.done)
	maxDelay := min(j.cfg.Refresh, retryMax)
	retry := func(failures int) time.Duration {
		return min(retryMin<<min(failures-1, 10), maxDelay)
	}
	failures := 0
	delay := j.cfg.Refresh
	if j.keys.Load() == nil {
		failures = 1
		delay = retry(failures)
	}
	for {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := j.refresh(ctx, false); err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			delay = retry(failures)
			j.log.Warn().Err(err).Int("keptKeys", j.keyCount()).Dur("retryIn", delay).
				Msg("JWKS refresh failed; keeping the last good keys")
			continue
		}
		failures = 0
		delay = j.cfg.Refresh
	}
}

func (j *JWKS) keyCount() int {
	if ks := j.keys.Load(); ks != nil {
		return len(ks.byKID)
	}
	return 0
}

// errRateLimited: an on-demand refetch was skipped because one ran recently.
var errRateLimited = errors.New("JWKS refetch rate limited")

// refresh fetches the document and, if it holds usable keys, replaces the
// key set. onDemand fetches (triggered by tokens) are rate limited.
func (j *JWKS) refresh(ctx context.Context, onDemand bool) error {
	select {
	case j.fetching <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-j.fetching }()
	if onDemand {
		if since := time.Since(j.lastOnDemand); !j.lastOnDemand.IsZero() && since < j.cfg.MinRefetchInterval {
			return errRateLimited
		}
		j.lastOnDemand = time.Now()
	}
	ks, skipped, err := j.fetch(ctx)
	for _, s := range skipped {
		j.log.Warn().Str("reason", s).Msg("JWKS key skipped")
	}
	if err != nil {
		return err
	}
	old := j.keys.Swap(ks)
	if old == nil || !sameKIDs(old, ks) {
		j.log.Info().Strs("kids", kids(ks)).Msg("JWKS keys loaded")
	}
	return nil
}

func (j *JWKS) fetch(ctx context.Context) (*keySet, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, j.cfg.URL, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := j.client.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxJWKSBytes))
		return nil, nil, fmt.Errorf("fetch JWKS: endpoint answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("fetch JWKS: read body: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, nil, fmt.Errorf("fetch JWKS: document larger than %d bytes", maxJWKSBytes)
	}
	return parseKeySet(body)
}

// jwk is the subset of RFC 7517/7518 members this verifier reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseKeySet reads a JWKS document. Keys this verifier cannot use (other
// types, curves or algorithms, encryption keys, keys without kid) are skipped
// with a reason; a document with no usable key is an error, so a broken
// document never replaces a good key set.
func parseKeySet(body []byte) (*keySet, []string, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, nil, fmt.Errorf("parse JWKS: %w", err)
	}
	ks := &keySet{byKID: make(map[string]verificationKey, len(doc.Keys))}
	var skipped []string
	for i, raw := range doc.Keys {
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: not a JSON object of strings: %v", i, err))
			continue
		}
		vk, err := k.verificationKey()
		switch {
		case err != nil:
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %v", i, k.Kid, err))
		case k.Kid == "":
			skipped = append(skipped, fmt.Sprintf("key %d: no kid", i))
		default:
			if _, dup := ks.byKID[k.Kid]; dup {
				skipped = append(skipped, fmt.Sprintf("key %d: kid %q appears twice; the first is kept", i, k.Kid))
				continue
			}
			ks.byKID[k.Kid] = vk
		}
	}
	if len(ks.byKID) == 0 {
		return nil, skipped, fmt.Errorf("parse JWKS: no usable RS256 or ES256 signing key among %d", len(doc.Keys))
	}
	return ks, skipped, nil
}

func (k jwk) verificationKey() (verificationKey, error) {
	if k.Use != "" && k.Use != "sig" {
		return verificationKey{}, fmt.Errorf("use %q is not sig", k.Use)
	}
	switch k.Kty {
	case "RSA":
		if k.Alg != "" && k.Alg != "RS256" {
			return verificationKey{}, fmt.Errorf("RSA algorithm %q not accepted", k.Alg)
		}
		pub, err := rsaKey(k.N, k.E)
		if err != nil {
			return verificationKey{}, err
		}
		return verificationKey{alg: "RS256", key: pub}, nil
	case "EC":
		if k.Alg != "" && k.Alg != "ES256" {
			return verificationKey{}, fmt.Errorf("EC algorithm %q not accepted", k.Alg)
		}
		if k.Crv != "P-256" {
			return verificationKey{}, fmt.Errorf("curve %q not accepted (want P-256)", k.Crv)
		}
		pub, err := p256Key(k.X, k.Y)
		if err != nil {
			return verificationKey{}, err
		}
		return verificationKey{alg: "ES256", key: pub}, nil
	default:
		return verificationKey{}, fmt.Errorf("key type %q not accepted", k.Kty)
	}
}

func rsaKey(n64, e64 string) (*rsa.PublicKey, error) {
	nb, err := b64url(n64)
	if err != nil || len(nb) == 0 {
		return nil, errors.New("RSA modulus n is not base64url")
	}
	eb, err := b64url(e64)
	if err != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, errors.New("RSA exponent e is not a base64url integer of at most 4 bytes")
	}
	n := new(big.Int).SetBytes(nb)
	if n.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key of %d bits is too small (want at least %d)", n.BitLen(), minRSABits)
	}
	e := new(big.Int).SetBytes(eb).Int64()
	if e < 3 || e%2 == 0 || e > 1<<31-1 {
		return nil, fmt.Errorf("RSA exponent %d is not acceptable", e)
	}
	return &rsa.PublicKey{N: n, E: int(e)}, nil
}

func p256Key(x64, y64 string) (*ecdsa.PublicKey, error) {
	const size = 32
	x, errX := b64url(x64)
	y, errY := b64url(y64)
	if errX != nil || errY != nil || len(x) == 0 || len(y) == 0 || len(x) > size || len(y) > size {
		return nil, errors.New("EC coordinates x and y are not base64url values of at most 32 bytes")
	}
	// Uncompressed SEC 1 point: 0x04 || X || Y, each left-padded to 32 bytes.
	point := make([]byte, 1+2*size)
	point[0] = 4
	copy(point[1+size-len(x):1+size], x)
	copy(point[1+2*size-len(y):], y)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, errors.New("EC point is not on curve P-256")
	}
	return pub, nil
}

func b64url(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

func kids(ks *keySet) []string {
	out := make([]string, 0, len(ks.byKID))
	for kid := range ks.byKID {
		out = append(out, kid)
	}
	slices.Sort(out)
	return out
}

func sameKIDs(a, b *keySet) bool { return slices.Equal(kids(a), kids(b)) }

// Errors of the key lookup, turned into reasons by explain.
var (
	errNoKID          = errors.New("token has no key id (kid)")
	errUnknownKID     = errors.New("token signed by an unknown key")
	errAlgMismatch    = errors.New("token algorithm does not match its key")
	errKeysNotFetched = errors.New("signing keys not loaded")
)

// tokenClaims are the claims read from a User Management token.
type tokenClaims struct {
	jwt.RegisteredClaims
	TenantID string     `json:"tenantId"`
	TID      string     `json:"tid"`
	Roles    rolesClaim `json:"roles"`
}

// rolesClaim accepts an array of strings (or a single string); non-string
// entries are ignored.
type rolesClaim []Role

func (r *rolesClaim) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*r = rolesClaim{Role(one)}
		return nil
	}
	var many []any
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("roles claim is neither a string nor an array")
	}
	out := make(rolesClaim, 0, len(many))
	for _, v := range many {
		if s, ok := v.(string); ok && s != "" {
			out = append(out, Role(s))
		}
	}
	*r = out
	return nil
}

// Authenticate verifies token and returns its principal: tenant from the
// "tenantId" claim (or "tid"), subject from "sub", roles from "roles".
func (j *JWKS) Authenticate(ctx context.Context, token string) (Principal, error) {
	if token == "" {
		return Principal{}, unauthenticated("missing bearer token")
	}
	if strings.Count(token, ".") != 2 {
		return Principal{}, notRecognized("not a JWT")
	}
	parser := jwt.NewParser(
		jwt.WithValidMethods(acceptedAlgs()),
		jwt.WithIssuer(j.cfg.Issuer),
		jwt.WithAudience(j.cfg.Audience),
		jwt.WithLeeway(j.cfg.Leeway),
		jwt.WithExpirationRequired(),
	)
	var c tokenClaims
	parsed, err := parser.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		return j.keyFor(ctx, t)
	})
	if err != nil {
		return Principal{}, explain(parsed, err)
	}
	tenant := c.TenantID
	if tenant == "" {
		tenant = c.TID
	}
	switch {
	case tenant == "":
		return Principal{}, unauthenticated("token has no tenantId claim")
	case !domain.IsValidID(tenant):
		return Principal{}, unauthenticated("token's tenantId claim is not a valid tenant id")
	case c.Subject == "":
		// Every change is audited by subject: a token naming nobody is refused.
		return Principal{}, unauthenticated("token has no subject (sub)")
	}
	return Principal{TenantID: tenant, Subject: c.Subject, Roles: []Role(c.Roles)}, nil
}

// keyFor finds the key named by the token's kid, refetching the key set once
// (rate limited) if the kid is unknown: the issuer may have rotated keys.
func (j *JWKS) keyFor(ctx context.Context, t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	if kid == "" {
		return nil, errNoKID
	}
	ks := j.keys.Load()
	k, ok := lookup(ks, kid)
	if !ok {
		if err := j.refresh(ctx, true); err != nil && !errors.Is(err, errRateLimited) {
			j.log.Warn().Err(err).Str("kid", kid).Msg("JWKS refetch for an unknown kid failed")
		}
		ks = j.keys.Load()
		if ks == nil {
			return nil, errKeysNotFetched
		}
		if k, ok = lookup(ks, kid); !ok {
			return nil, errUnknownKID
		}
	}
	// A key verifies only its own algorithm: an RS256 token cannot be checked
	// against an EC key or the other way round.
	if k.alg != t.Method.Alg() {
		return nil, errAlgMismatch
	}
	return k.key, nil
}

func lookup(ks *keySet, kid string) (verificationKey, bool) {
	if ks == nil {
		return verificationKey{}, false
	}
	k, ok := ks.byKID[kid]
	return k, ok
}

// explain turns a parse failure into ErrUnauthenticated with a fixed reason
// (never the library's text, which may quote parts of the token), or
// ErrUnavailable when no keys could be loaded.
func explain(t *jwt.Token, err error) error {
	switch {
	case errors.Is(err, errKeysNotFetched):
		return fmt.Errorf("%w: signing keys could not be fetched", ErrUnavailable)
	case errors.Is(err, errNoKID):
		return unauthenticated(errNoKID.Error())
	case errors.Is(err, errUnknownKID):
		return unauthenticated(errUnknownKID.Error())
	case errors.Is(err, errAlgMismatch):
		return unauthenticated(errAlgMismatch.Error())
	case errors.Is(err, jwt.ErrTokenMalformed):
		return notRecognized("malformed JWT")
	case t != nil && t.Method != nil && !slices.Contains(acceptedAlgs(), t.Method.Alg()):
		return unauthenticated("signing algorithm not accepted (only RS256 and ES256 are)")
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return unauthenticated("token cannot be verified (unsupported algorithm)")
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return unauthenticated("invalid signature")
	case errors.Is(err, jwt.ErrTokenExpired):
		return unauthenticated("token expired")
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return unauthenticated("token not valid yet")
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return unauthenticated("token is for another audience")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return unauthenticated("token is from an unexpected issuer")
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return unauthenticated("token lacks a required claim (exp, iss or aud)")
	}
	return unauthenticated("invalid token")
}
