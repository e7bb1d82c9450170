package domain

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Provider describes an external system (container integration_providers,
// partition "category"): how the sync worker authenticates, pages, reads
// incrementally and writes, and how the system signs what it posts to our
// ingress. Operators write providers; tenants only pick them from the catalog.
type Provider struct {
	ID         string         `json:"id"`
	Category   string         `json:"category"`
	Name       string         `json:"name"`
	Auth       AuthSpec       `json:"auth"`
	BaseURL    string         `json:"baseUrl"`
	Pagination PaginationSpec `json:"pagination"`
	RateLimit  RateLimit      `json:"rateLimit"`
	Entities   []EntityDef    `json:"entities"`
	Ingress    *SignatureSpec `json:"ingress,omitempty"` // nil: the provider does not sign ingress posts
	CreatedAt  time.Time      `json:"createdAt"`
	UpdatedAt  time.Time      `json:"updatedAt"`
}

func (p Provider) Key() (partitionKey, id string) { return p.Category, p.ID }
func (Provider) Container() string                { return ContainerProviders }

// Entity returns the entity definition called name.
func (p Provider) Entity(name string) (EntityDef, bool) {
	for _, e := range p.Entities {
		if e.Name == name {
			return e, true
		}
	}
	return EntityDef{}, false
}

type AuthKind string

const (
	AuthAPIKey                  AuthKind = "api_key"
	AuthBearer                  AuthKind = "bearer"
	AuthBasic                   AuthKind = "basic"
	AuthOAuth2ClientCredentials AuthKind = "oauth2_client_credentials"
	AuthOAuth2RefreshToken      AuthKind = "oauth2_refresh_token"
	AuthNone                    AuthKind = "none"
)

// AuthSpec says how credentials (held in Secret Management) are presented.
type AuthSpec struct {
	Kind             AuthKind `json:"kind"`
	APIKeyHeader     string   `json:"apiKeyHeader,omitempty"`     // api_key: header carrying the key, or
	APIKeyQueryParam string   `json:"apiKeyQueryParam,omitempty"` // api_key: query parameter carrying it
	TokenURL         string   `json:"tokenUrl,omitempty"`         // oauth2_*
	Scopes           []string `json:"scopes,omitempty"`           // oauth2_*
}

type PaginationKind string

const (
	PaginationCursor     PaginationKind = "cursor"
	PaginationPage       PaginationKind = "page"
	PaginationOffset     PaginationKind = "offset"
	PaginationLinkHeader PaginationKind = "link_header" // RFC 8288 rel="next"
	PaginationNone       PaginationKind = "none"        // one response holds every item
)

// PaginationSpec says how to walk a list endpoint.
type PaginationSpec struct {
	Kind PaginationKind `json:"kind"`
	// Param is the request parameter carrying the position: the cursor, the
	// page number (first page 1) or the item offset, depending on Kind.
	Param          string `json:"param,omitempty"`
	SizeParam      string `json:"sizeParam,omitempty"` // request parameter for the page size
	PageSize       int    `json:"pageSize,omitempty"`  // 0: the provider's default
	ItemsPath      string `json:"itemsPath,omitempty"` // dotted path to the items array; empty: the body is the array
	NextCursorPath string `json:"nextCursorPath,omitempty"`
}

// RateLimit caps requests to the provider per integration; 0 means no limit.
type RateLimit struct {
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	Burst             int     `json:"burst"`
}

// TimeFormat is how an incremental cursor time is written in requests and
// read from records.
type TimeFormat string

const (
	TimeRFC3339    TimeFormat = "rfc3339" // also the meaning of ""
	TimeUnix       TimeFormat = "unix"
	TimeUnixMillis TimeFormat = "unix_ms"
)

// Format writes t in the format.
func (f TimeFormat) Format(t time.Time) string {
	switch f {
	case TimeUnix:
		return strconv.FormatInt(t.Unix(), 10)
	case TimeUnixMillis:
		return strconv.FormatInt(t.UnixMilli(), 10)
	default:
		return t.UTC().Format(time.RFC3339Nano)
	}
}

// Parse reads a time written in the format.
func (f TimeFormat) Parse(s string) (time.Time, error) {
	switch f {
	case TimeUnix, TimeUnixMillis:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("parse %s time %q: %w", f, s, err)
		}
		if f == TimeUnix {
			return time.Unix(n, 0).UTC(), nil
		}
		return time.UnixMilli(n).UTC(), nil
	default:
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("parse rfc3339 time %q: %w", s, err)
		}
		return t, nil
	}
}

