// Package connector talks to external REST APIs as their provider definition
// (domain.Provider) describes them: authentication, pagination, incremental
// reads, deletions, write-back and rate limits. No provider has code of its
// own; a new API is a new definition.
//
// Records are decoded with json.Number for numbers, so large ids and exact
// decimals keep every digit.
package connector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/castiel/integration-manager/domain"
)

// Options tunes a Client; zero values take the defaults named.
type Options struct {
	HTTPClient *http.Client // default: a client with a pooled transport of its own
	Timeout    time.Duration
	// MaxRetries bounds re-sends after 5xx, timeouts and connection errors
	// (default 5; negative: none). Rate-limited answers (429, 503 with
	// Retry-After) have their own bound, MaxRateLimitRetries (default 10).
	MaxRetries          int
	MaxRateLimitRetries int
	BackoffInitial      time.Duration // default 500 ms
	BackoffMax          time.Duration // default 30 s
	RetryAfterCap       time.Duration // longest wait a Retry-After or reset header can impose; default 60 s
	MaxResponseBytes    int64         // default 32 MiB
	// PathVars fills placeholders of the provider's path templates other
	// than {id}, e.g. an account id from the integration's settings.
	PathVars map[string]string
	Now      func() time.Time // wall clock for HTTP dates and reset instants; default time.Now
	Logger   zerolog.Logger
}

const (
	defaultTimeout          = 30 * time.Second
	defaultMaxRetries       = 5
	defaultMaxRateLimitTry  = 10
	defaultBackoffInitial   = 500 * time.Millisecond
	defaultBackoffMax       = 30 * time.Second
	defaultRetryAfterCap    = 60 * time.Second
	defaultMaxResponseBytes = 32 << 20
	userAgent               = "castiel-integration-manager/connector"
)

// Stats are a Client's counters since New, for the sync run's execution record.
type Stats struct {
	APICalls          int64         // requests sent to the provider's API (token requests excluded)
	Retries           int64         // requests sent again after an error or a rate-limited answer
	Throttled         int64         // 429 and 503 answers
	RateLimitWaits    int64         // times a request waited for the token bucket, a Retry-After or a reset header
	RateLimitWaitTime time.Duration // total of those waits
	TokenRefreshes    int64         // renewals of the connection's token during this client's life
}

// refreshCounter is implemented by Credentials that count their renewals
// (SecretCredentials does).
type refreshCounter interface{ Refreshes() int64 }

// Client calls one provider for one connection. It is safe for concurrent use.
type Client struct {
	p     domain.Provider
	base  *url.URL
	creds Credentials
	http  *http.Client
	opts  Options
	log   zerolog.Logger

	limiter *rate.Limiter // nil: no proactive limit

	pauseMu     sync.Mutex
	pausedUntil time.Time // monotonic: nobody sends before this (Retry-After, reset headers)

	refreshBase  int64
	apiCalls     atomic.Int64
	retries      atomic.Int64
	throttled    atomic.Int64
	waits        atomic.Int64
	waitNanos    atomic.Int64
	ownRefreshes atomic.Int64 // renewals seen through Refresh when creds do not count their own
}

