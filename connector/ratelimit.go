package connector

import (
	"context"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// newLimiter is the proactive per-client limit from the provider's RateLimit:
// requestsPerSecond tokens a second, at most burst saved up (nil: no limit).
func newLimiter(perSecond float64, burst int) *rate.Limiter {
	if perSecond <= 0 || math.IsInf(perSecond, 0) || math.IsNaN(perSecond) {
		return nil
	}
	return rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))
}

// waitTurn blocks until this client may send: its token bucket allows it and
// no Retry-After or exhausted quota pauses it. Every wait is counted.
func (c *Client) waitTurn(ctx context.Context) error {
	now := time.Now()
	var d time.Duration
	var reservation *rate.Reservation
	if c.limiter != nil {
		// Reserving keeps concurrent callers in a fair queue; a cancelled
		// waiter gives its token back.
		reservation = c.limiter.ReserveN(now, 1)
		d = reservation.DelayFrom(now)
	}
	c.pauseMu.Lock()
	if p := c.pausedUntil.Sub(now); p > d {
		d = p
	}
	c.pauseMu.Unlock()
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		if reservation != nil {
			reservation.Cancel()
		}
		return ctx.Err()
	case <-t.C:
	}
	c.waits.Add(1)
	c.waitNanos.Add(int64(time.Since(now)))
	return nil
}

// pause holds every request of this client for d from now.
func (c *Client) pause(d time.Duration) {
	if d <= 0 {
		return
	}
	until := time.Now().Add(d)
	c.pauseMu.Lock()
	if until.After(c.pausedUntil) {
		c.pausedUntil = until
	}
	c.pauseMu.Unlock()
}

// noteQuota pauses the client until the quota window resets when the API
// says none is left (X-RateLimit-Remaining: 0 with X-RateLimit-Reset, or the
// IETF RateLimit-* names), instead of spending a request on a 429.
func (c *Client) noteQuota(h http.Header) {
	remaining := remainingHeader(h)
	if remaining == "" {
		return
	}
	if n, err := strconv.ParseFloat(strings.TrimSpace(remaining), 64); err != nil || n > 0 {
		return
	}
	reset := resetHeader(h)
	d, ok := parseReset(reset, c.opts.Now())
	if !ok {
		return
	}
	d = min(d, c.opts.RetryAfterCap)
	c.log.Debug().Dur("wait", d).Msg("rate-limit quota exhausted; pausing until it resets")
	c.pause(d)
}

// The common spellings of quota headers: de facto X-RateLimit-*, the IETF
// draft's RateLimit-*, and X-Rate-Limit-*.
func remainingHeader(h http.Header) string {
	return firstHeader(h, "X-RateLimit-Remaining", "RateLimit-Remaining", "X-Rate-Limit-Remaining")
}

func resetHeader(h http.Header) string {
	return firstHeader(h, "X-RateLimit-Reset", "RateLimit-Reset", "X-Rate-Limit-Reset")
}

func firstHeader(h http.Header, names ...string) string {
	for _, n := range names {
		if v := h.Get(n); v != "" {
			return v
		}
	}
	return ""
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (RFC 9110 10.2.3). A date in the past means "now".
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
			return 0, false
		}
		return secondsToDuration(n), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}

// parseReset reads a quota reset header: seconds until the reset, or (as
// GitHub and others send) the reset instant in Unix seconds.
func parseReset(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return parseRetryAfter(v, now)
	}
	const epochThreshold = 1e9 // 2001-09-09: no window lasts 31 years
	if n >= epochThreshold {
		return max(time.Unix(int64(n), 0).Sub(now), 0), true
	}
	return secondsToDuration(n), true
}

func secondsToDuration(n float64) time.Duration {
	const maxSeconds = float64(math.MaxInt64 / int64(time.Second))
	if n > maxSeconds {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(n * float64(time.Second))
}
