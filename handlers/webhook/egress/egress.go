// Package egress is the outbound HTTP client of webhook deliveries, with the
// guard against server-side request forgery: a tenant's endpoint URL must not
// reach our own network (loopback, private ranges, the cloud metadata service).
//
// The check runs at dial time, on the addresses the guard resolved itself,
// and the connection goes to the checked address: there is no second lookup a
// DNS rebinding could answer differently.
package egress

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ErrBlocked is matched (errors.Is) by every refusal of the guard.
var ErrBlocked = errors.New("egress: destination not allowed")

// BlockedError says which host was refused and what kind of address it has.
// It does not quote the resolved address: the record it ends up in is shown to
// the tenant, who should not learn our internal DNS answers from it.
type BlockedError struct {
	Host   string // the host of the URL
	Reason string // e.g. "private", "loopback", "link-local"
}

func (e *BlockedError) Error() string {
	return fmt.Sprintf("egress: %s resolves to a %s address, which webhook deliveries may not reach", e.Host, e.Reason)
}

// Is makes errors.Is(err, ErrBlocked) true.
func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

// Resolver resolves host names; *net.Resolver implements it. Tests use their
// own to make a name resolve to a private address.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// blockedRanges are refused unless allowlisted, most specific first so the
// reason names the narrowest range.
var blockedRanges = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("169.254.169.254/32"), "cloud metadata"},
	{netip.MustParsePrefix("0.0.0.0/32"), "unspecified"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("0.0.0.0/8"), "this-network"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
	{netip.MustParsePrefix("192.0.0.0/24"), "reserved"},
	{netip.MustParsePrefix("198.18.0.0/15"), "reserved"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
}

// Prefixes that embed an IPv4 address, which is checked in turn.
var (
	nat64    = netip.MustParsePrefix("64:ff9b::/96") // well-known NAT64: last 4 bytes
	sixTo4   = netip.MustParsePrefix("2002::/16")    // 6to4: bytes 2..5
	v4compat = netip.MustParsePrefix("::/96")        // deprecated IPv4-compatible: last 4 bytes
)

// BlockedReason reports whether ip may not be reached without an allowlist
// entry, and why. IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible, NAT64 and
// 6to4 forms are judged by the IPv4 address they carry.
func BlockedReason(ip netip.Addr) (reason string, blocked bool) {
	ip = ip.WithZone("").Unmap()
	for _, r := range blockedRanges {
		if r.prefix.Contains(ip) {
			return r.reason, true
		}
	}
	if ip.Is6() {
		b := ip.As16()
		var embedded netip.Addr
		switch {
		case nat64.Contains(ip), v4compat.Contains(ip):
			embedded = netip.AddrFrom4([4]byte(b[12:16]))
		case sixTo4.Contains(ip):
			embedded = netip.AddrFrom4([4]byte(b[2:6]))
		}
		if embedded.IsValid() {
			if reason, blocked := BlockedReason(embedded); blocked {
				return reason + " (embedded in IPv6)", true
			}
		}
	}
	return "", false
}

// Guard dials only addresses that are not blocked, or that an allowlist entry
// permits. It is safe for concurrent use.
type Guard struct {
	resolver Resolver
	dialer   *net.Dialer
	hosts    map[string]bool // allowlisted host names, lowercase
	prefixes []netip.Prefix  // allowlisted addresses and ranges
}

// NewGuard returns a guard. allow lists host names ("localhost",
// "hooks.internal.example"), IP addresses ("127.0.0.1", "::1") or CIDR ranges
// ("10.1.0.0/16") that may be reached even though they are blocked ranges; a
// listed name allows whatever it resolves to. resolver nil means
// net.DefaultResolver.
func NewGuard(allow []string, resolver Resolver) (*Guard, error) {
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	g := &Guard{
		resolver: resolver,
		dialer:   &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
		hosts:    make(map[string]bool),
	}
	for _, entry := range allow {
		e := strings.TrimSpace(entry)
		switch {
		case e == "":
			return nil, fmt.Errorf("egress: empty allowlist entry")
		case strings.Contains(e, "/"):
			p, err := netip.ParsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("egress: allowlist entry %q is not a CIDR range: %v", entry, err)
			}
			g.prefixes = append(g.prefixes, p.Masked())
		default:
			if ip, err := netip.ParseAddr(strings.Trim(e, "[]")); err == nil {
				g.prefixes = append(g.prefixes, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				continue
			}
			if strings.ContainsAny(e, " :@?#") {
				return nil, fmt.Errorf("egress: allowlist entry %q is neither a host name, an IP address nor a CIDR range", entry)
			}
			g.hosts[strings.ToLower(strings.TrimSuffix(e, "."))] = true
		}
	}
	return g, nil
}

// Check returns nil when host may be reached at ip, else a *BlockedError.
func (g *Guard) Check(host string, ip netip.Addr) error {
	if g.hosts[strings.ToLower(strings.TrimSuffix(host, "."))] {
		return nil
	}
	ip = ip.WithZone("").Unmap()
	for _, p := range g.prefixes {
		if p.Contains(ip) {
			return nil
		}
	}
	if reason, blocked := BlockedReason(ip); blocked {
		return &BlockedError{Host: host, Reason: reason}
	}
	return nil
}

// DialContext resolves address's host, refuses blocked addresses and connects
// to the first permitted address that answers. Use it as an http.Transport's
// DialContext (with no proxy: a proxy would do its own resolution).
func (g *Guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, portText, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("egress: %w", err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("egress: port %q: %w", portText, err)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		ips, err = g.resolver.LookupNetIP(ctx, lookupNetwork(network), host)
		if err != nil {
			return nil, err
		}
		if len(ips) == 0 {
			return nil, &net.DNSError{Err: "no addresses", Name: host, IsNotFound: true}
		}
	}
	var blocked, dialErr error
	for _, ip := range ips {
		if err := g.Check(host, ip); err != nil {
			blocked = err
			continue
		}
		conn, err := g.dialer.DialContext(ctx, network, netip.AddrPortFrom(ip.WithZone("").Unmap(), uint16(port)).String())
		if err == nil {
			return conn, nil
		}
		dialErr = err
		if ctx.Err() != nil {
			break
		}
	}
	if dialErr != nil {
		return nil, dialErr
	}
	return nil, blocked
}

func lookupNetwork(network string) string {
	switch network {
	case "tcp4", "udp4":
		return "ip4"
	case "tcp6", "udp6":
		return "ip6"
	}
	return "ip"
}

// ClientOptions tune the client's connection pool; zero values take defaults.
type ClientOptions struct {
	MaxIdleConnsPerHost int           // default 64: deliveries to one endpoint reuse connections
	IdleConnTimeout     time.Duration // default 90s
	TLSHandshakeTimeout time.Duration // default 10s
}

// NewClient returns an HTTP client that dials through g, never uses a proxy
// (HTTP_PROXY would bypass the guard) and never follows redirects: a 3xx is
// returned as the response, so a receiver cannot bounce a delivery to an
// address the guard would have refused, nor turn a POST into a GET. Timeouts
// are per request, through its context.
func NewClient(g *Guard, o ClientOptions) *http.Client {
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = 64
	}
	if o.IdleConnTimeout <= 0 {
		o.IdleConnTimeout = 90 * time.Second
	}
	if o.TLSHandshakeTimeout <= 0 {
		o.TLSHandshakeTimeout = 10 * time.Second
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           g.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4 * o.MaxIdleConnsPerHost,
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
		IdleConnTimeout:       o.IdleConnTimeout,
		TLSHandshakeTimeout:   o.TLSHandshakeTimeout,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}
