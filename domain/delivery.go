package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Webhook delivery rules: what one attempt's outcome means for the delivery
// (delivered, retry when, give up) and for the endpoint's health. Pure: the
// dispatcher passes in the response it got and the clock.

// Error classes of a delivery attempt that did not deliver.
const (
	ErrorClassHTTPStatus       = "http_status"       // a non-2xx answer not listed below
	ErrorClassRedirect         = "redirect"          // 3xx: redirects are not followed
	ErrorClassGone             = "gone"              // 410: the endpoint is disabled
	ErrorClassThrottled        = "throttled"         // 429
	ErrorClassTimeout          = "timeout"           // no answer within the attempt's timeout
	ErrorClassDNS              = "dns"               // the host name did not resolve
	ErrorClassTLS              = "tls"               // TLS handshake or certificate failure
	ErrorClassConnection       = "connection"        // refused, reset, unreachable...
	ErrorClassBlocked          = "blocked"           // the egress guard refused the address (SSRF)
	ErrorClassEndpointDisabled = "endpoint_disabled" // not attempted: the endpoint is disabled
)

// DefaultRetrySchedule is the wait before each attempt: immediately, then
// 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; after the 8th attempt the delivery
// is exhausted.
func DefaultRetrySchedule() []time.Duration {
	return []time.Duration{0, 5 * time.Second, 5 * time.Minute, 30 * time.Minute,
		2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}
}

// RetryPolicy is how a delivery is retried.
type RetryPolicy struct {
	// Schedule[i] is the wait before attempt i+1, so len(Schedule) is the number
	// of attempts a delivery gets (replays add one attempt each beyond it).
	Schedule []time.Duration
	// RetryAfterCap bounds how long a receiver's Retry-After can push the next
	// attempt out; 0 ignores Retry-After.
	RetryAfterCap time.Duration
}

// AttemptResult is what one HTTP attempt produced.
type AttemptResult struct {
	StatusCode int    // 0: no HTTP response
	RetryAfter string // the response's Retry-After header, if any
	// ErrorClass says why there was no response (ErrorClassTimeout,
	// ErrorClassConnection, ErrorClassBlocked...); ignored when StatusCode != 0.
	ErrorClass string
}

// AttemptDecision is what follows from an attempt.
type AttemptDecision struct {
	Status     ExecutionStatus // ExecDelivered, ExecFailedRetrying or ExecExhausted
	ErrorClass string          // "" when delivered
	// Delay is the wait before the next attempt when Status is ExecFailedRetrying.
	Delay time.Duration
	// NotBefore: Delay is a minimum the receiver asked for (Retry-After), so the
	// next attempt must not come sooner, not even by jitter.
	NotBefore bool
	// DisableEndpoint: the receiver said the endpoint is gone (410).
	DisableEndpoint bool
	// EndpointFailed: the attempt counts against the endpoint's health.
	EndpointFailed bool
}

// DecideAttempt applies the outcome rules to attempt number attempt (1-based):
// 2xx delivered; 410 gives up and disables the endpoint; a blocked address
// gives up at once (retrying cannot unblock it); anything else is retried on
// the schedule, and 429/503 no sooner than their Retry-After (capped), until
// the schedule or MaxAttempts is used up.
func DecideAttempt(r AttemptResult, attempt int, p RetryPolicy, now time.Time) AttemptDecision {
	if r.StatusCode >= 200 && r.StatusCode <= 299 {
		return AttemptDecision{Status: ExecDelivered}
	}
	d := AttemptDecision{Status: ExecExhausted, ErrorClass: attemptErrorClass(r), EndpointFailed: true}
	switch {
	case r.StatusCode == 410:
		d.DisableEndpoint = true
		return d
	case r.StatusCode == 0 && r.ErrorClass == ErrorClassBlocked:
		return d
	case attempt < 1 || attempt >= len(p.Schedule) || attempt >= MaxAttempts:
		return d
	}
	d.Status = ExecFailedRetrying
	d.Delay = max(p.Schedule[attempt], 0)
	if (r.StatusCode == 429 || r.StatusCode == 503) && p.RetryAfterCap > 0 {
		if ra, ok := ParseRetryAfter(r.RetryAfter, now); ok && min(ra, p.RetryAfterCap) > d.Delay {
			d.Delay, d.NotBefore = min(ra, p.RetryAfterCap), true
		}
	}
	return d
}

