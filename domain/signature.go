package domain

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ErrBadSignature is wrapped by every ingress signature failure, so the API
// can answer 401 without leaking which check failed.
var ErrBadSignature = errors.New("bad signature")

type SignatureScheme string

const SchemeHMACSHA256 SignatureScheme = "hmac-sha256"

type SignatureEncoding string

const (
	EncodingHex    SignatureEncoding = "hex"
	EncodingBase64 SignatureEncoding = "base64"
)

// DefaultSignatureTolerance applies when a timestamp header is set without a tolerance.
const DefaultSignatureTolerance = 5 * time.Minute

// SignatureSpec is how an external system signs the posts it sends to our
// ingress. Without TimestampHeader the MAC covers the body; with it, the MAC
// covers timestamp + "." + body (the timestamp in Unix seconds), and a
// timestamp further than Tolerance from now is rejected as a replay.
type SignatureSpec struct {
	Header          string            `json:"header"`
	Scheme          SignatureScheme   `json:"scheme"`
	Encoding        SignatureEncoding `json:"encoding"`
	Prefix          string            `json:"prefix,omitempty"` // e.g. "sha256="
	TimestampHeader string            `json:"timestampHeader,omitempty"`
	Tolerance       string            `json:"tolerance,omitempty"` // Go duration; default 5m
}

func (s SignatureSpec) Validate() error {
	var ve ValidationError
	if !isToken(s.Header) {
		ve.Add("header", "must be a valid HTTP header name")
	}
	checkEnum(&ve, "scheme", s.Scheme, SchemeHMACSHA256)
	checkEnum(&ve, "encoding", s.Encoding, EncodingHex, EncodingBase64)
	if len(s.Prefix) > 32 || hasSpaceOrControl(s.Prefix) {
		ve.Add("prefix", "must be at most 32 characters without spaces")
	}
	if s.TimestampHeader != "" && !isToken(s.TimestampHeader) {
		ve.Add("timestampHeader", "must be a valid HTTP header name")
	}
	// HTTP header names are case-insensitive: one header cannot carry both
	// the signature and the timestamp, so such a spec would refuse every post.
	if s.TimestampHeader != "" && strings.EqualFold(s.TimestampHeader, s.Header) {
		ve.Add("timestampHeader", "must differ from header")
	}
	if s.Tolerance != "" && s.TimestampHeader == "" {
		ve.Add("tolerance", "needs timestampHeader")
	}
	checkDuration(&ve, "tolerance", s.Tolerance, time.Second, MaxSignatureTolerance)
	return ve.Err()
}

// Verify checks the signature of body against secret. headers are matched
// case-insensitively. now is passed in to keep the check pure.
func (s SignatureSpec) Verify(secret []byte, headers map[string]string, body []byte, now time.Time) error {
	got, ok := headerValue(headers, s.Header)
	if !ok {
		return fmt.Errorf("%w: header %s is missing", ErrBadSignature, s.Header)
	}
	got, ok = strings.CutPrefix(strings.TrimSpace(got), s.Prefix)
	if !ok {
		return fmt.Errorf("%w: header %s lacks prefix %q", ErrBadSignature, s.Header, s.Prefix)
	}
	sig, err := s.decode(got)
	if err != nil {
		return fmt.Errorf("%w: header %s is not %s", ErrBadSignature, s.Header, s.Encoding)
	}
	var ts string
	if s.TimestampHeader != "" {
		ts, ok = headerValue(headers, s.TimestampHeader)
		if !ok {
			return fmt.Errorf("%w: header %s is missing", ErrBadSignature, s.TimestampHeader)
		}
		sec, err := strconv.ParseInt(strings.TrimSpace(ts), 10, 64)
		if err != nil {
			return fmt.Errorf("%w: header %s is not Unix seconds", ErrBadSignature, s.TimestampHeader)
		}
		if d := now.Sub(time.Unix(sec, 0)).Abs(); d > s.tolerance() {
			return fmt.Errorf("%w: timestamp is %s away from now (tolerance %s)", ErrBadSignature, d.Round(time.Second), s.tolerance())
		}
	}
	if !hmac.Equal(sig, s.mac(secret, strings.TrimSpace(ts), body)) {
		return fmt.Errorf("%w: signature does not match", ErrBadSignature)
	}
	return nil
}

// Sign returns the headers a sender following this spec would add. It lets
// tests and local stand-ins produce valid ingress posts.
func (s SignatureSpec) Sign(secret, body []byte, at time.Time) map[string]string {
	h := make(map[string]string, 2)
	var ts string
	if s.TimestampHeader != "" {
		ts = strconv.FormatInt(at.Unix(), 10)
		h[s.TimestampHeader] = ts
	}
	mac := s.mac(secret, ts, body)
	if s.Encoding == EncodingBase64 {
		h[s.Header] = s.Prefix + base64.StdEncoding.EncodeToString(mac)
	} else {
		h[s.Header] = s.Prefix + hex.EncodeToString(mac)
	}
	return h
}

func (s SignatureSpec) mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	if s.TimestampHeader != "" {
		m.Write([]byte(ts + "."))
	}
	m.Write(body)
	return m.Sum(nil)
}

func (s SignatureSpec) decode(v string) ([]byte, error) {
	if s.Encoding == EncodingBase64 {
		return base64.StdEncoding.DecodeString(v)
	}
	return hex.DecodeString(v)
}

func (s SignatureSpec) tolerance() time.Duration {
	if d, err := time.ParseDuration(s.Tolerance); err == nil && d > 0 {
		return d
	}
	return DefaultSignatureTolerance
}

func headerValue(headers map[string]string, name string) (string, bool) {
	if v, ok := headers[name]; ok {
		return v, true
	}
	for k, v := range headers {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}
