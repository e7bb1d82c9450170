package connector

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Error is a failed exchange with the external API or its token endpoint.
// It never carries a credential or a full response body: Msg is a short,
// redacted excerpt.
type Error struct {
	Status    int    // HTTP status; 0 when no response came (connection error, timeout)
	Op        string // what was attempted, e.g. "list contacts", "create contacts", "token refresh"
	Permanent bool   // the same request will fail again: do not retry it
	Msg       string // short and redacted
	err       error  // cause for errors.Is/As (context errors, secret-store errors); never holds a URL with credentials
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("connector: ")
	b.WriteString(e.Op)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Msg != "" {
		b.WriteString(": ")
		b.WriteString(e.Msg)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.err }

// Errors for requests the provider definition cannot serve. They are
// permanent: the definition or the caller must change.
var (
	ErrUnknownEntity = errors.New("connector: the provider defines no such entity")
	ErrUnsupported   = errors.New("connector: the provider definition does not support this operation")
	ErrBadPageToken  = errors.New("connector: page token does not belong to this provider's pagination")
	ErrNoCredentials = errors.New("connector: the connection's credentials lack what the provider's auth kind needs")
)

// IsPermanent reports whether retrying the operation cannot succeed: a
// permanent *Error (400, 401 after a refresh, 403, 404, 422...) or a request
// the provider definition cannot serve. Context cancellation, rate limits,
// 5xx and connection errors are not permanent.
func IsPermanent(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Permanent
	}
	return errors.Is(err, ErrUnknownEntity) || errors.Is(err, ErrUnsupported) ||
		errors.Is(err, ErrBadPageToken) || errors.Is(err, ErrNoCredentials)
}

const (
	redacted       = "[REDACTED]"
	maxMsgRunes    = 200     // of a response body excerpt in an error
	maxErrBodyRead = 4 << 10 // bytes of an error response read for the excerpt
)

// secretForms lists every form in which a credential could show up in text
// echoed back by an API or a transport error: raw, query-escaped, path-escaped
// and the base64 of a basic-auth pair. Very short values are skipped: masking
// every "a" would destroy messages and protects nothing.
func secretForms(c Credential) []string {
	var out []string
	add := func(v string) {
		if len(v) < 4 {
			return
		}
		out = append(out, v)
		if q := url.QueryEscape(v); q != v {
			out = append(out, q)
		}
		if p := url.PathEscape(v); p != v {
			out = append(out, p)
		}
	}
	for _, v := range []string{c.APIKey, c.Token, c.Password, c.ClientSecret, c.RefreshToken} {
		add(v)
	}
	if c.Username != "" || c.Password != "" {
		add(base64.StdEncoding.EncodeToString([]byte(c.Username + ":" + c.Password)))
	}
	if c.ClientID != "" || c.ClientSecret != "" {
		id, secret := url.QueryEscape(c.ClientID), url.QueryEscape(c.ClientSecret)
		add(base64.StdEncoding.EncodeToString([]byte(id + ":" + secret)))
	}
	return out
}

// redact removes every secret form from s.
func redact(s string, secrets []string) string {
	for _, v := range secrets {
		if strings.Contains(s, v) {
			s = strings.ReplaceAll(s, v, redacted)
		}
	}
	return s
}

// bodyExcerpt turns an error response body into a short message: the API's
// own error text when it sends a JSON error object, else the start of the
// body, redacted before it is cut so no half secret survives the cut.
func bodyExcerpt(body []byte, secrets []string) string {
	if len(body) > maxErrBodyRead {
		body = body[:maxErrBodyRead]
	}
	text := string(body)
	var obj map[string]any
	if json.Unmarshal(body, &obj) == nil {
		var parts []string
		for _, k := range []string{"error", "error_description", "message", "detail", "title"} {
			if v, ok := obj[k].(string); ok && v != "" {
				parts = append(parts, v)
			}
		}
		if len(parts) > 0 {
			text = strings.Join(parts, ": ")
		}
	}
	return truncate(clean(redact(text, secrets)), maxMsgRunes)
}

// clean folds control characters (newlines, escapes) to spaces so an excerpt
// cannot forge log lines.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.TrimSpace(s))
}

func truncate(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n]) + "…"
}
