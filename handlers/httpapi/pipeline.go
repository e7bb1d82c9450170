package httpapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/auth"
	"github.com/castiel/integration-manager/domain"
)

// Header names the API reads or writes.
const (
	HeaderCorrelationID  = "X-Correlation-ID"
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderReplayed       = "Idempotent-Replayed"
)

type ctxKey int

const (
	stateKey ctxKey = iota
	correlationKey
)

// reqState is what the pipeline learns about a request while serving it,
// for the log line and the metrics written when it ends.
type reqState struct {
	route         string
	tenantID      string
	correlationID string
	cause         error           // logged for 401/403 and 5xx answers; never sent
	oneTime       []oneTimeSecret // secrets in the response body, for the idempotency record
}

func stateFrom(ctx context.Context) *reqState {
	if st, ok := ctx.Value(stateKey).(*reqState); ok {
		return st
	}
	return &reqState{}
}

// CorrelationID returns the correlation id of the request ctx belongs to, or "".
// The wiring's CommandSender reads it to stamp the commands it publishes.
func CorrelationID(ctx context.Context) string {
	id, _ := ctx.Value(correlationKey).(string)
	return id
}

// call is one request on its way through a route's handler.
type call struct {
	w    http.ResponseWriter
	r    *http.Request
	ctx  context.Context
	rt   route
	st   *reqState
	p    auth.Principal
	body []byte
}

type handlerFunc func(c *call) error

// tenant is the caller's tenant: the only tenant a tenant route acts on.
func (c *call) tenant() string { return c.p.TenantID }

// oneTimeSecret notes that the response field carries the secret stored at
// ref, so an idempotent replay can show it again without storing it twice.
func (c *call) oneTimeSecret(field, ref string) {
	c.st.oneTime = append(c.st.oneTime, oneTimeSecret{Field: field, Ref: ref})
}

// ServeHTTP runs every request: correlation id, recovery, the mux, and one
// log line and metric sample per request.
func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	cid := correlationFromHeader(r.Header.Get(HeaderCorrelationID))
	st := &reqState{route: "unmatched", correlationID: cid}
	ctx := context.WithValue(r.Context(), stateKey, st)
	ctx = context.WithValue(ctx, correlationKey, cid)
	if a.opts.ContextWithCorrelationID != nil {
		ctx = a.opts.ContextWithCorrelationID(ctx, cid)
	}
	r = r.WithContext(ctx)
	w.Header().Set(HeaderCorrelationID, cid)
	rec := &statusRecorder{ResponseWriter: w}
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			st.cause = fmt.Errorf("panic: %v\n%s", v, debug.Stack())
			if rec.status == 0 {
				writeProblem(rec, problemFor(errors.New("panic")))
			}
		}
		a.finish(r, rec.code(), st, time.Since(start))
	}()
	if _, pattern := a.mux.Handler(r); pattern == "" {
		// Unknown path or method: the mux's plain-text answer becomes a problem.
		a.mux.ServeHTTP(&unmatchedWriter{statusRecorder: rec}, r)
		return
	}
	a.mux.ServeHTTP(rec, r)
}

// correlationFromHeader accepts a caller's correlation id when it is a sane
// token (it ends up in logs and message metadata), else makes a new one.
func correlationFromHeader(v string) string {
	if v != "" && len(v) <= 128 && strings.IndexFunc(v, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_.:", r))
	}) < 0 {
		return v
	}
	return newID("cor")
}

func (a *api) finish(r *http.Request, code int, st *reqState, d time.Duration) {
	a.metrics.observe(st.route, r.Method, code, d)
	var ev *zerolog.Event
	switch {
	case code >= 500:
		ev = a.log.Error()
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		ev = a.log.Warn()
	default:
		ev = a.log.Info()
	}
	if st.cause != nil && (code >= 500 || code == http.StatusUnauthorized || code == http.StatusForbidden) {
		ev = ev.Str("error", st.cause.Error())
	}
	if st.tenantID != "" {
		ev = ev.Str("tenantId", st.tenantID)
	}
	ev.Str("correlationId", st.correlationID).
		Str("method", r.Method).
		Str("route", st.route).
		Str("path", r.URL.Path).
		Int("status", code).
		Dur("duration", d).
		Msg("http request")
}

// pipeline is the per-route part: authentication, authorisation, body
// reading, idempotency, then the handler. Any error becomes a problem answer.
func (a *api) pipeline(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := stateFrom(r.Context())
		st.route = rt.path
		c := &call{w: w, r: r, ctx: r.Context(), rt: rt, st: st}
		if err := a.serveCall(c); err != nil {
			a.fail(c, err)
		}
	})
}

func (a *api) serveCall(c *call) error {
	if c.rt.access != accessPublic {
		if err := a.authenticate(c); err != nil {
			return err
		}
		if err := authorize(c); err != nil {
			return err
		}
	}
	if err := a.readBody(c); err != nil {
		return err
	}
	if c.r.Method == http.MethodPost && c.rt.access != accessPublic && c.r.Header.Get(HeaderIdempotencyKey) != "" {
		return a.idempotent(c)
	}
	return c.rt.handle(c)
}

// fail writes the problem for err and keeps the cause for the log line.
func (a *api) fail(c *call, err error) {
	e := problemFor(err)
	c.st.cause = err
	writeProblem(c.w, e)
}