// New builds a client for p. creds may be nil only for auth kind "none".
func New(p domain.Provider, creds Credentials, opts Options) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(p.BaseURL, "/"))
	if err != nil || base.Scheme == "" || base.Host == "" {
		return nil, fmt.Errorf("connector: provider %q: baseUrl is not an absolute URL", p.ID)
	}
	switch p.Auth.Kind {
	case domain.AuthNone, "":
	case domain.AuthAPIKey, domain.AuthBearer, domain.AuthBasic, domain.AuthOAuth2ClientCredentials, domain.AuthOAuth2RefreshToken:
		if creds == nil {
			return nil, fmt.Errorf("connector: provider %q uses %s auth: credentials are required", p.ID, p.Auth.Kind)
		}
	default:
		return nil, fmt.Errorf("connector: provider %q: unknown auth kind %q", p.ID, p.Auth.Kind)
	}
	if opts.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = 16
		opts.HTTPClient = &http.Client{Transport: t}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = defaultTimeout
	}
	switch {
	case opts.MaxRetries == 0:
		opts.MaxRetries = defaultMaxRetries
	case opts.MaxRetries < 0:
		opts.MaxRetries = 0
	}
	if opts.MaxRateLimitRetries <= 0 {
		opts.MaxRateLimitRetries = defaultMaxRateLimitTry
	}
	if opts.BackoffInitial <= 0 {
		opts.BackoffInitial = defaultBackoffInitial
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = defaultBackoffMax
	}
	if opts.RetryAfterCap <= 0 {
		opts.RetryAfterCap = defaultRetryAfterCap
	}
	if opts.MaxResponseBytes <= 0 {
		opts.MaxResponseBytes = defaultMaxResponseBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	c := &Client{
		p: p, base: base, creds: creds, http: opts.HTTPClient, opts: opts,
		log:     opts.Logger.With().Str("component", "connector").Str("provider", p.ID).Logger(),
		limiter: newLimiter(p.RateLimit.RequestsPerSecond, p.RateLimit.Burst),
	}
	if rc, ok := creds.(refreshCounter); ok {
		c.refreshBase = rc.Refreshes()
	}
	return c, nil
}

// Provider returns the definition the client was built from.
func (c *Client) Provider() domain.Provider { return c.p }

// Stats returns the counters so far.
func (c *Client) Stats() Stats {
	s := Stats{
		APICalls: c.apiCalls.Load(), Retries: c.retries.Load(), Throttled: c.throttled.Load(),
		RateLimitWaits: c.waits.Load(), RateLimitWaitTime: time.Duration(c.waitNanos.Load()),
	}
	if rc, ok := c.creds.(refreshCounter); ok {
		s.TokenRefreshes = rc.Refreshes() - c.refreshBase
	} else {
		s.TokenRefreshes = c.ownRefreshes.Load()
	}
	return s
}

// call is one logical request; do sends it as often as retries allow.
type call struct {
	op     string
	method string
	url    *url.URL // without credentials
	body   []byte   // JSON; nil for none
	// okStatus accepts a non-2xx status as success (delete of a gone record).
	okStatus func(int) bool
}

// response is what a successful call returns.
type response struct {
	status int
	header http.Header
	body   []byte
	url    *url.URL // as requested (Link headers resolve against it)
}

