// Package fakeapi is a local stand-in for an external REST API (a small
// CRM) that sync tests drive. No sync or connector code knows its shape:
// only the provider definition returned by Provider describes it, exactly as
// an operator would describe a real API.
//
// Tests act as "the external side" through the Server's methods (Seed, Edit,
// Remove), inject faults (AddFault, SetQuota, ExpireTokens) and check what
// reached the API (Writes, Stats).
package fakeapi

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
)

// AuthMode is how the fake authenticates callers.
type AuthMode string

const (
	AuthNone                    AuthMode = "none"
	AuthAPIKeyHeader            AuthMode = "api_key_header" // X-API-Key: APIKey
	AuthAPIKeyQuery             AuthMode = "api_key_query"  // ?api_key=APIKey
	AuthBearer                  AuthMode = "bearer"         // Authorization: Bearer BearerToken
	AuthBasic                   AuthMode = "basic"          // Username / Password
	AuthOAuth2ClientCredentials AuthMode = "oauth2_client_credentials"
	AuthOAuth2RefreshToken      AuthMode = "oauth2_refresh_token" // seed with IssueRefreshToken
)

// The credentials the fake accepts. They are long and distinctive so a test
// can search logs and errors for them.
const (
	APIKey       = "fk_live_APIKEY_4c9d2e7f1a0b"
	BearerToken  = "fk_live_BEARER_8e1f3a5c7b9d"
	Username     = "fake-user"
	Password     = "fk_live_PASSWORD_2b4d6f8a0c1e"
	ClientID     = "fake-client-id"
	ClientSecret = "fk_live_CLIENTSECRET_9a7c5e3b1d0f"
)

// Mode is what Provider needs to describe a fake.
type Mode struct {
	Pagination domain.PaginationKind // default cursor
	Auth       AuthMode              // default none
	PageSize   int                   // the provider definition's pageSize; default 100
	RateLimit  domain.RateLimit      // the provider definition's proactive limit; default none
	Entities   []string              // default {"contacts"}
}

func (m Mode) withDefaults() Mode {
	if m.Pagination == "" {
		m.Pagination = domain.PaginationCursor
	}
	if m.Auth == "" {
		m.Auth = AuthNone
	}
	if m.PageSize <= 0 {
		m.PageSize = 100
	}
	if len(m.Entities) == 0 {
		m.Entities = []string{"contacts"}
	}
	return m
}

// Options configures a fake server.
type Options struct {
	Mode
	TokenTTL time.Duration // lifetime of issued OAuth2 access tokens; default 1 h
	// ListDeleted makes list endpoints return deleted records too, with
	// "deleted": true (the deleted-flag style); otherwise only the deleted
	// endpoint shows them.
	ListDeleted bool
	MaxPageSize int // largest limit honoured; default 1000
	// ClientAuthInBody makes the token endpoint accept client credentials
	// only as client_id/client_secret form fields, answering invalid_client
	// to HTTP basic auth (as some providers do).
	ClientAuthInBody bool
	// AssignIDs makes creates give records ids of the server's own, whatever
	// id the request sent (as many APIs do).
	AssignIDs bool
}

// Record is one record of an entity.
type Record struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Email     string    `json:"email"`
	UpdatedAt time.Time `json:"updated_at"`
	Deleted   bool      `json:"deleted,omitempty"`
}

// Fault makes matching requests misbehave.
type Fault struct {
	Method     string // "" any
	Path       string // URL path, e.g. "/api/contacts"; "" any data endpoint (not the token endpoint)
	Skip       int    // let this many matching requests through first
	Count      int    // matching requests to affect after that; 0 means 1
	Status     int    // answer this status; 0: answer normally (after Delay)
	RetryAfter string // Retry-After header with Status
	Body       string // body with Status
	// EchoCredentials appends the credentials the request carried to Body,
	// as careless APIs do ("invalid key abc123").
	EchoCredentials bool
	Delay           time.Duration // wait before answering (cut short if the client gives up)
}

