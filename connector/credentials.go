package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/secrets"
)

// Credential is what a connection presents to the external API. Which fields
// matter depends on the provider's auth kind. It formats and marshals as
// "[REDACTED]" so it cannot leak through a log line or an event by accident;
// EncodeCredential gives its stored form.
type Credential struct {
	APIKey       string
	Token        string // bearer or OAuth2 access token
	Username     string
	Password     string
	ClientID     string
	ClientSecret string
	RefreshToken string
	ExpiresAt    time.Time // of Token; zero when unknown
}

func (Credential) String() string                 { return "connector.Credential" + redacted }
func (c Credential) GoString() string             { return c.String() }
func (Credential) MarshalJSON() ([]byte, error)   { return []byte(`"` + redacted + `"`), nil }
func (c Credential) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// sameSecret reports whether a and b present the same credential.
func sameSecret(a, b Credential) bool {
	return a.APIKey == b.APIKey && a.Token == b.Token && a.Username == b.Username &&
		a.Password == b.Password && a.ClientID == b.ClientID && a.ClientSecret == b.ClientSecret
}

// Credentials gives a Client the connection's current credential and renews
// it. Implementations are safe for concurrent use; share one per connection.
type Credentials interface {
	// Current returns the credential to use now (renewed first if it is about
	// to expire).
	Current(ctx context.Context) (Credential, error)
	// Refresh is called after the API rejected stale with 401. It returns a
	// renewed credential, or the one another caller already renewed. An error
	// that IsPermanent means the connection must be re-authorised.
	Refresh(ctx context.Context, stale Credential) (Credential, error)
}

// storedCredential is the JSON kept in Secret Management.
type storedCredential struct {
	APIKey       string     `json:"apiKey,omitempty"`
	Token        string     `json:"token,omitempty"`
	Username     string     `json:"username,omitempty"`
	Password     string     `json:"password,omitempty"`
	ClientID     string     `json:"clientId,omitempty"`
	ClientSecret string     `json:"clientSecret,omitempty"`
	RefreshToken string     `json:"refreshToken,omitempty"`
	ExpiresAt    *time.Time `json:"expiresAt,omitempty"`
}

// EncodeCredential is the JSON form of c that SecretCredentials reads from
// Secret Management (for the API that stores a new connection's credentials).
func EncodeCredential(c Credential) ([]byte, error) {
	s := storedCredential{APIKey: c.APIKey, Token: c.Token, Username: c.Username, Password: c.Password,
		ClientID: c.ClientID, ClientSecret: c.ClientSecret, RefreshToken: c.RefreshToken}
	if !c.ExpiresAt.IsZero() {
		t := c.ExpiresAt.UTC()
		s.ExpiresAt = &t
	}
	return json.Marshal(s)
}

// DecodeCredential reads the JSON written by EncodeCredential.
func DecodeCredential(b []byte) (Credential, error) {
	var s storedCredential
	if err := json.Unmarshal(b, &s); err != nil {
		// The JSON error may quote the value: keep only its kind.
		return Credential{}, errors.New("connector: stored credential is not valid JSON")
	}
	c := Credential{APIKey: s.APIKey, Token: s.Token, Username: s.Username, Password: s.Password,
		ClientID: s.ClientID, ClientSecret: s.ClientSecret, RefreshToken: s.RefreshToken}
	if s.ExpiresAt != nil {
		c.ExpiresAt = *s.ExpiresAt
	}
	return c, nil
}

// SecretStore is the part of Secret Management credentials need
// (secrets.Store satisfies it).
type SecretStore interface {
	Get(ctx context.Context, tenantID, ref string) ([]byte, error)
	Replace(ctx context.Context, tenantID, ref string, value []byte) error
}

// SecretCredentialsOptions tunes SecretCredentials; zero values take defaults.
type SecretCredentialsOptions struct {
	HTTPClient  *http.Client     // for the token endpoint; default: a client of its own
	Timeout     time.Duration    // of one token request with its write-back; default 30 s
	RefreshSkew time.Duration    // renew this long before expiry; default 60 s (at most half a token's lifetime)
	Now         func() time.Time // default time.Now
	// OnRefresh is told each new token's expiry (zero when the endpoint gave
	// none) after it is stored, e.g. to keep Connection.TokenExpiresAt. It
	// runs inside the renewal: it must not call these credentials.
	OnRefresh func(ctx context.Context, expiresAt time.Time)
	Logger    zerolog.Logger
}