// EntityDef is one kind of record the provider exposes (contacts, tickets...).
// CursorParam, CursorField and CursorFormat are its incremental spec: the
// request parameter that asks for changes since a time ("updated_since"), the
// record field that time is compared with, and how the time is written.
type EntityDef struct {
	Name             string       `json:"name"`
	ListPath         string       `json:"listPath"`   // path template relative to baseUrl
	PrimaryKey       string       `json:"primaryKey"` // dotted path of the record's id
	CursorParam      string       `json:"cursorParam,omitempty"`
	CursorField      string       `json:"cursorField,omitempty"`
	CursorFormat     TimeFormat   `json:"cursorFormat,omitempty"`
	DeletedFlagField string       `json:"deletedFlagField,omitempty"` // record field that is true when deleted
	DeletedPath      string       `json:"deletedPath,omitempty"`      // list endpoint of deleted records
	Get              *RequestSpec `json:"get,omitempty"`              // read one record: a GET with {id} (the conflict resolver reads with it)
	Create           *RequestSpec `json:"create,omitempty"`
	Update           *RequestSpec `json:"update,omitempty"`
	Delete           *RequestSpec `json:"delete,omitempty"`
}

// SupportsIncremental reports whether the entity can be read by changes only.
func (e EntityDef) SupportsIncremental() bool { return e.CursorParam != "" && e.CursorField != "" }

// RequestSpec is a request for one record (a write, or EntityDef.Get); Path
// is a template such as "/contacts/{id}".
type RequestSpec struct {
	Method string `json:"method"`
	Path   string `json:"path"`
}

// ExpandPath fills the {name} placeholders of a path template, escaping each
// value as one path segment. A placeholder without a value is an error.
func ExpandPath(template string, vars map[string]string) (string, error) {
	var b strings.Builder
	rest := template
	for {
		open := strings.IndexByte(rest, '{')
		if open < 0 {
			b.WriteString(rest)
			return b.String(), nil
		}
		end := strings.IndexByte(rest[open:], '}')
		if end < 0 {
			return "", fmt.Errorf("path template %q: unclosed '{'", template)
		}
		name := rest[open+1 : open+end]
		v, ok := vars[name]
		if !ok {
			return "", fmt.Errorf("path template %q: no value for {%s}", template, name)
		}
		b.WriteString(rest[:open])
		b.WriteString(url.PathEscape(v))
		rest = rest[open+end+1:]
	}
}

// Validate checks a provider as an operator writes it.
func (p Provider) Validate() error {
	var ve ValidationError
	checkID(&ve, "id", p.ID)
	checkCategory(&ve, "category", p.Category)
	checkText(&ve, "name", p.Name, true, MaxNameLength)
	ve.Merge("auth", p.Auth.Validate())
	if msg := httpURLProblem(p.BaseURL); msg != "" {
		ve.Add("baseUrl", msg)
	}
	ve.Merge("pagination", p.Pagination.Validate())
	ve.Merge("rateLimit", p.RateLimit.Validate())
	if len(p.Entities) == 0 {
		ve.Add("entities", "must define at least one entity")
	}
	seen := make(map[string]bool, len(p.Entities))
	for i, e := range p.Entities {
		field := indexField("entities", i)
		ve.Merge(field, e.Validate())
		if seen[e.Name] {
			ve.Addf(field+".name", "duplicates entity %q", e.Name)
		}
		seen[e.Name] = true
	}
	if p.Ingress != nil {
		ve.Merge("ingress", p.Ingress.Validate())
	}
	return ve.Err()
}

func (a AuthSpec) Validate() error {
	var ve ValidationError
	checkEnum(&ve, "kind", a.Kind, AuthAPIKey, AuthBearer, AuthBasic, AuthOAuth2ClientCredentials, AuthOAuth2RefreshToken, AuthNone)
	switch a.Kind {
	case AuthAPIKey:
		switch {
		case (a.APIKeyHeader == "") == (a.APIKeyQueryParam == ""):
			ve.Add("apiKeyHeader", "set exactly one of apiKeyHeader or apiKeyQueryParam")
		case a.APIKeyHeader != "" && !isToken(a.APIKeyHeader):
			ve.Add("apiKeyHeader", "must be a valid HTTP header name")
		case a.APIKeyQueryParam != "" && !isToken(a.APIKeyQueryParam):
			ve.Add("apiKeyQueryParam", "must be a query parameter name without spaces or reserved characters")
		}
	case AuthOAuth2ClientCredentials, AuthOAuth2RefreshToken:
		if msg := httpURLProblem(a.TokenURL); msg != "" {
			ve.Add("tokenUrl", msg)
		}
		for i, s := range a.Scopes {
			if s == "" || hasSpaceOrControl(s) {
				ve.Add(indexField("scopes", i), "must be a non-empty scope without spaces")
			}
		}
	}
	return ve.Err()
}