// Write is one successful write the API applied.
type Write struct {
	Method string
	Entity string
	ID     string
}

// Stats counts what reached the fake.
type Stats struct {
	Requests      int // every request, the token endpoint included
	ListRequests  int // GETs of list and deleted endpoints
	TokenRequests int // token endpoint requests
	TokensIssued  int
	Unauthorized  int // 401s answered
	Throttled     int // 429s answered (faults and quota)
	Faults        int // requests a Fault affected
}

// Server is a running fake API.
type Server struct {
	*httptest.Server
	opts Options

	mu       sync.Mutex
	tables   map[string]*table
	last     time.Time // newest updated_at stamped, to keep them strictly increasing
	faults   []*faultState
	writes   map[string]int // entity/id -> successful writes
	writeLog []Write
	stats    Stats
	access   map[string]time.Time // access token -> expiry
	refresh  map[string]bool      // live refresh tokens
	quota    *quota
}

type faultState struct {
	Fault
	seen, used int
}

type quota struct {
	limit   int
	window  time.Duration
	start   time.Time
	remains int
}

type table struct {
	recs  map[string]*Record
	seq   int
	dirty bool
	live  []*Record // not deleted, by (updated_at, id)
	gone  []*Record // deleted
	all   []*Record
}

// New starts a fake API closed at the end of the test.
func New(t testing.TB, opts Options) *Server {
	t.Helper()
	opts.Mode = opts.Mode.withDefaults()
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = time.Hour
	}
	if opts.MaxPageSize <= 0 {
		opts.MaxPageSize = 1000
	}
	s := &Server{
		opts:    opts,
		tables:  map[string]*table{},
		writes:  map[string]int{},
		access:  map[string]time.Time{},
		refresh: map[string]bool{},
	}
	for _, e := range opts.Entities {
		s.tables[e] = &table{recs: map[string]*Record{}}
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

// Provider describes this server.
func (s *Server) Provider() domain.Provider { return Provider(s.URL, s.opts.Mode) }

// Provider is the definition of a fake API at serverURL: the only place that
// knows the fake's endpoints, parameters and response shapes.
func Provider(serverURL string, mode Mode) domain.Provider {
	mode = mode.withDefaults()
	p := domain.Provider{
		ID:        "fake-crm",
		Category:  "crm",
		Name:      "Fake CRM (local test API)",
		BaseURL:   serverURL + "/api",
		RateLimit: mode.RateLimit,
		Pagination: domain.PaginationSpec{
			Kind: mode.Pagination, SizeParam: "limit", PageSize: mode.PageSize, ItemsPath: "data",
		},
		CreatedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
		UpdatedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	switch mode.Pagination {
	case domain.PaginationCursor:
		p.Pagination.Param, p.Pagination.NextCursorPath = "cursor", "meta.next_cursor"
	case domain.PaginationPage:
		p.Pagination.Param = "page"
	case domain.PaginationOffset:
		p.Pagination.Param = "offset"
	case domain.PaginationNone:
		p.Pagination.ItemsPath, p.Pagination.SizeParam, p.Pagination.PageSize = "", "", 0
	}
	tokenURL := serverURL + "/oauth/token"
	switch mode.Auth {
	case AuthAPIKeyHeader:
		p.Auth = domain.AuthSpec{Kind: domain.AuthAPIKey, APIKeyHeader: "X-API-Key"}
	case AuthAPIKeyQuery:
		p.Auth = domain.AuthSpec{Kind: domain.AuthAPIKey, APIKeyQueryParam: "api_key"}
	case AuthBearer:
		p.Auth = domain.AuthSpec{Kind: domain.AuthBearer}
	case AuthBasic:
		p.Auth = domain.AuthSpec{Kind: domain.AuthBasic}
	case AuthOAuth2ClientCredentials:
		p.Auth = domain.AuthSpec{Kind: domain.AuthOAuth2ClientCredentials, TokenURL: tokenURL, Scopes: []string{"crm.read", "crm.write"}}
	case AuthOAuth2RefreshToken:
		p.Auth = domain.AuthSpec{Kind: domain.AuthOAuth2RefreshToken, TokenURL: tokenURL}
	default:
		p.Auth = domain.AuthSpec{Kind: domain.AuthNone}
	}
	for _, name := range mode.Entities {
		p.Entities = append(p.Entities, domain.EntityDef{
			Name:             name,
			ListPath:         "/" + name,
			PrimaryKey:       "id",
			CursorParam:      "updated_since",
			CursorField:      "updated_at",
			CursorFormat:     domain.TimeRFC3339,
			DeletedFlagField: "deleted",
			DeletedPath:      "/" + name + "/deleted",
			Get:              &domain.RequestSpec{Method: http.MethodGet, Path: "/" + name + "/{id}"},
			Create:           &domain.RequestSpec{Method: http.MethodPost, Path: "/" + name},
			Update:           &domain.RequestSpec{Method: http.MethodPatch, Path: "/" + name + "/{id}"},
			Delete:           &domain.RequestSpec{Method: http.MethodDelete, Path: "/" + name + "/{id}"},
		})
	}
	return p
}

// ---- the external side, for tests ----

// stamp returns a new updated_at, strictly after every earlier one.
func (s *Server) stamp() time.Time {
	t := time.Now().UTC().Truncate(time.Microsecond)
	if !t.After(s.last) {
		t = s.last.Add(time.Microsecond)
	}
	s.last = t
	return t
}

func (s *Server) table(entity string) *table {
	tb, ok := s.tables[entity]
	if !ok {
		panic(fmt.Sprintf("fakeapi: no entity %q (Options.Entities)", entity))
	}
	return tb
}

// Seed stores records as the external side created them. A record without
// an ID gets one; without UpdatedAt, the current time.
func (s *Server) Seed(entity string, recs ...Record) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.table(entity)
	out := make([]Record, 0, len(recs))
	for _, r := range recs {
		if r.ID == "" {
			r.ID = tb.newID()
		}
		if r.UpdatedAt.IsZero() {
			r.UpdatedAt = s.stamp()
		} else if r.UpdatedAt.After(s.last) {
			s.last = r.UpdatedAt
		}
		cp := r
		tb.recs[r.ID] = &cp
		out = append(out, r)
	}
	tb.dirty = true
	return out
}

// SeedN creates n records named after their position.
func (s *Server) SeedN(entity string, n int) []Record {
	recs := make([]Record, n)
	for i := range recs {
		recs[i] = Record{ID: fmt.Sprintf("c%07d", i+1), Name: fmt.Sprintf("Contact %d", i+1), Email: fmt.Sprintf("contact%d@example.com", i+1)}
	}
	return s.Seed(entity, recs...)
}

// Edit changes a live record as the external side would, stamping
// updated_at. It reports false for a missing or deleted record.
func (s *Server) Edit(entity, id string, fn func(*Record)) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.table(entity)
	r, ok := tb.recs[id]
	if !ok || r.Deleted {
		return Record{}, false
	}
	fn(r)
	r.ID = id
	r.UpdatedAt = s.stamp()
	tb.dirty = true
	return *r, true
}