func attemptErrorClass(r AttemptResult) string {
	switch {
	case r.StatusCode == 410:
		return ErrorClassGone
	case r.StatusCode == 429:
		return ErrorClassThrottled
	case r.StatusCode >= 300 && r.StatusCode <= 399:
		return ErrorClassRedirect
	case r.StatusCode != 0:
		return ErrorClassHTTPStatus
	case r.ErrorClass != "":
		return r.ErrorClass
	}
	return ErrorClassConnection
}

// ParseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date
// (RFC 9110: IMF-fixdate, or the obsolete RFC 850 and asctime forms). A date
// in the past means no wait. ok is false for an absent or malformed value.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		// Beyond ~292 years a Duration overflows; any cap is far below.
		return time.Duration(min(n, int64(100*365*24*3600))) * time.Second, true
	}
	for _, layout := range []string{
		"Mon, 02 Jan 2006 15:04:05 GMT", // IMF-fixdate
		"Monday, 02-Jan-06 15:04:05 GMT",
		"Mon Jan _2 15:04:05 2006",
	} {
		if t, err := time.Parse(layout, v); err == nil {
			return max(t.Sub(now), 0), true
		}
	}
	return 0, false
}

// EndpointHealth is the health bookkeeping an attempt calls for. The zero
// value changes nothing.
type EndpointHealth struct {
	StartFailing bool   // first failure after success: FailingSince = the attempt's time
	Recovered    bool   // first success after failures (or ever): clear FailingSince, set LastSuccessAt
	Disable      bool   // failed continuously for longer than the limit
	Reason       string // why Disable
}

// Changes reports whether the endpoint document must be written.
func (h EndpointHealth) Changes() bool { return h.StartFailing || h.Recovered || h.Disable }

// NextEndpointHealth says how an attempt at `at` changes ep's health record.
// The document is written only on transitions — the first failure after a
// success, the first success after failures — never on every attempt, so the
// hot path costs no endpoint write. An endpoint failing continuously for more
// than disableAfter (0: never) is disabled.
func NextEndpointHealth(ep WebhookEndpoint, failed bool, at time.Time, disableAfter time.Duration) EndpointHealth {
	if !failed {
		return EndpointHealth{Recovered: ep.FailingSince != nil || ep.LastSuccessAt == nil}
	}
	if ep.FailingSince == nil {
		return EndpointHealth{StartFailing: true}
	}
	if ep.Status == WebhookActive && disableAfter > 0 && at.Sub(*ep.FailingSince) > disableAfter {
		return EndpointHealth{Disable: true, Reason: fmt.Sprintf(
			"deliveries failed continuously since %s, longer than %s", ep.FailingSince.UTC().Format(time.RFC3339), disableAfter)}
	}
	return EndpointHealth{}
}

// Apply writes h into ep; it reports whether anything changed.
func (h EndpointHealth) Apply(ep *WebhookEndpoint, at time.Time) bool {
	changed := false
	if h.StartFailing && ep.FailingSince == nil {
		t := at.UTC()
		ep.FailingSince, changed = &t, true
	}
	if h.Recovered {
		t := at.UTC()
		ep.FailingSince, ep.LastSuccessAt, changed = nil, &t, true
	}
	if h.Disable && DisableEndpoint(ep, h.Reason, at) {
		changed = true
	}
	if changed {
		ep.UpdatedAt = at.UTC()
	}
	return changed
}

// DisableEndpoint marks ep disabled for reason; false when it already was.
func DisableEndpoint(ep *WebhookEndpoint, reason string, at time.Time) bool {
	if ep.Status == WebhookDisabled {
		return false
	}
	ep.Status, ep.DisabledReason, ep.UpdatedAt = WebhookDisabled, reason, at.UTC()
	return true
}

// ReasonGone is the disable reason of a 410 answer.
const ReasonGone = "the endpoint answered 410 Gone"

// SigningSecretRefs lists the secrets a delivery at `at` is signed with: the
// current one, and during a rotation overlap the previous one too.
func SigningSecretRefs(ep WebhookEndpoint, at time.Time) []string {
	var refs []string
	if ep.SecretRef != "" {
		refs = append(refs, ep.SecretRef)
	}
	if PreviousSecretActive(ep, at) {
		refs = append(refs, ep.PreviousSecretRef)
	}
	return refs
}

// PreviousSecretActive reports whether the previous secret still signs at `at`.
func PreviousSecretActive(ep WebhookEndpoint, at time.Time) bool {
	return ep.PreviousSecretRef != "" && ep.PreviousSecretExpiresAt != nil && at.Before(*ep.PreviousSecretExpiresAt)
}