// SecretCredentials keeps a connection's credentials as JSON in Secret
// Management and renews OAuth2 tokens against the provider's token URL:
// ahead of expiry, and when a Client reports a 401. One renewal runs at a
// time; callers arriving meanwhile wait (until their context ends) and reuse
// its result. New tokens are written back to Secret Management before anyone
// uses them, so a rotated refresh token is never lost. Share one value per
// connection: renewals are single-flight within it.
type SecretCredentials struct {
	store         SecretStore
	tenantID, ref string
	auth          domain.AuthSpec
	opts          SecretCredentialsOptions
	log           zerolog.Logger
	refreshes     atomic.Int64

	sem       chan struct{} // a lock held across a renewal (the singleflight) that waiters can give up on
	cur       *Credential
	raw       map[string]json.RawMessage // the stored document, so fields we don't know survive a write-back
	refreshAt time.Time                  // renew from this instant; zero: never ahead of time
	unsaved   bool                       // cur holds tokens Secret Management has not taken yet
	bodyAuth  bool                       // the token endpoint wants client_id/secret in the form, not basic auth
}

// NewSecretCredentials reads tenantID's credentialRef from store on first use.
func NewSecretCredentials(store SecretStore, tenantID, credentialRef string, auth domain.AuthSpec, opts SecretCredentialsOptions) (*SecretCredentials, error) {
	if store == nil {
		return nil, errors.New("connector: NewSecretCredentials needs a secret store")
	}
	if tenantID == "" || credentialRef == "" {
		return nil, errors.New("connector: NewSecretCredentials needs a tenant id and a credential reference")
	}
	if isOAuth(auth.Kind) {
		if _, err := url.Parse(auth.TokenURL); err != nil || auth.TokenURL == "" {
			return nil, errors.New("connector: an OAuth2 provider needs a valid tokenUrl")
		}
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.RefreshSkew <= 0 {
		opts.RefreshSkew = 60 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &SecretCredentials{
		store: store, tenantID: tenantID, ref: credentialRef, auth: auth, opts: opts, sem: make(chan struct{}, 1),
		log: opts.Logger.With().Str("component", "connector.credentials").Str("tenantId", tenantID).Str("credentialRef", credentialRef).Logger(),
	}, nil
}

func isOAuth(k domain.AuthKind) bool {
	return k == domain.AuthOAuth2ClientCredentials || k == domain.AuthOAuth2RefreshToken
}

// Refreshes counts token renewals done by this value (a Client reports the
// ones made during its life in Stats).
func (s *SecretCredentials) Refreshes() int64 { return s.refreshes.Load() }

// lock takes the lock unless ctx ends first.
func (s *SecretCredentials) lock(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return &Error{Op: "get credentials", Msg: "cancelled while another caller renewed the token", err: ctx.Err()}
	}
}

func (s *SecretCredentials) unlock() { <-s.sem }

func (s *SecretCredentials) Current(ctx context.Context) (Credential, error) {
	if err := s.lock(ctx); err != nil {
		return Credential{}, err
	}
	defer s.unlock()
	if err := s.ready(ctx); err != nil {
		return Credential{}, err
	}
	if isOAuth(s.auth.Kind) && s.dueLocked() {
		if err := s.renewLocked(ctx); err != nil {
			return Credential{}, err
		}
	}
	return *s.cur, nil
}

func (s *SecretCredentials) Refresh(ctx context.Context, stale Credential) (Credential, error) {
	if err := s.lock(ctx); err != nil {
		return Credential{}, err
	}
	defer s.unlock()
	if err := s.ready(ctx); err != nil {
		return Credential{}, err
	}
	if !sameSecret(*s.cur, stale) && !s.dueLocked() {
		return *s.cur, nil // another caller renewed it while we waited for the lock
	}
	// Another process may have renewed or an operator rotated the secret:
	// take that rather than spend (and maybe invalidate) a refresh token.
	if !s.unsaved {
		if err := s.loadLocked(ctx); err != nil {
			return Credential{}, err
		}
		if !sameSecret(*s.cur, stale) && !s.dueLocked() {
			return *s.cur, nil
		}
	}
	if !isOAuth(s.auth.Kind) {
		return Credential{}, &Error{Status: http.StatusUnauthorized, Op: "refresh credentials", Permanent: true,
			Msg: fmt.Sprintf("the API rejected the connection's %s credential and it cannot be renewed automatically; update the connection's credentials", s.auth.Kind)}
	}
	if err := s.renewLocked(ctx); err != nil {
		return Credential{}, err
	}
	return *s.cur, nil
}

// ready loads the credential on first use and finishes a write-back that
// failed before, so no caller uses a token Secret Management lacks.
func (s *SecretCredentials) ready(ctx context.Context) error {
	if s.cur == nil {
		if err := s.loadLocked(ctx); err != nil {
			return err
		}
	}
	if s.unsaved {
		return s.saveLocked(ctx)
	}
	return nil
}

func (s *SecretCredentials) loadLocked(ctx context.Context) error {
	b, err := s.store.Get(ctx, s.tenantID, s.ref)
	if err != nil {
		return &Error{Op: "read credentials", Permanent: !isTransientSecretErr(err), Msg: "Secret Management: " + err.Error(), err: err}
	}
	c, err := DecodeCredential(b)
	if err != nil {
		return &Error{Op: "read credentials", Permanent: true, Msg: err.Error(), err: err}
	}
	var raw map[string]json.RawMessage
	_ = json.Unmarshal(b, &raw) // valid: DecodeCredential accepted it
	s.cur, s.raw = &c, raw
	s.refreshAt = time.Time{}
	if !c.ExpiresAt.IsZero() {
		s.refreshAt = c.ExpiresAt.Add(-s.opts.RefreshSkew)
	}
	return nil
}

// isTransientSecretErr: Secret Management failed in a way worth retrying
// (unreachable, 5xx, timeout), as opposed to a missing or undecryptable secret.
func isTransientSecretErr(err error) bool {
	return secrets.IsTransient(err) || errors.Is(err, context.DeadlineExceeded)
}

// dueLocked reports whether an OAuth2 token must be renewed before use.
func (s *SecretCredentials) dueLocked() bool {
	if !isOAuth(s.auth.Kind) {
		return false
	}
	if s.cur.Token == "" {
		return true
	}
	return !s.refreshAt.IsZero() && !s.opts.Now().Before(s.refreshAt)
}

// tokenResponse is RFC 6749 section 5.1/5.2.
type tokenResponse struct {
	AccessToken  string          `json:"access_token"`
	TokenType    string          `json:"token_type"`
	ExpiresIn    json.RawMessage `json:"expires_in"` // a number, or a string with some providers
	RefreshToken string          `json:"refresh_token"`
	Error        string          `json:"error"`
	ErrorDesc    string          `json:"error_description"`
}

// renewLocked obtains a new access token and stores it. The exchange runs
// detached from the caller's cancellation: abandoning a refresh-token grant
// half way would leave the provider's rotated refresh token nowhere.
func (s *SecretCredentials) renewLocked(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.Timeout)
	defer cancel()

	form := url.Values{}
	switch s.auth.Kind {
	case domain.AuthOAuth2ClientCredentials:
		if s.cur.ClientID == "" || s.cur.ClientSecret == "" {
			return &Error{Op: "token refresh", Permanent: true, Msg: "client credentials grant needs clientId and clientSecret", err: ErrNoCredentials}
		}
		form.Set("grant_type", "client_credentials")
		if len(s.auth.Scopes) > 0 {
			form.Set("scope", strings.Join(s.auth.Scopes, " "))
		}
	case domain.AuthOAuth2RefreshToken:
		if s.cur.RefreshToken == "" {
			return &Error{Op: "token refresh", Permanent: true, Msg: "no refresh token stored; the connection must be authorised again", err: ErrNoCredentials}
		}
		form.Set("grant_type", "refresh_token")
		form.Set("refresh_token", s.cur.RefreshToken)
	}

	tr, err := s.postToken(ctx, form)
	if err != nil && s.auth.Kind == domain.AuthOAuth2RefreshToken && IsPermanent(err) {
		// Another process sharing the connection may have rotated the
		// refresh token we hold: take its tokens, or renew with its refresh token.
		used := s.cur.RefreshToken
		if lerr := s.loadLocked(ctx); lerr != nil || s.cur.RefreshToken == used {
			return err
		}
		if !s.dueLocked() {
			return nil
		}
		form.Set("refresh_token", s.cur.RefreshToken)
		tr, err = s.postToken(ctx, form)
	}
	if err != nil {
		return err
	}
	next := *s.cur
	next.Token = tr.AccessToken
	if tr.RefreshToken != "" {
		next.RefreshToken = tr.RefreshToken
	}
	now := s.opts.Now()
	next.ExpiresAt, s.refreshAt = time.Time{}, time.Time{}
	if life := parseExpiresIn(tr.ExpiresIn); life > 0 {
		next.ExpiresAt = now.Add(life)
		s.refreshAt = next.ExpiresAt.Add(-min(s.opts.RefreshSkew, life/2))
	}
	s.cur, s.unsaved = &next, true
	s.refreshes.Add(1)
	if err := s.saveLocked(ctx); err != nil {
		return err
	}
	s.log.Info().Time("expiresAt", next.ExpiresAt).Msg("oauth2 token renewed and stored")
	if s.opts.OnRefresh != nil {
		s.opts.OnRefresh(ctx, next.ExpiresAt)
	}
	return nil
}