// Remove deletes a record as the external side would: it leaves a tombstone
// for the deleted endpoint. It reports false for a missing or deleted record.
func (s *Server) Remove(entity, id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(s.table(entity), id)
}

func (s *Server) removeLocked(tb *table, id string) bool {
	r, ok := tb.recs[id]
	if !ok || r.Deleted {
		return false
	}
	r.Deleted, r.UpdatedAt = true, s.stamp()
	tb.dirty = true
	return true
}

// Get returns a record, tombstones included.
func (s *Server) Get(entity, id string) (Record, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.table(entity).recs[id]
	if !ok {
		return Record{}, false
	}
	return *r, true
}

// Records returns the live records in list order.
func (s *Server) Records(entity string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.table(entity)
	tb.index()
	out := make([]Record, len(tb.live))
	for i, r := range tb.live {
		out[i] = *r
	}
	return out
}

// Writes counts successful create/update/delete requests for a record.
func (s *Server) Writes(entity, id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes[entity+"/"+id]
}

// WriteLog lists every successful write in order.
func (s *Server) WriteLog() []Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Write(nil), s.writeLog...)
}

// Stats returns the request counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// AddFault arms a fault; faults are checked in the order added.
func (s *Server) AddFault(f Fault) {
	if f.Count <= 0 {
		f.Count = 1
	}
	s.mu.Lock()
	s.faults = append(s.faults, &faultState{Fault: f})
	s.mu.Unlock()
}

