package egress

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
)

// fakeResolver answers from a table, so a public-looking name can resolve to
// a private address (what DNS rebinding does).
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := f[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

func TestBlockedReason_RefusesEveryInternalRange(t *testing.T) {
	cases := []struct {
		ip     string
		reason string // "" = allowed
	}{
		{"127.0.0.1", "loopback"},
		{"127.255.255.254", "loopback"},
		{"::1", "loopback"},
		{"10.0.0.1", "private"},
		{"10.255.255.255", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"169.254.169.254", "cloud metadata"},
		{"169.254.0.1", "link-local"},
		{"fe80::1", "link-local"},
		{"fe80::1%eth0", "link-local"},
		{"fc00::1", "unique-local"},
		{"fd12:3456::1", "unique-local"},
		{"fec0::1", "site-local"},
		{"224.0.0.1", "multicast"},
		{"239.255.255.250", "multicast"},
		{"ff02::1", "multicast"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"0.1.2.3", "this-network"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"100.127.255.255", "carrier-grade NAT"},
		{"255.255.255.255", "broadcast"},
		{"240.0.0.1", "reserved"},
		{"198.18.0.1", "reserved"},
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:10.1.2.3", "private"},
		{"::ffff:169.254.169.254", "cloud metadata"},
		{"64:ff9b::a00:1", "private (embedded in IPv6)"}, // NAT64 of 10.0.0.1
		{"2002:7f00:1::", "loopback (embedded in IPv6)"}, // 6to4 of 127.0.0.1
		{"::10.0.0.1", "private (embedded in IPv6)"},     // IPv4-compatible
		{"64:ff9b::808:808", ""},                         // NAT64 of 8.8.8.8
		{"8.8.8.8", ""},
		{"93.184.216.34", ""},
		{"172.32.0.1", ""},  // just past 172.16/12
		{"100.128.0.1", ""}, // just past 100.64/10
		{"169.255.0.1", ""},
		{"2606:4700:4700::1111", ""},
		{"::ffff:8.8.8.8", ""},
	}
	for _, tc := range cases {
		reason, blocked := BlockedReason(netip.MustParseAddr(tc.ip))
		if blocked != (tc.reason != "") || reason != tc.reason {
			t.Errorf("%s: blocked=%v reason=%q, want reason %q", tc.ip, blocked, reason, tc.reason)
		}
	}
}

func TestGuard_DialRefusesBlockedAddressesUnlessAllowlisted(t *testing.T) {
	// A real local listener: an allowed dial must really connect.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	resolver := fakeResolver{
		"rebind.example.com":   {"127.0.0.1"},
		"metadata.example.com": {"169.254.169.254"},
		"mixed.example.com":    {"10.0.0.7", "127.0.0.1"},
		"localhost":            {"127.0.0.1"},
		"receiver.internal":    {"127.0.0.1"},
	}
	cases := []struct {
		name    string
		allow   []string
		host    string
		blocked bool
	}{
		{"loopback literal", nil, "127.0.0.1", true},
		{"IPv6 loopback literal", nil, "[::1]", true},
		{"hostname resolving to loopback", nil, "rebind.example.com", true},
		{"hostname resolving to the metadata service", nil, "metadata.example.com", true},
		{"every address blocked", nil, "mixed.example.com", true},
		{"allowlisted host name", []string{"localhost"}, "localhost", false},
		{"allowlisted host name, any case", []string{"Receiver.Internal"}, "receiver.internal", false},
		{"allowlisted address", []string{"127.0.0.1"}, "127.0.0.1", false},
		{"allowlisted range", []string{"127.0.0.0/8"}, "rebind.example.com", false},
		{"allowlisted range, other private address skipped", []string{"127.0.0.0/8"}, "mixed.example.com", false},
		{"allowlist of another host does not help", []string{"localhost"}, "rebind.example.com", true},
		{"allowlist of another range does not help", []string{"10.0.0.0/8"}, "127.0.0.1", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g, err := NewGuard(tc.allow, resolver)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := g.DialContext(context.Background(), "tcp", net.JoinHostPort(strings.Trim(tc.host, "[]"), port))
			if conn != nil {
				conn.Close()
			}
			if tc.blocked {
				var be *BlockedError
				if !errors.Is(err, ErrBlocked) || !errors.As(err, &be) || be.Reason == "" {
					t.Fatalf("dial %s: %v, want a BlockedError", tc.host, err)
				}
				if strings.Contains(err.Error(), "127.0.0.1") && tc.host != "127.0.0.1" {
					t.Errorf("the refusal quotes the resolved address: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("dial %s (allowlisted): %v", tc.host, err)
			}
		})
	}
}

func TestGuard_UnknownHostIsADNSError(t *testing.T) {
	g, _ := NewGuard(nil, fakeResolver{})
	_, err := g.DialContext(context.Background(), "tcp", "nowhere.example.com:443")
	var dns *net.DNSError
	if !errors.As(err, &dns) || errors.Is(err, ErrBlocked) {
		t.Errorf("dial of an unknown host: %v, want a *net.DNSError", err)
	}
}

func TestNewGuard_RejectsMalformedAllowlistEntries(t *testing.T) {
	for _, entry := range []string{"", "10.0.0.0/33", "not a host", "user@host", "http://x"} {
		if _, err := NewGuard([]string{entry}, nil); err == nil {
			t.Errorf("allowlist entry %q accepted", entry)
		}
	}
	if _, err := NewGuard([]string{"localhost", "::1", "[::1]", "127.0.0.0/8", "hooks.example.com."}, nil); err != nil {
		t.Errorf("valid allowlist refused: %v", err)
	}
}

func TestNewClient_DoesNotFollowRedirectsAndBlocksLoopback(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}))
	defer srv.Close()

	blocked, _ := NewGuard(nil, nil)
	_, err := NewClient(blocked, ClientOptions{}).Post(srv.URL, "application/json", strings.NewReader("{}"))
	if !errors.Is(err, ErrBlocked) || hits.Load() != 0 {
		t.Fatalf("POST to a loopback receiver without allowlist: err %v, %d hits; want ErrBlocked and no hit", err, hits.Load())
	}

	allowed, _ := NewGuard([]string{"127.0.0.1"}, nil)
	resp, err := NewClient(allowed, ClientOptions{}).Post(srv.URL, "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits.Load() != 1 {
		t.Errorf("redirect: status %d after %d hits; want the 302 itself after 1 hit", resp.StatusCode, hits.Load())
	}
}