// WebhookPayload is the body of a delivery, the Standard Webhooks payload shape.
type WebhookPayload struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// DeliveryPayload renders the body of d. It is the same bytes on every attempt
// (the timestamp is the event's, or the first attempt's when the event has
// none), so a receiver can compare retries byte for byte.
func DeliveryPayload(d DeliverWebhook) ([]byte, error) {
	ts := d.OccurredAt
	if ts.IsZero() {
		ts = d.FirstAttemptAt
	}
	body, err := json.Marshal(WebhookPayload{Type: d.EventType, Timestamp: ts.UTC(), Data: d.Data})
	if err != nil {
		return nil, fmt.Errorf("%w: delivery %s: %v", ErrMalformedMessage, d.DeliveryID, err)
	}
	return body, nil
}

// NoMatchExecutionID identifies the record of an event no endpoint of its
// tenant accepted, so a redelivered event finds it instead of adding another.
func NoMatchExecutionID(eventID string) string {
	return DeterministicID("nom", eventID)
}

// DeliveryAttempt is the document of one delivery attempt in
// integration_executions: the Execution the API lists, plus what only the
// dispatcher and replay need. Decoding it as an Execution drops those extra
// fields, which keeps execution listings light.
type DeliveryAttempt struct {
	Execution
	// Event is the delivered event, kept on attempt 1 only, so that a replay
	// can rebuild the delivery.
	Event *DeliveredEvent `json:"event,omitempty"`
	// DisablesEndpoint is why this attempt disabled its endpoint (410, or
	// failing for too long); "" when it did not.
	DisablesEndpoint string `json:"disablesEndpoint,omitempty"`
	// NotBefore: NextAttemptAt is a minimum the receiver asked for (Retry-After).
	NotBefore bool `json:"notBefore,omitempty"`
	// Settled: the attempt's follow-ups (health, result event, next attempt)
	// were published. Written only for an attempt a fan-out handed off, so the
	// safety copy of its delivery publishes nothing twice.
	Settled bool `json:"settled,omitempty"`
}

// DeliveredEvent is the part of a delivery that is not in its Execution.
type DeliveredEvent struct {
	Data           json.RawMessage `json:"data"`
	OccurredAt     time.Time       `json:"occurredAt"`
	FirstAttemptAt time.Time       `json:"firstAttemptAt"`
}

// Errors of ReplayDelivery.
var (
	// ErrEventExpired: the first attempt's record, which holds the event, is gone.
	ErrEventExpired = errors.New("the delivery's event is no longer kept (its first attempt record expired)")
	// ErrAttemptsUsedUp: the delivery has MaxAttempts attempts already.
	ErrAttemptsUsedUp = errors.New("the delivery has used the maximum number of attempts")
)

// ReplayDelivery builds the command that redelivers a delivery as a new
// attempt of the same delivery id: the attempt after the last one recorded.
// attempts are the delivery's records (any order); one must be attempt 1
// with its Event.
func ReplayDelivery(attempts []DeliveryAttempt) (DeliverWebhook, error) {
	var first *DeliveryAttempt
	last := 0
	for i := range attempts {
		a := &attempts[i]
		last = max(last, a.Attempt)
		if a.Attempt == 1 && a.Event != nil {
			first = a
		}
	}
	if first == nil {
		return DeliverWebhook{}, ErrEventExpired
	}
	if last >= MaxAttempts {
		return DeliverWebhook{}, ErrAttemptsUsedUp
	}
	cmd := DeliverWebhook{
		DeliveryID:     first.DeliveryID,
		EventID:        first.EventID,
		TenantID:       first.TenantID,
		WebhookID:      first.WebhookID,
		EventType:      first.EventType,
		Data:           first.Event.Data,
		OccurredAt:     first.Event.OccurredAt,
		Attempt:        last + 1,
		FirstAttemptAt: first.Event.FirstAttemptAt,
	}
	if cmd.FirstAttemptAt.IsZero() {
		cmd.FirstAttemptAt = first.StartedAt
	}
	return cmd, cmd.Validate()
}

// LatestAttempt returns the record with the highest attempt number: the
// delivery's current state.
func LatestAttempt(attempts []DeliveryAttempt) (DeliveryAttempt, bool) {
	if len(attempts) == 0 {
		return DeliveryAttempt{}, false
	}
	latest := attempts[0]
	for _, a := range attempts[1:] {
		if a.Attempt > latest.Attempt {
			latest = a
		}
	}
	return latest, true
}