// SetQuota limits data requests to limit per fixed window (starting now),
// announcing X-RateLimit-Limit/-Remaining/-Reset (seconds) on every answer
// and answering 429 with Retry-After beyond it. limit 0 removes the quota.
func (s *Server) SetQuota(limit int, window time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit <= 0 {
		s.quota = nil
		return
	}
	s.quota = &quota{limit: limit, window: window, start: time.Now(), remains: limit}
}

// ExpireTokens makes every OAuth2 access token issued so far invalid now,
// as if they had expired mid-run (refresh tokens stay valid).
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.access {
		s.access[k] = time.Time{}
	}
}

// IssueRefreshToken returns a valid refresh token, as an authorisation
// (consent) flow would have left the connection with.
func (s *Server) IssueRefreshToken() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := "fk_rt_" + randHex()
	s.refresh[t] = true
	return t
}

// ValidRefreshToken reports whether t is a live refresh token (not yet
// rotated away).
func (s *Server) ValidRefreshToken(t string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.refresh[t]
}

func randHex() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (tb *table) newID() string {
	for {
		tb.seq++
		id := "c-" + strconv.Itoa(tb.seq)
		if _, taken := tb.recs[id]; !taken {
			return id
		}
	}
}

// index rebuilds the sorted views after changes.
func (tb *table) index() {
	if !tb.dirty {
		return
	}
	tb.all = tb.all[:0]
	tb.live, tb.gone = tb.live[:0], tb.gone[:0]
	for _, r := range tb.recs {
		tb.all = append(tb.all, r)
	}
	sort.Slice(tb.all, func(i, j int) bool { return before(tb.all[i], tb.all[j].UpdatedAt, tb.all[j].ID) })
	for _, r := range tb.all {
		if r.Deleted {
			tb.gone = append(tb.gone, r)
		} else {
			tb.live = append(tb.live, r)
		}
	}
	tb.dirty = false
}

// before orders records by (updated_at, id): a stable order even while
// records change, so keyset cursors never skip or repeat one.
func before(r *Record, t time.Time, id string) bool {
	if !r.UpdatedAt.Equal(t) {
		return r.UpdatedAt.Before(t)
	}
	return r.ID < id
}

