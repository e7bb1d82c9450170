package domain

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// URLPolicy says which webhook URLs a deployment accepts. Plain http is for
// local development and test receivers only, so it is allowed host by host.
type URLPolicy struct {
	RequireHTTPS     bool
	AllowedHTTPHosts []string // host names (no port) that may use http when RequireHTTPS is false
}

// ValidateWebhookURL checks a tenant's endpoint URL: absolute, https (or http
// for an allowed host when https is not required), a host, no user info, no
// fragment, at most 2048 characters. It does not resolve the host: the guard
// against private addresses belongs to the dialer, where the address is known.
func ValidateWebhookURL(raw string, p URLPolicy) error {
	if msg := webhookURLProblem(raw, p); msg != "" {
		return NewValidationError("url", msg)
	}
	return nil
}

func webhookURLProblem(raw string, p URLPolicy) string {
	u, msg := parseAbsoluteURL(raw)
	if msg != "" {
		return msg
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		if !p.RequireHTTPS && hostAllowed(u.Hostname(), p.AllowedHTTPHosts) {
			return ""
		}
		return "must use https"
	default:
		return "must use https"
	}
}

// httpURLProblem checks an operator-written URL (provider base and token URLs):
// the same shape as a webhook URL, http or https.
func httpURLProblem(raw string) string {
	u, msg := parseAbsoluteURL(raw)
	if msg != "" {
		return msg
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return "must use http or https"
	}
	return ""
}

func parseAbsoluteURL(raw string) (*url.URL, string) {
	if raw == "" {
		return nil, "is required"
	}
	if len(raw) > MaxURLLength {
		return nil, fmt.Sprintf("must be at most %d characters", MaxURLLength)
	}
	if hasSpaceOrControl(raw) {
		return nil, "must not contain spaces or control characters"
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, "is not a valid URL"
	}
	if !u.IsAbs() || u.Opaque != "" {
		return nil, "must be an absolute URL such as https://example.com/hooks"
	}
	if u.User != nil {
		return nil, "must not contain user info (credentials belong in Secret Management)"
	}
	if strings.ContainsRune(raw, '#') {
		return nil, "must not contain a fragment"
	}
	if u.Hostname() == "" {
		return nil, "must include a host"
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, "must have a port between 1 and 65535"
		}
	}
	return u, ""
}

func hostAllowed(host string, allowed []string) bool {
	for _, a := range allowed {
		if strings.EqualFold(host, a) {
			return true
		}
	}
	return false
}
