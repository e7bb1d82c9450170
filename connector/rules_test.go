package connector

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/castiel/integration-manager/domain"
)

func TestNextLink_FindsRelNext(t *testing.T) {
	tests := []struct {
		name   string
		values []string
		want   string
	}{
		{"single", []string{`<https://api.x/c?page=2>; rel="next"`}, "https://api.x/c?page=2"},
		{"among others", []string{`<https://api.x/c?page=1>; rel="first", <https://api.x/c?page=3>; rel="next", <https://api.x/c?page=9>; rel="last"`}, "https://api.x/c?page=3"},
		{"several header lines", []string{`<https://api.x/c?page=1>; rel="prev"`, `<https://api.x/c?page=3>; rel=next`}, "https://api.x/c?page=3"},
		{"rel with several values", []string{`<https://api.x/c?page=3>; rel="last next"`}, "https://api.x/c?page=3"},
		{"quoted comma in a parameter", []string{`<https://api.x/a>; title="a, b"; rel="prev", <https://api.x/b>; rel="next"`}, "https://api.x/b"},
		{"case-insensitive", []string{`<https://api.x/b>; REL="Next"`}, "https://api.x/b"},
		{"no next", []string{`<https://api.x/c?page=1>; rel="first"`}, ""},
		{"no header", nil, ""},
		{"garbage", []string{`next, <broken`}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := nextLink(tt.values); got != tt.want {
				t.Fatalf("next link of %q = %q, want %q", tt.values, got, tt.want)
			}
		})
	}
}

func TestParseRetryAfter_SecondsOrHTTPDate(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"1.5", 1500 * time.Millisecond, true},
		{"Sun, 01 Jun 2025 12:00:10 GMT", 10 * time.Second, true},
		{"Sun, 01 Jun 2025 11:00:00 GMT", 0, true}, // in the past: now
		{"-4", 0, false},
		{"soon", 0, false},
		{"", 0, false},
	}
	for _, tt := range tests {
		got, ok := parseRetryAfter(tt.in, now)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("Retry-After %q = %v, %v; want %v, %v", tt.in, got, ok, tt.want, tt.wantOK)
		}
	}
}

func TestParseReset_DeltaSecondsOrUnixTime(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"30", 30 * time.Second},
		{"1750000045", 45 * time.Second},
		{"1749999990", 0},
	}
	for _, tt := range tests {
		got, ok := parseReset(tt.in, now)
		if !ok || got != tt.want {
			t.Errorf("reset %q = %v, %v; want %v", tt.in, got, ok, tt.want)
		}
	}
}

func TestDecodePageToken_RefusesAnotherKindsToken(t *testing.T) {
	tests := []struct {
		kind    domain.PaginationKind
		tok     string
		want    string
		wantErr bool
	}{
		{domain.PaginationCursor, "", "", false},
		{domain.PaginationCursor, "c:abc", "abc", false},
		{domain.PaginationPage, "p:4", "4", false},
		{domain.PaginationOffset, "o:1500", "1500", false},
		{domain.PaginationLinkHeader, "l:https://x/y?page=2", "https://x/y?page=2", false},
		{domain.PaginationCursor, "p:4", "", true},
		{domain.PaginationPage, "p:x", "", true},
		{domain.PaginationOffset, "o:-1", "", true},
		{domain.PaginationCursor, "c:", "", true},
		{domain.PaginationNone, "c:abc", "", true},
	}
	for _, tt := range tests {
		got, err := decodePageToken(tt.kind, tt.tok)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("token %q for %s = %q, %v; want %q, error %v", tt.tok, tt.kind, got, err, tt.want, tt.wantErr)
		}
		if err != nil && !errors.Is(err, ErrBadPageToken) {
			t.Errorf("token %q: error %v is not ErrBadPageToken", tt.tok, err)
		}
	}
}

func TestNewLimiter_ZeroRateMeansNoLimit(t *testing.T) {
	if newLimiter(0, 5) != nil {
		t.Fatal("a zero rate must mean no limit")
	}
	if l := newLimiter(10, 0); l == nil || l.Burst() != 1 {
		t.Fatal("a rate without a burst must still allow one request at a time")
	}
}

func TestBodyExcerpt_RedactsAndShortens(t *testing.T) {
	masks := secretForms(Credential{APIKey: "key-0123456789", Username: "u", Password: "pass-987654321"})
	tests := []struct {
		name, body, want string
	}{
		{"json error fields", `{"error":"bad_request","message":"key key-0123456789 is malformed"}`, "bad_request: key [REDACTED] is malformed"},
		{"plain text", "denied for key-0123456789\nretry", "denied for [REDACTED] retry"},
		{"basic auth echo", "Authorization: Basic dTpwYXNzLTk4NzY1NDMyMQ==", "Authorization: Basic [REDACTED]"},
		{"escaped echo", "api_key=key-0123456789&x=1", "api_key=[REDACTED]&x=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bodyExcerpt([]byte(tt.body), masks); got != tt.want {
				t.Fatalf("excerpt = %q, want %q", got, tt.want)
			}
		})
	}
	long := strings.Repeat("x", 5000) + "key-0123456789"
	if got := bodyExcerpt([]byte(long), masks); len([]rune(got)) > maxMsgRunes+1 || strings.Contains(got, "key-0123") {
		t.Fatalf("a long body gave a %d-rune excerpt (or leaked the key)", len([]rune(got)))
	}
}

func TestCredential_NeverFormatsItsSecrets(t *testing.T) {
	c := Credential{APIKey: "k-123456", Token: "t-123456", Password: "p-123456", ClientSecret: "s-123456", RefreshToken: "r-123456"}
	j, _ := json.Marshal(map[string]any{"cred": c})
	for _, out := range []string{c.String(), c.GoString(), string(j), strings.Join([]string{
		sprintf("%v", c), sprintf("%+v", c), sprintf("%#v", c), sprintf("%s", c),
	}, " ")} {
		for _, secret := range []string{"k-123456", "t-123456", "p-123456", "s-123456", "r-123456"} {
			if strings.Contains(out, secret) {
				t.Fatalf("formatted credential %q shows a secret", out)
			}
		}
	}
	// The stored form round-trips.
	b, err := EncodeCredential(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeCredential(b)
	if err != nil || !sameSecret(back, c) || back.RefreshToken != c.RefreshToken {
		t.Fatalf("credential did not survive EncodeCredential/DecodeCredential: %v", err)
	}
}

func TestIsPermanent_ClassifiesErrors(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{&Error{Status: http.StatusNotFound, Permanent: true}, true},
		{&Error{Status: http.StatusServiceUnavailable}, false},
		{wrap(&Error{Status: http.StatusForbidden, Permanent: true}), true},
		{wrap(ErrUnknownEntity), true},
		{ErrBadPageToken, true},
		{errors.New("boom"), false},
	}
	for _, tt := range tests {
		if got := IsPermanent(tt.err); got != tt.want {
			t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func sprintf(format string, a ...any) string { return fmt.Sprintf(format, a...) }

func wrap(err error) error { return fmt.Errorf("sync run: %w", err) }