// postToken posts form to the token URL, authenticating the client with
// HTTP basic auth (RFC 6749 2.3.1) and, if the endpoint refuses that as
// invalid_client, once more with the credentials in the form (and remembers).
func (s *SecretCredentials) postToken(ctx context.Context, form url.Values) (tokenResponse, error) {
	masks := secretForms(*s.cur)
	for attempt := 0; ; attempt++ {
		body := url.Values{}
		for k, v := range form {
			body[k] = v
		}
		if s.bodyAuth && s.cur.ClientID != "" {
			body.Set("client_id", s.cur.ClientID)
			body.Set("client_secret", s.cur.ClientSecret)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.auth.TokenURL, strings.NewReader(body.Encode()))
		if err != nil {
			return tokenResponse{}, &Error{Op: "token refresh", Permanent: true, Msg: "bad token URL"}
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Accept", "application/json")
		if !s.bodyAuth && s.cur.ClientID != "" {
			req.SetBasicAuth(url.QueryEscape(s.cur.ClientID), url.QueryEscape(s.cur.ClientSecret))
		}
		resp, err := s.opts.HTTPClient.Do(req)
		if err != nil {
			return tokenResponse{}, &Error{Op: "token refresh", Msg: redact(transportMsg(err), masks), err: unwrapURLErr(err)}
		}
		raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return tokenResponse{}, &Error{Op: "token refresh", Status: resp.StatusCode, Msg: "reading the token response: " + redact(err.Error(), masks)}
		}
		var tr tokenResponse
		jsonErr := json.Unmarshal(raw, &tr)
		if resp.StatusCode == http.StatusOK && jsonErr == nil && tr.AccessToken != "" {
			return tr, nil
		}
		if attempt == 0 && !s.bodyAuth && s.cur.ClientID != "" && tr.Error == "invalid_client" {
			s.bodyAuth = true
			continue
		}
		e := &Error{Op: "token refresh", Status: resp.StatusCode, Msg: bodyExcerpt(raw, masks)}
		switch {
		case resp.StatusCode == http.StatusOK:
			e.Permanent, e.Msg = true, "the token endpoint answered without an access_token"
		case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		default: // invalid_grant, invalid_client, unauthorized_client...: someone must re-authorise
			e.Permanent = true
		}
		return tokenResponse{}, e
	}
}

