package domain

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrInvalid is matched by every *ValidationError (errors.Is), so a handler can
// treat any broken rule as permanent without knowing which rule it was.
var ErrInvalid = errors.New("invalid")

// FieldError names one offending field by its JSON path (e.g. "mapping[2].target").
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// ValidationError lists every broken rule at once; the API renders it as an
// RFC 9457 problem with this field list. The zero value is ready to use.
type ValidationError struct {
	Fields []FieldError `json:"fields"`
}

// NewValidationError returns an error for a single field.
func NewValidationError(field, message string) *ValidationError {
	return &ValidationError{Fields: []FieldError{{Field: field, Message: message}}}
}

func (e *ValidationError) Error() string {
	if e == nil || len(e.Fields) == 0 {
		return "invalid"
	}
	var b strings.Builder
	b.WriteString("invalid: ")
	for i, f := range e.Fields {
		if i > 0 {
			b.WriteString("; ")
		}
		if f.Field != "" {
			b.WriteString(f.Field)
			b.WriteString(": ")
		}
		b.WriteString(f.Message)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// Add records a broken rule for field.
func (e *ValidationError) Add(field, message string) {
	e.Fields = append(e.Fields, FieldError{Field: field, Message: message})
}

// Addf is Add with a formatted message.
func (e *ValidationError) Addf(field, format string, args ...any) {
	e.Add(field, fmt.Sprintf(format, args...))
}

// Merge adds err under prefix: the fields of a *ValidationError are nested
// ("prefix.field" or "prefix[i]"), any other error becomes one entry for prefix.
func (e *ValidationError) Merge(prefix string, err error) {
	if err == nil {
		return
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		e.Add(prefix, err.Error())
		return
	}
	for _, f := range ve.Fields {
		e.Add(joinField(prefix, f.Field), f.Message)
	}
}

// Err returns nil when nothing was added, avoiding a typed-nil error.
func (e *ValidationError) Err() error {
	if e == nil || len(e.Fields) == 0 {
		return nil
	}
	return e
}

func joinField(prefix, field string) string {
	switch {
	case prefix == "":
		return field
	case field == "":
		return prefix
	case field[0] == '[':
		return prefix + field
	default:
		return prefix + "." + field
	}
}

func indexField(name string, i int) string { return fmt.Sprintf("%s[%d]", name, i) }

// Limits shared by the rules below; the API can quote them in its docs.
const (
	MaxIDLength              = 128
	MaxEventTypeLength       = 128
	MaxURLLength             = 2048
	MaxNameLength            = 200
	MaxDescriptionLength     = 2000
	MaxPathLength            = 256
	MaxSecretRefLength       = 512
	MaxEventFilters          = 100
	MaxWebhookRatePerSecond  = 1000.0
	MaxProviderRatePerSecond = 10000.0
	MaxBurst                 = 10000
	MaxPageSize              = 1000
	MaxSettings              = 100
	MaxSettingValueLength    = 4096
	MaxMappings              = 500
	MaxPayloadBytes          = 1 << 20 // 1 MiB: well under broker and Cosmos item limits
	MinSyncInterval          = time.Minute
	MaxClockSkewMargin       = time.Hour
	MaxSignatureTolerance    = time.Hour
	MaxAttempts              = 100
)

// IsValidID reports whether s fits the id grammar used for tenants and every
// resource: ^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$. It excludes '/', '\', '?' and
// '#', which Cosmos forbids in ids, and anything that needs URL escaping.
func IsValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || i > 0 && (c == '_' || c == '.' || c == ':' || c == '-') {
			continue
		}
		return false
	}
	return true
}

// IsValidCategory reports whether s is a category slug: ^[a-z][a-z0-9_-]{0,63}$.
func IsValidCategory(s string) bool {
	if len(s) == 0 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			continue
		}
		return false
	}
	return true
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// isIdent: a letter, then letters, digits, '_' or '-'; at most 64 bytes.
func isIdent(s string) bool {
	if len(s) == 0 || len(s) > 64 || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// isToken reports whether s is an RFC 9110 token (header names, methods).
func isToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isAlnum(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func hasSpaceOrControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}

// The check* helpers add to ve and keep every Validate method flat.

func checkID(ve *ValidationError, field, v string) {
	switch {
	case v == "":
		ve.Add(field, "is required")
	case !IsValidID(v):
		ve.Add(field, "must start with a letter or digit and contain only letters, digits, '_', '.', ':' or '-' (at most 128 characters)")
	}
}

func checkCategory(ve *ValidationError, field, v string) {
	switch {
	case v == "":
		ve.Add(field, "is required")
	case !IsValidCategory(v):
		ve.Add(field, "must be a lowercase slug such as \"crm\" (letters, digits, '_' or '-', at most 64 characters)")
	}
}

func checkText(ve *ValidationError, field, v string, required bool, max int) {
	switch {
	case strings.TrimSpace(v) == "":
		if required {
			ve.Add(field, "is required")
		}
	case !utf8.ValidString(v):
		ve.Add(field, "must be valid UTF-8")
	case utf8.RuneCountInString(v) > max:
		ve.Addf(field, "must be at most %d characters", max)
	case strings.ContainsFunc(v, func(r rune) bool { return unicode.IsControl(r) && r != '\n' && r != '\t' }):
		ve.Add(field, "must not contain control characters")
	}
}

func checkEnum[T ~string](ve *ValidationError, field string, v T, allowed ...T) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	if v == "" {
		ve.Add(field, "is required")
		return
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
		if a == "" {
			names[i] = `""`
		}
	}
	ve.Addf(field, "must be one of: %s", strings.Join(names, ", "))
}

func checkTime(ve *ValidationError, field string, t time.Time) {
	if t.IsZero() {
		ve.Add(field, "is required")
	}
}

// checkDottedPath: a record path such as "address.city"; segments are non-empty
// and free of whitespace, so "a..b" and "a. b" are rejected.
func checkDottedPath(ve *ValidationError, field, v string, required bool) {
	switch {
	case v == "":
		if required {
			ve.Add(field, "is required")
		}
	case len(v) > MaxPathLength:
		ve.Addf(field, "must be at most %d characters", MaxPathLength)
	case !utf8.ValidString(v) || hasSpaceOrControl(v) || strings.Contains("."+v+".", ".."):
		ve.Add(field, "must be a dotted field path such as \"address.city\" (non-empty segments, no spaces)")
	}
}

// checkSecretRef rejects what looks like a secret itself: only references
// into Secret Management may be stored.
func checkSecretRef(ve *ValidationError, field, v string, required bool) {
	switch {
	case v == "":
		if required {
			ve.Add(field, "is required")
		}
	case len(v) > MaxSecretRefLength || hasSpaceOrControl(v) || !utf8.ValidString(v):
		ve.Addf(field, "must be a secret reference without spaces (at most %d characters)", MaxSecretRefLength)
	case strings.HasPrefix(v, "whsec_"):
		ve.Add(field, "must be a reference into Secret Management, not the secret itself")
	}
}

// checkDuration parses an optional Go duration string within [min, max].
func checkDuration(ve *ValidationError, field, v string, min, max time.Duration) {
	if v == "" {
		return
	}
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		ve.Add(field, "must be a duration such as \"15m\" or \"1h30m\"")
	case d < min:
		ve.Addf(field, "must be at least %s", min)
	case max > 0 && d > max:
		ve.Addf(field, "must be at most %s", max)
	}
}