// ---- HTTP ----

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.stats.Requests++
	if r.URL.Path == "/oauth/token" {
		s.stats.TokenRequests++
	}
	f := s.matchFaultLocked(r)
	s.mu.Unlock()

	if f != nil {
		if f.Delay > 0 {
			select {
			case <-time.After(f.Delay):
			case <-r.Context().Done():
				return
			}
		}
		if f.Status != 0 {
			if f.RetryAfter != "" {
				w.Header().Set("Retry-After", f.RetryAfter)
			}
			if f.Status == http.StatusTooManyRequests {
				s.count(func(st *Stats) { st.Throttled++ })
			}
			msg := f.Body
			if f.EchoCredentials {
				msg += " " + echo(r)
			}
			writeJSON(w, f.Status, map[string]string{"error": http.StatusText(f.Status), "message": msg})
			return
		}
	}

	if r.URL.Path == "/oauth/token" {
		s.token(w, r)
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/api/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	if !s.authorized(r) {
		s.count(func(st *Stats) { st.Unauthorized++ })
		w.Header().Set("WWW-Authenticate", `Bearer realm="fake-crm"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "unauthorized", "message": "missing or invalid credentials"})
		return
	}
	if !s.admit(w) {
		return
	}

	parts := strings.Split(rest, "/")
	entity := parts[0]
	s.mu.Lock()
	_, known := s.tables[entity]
	s.mu.Unlock()
	if !known {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found", "message": "no such collection"})
		return
	}
	switch {
	case len(parts) == 1 && r.Method == http.MethodGet:
		s.list(w, r, entity, false)
	case len(parts) == 2 && parts[1] == "deleted" && r.Method == http.MethodGet:
		s.list(w, r, entity, true)
	case len(parts) == 1 && r.Method == http.MethodPost:
		s.create(w, r, entity)
	case len(parts) == 2 && r.Method == http.MethodGet:
		s.getOne(w, entity, parts[1])
	case len(parts) == 2 && (r.Method == http.MethodPatch || r.Method == http.MethodPut):
		s.update(w, r, entity, parts[1])
	case len(parts) == 2 && r.Method == http.MethodDelete:
		s.delete(w, entity, parts[1])
	default:
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method_not_allowed"})
	}
}

// echo renders every credential a request carried.
func echo(r *http.Request) string {
	parts := []string{"authorization=" + r.Header.Get("Authorization"), "x-api-key=" + r.Header.Get("X-API-Key"), "url=" + r.URL.String()}
	if u, p, ok := r.BasicAuth(); ok {
		parts = append(parts, "user="+u, "password="+p)
	}
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		parts = append(parts, "token="+tok)
	}
	return strings.Join(parts, " ")
}

func (s *Server) count(fn func(*Stats)) {
	s.mu.Lock()
	fn(&s.stats)
	s.mu.Unlock()
}

func (s *Server) matchFaultLocked(r *http.Request) *Fault {
	for _, f := range s.faults {
		if f.Method != "" && f.Method != r.Method {
			continue
		}
		if f.Path == "" && r.URL.Path == "/oauth/token" || f.Path != "" && f.Path != r.URL.Path {
			continue
		}
		if f.used >= f.Count {
			continue
		}
		f.seen++
		if f.seen <= f.Skip {
			continue
		}
		f.used++
		s.stats.Faults++
		cp := f.Fault
		return &cp
	}
	return nil
}

// admit applies the quota, answering 429 itself when it is spent.
func (s *Server) admit(w http.ResponseWriter) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.quota
	if q == nil {
		return true
	}
	now := time.Now()
	if now.Sub(q.start) >= q.window {
		q.start, q.remains = now, q.limit
	}
	reset := int(math.Ceil(q.start.Add(q.window).Sub(now).Seconds()))
	w.Header().Set("X-RateLimit-Limit", strconv.Itoa(q.limit))
	w.Header().Set("X-RateLimit-Reset", strconv.Itoa(reset))
	if q.remains == 0 {
		s.stats.Throttled++
		w.Header().Set("X-RateLimit-Remaining", "0")
		w.Header().Set("Retry-After", strconv.Itoa(reset))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "rate_limited"})
		return false
	}
	q.remains--
	w.Header().Set("X-RateLimit-Remaining", strconv.Itoa(q.remains))
	return true
}

func (s *Server) authorized(r *http.Request) bool {
	eq := func(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }
	switch s.opts.Auth {
	case AuthAPIKeyHeader:
		return eq(r.Header.Get("X-API-Key"), APIKey)
	case AuthAPIKeyQuery:
		return eq(r.URL.Query().Get("api_key"), APIKey)
	case AuthBearer:
		return eq(r.Header.Get("Authorization"), "Bearer "+BearerToken)
	case AuthBasic:
		u, p, ok := r.BasicAuth()
		return ok && eq(u, Username) && eq(p, Password)
	case AuthOAuth2ClientCredentials, AuthOAuth2RefreshToken:
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		exp, ok := s.access[tok]
		return ok && time.Now().Before(exp)
	}
	return true
}

// token is the OAuth2 token endpoint (RFC 6749): client_credentials and
// refresh_token grants; refresh tokens rotate on use.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	fail := func(status int, code, desc string) {
		writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
	}
	if r.Method != http.MethodPost {
		fail(http.StatusMethodNotAllowed, "invalid_request", "POST only")
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	id, secret, basic := r.BasicAuth()
	if basic && s.opts.ClientAuthInBody {
		fail(http.StatusUnauthorized, "invalid_client", "send client credentials in the request body")
		return
	}
	if basic {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	clientOK := id == ClientID && subtle.ConstantTimeCompare([]byte(secret), []byte(ClientSecret)) == 1

	s.mu.Lock()
	defer s.mu.Unlock()
	resp := map[string]any{"token_type": "Bearer", "expires_in": s.opts.TokenTTL.Seconds()}
	switch r.PostForm.Get("grant_type") {
	case "client_credentials":
		if s.opts.Auth != AuthOAuth2ClientCredentials {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
			return
		}
		if !clientOK {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client", "error_description": "unknown client or wrong secret"})
			return
		}
	case "refresh_token":
		if s.opts.Auth != AuthOAuth2RefreshToken {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
			return
		}
		if (id != "" || secret != "") && !clientOK {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
			return
		}
		rt := r.PostForm.Get("refresh_token")
		if !s.refresh[rt] {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": "refresh token is invalid or was already used"})
			return
		}
		delete(s.refresh, rt) // rotation: each refresh token works once
		next := "fk_rt_" + randHex()
		s.refresh[next] = true
		resp["refresh_token"] = next
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "unsupported_grant_type"})
		return
	}
	at := "fk_at_" + randHex()
	s.access[at] = time.Now().Add(s.opts.TokenTTL)
	s.stats.TokensIssued++
	resp["access_token"] = at
	writeJSON(w, http.StatusOK, resp)
}

type listEnvelope struct {
	Data []*Record `json:"data"`
	Meta *struct {
		NextCursor *string `json:"next_cursor"`
	} `json:"meta,omitempty"`
	Page int `json:"page,omitempty"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, entity string, deleted bool) {
	q := r.URL.Query()
	size := s.opts.PageSize
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "message": "limit must be a positive integer"})
			return
		}
		size = min(n, s.opts.MaxPageSize)
	}
	var since time.Time
	if v := q.Get("updated_since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "message": "updated_since must be an RFC 3339 time"})
			return
		}
		since = t
	}

	s.mu.Lock()
	s.stats.ListRequests++
	tb := s.tables[entity]
	tb.index()
	view := tb.live
	switch {
	case deleted:
		view = tb.gone
	case s.opts.ListDeleted:
		view = tb.all
	}
	// updated_since is inclusive: a record stamped exactly at the cursor is
	// read again rather than missed.
	start := sort.Search(len(view), func(i int) bool { return !view[i].UpdatedAt.Before(since) })
	env := listEnvelope{}
	var link string
	bad := func(msg string) {
		s.mu.Unlock()
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "message": msg})
	}
	switch s.opts.Pagination {
	case domain.PaginationCursor:
		if c := q.Get("cursor"); c != "" {
			t, id, ok := decodeCursor(c)
			if !ok {
				bad("cursor is malformed")
				return
			}
			after := sort.Search(len(view), func(i int) bool { return !before(view[i], t, id) && !(view[i].UpdatedAt.Equal(t) && view[i].ID == id) })
			start = max(start, after)
		}
		end := min(start+size, len(view))
		env.Data = view[start:end]
		env.Meta = &struct {
			NextCursor *string `json:"next_cursor"`
		}{}
		if end < len(view) {
			last := view[end-1]
			c := encodeCursor(last.UpdatedAt, last.ID)
			env.Meta.NextCursor = &c
		}
	case domain.PaginationPage, domain.PaginationLinkHeader:
		page := 1
		if v := q.Get("page"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				bad("page must be a positive integer")
				return
			}
			page = n
		}
		from := min(start+(page-1)*size, len(view))
		end := min(from+size, len(view))
		env.Data = view[from:end]
		if s.opts.Pagination == domain.PaginationPage {
			env.Page = page
		} else if end < len(view) {
			nq := url.Values{}
			for k, v := range q {
				nq[k] = v
			}
			nq.Set("page", strconv.Itoa(page+1))
			nq.Set("limit", strconv.Itoa(size))
			next := url.URL{Path: r.URL.Path, RawQuery: nq.Encode()}
			link = fmt.Sprintf(`<%s%s>; rel="next", <%s%s?limit=%d>; rel="first"`, s.URL, next.String(), s.URL, r.URL.Path, size)
		}
	case domain.PaginationOffset:
		off := 0
		if v := q.Get("offset"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				bad("offset must be a non-negative integer")
				return
			}
			off = n
		}
		from := min(start+off, len(view))
		end := min(from+size, len(view))
		env.Data = view[from:end]
	case domain.PaginationNone:
		env.Data = view[start:]
	}
	// Encode under the lock: the records are shared with writers.
	var body []byte
	var err error
	if s.opts.Pagination == domain.PaginationNone {
		body, err = json.Marshal(env.Data)
	} else {
		if env.Data == nil {
			env.Data = []*Record{}
		}
		body, err = json.Marshal(env)
	}
	s.mu.Unlock()
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "encode"})
		return
	}
	if link != "" {
		w.Header().Set("Link", link)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}

