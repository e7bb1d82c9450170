package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/webhook/egress"
	"github.com/castiel/integration-manager/messaging"
)

// callOutcome is what one HTTP attempt produced, ready to be recorded.
type callOutcome struct {
	result   domain.AttemptResult
	headers  map[string]string // as sent; no secret is ever among them
	body     string            // response body, up to ResponseBodyCap
	reason   string            // why it failed, for the record and events; "" when delivered
	started  time.Time
	finished time.Time
}

// maxDrain is how much of a response beyond the cap is read (and dropped) so
// the connection can be reused; a longer body closes it instead.
const maxDrain = 64 << 10

// maxReasonLength bounds the failure text kept in records and events.
const maxReasonLength = 500

// call POSTs the delivery to the endpoint, signed, with the attempt timeout.
// Its errors are only ours (an unrenderable payload, no signer); whatever the
// endpoint does is in the outcome.
func (d *Dispatcher) call(ctx context.Context, cmd domain.DeliverWebhook, e *endpointEntry) (callOutcome, error) {
	payload, err := domain.DeliveryPayload(cmd)
	if err != nil {
		return callOutcome{}, messaging.Permanent(err)
	}
	out := callOutcome{started: d.now()}
	signature, err := e.sign(cmd.DeliveryID, out.started, payload)
	if err != nil {
		return callOutcome{}, fmt.Errorf("sign delivery %s: %w", cmd.DeliveryID, err)
	}
	out.headers = map[string]string{
		"Content-Type":                          "application/json",
		"User-Agent":                            d.opts.UserAgent,
		standardwebhooks.HeaderWebhookID:        cmd.DeliveryID,
		standardwebhooks.HeaderWebhookTimestamp: strconv.FormatInt(out.started.Unix(), 10),
		standardwebhooks.HeaderWebhookSignature: signature,
	}

	actx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, e.ep.URL, bytes.NewReader(payload))
	if err != nil {
		out.finished = d.now()
		out.result.ErrorClass = domain.ErrorClassConnection
		out.reason = "the endpoint URL cannot be used: " + describe(err)
		return out, nil
	}
	for k, v := range out.headers {
		req.Header.Set(k, v)
	}
	resp, err := d.client.Do(req)
	if err != nil {
		out.finished = d.now()
		out.result.ErrorClass = classify(err)
		out.reason = d.explain(out.result.ErrorClass, err)
		return out, nil
	}
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, int64(d.opts.ResponseBodyCap)))
	_, _ = io.CopyN(io.Discard, resp.Body, maxDrain)
	_ = resp.Body.Close()
	out.finished = d.now()
	out.result.StatusCode = resp.StatusCode
	out.result.RetryAfter = resp.Header.Get("Retry-After")
	out.body = strings.ToValidUTF8(string(body), "\uFFFD")
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode <= 299:
		// Delivered once the status is in, even if the body was cut short.
	case resp.StatusCode >= 300 && resp.StatusCode <= 399:
		out.reason = fmt.Sprintf("the endpoint answered %d (redirects are not followed)", resp.StatusCode)
	default:
		out.reason = fmt.Sprintf("the endpoint answered %d", resp.StatusCode)
		if readErr != nil && errors.Is(readErr, context.DeadlineExceeded) {
			out.reason += " and its body did not arrive in time"
		}
	}
	return out, nil
}

// classify gives a transport error its domain.ErrorClass.
func classify(err error) string {
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalidCert x509.CertificateInvalidError
	var recordErr tls.RecordHeaderError
	var netErr net.Error
	switch {
	case errors.Is(err, egress.ErrBlocked):
		return domain.ErrorClassBlocked
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return domain.ErrorClassTimeout
	case errors.As(err, &dnsErr):
		return domain.ErrorClassDNS
	case errors.As(err, &certErr), errors.As(err, &unknownCA), errors.As(err, &hostErr),
		errors.As(err, &invalidCert), errors.As(err, &recordErr):
		return domain.ErrorClassTLS
	}
	return domain.ErrorClassConnection
}

// explain turns a transport error into the reason a tenant reads.
func (d *Dispatcher) explain(class string, err error) string {
	switch class {
	case domain.ErrorClassTimeout:
		return fmt.Sprintf("no answer within %s", d.opts.Timeout)
	case domain.ErrorClassBlocked:
		var be *egress.BlockedError
		if errors.As(err, &be) {
			return strings.TrimPrefix(be.Error(), "egress: ")
		}
	}
	return describe(err)
}

// describe renders an error for a record: without the *url.Error wrapper
// (which repeats the URL), printable, and bounded.
func describe(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return sanitize(err.Error())
}

// sanitize keeps a text fit for a record or an event: no control characters
// and at most maxReasonLength runes.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if r := []rune(s); len(r) > maxReasonLength {
		s = string(r[:maxReasonLength-1]) + "…"
	}
	return s
}