func (s *SecretCredentials) saveLocked(ctx context.Context) error {
	if s.raw == nil {
		s.raw = map[string]json.RawMessage{}
	}
	set := func(k string, v any, empty bool) {
		if empty {
			delete(s.raw, k)
			return
		}
		b, _ := json.Marshal(v)
		s.raw[k] = b
	}
	set("token", s.cur.Token, s.cur.Token == "")
	set("refreshToken", s.cur.RefreshToken, s.cur.RefreshToken == "")
	set("expiresAt", s.cur.ExpiresAt.UTC(), s.cur.ExpiresAt.IsZero())
	b, err := json.Marshal(s.raw)
	if err != nil {
		return &Error{Op: "store renewed token", Msg: "encoding the credential document failed"}
	}
	if err := s.store.Replace(ctx, s.tenantID, s.ref, b); err != nil {
		// Keep the new tokens in memory (unsaved) and refuse to hand them out
		// until a later call stores them: the old refresh token may be dead.
		s.log.Warn().Err(err).Msg("storing a renewed oauth2 token failed; will retry before using it")
		return &Error{Op: "store renewed token", Permanent: !isTransientSecretErr(err), Msg: "Secret Management: " + err.Error(), err: err}
	}
	s.unsaved = false
	return nil
}

func parseExpiresIn(raw json.RawMessage) time.Duration {
	v := strings.Trim(string(raw), `"`)
	if v == "" || v == "null" {
		return 0
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n <= 0 {
		return 0
	}
	return time.Duration(n * float64(time.Second))
}