func encodeCursor(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(t.Format(time.RFC3339Nano) + "|" + id))
}

func decodeCursor(c string) (time.Time, string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, "", false
	}
	ts, id, ok := strings.Cut(string(b), "|")
	if !ok {
		return time.Time{}, "", false
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	return t, id, err == nil
}

// body is what clients may send when writing a record.
type body struct {
	ID    *string `json:"id"`
	Name  *string `json:"name"`
	Email *string `json:"email"`
}

func readBody(w http.ResponseWriter, r *http.Request) (body, bool) {
	var b body
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&b); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "message": "body must be a JSON object"})
		return b, false
	}
	if b.Email != nil && *b.Email != "" && !strings.Contains(*b.Email, "@") {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"error": "validation_failed", "message": "email is not an address"})
		return b, false
	}
	return b, true
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, entity string) {
	b, ok := readBody(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.tables[entity]
	rec := &Record{}
	if b.ID != nil && *b.ID != "" && !s.opts.AssignIDs {
		if _, taken := tb.recs[*b.ID]; taken {
			writeJSON(w, http.StatusConflict, map[string]string{"error": "conflict", "message": "a record with this id exists"})
			return
		}
		rec.ID = *b.ID
	} else {
		rec.ID = tb.newID()
	}
	if b.Name != nil {
		rec.Name = *b.Name
	}
	if b.Email != nil {
		rec.Email = *b.Email
	}
	rec.UpdatedAt = s.stamp()
	tb.recs[rec.ID] = rec
	tb.dirty = true
	s.wroteLocked(http.MethodPost, entity, rec.ID)
	writeJSON(w, http.StatusCreated, rec)
}

func (s *Server) getOne(w http.ResponseWriter, entity, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, ok := s.tables[entity].recs[id]
	if !ok || rec.Deleted {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request, entity, id string) {
	b, ok := readBody(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.tables[entity]
	rec, ok := tb.recs[id]
	if !ok || rec.Deleted {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
		return
	}
	if b.Name != nil {
		rec.Name = *b.Name
	}
	if b.Email != nil {
		rec.Email = *b.Email
	}
	rec.UpdatedAt = s.stamp()
	tb.dirty = true
	s.wroteLocked(r.Method, entity, id)
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) delete(w http.ResponseWriter, entity, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.removeLocked(s.tables[entity], id) {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
		return
	}
	s.wroteLocked(http.MethodDelete, entity, id)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) wroteLocked(method, entity, id string) {
	s.writes[entity+"/"+id]++
	s.writeLog = append(s.writeLog, Write{Method: method, Entity: entity, ID: id})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
