package domain

import (
	"strings"
	"testing"
)

func TestValidateWebhookURL_EnforcesPolicy(t *testing.T) {
	strict := URLPolicy{RequireHTTPS: true, AllowedHTTPHosts: []string{"localhost"}}
	dev := URLPolicy{RequireHTTPS: false, AllowedHTTPHosts: []string{"localhost", "127.0.0.1"}}
	long := "https://example.com/" + strings.Repeat("a", MaxURLLength)
	cases := []struct {
		name   string
		url    string
		policy URLPolicy
		valid  bool
	}{
		{"https", "https://hooks.example.com/in?x=1", strict, true},
		{"https with port", "https://hooks.example.com:8443/in", strict, true},
		{"https upper-case scheme", "HTTPS://hooks.example.com/in", strict, true},
		{"http refused when https required", "http://localhost:8080/in", strict, false},
		{"http allowed host in dev", "http://localhost:8080/in", dev, true},
		{"http allowed host case-insensitive", "http://LOCALHOST/in", dev, true},
		{"http allowed ip in dev", "http://127.0.0.1:9000/in", dev, true},
		{"http other host in dev", "http://hooks.example.com/in", dev, false},
		{"http with empty allow list", "http://localhost/in", URLPolicy{}, false},
		{"empty", "", strict, false},
		{"relative", "/hooks", strict, false},
		{"no scheme", "hooks.example.com/in", strict, false},
		{"opaque", "https:hooks.example.com", strict, false},
		{"ftp", "ftp://hooks.example.com/in", dev, false},
		{"userinfo", "https://user:pass@hooks.example.com/in", strict, false},
		{"user only", "https://user@hooks.example.com/in", strict, false},
		{"fragment", "https://hooks.example.com/in#x", strict, false},
		{"empty fragment", "https://hooks.example.com/in#", strict, false},
		{"no host", "https:///in", strict, false},
		{"port only", "https://:443/in", strict, false},
		{"bad port", "https://hooks.example.com:99999/in", strict, false},
		{"space", "https://hooks.example.com/a b", strict, false},
		{"newline", "https://hooks.example.com/a\nb", strict, false},
		{"too long", long, strict, false},
		{"ipv6", "https://[::1]:8443/in", strict, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateWebhookURL(tc.url, tc.policy)
			if tc.valid {
				if err != nil {
					t.Fatalf("%q rejected: %v", tc.url, err)
				}
				return
			}
			assertFieldError(t, err, "url")
		})
	}
}