func (s PaginationSpec) Validate() error {
	var ve ValidationError
	checkEnum(&ve, "kind", s.Kind, PaginationCursor, PaginationPage, PaginationOffset, PaginationLinkHeader, PaginationNone)
	switch s.Kind {
	case PaginationCursor, PaginationPage, PaginationOffset:
		if !isToken(s.Param) {
			ve.Addf("param", "is required for %s pagination (the request parameter carrying the position)", s.Kind)
		}
	}
	if s.Kind == PaginationCursor {
		checkDottedPath(&ve, "nextCursorPath", s.NextCursorPath, true)
	}
	if s.SizeParam != "" && !isToken(s.SizeParam) {
		ve.Add("sizeParam", "must be a parameter name without spaces or reserved characters")
	}
	if s.PageSize < 0 || s.PageSize > MaxPageSize {
		ve.Addf("pageSize", "must be between 0 and %d", MaxPageSize)
	}
	checkDottedPath(&ve, "itemsPath", s.ItemsPath, false)
	return ve.Err()
}

func (r RateLimit) Validate() error {
	var ve ValidationError
	checkRate(&ve, "requestsPerSecond", r.RequestsPerSecond, MaxProviderRatePerSecond)
	switch {
	case r.Burst < 0 || r.Burst > MaxBurst:
		ve.Addf("burst", "must be between 0 and %d", MaxBurst)
	case r.RequestsPerSecond > 0 && r.Burst < 1:
		ve.Add("burst", "must be at least 1 when requestsPerSecond is set")
	}
	return ve.Err()
}

func checkRate(ve *ValidationError, field string, v, max float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > max {
		ve.Addf(field, "must be between 0 (no limit) and %g", max)
	}
}

func (e EntityDef) Validate() error {
	var ve ValidationError
	if !isIdent(e.Name) {
		ve.Add("name", "must start with a letter and contain only letters, digits, '_' or '-' (at most 64 characters)")
	}
	checkPathTemplate(&ve, "listPath", e.ListPath, true)
	checkDottedPath(&ve, "primaryKey", e.PrimaryKey, true)
	if (e.CursorParam == "") != (e.CursorField == "") {
		ve.Add("cursorParam", "cursorParam and cursorField must be set together")
	}
	if e.CursorParam != "" && !isToken(e.CursorParam) {
		ve.Add("cursorParam", "must be a parameter name without spaces or reserved characters")
	}
	checkDottedPath(&ve, "cursorField", e.CursorField, false)
	if e.CursorFormat != "" {
		checkEnum(&ve, "cursorFormat", e.CursorFormat, TimeRFC3339, TimeUnix, TimeUnixMillis)
	}
	checkDottedPath(&ve, "deletedFlagField", e.DeletedFlagField, false)
	checkPathTemplate(&ve, "deletedPath", e.DeletedPath, false)
	if e.Get != nil {
		ve.Merge("get", e.Get.validateGet())
	}
	for _, w := range []struct {
		field string
		spec  *RequestSpec
	}{{"create", e.Create}, {"update", e.Update}, {"delete", e.Delete}} {
		if w.spec != nil {
			ve.Merge(w.field, w.spec.Validate())
		}
	}
	return ve.Err()
}

// validateGet checks a read of one record: a GET whose path names the record.
func (r RequestSpec) validateGet() error {
	var ve ValidationError
	checkEnum(&ve, "method", r.Method, "GET")
	checkPathTemplate(&ve, "path", r.Path, true)
	if r.Path != "" && !strings.Contains(r.Path, "{id}") {
		ve.Add("path", "must contain {id}, the record's id")
	}
	return ve.Err()
}

// Validate checks a write request.
func (r RequestSpec) Validate() error {
	var ve ValidationError
	checkEnum(&ve, "method", r.Method, "POST", "PUT", "PATCH", "DELETE")
	checkPathTemplate(&ve, "path", r.Path, true)
	return ve.Err()
}

// checkPathTemplate: starts with '/', no spaces, every '{' closed by a
// non-empty '}' with no nesting.
func checkPathTemplate(ve *ValidationError, field, v string, required bool) {
	if v == "" {
		if required {
			ve.Add(field, "is required")
		}
		return
	}
	if len(v) > MaxPathLength || v[0] != '/' || hasSpaceOrControl(v) || strings.ContainsAny(v, "?#") {
		ve.Addf(field, "must be a path starting with '/' without spaces, query or fragment (at most %d characters)", MaxPathLength)
		return
	}
	open := -1
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '{':
			if open >= 0 {
				ve.Add(field, "has a nested '{'")
				return
			}
			open = i
		case '}':
			if open < 0 || i == open+1 {
				ve.Add(field, "has a '}' without a named '{'")
				return
			}
			open = -1
		}
	}
	if open >= 0 {
		ve.Add(field, "has an unclosed '{'")
	}
}