func (a *api) authenticate(c *call) error {
	token, err := auth.BearerToken(c.r.Header.Get("Authorization"))
	if err != nil {
		return unauthenticated(err.Error())
	}
	p, err := a.deps.Auth.Authenticate(c.ctx, token)
	switch {
	case err == nil:
	case errors.Is(err, auth.ErrUnauthenticated):
		// The authenticator promises its reasons are safe to show; the token
		// itself never appears in them.
		e := unauthenticated(err.Error())
		e.cause = err
		return e
	default:
		return unavailable("authentication is unavailable; retry later", err)
	}
	c.p = p
	c.st.tenantID = p.TenantID
	return nil
}

func authorize(c *call) error {
	var ok bool
	switch c.rt.access {
	case accessRead:
		ok = c.p.CanRead()
	case accessTenantWrite:
		ok = c.p.CanWriteTenant()
	case accessPlatform:
		ok = c.p.CanManagePlatform()
	}
	if !ok {
		return forbidden(fmt.Sprintf("%s %s needs one of the roles %s", c.rt.method, c.rt.path, strings.Join(c.rt.access.roles(), ", ")))
	}
	if c.rt.tenant && !domain.IsValidID(c.p.TenantID) {
		return forbidden("the credentials carry no valid tenant")
	}
	return nil
}

// readBody reads the request body within the size limit and checks its type,
// so handlers and the idempotency fingerprint work on the same bytes.
func (a *api) readBody(c *call) error {
	switch c.r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		return nil
	}
	limit := a.opts.MaxBodyBytes
	if c.rt.body == bodyRaw {
		limit = min(limit, domain.MaxPayloadBytes)
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.w, c.r.Body, limit))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return newProblem(http.StatusRequestEntityTooLarge, ProblemTooLarge, "Payload too large",
				fmt.Sprintf("the request body must be at most %d bytes", limit))
		}
		return badRequest("the request body could not be read")
	}
	c.body = body
	if c.rt.body == bodyRaw || len(bytes.TrimSpace(body)) == 0 {
		if c.rt.body == bodyJSON && len(bytes.TrimSpace(body)) == 0 {
			return badRequest("a JSON body is required", domain.FieldError{Field: "body", Message: "is required"})
		}
		return nil
	}
	if !isJSONMediaType(c.r.Header.Get("Content-Type")) {
		return newProblem(http.StatusUnsupportedMediaType, ProblemUnsupportedMedia, "Unsupported media type",
			"send the body as application/json")
	}
	if c.rt.body == bodyNone {
		// Only an empty object is accepted where the route takes no input.
		var nothing struct{}
		return decodeStrict(body, &nothing)
	}
	return nil
}

func isJSONMediaType(v string) bool {
	mt, _, err := mime.ParseMediaType(v)
	if err != nil {
		return false
	}
	return mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")
}

// statusRecorder remembers the status written, for the log and the metrics.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) code() int {
	if s.status == 0 {
		return http.StatusOK
	}
	return s.status
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// unmatchedWriter turns the mux's plain-text 404 and 405 into problems.
type unmatchedWriter struct {
	*statusRecorder
	swallow bool
}

func (u *unmatchedWriter) WriteHeader(code int) {
	switch code {
	case http.StatusNotFound:
		u.swallow = true
		writeProblem(u.statusRecorder, newProblem(code, ProblemNotFound, "Not found", "no route matches this path"))
	case http.StatusMethodNotAllowed:
		u.swallow = true
		writeProblem(u.statusRecorder, newProblem(code, ProblemMethodNotAllowed, "Method not allowed",
			"this path does not accept the method; see the Allow header"))
	default:
		u.statusRecorder.WriteHeader(code)
	}
}

func (u *unmatchedWriter) Write(b []byte) (int, error) {
	if u.swallow {
		return len(b), nil
	}
	return u.statusRecorder.Write(b)
}

// httpMetrics are the request metrics.
type httpMetrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newHTTPMetrics(reg *prometheus.Registry) (*httpMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "http_requests_total",
		Help: "HTTP requests answered by the command API, by route pattern, method and status code.",
	}, []string{"route", "method", "code"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "http_request_duration_seconds",
		Help:    "Time to answer HTTP requests of the command API, by route pattern and method.",
		Buckets: prometheus.DefBuckets,
	}, []string{"route", "method"})
	m := &httpMetrics{}
	var err error
	if m.requests, err = registerOrReuse(reg, requests); err != nil {
		return nil, err
	}
	if m.duration, err = registerOrReuse(reg, duration); err != nil {
		return nil, err
	}
	return m, nil
}

// registerOrReuse lets two API handlers share one registry (tests, or an
// admin and a public listener) instead of failing on the second.
func registerOrReuse[C prometheus.Collector](reg *prometheus.Registry, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		var zero C
		return zero, fmt.Errorf("httpapi: register metrics: %w", err)
	}
	return c, nil
}

func (m *httpMetrics) observe(route, method string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, method, fmt.Sprint(code)).Inc()
	m.duration.WithLabelValues(route, method).Observe(d.Seconds())
}

// newID returns prefix + "_" + 26 random base32 characters (130 bits), which
// satisfies domain.IsValidID.
func newID(prefix string) string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return prefix + "_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
}