// do sends k, renewing the credential once on 401, waiting out rate limits
// and retrying transient failures with exponential backoff.
func (c *Client) do(ctx context.Context, k call) (response, error) {
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(c.opts.BackoffInitial),
		backoff.WithMaxInterval(c.opts.BackoffMax),
		backoff.WithMaxElapsedTime(0), // bounded by MaxRetries instead
	)
	idempotent := k.method != http.MethodPost
	var refreshed bool
	var failures, throttles int
	for {
		if err := c.waitTurn(ctx); err != nil {
			return response{}, &Error{Op: k.op, Msg: "cancelled while waiting for the rate limit", err: err}
		}
		cred, err := c.credential(ctx)
		if err != nil {
			if IsPermanent(err) || ctx.Err() != nil {
				return response{}, err
			}
			if failures >= c.opts.MaxRetries {
				return response{}, err
			}
			failures++
			if err := c.sleepRetry(ctx, k, bo.NextBackOff(), 0, err); err != nil {
				return response{}, err
			}
			continue
		}
		masks := func() []string { return secretForms(cred) } // only errors need them

		resp, sendErr := c.send(ctx, k, cred)
		switch {
		case sendErr != nil:
			if ctx.Err() != nil {
				return response{}, &Error{Op: k.op, Msg: "cancelled", err: ctx.Err()}
			}
			var tooBig *tooLargeError
			if errors.As(sendErr, &tooBig) {
				return response{}, &Error{Op: k.op, Status: resp.status, Permanent: true, Msg: tooBig.Error()}
			}
			e := &Error{Op: k.op, Msg: redact(transportMsg(sendErr), masks()), err: unwrapURLErr(sendErr)}
			if !idempotent && !notSent(sendErr) {
				e.Msg += " (the request may have reached the API; not re-sent because " + k.method + " is not idempotent)"
				return response{}, e
			}
			if failures >= c.opts.MaxRetries {
				return response{}, gaveUp(e, failures)
			}
			failures++
			if err := c.sleepRetry(ctx, k, bo.NextBackOff(), 0, e); err != nil {
				return response{}, err
			}
			continue

		case resp.status >= 200 && resp.status < 300, k.okStatus != nil && k.okStatus(resp.status):
			c.noteQuota(resp.header)
			return resp, nil

		case resp.status == http.StatusUnauthorized && c.creds != nil && !refreshed && !c.noAuth():
			refreshed = true
			c.log.Debug().Str("op", k.op).Msg("401 from the API: renewing the credential once")
			if _, err := c.creds.Refresh(ctx, cred); err != nil {
				if IsPermanent(err) || ctx.Err() != nil || failures >= c.opts.MaxRetries {
					return response{}, err
				}
				// The token endpoint or Secret Management failed transiently:
				// back off, and let the next 401 try the renewal again.
				failures++
				refreshed = false
				if err := c.sleepRetry(ctx, k, bo.NextBackOff(), resp.status, err); err != nil {
					return response{}, err
				}
				continue
			}
			if _, counts := c.creds.(refreshCounter); !counts {
				c.ownRefreshes.Add(1)
			}
			continue

		case resp.status == http.StatusTooManyRequests ||
			(resp.status == http.StatusServiceUnavailable && resp.header.Get("Retry-After") != ""):
			c.throttled.Add(1)
			e := &Error{Op: k.op, Status: resp.status, Msg: "rate limited: " + bodyExcerpt(resp.body, masks())}
			if throttles >= c.opts.MaxRateLimitRetries {
				e.Msg = fmt.Sprintf("still rate limited after %d waits", throttles)
				return response{}, e
			}
			throttles++
			wait, ok := parseRetryAfter(resp.header.Get("Retry-After"), c.opts.Now())
			if !ok {
				wait, ok = parseReset(resetHeader(resp.header), c.opts.Now())
			}
			if !ok {
				wait = bo.NextBackOff()
			}
			wait = min(wait, c.opts.RetryAfterCap)
			c.pause(wait) // every request of this client waits, not only this one
			c.retries.Add(1)
			c.log.Debug().Str("op", k.op).Int("status", resp.status).Dur("wait", wait).Msg("rate limited by the API; waiting")
			continue

		case resp.status >= 500 || resp.status == http.StatusRequestTimeout:
			e := &Error{Op: k.op, Status: resp.status, Msg: bodyExcerpt(resp.body, masks())}
			if !idempotent {
				e.Msg += " (the request may have been applied; not re-sent because " + k.method + " is not idempotent)"
				return response{}, e
			}
			if failures >= c.opts.MaxRetries {
				return response{}, gaveUp(e, failures)
			}
			failures++
			if err := c.sleepRetry(ctx, k, bo.NextBackOff(), resp.status, e); err != nil {
				return response{}, err
			}
			continue

		default: // 400, 401 after a renewal, 403, 404, 409, 422...
			return response{}, &Error{Op: k.op, Status: resp.status, Permanent: true, Msg: clientErrorMsg(resp.status, resp.body, masks())}
		}
	}
}

func gaveUp(e *Error, retries int) *Error {
	if retries > 0 {
		e.Msg += fmt.Sprintf(" (gave up after %d attempts)", retries+1)
	}
	return e
}

func clientErrorMsg(status int, body []byte, masks []string) string {
	hint := map[int]string{
		http.StatusBadRequest:          "the API rejected the request",
		http.StatusUnauthorized:        "the API rejected the credentials even after renewing them",
		http.StatusForbidden:           "the credentials lack permission for this",
		http.StatusNotFound:            "not found",
		http.StatusConflict:            "conflict",
		http.StatusUnprocessableEntity: "the API refused the record",
	}[status]
	if hint == "" {
		hint = http.StatusText(status)
	}
	if ex := bodyExcerpt(body, masks); ex != "" {
		return hint + ": " + ex
	}
	return hint
}

// sleepRetry waits d before the next attempt, counting the retry.
func (c *Client) sleepRetry(ctx context.Context, k call, d time.Duration, status int, cause error) error {
	c.retries.Add(1)
	c.log.Debug().Str("op", k.op).Int("status", status).Dur("backoff", d).Str("cause", cause.Error()).Msg("retrying")
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return &Error{Op: k.op, Msg: "cancelled during retry backoff", err: ctx.Err()}
	case <-t.C:
		return nil
	}
}

func (c *Client) credential(ctx context.Context) (Credential, error) {
	if c.creds == nil || c.noAuth() {
		return Credential{}, nil
	}
	return c.creds.Current(ctx)
}

func (c *Client) noAuth() bool { return c.p.Auth.Kind == domain.AuthNone || c.p.Auth.Kind == "" }

type tooLargeError struct{ limit int64 }

func (e *tooLargeError) Error() string {
	return fmt.Sprintf("response larger than %d bytes", e.limit)
}

// send makes one attempt. A non-nil error means no usable response.
func (c *Client) send(ctx context.Context, k call, cred Credential) (response, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()

	u := k.url
	if c.p.Auth.Kind == domain.AuthAPIKey && c.p.Auth.APIKeyQueryParam != "" {
		cp := *u
		q := cp.Query()
		q.Set(c.p.Auth.APIKeyQueryParam, cred.APIKey)
		cp.RawQuery = q.Encode()
		u = &cp
	}
	var body io.Reader
	if k.body != nil {
		body = bytes.NewReader(k.body)
	}
	req, err := http.NewRequestWithContext(ctx, k.method, u.String(), body)
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", userAgent)
	if k.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := c.authorize(req, cred); err != nil {
		return response{}, err
	}
	c.apiCalls.Add(1)
	resp, err := c.http.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	limit := c.opts.MaxResponseBytes
	if resp.StatusCode >= 300 {
		limit = maxErrBodyRead
	}
	b, err := readBody(resp, limit)
	r := response{status: resp.StatusCode, header: resp.Header, body: b, url: k.url}
	if err != nil {
		var tooBig *tooLargeError
		if errors.As(err, &tooBig) && resp.StatusCode >= 300 {
			return r, nil // an error body is only excerpted anyway
		}
		return r, err
	}
	return r, nil
}

func readBody(resp *http.Response, limit int64) ([]byte, error) {
	var buf bytes.Buffer
	if resp.ContentLength > 0 && resp.ContentLength <= limit {
		buf.Grow(int(resp.ContentLength) + 1)
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		return buf.Bytes()[:limit], &tooLargeError{limit: limit}
	}
	return buf.Bytes(), nil
}

// authorize presents cred as the provider's auth kind says (the query
// parameter form is added by send).
func (c *Client) authorize(req *http.Request, cred Credential) error {
	missing := func(what string) error {
		return &Error{Op: "authorize", Permanent: true, Msg: fmt.Sprintf("the connection's credentials have no %s (auth kind %s)", what, c.p.Auth.Kind), err: ErrNoCredentials}
	}
	switch c.p.Auth.Kind {
	case domain.AuthAPIKey:
		if cred.APIKey == "" {
			return missing("apiKey")
		}
		if c.p.Auth.APIKeyHeader != "" {
			req.Header.Set(c.p.Auth.APIKeyHeader, cred.APIKey)
		}
	case domain.AuthBearer, domain.AuthOAuth2ClientCredentials, domain.AuthOAuth2RefreshToken:
		if cred.Token == "" {
			return missing("token")
		}
		req.Header.Set("Authorization", "Bearer "+cred.Token)
	case domain.AuthBasic:
		if cred.Username == "" {
			return missing("username")
		}
		req.SetBasicAuth(cred.Username, cred.Password)
	}
	return nil
}

// transportMsg describes a transport failure without the request URL (which
// may carry an API key in its query).
func transportMsg(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case isTimeout(err):
		return "timed out: " + err.Error()
	}
	return "request failed: " + err.Error()
}

func unwrapURLErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// notSent reports whether a transport error happened before any byte of the
// request could reach the server (so even a POST may be re-sent).
func notSent(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr)
}
