package cosmos

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	azruntime "github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/cenkalti/backoff/v4"

	"github.com/castiel/integration-manager/store"
)

// Retry pacing when the service gives no x-ms-retry-after-ms.
const (
	retryInitialInterval = 100 * time.Millisecond
	retryMaxInterval     = 5 * time.Second
	// maxRetryAfter caps the service's own hint so one call never sleeps for long;
	// the caller's context bounds the total anyway.
	maxRetryAfter = 10 * time.Second
)

// call names one operation for retries, logs and errors.
type call struct {
	op        string
	container string
	id        string
	// repeatable: sending the request again after an ambiguous failure (a
	// timeout: it may have been applied) cannot change the outcome. True for
	// reads, queries, upserts and start-up; false for create, replace and
	// delete, whose repeat could turn a success into 409/412/404.
	repeatable bool
}

func (c call) target() string {
	switch {
	case c.container == "":
		return ""
	case c.id == "":
		return " " + c.container
	default:
		return " " + c.container + "/" + c.id
	}
}

// retryWhen says which failures are worth another attempt.
type retryWhen int

const (
	retryNever retryWhen = iota
	retryAlways
	retryIfRepeatable
)

// failure is what classify learns from an error.
type failure struct {
	kind       error // a store sentinel, or nil
	status     int   // HTTP status, 0 when there was no response
	retry      retryWhen
	retryAfter time.Duration // the service's hint, 0 if none
}

// classify maps an azcosmos error to the store's errors and a retry decision.
func classify(ctx context.Context, op string, err error) failure {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return classifyStatus(op, re.StatusCode, re.RawResponse)
	}
	var be *batchOpFailure
	if errors.As(err, &be) {
		// A transactional batch answered 207: the status of its refused
		// operation decides, as it would for that operation alone.
		return classifyStatus(op, be.status, be.resp)
	}
	if ctx.Err() != nil {
		// The caller gave up. A passed deadline still means the store was too
		// slow for it (transient); a cancellation is the caller's own doing.
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return failure{kind: store.ErrUnavailable}
		}
		return failure{}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		// The caller's context is alive, so this is the per-attempt RequestTimeout.
		return failure{kind: store.ErrUnavailable, retry: retryIfRepeatable}
	}
	if isConnectionError(err) {
		// azcosmos already retried connection failures where that was safe.
		return failure{kind: store.ErrUnavailable}
	}
	return failure{}
}

// classifyStatus maps one HTTP status of the service (resp may be nil).
func classifyStatus(op string, status int, resp *http.Response) failure {
	f := failure{status: status}
	switch status {
	case http.StatusNotFound:
		// Substatus 1003: the container or database itself is missing, which
		// says nothing about the document and must not read as "absent".
		if resp == nil || resp.Header.Get("x-ms-substatus") != "1003" {
			f.kind = store.ErrNotFound
		}
	case http.StatusConflict:
		f.kind = store.ErrConflict
	case http.StatusPreconditionFailed:
		f.kind = store.ErrPreconditionFailed
	case http.StatusTooManyRequests:
		f.kind, f.retry, f.retryAfter = store.ErrThrottled, retryAlways, retryAfter(resp)
	case http.StatusServiceUnavailable:
		f.kind, f.retry, f.retryAfter = store.ErrUnavailable, retryAlways, retryAfter(resp)
	case 449: // "Retry With": a transient write conflict inside the service
		f.kind, f.retry, f.retryAfter = store.ErrUnavailable, retryAlways, retryAfter(resp)
	case http.StatusRequestTimeout:
		f.kind, f.retry = store.ErrUnavailable, retryIfRepeatable
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout, http.StatusGone:
		// azcosmos already retried reads once on these.
		f.kind = store.ErrUnavailable
	case http.StatusBadRequest:
		if op == opQuery {
			f.kind = store.ErrInvalidQuery
		}
	}
	return f
}

func isConnectionError(err error) bool {
	var netErr net.Error
	var opErr *net.OpError
	return errors.As(err, &netErr) || errors.As(err, &opErr) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
}

// retryAfter reads the service's hint: x-ms-retry-after-ms (Cosmos), else Retry-After seconds.
func retryAfter(resp *http.Response) time.Duration {
	if resp == nil {
		return 0
	}
	if v := resp.Header.Get("x-ms-retry-after-ms"); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	if v := resp.Header.Get("Retry-After"); v != "" {
		if s, err := strconv.Atoi(v); err == nil && s > 0 {
			return time.Duration(s) * time.Second
		}
	}
	return 0
}

func (f failure) retryable(c call) bool {
	return f.retry == retryAlways || (f.retry == retryIfRepeatable && c.repeatable)
}

// hintedBackOff is an exponential backoff that defers to the service's own
// retry-after hint when the last failure carried one.
type hintedBackOff struct {
	backoff.BackOff
	hint time.Duration
}

func (h *hintedBackOff) NextBackOff() time.Duration {
	next := h.BackOff.NextBackOff()
	if next == backoff.Stop || h.hint <= 0 {
		return next
	}
	d := min(h.hint, maxRetryAfter)
	h.hint = 0
	return d
}

// run performs fn, retrying throttled, unavailable and (for repeatable calls)
// timed-out attempts up to the configured number of retries, and returns the
// last failure mapped to the store's errors.
func (b *Backend) run(ctx context.Context, c call, fn func(context.Context) error) error {
	exp := backoff.NewExponentialBackOff()
	exp.InitialInterval = retryInitialInterval
	exp.MaxInterval = retryMaxInterval
	exp.MaxElapsedTime = 0 // bounded by the retry count and the caller's context
	hinted := &hintedBackOff{BackOff: exp}
	schedule := backoff.WithContext(backoff.WithMaxRetries(hinted, uint64(b.maxRetries)), ctx)

	var last error
	attempt := 0
	err := backoff.RetryNotify(func() error {
		attempt++
		err := fn(ctx)
		if err == nil {
			return nil
		}
		last = err
		f := classify(ctx, c.op, err)
		if !f.retryable(c) {
			return backoff.Permanent(err)
		}
		hinted.hint = f.retryAfter
		return err
	}, schedule, func(err error, wait time.Duration) {
		f := classify(ctx, c.op, err)
		b.log.Warn().Str("op", c.op).Str("container", c.container).Str("id", c.id).
			Int("status", f.status).Int("attempt", attempt).Dur("retry_in", wait).
			Str("error", shortCause(err)).Msg("cosmos request failed, retrying")
	})
	if err == nil {
		return nil
	}
	if last == nil {
		last = err
	}
	e := b.failure(ctx, c, last)
	if ctxErr := ctx.Err(); ctxErr != nil && !errors.Is(last, ctxErr) {
		// Stopped waiting between attempts: keep the reason next to the last failure.
		e.interrupted = ctxErr
	}
	return e
}

// failure wraps err as an *opError carrying the store sentinel it maps to.
func (b *Backend) failure(ctx context.Context, c call, err error) *opError {
	f := classify(ctx, c.op, err)
	return &opError{call: c, status: f.status, kind: f.kind, cause: err}
}

// opError is a failed operation: concise text (operation, container, id,
// status) and, through Unwrap, both the store sentinel and azcosmos' own
// error for callers that want the details.
type opError struct {
	call        call
	status      int
	kind        error
	cause       error
	interrupted error // the caller's context ended while waiting to retry
}

func (e *opError) Error() string {
	var sb strings.Builder
	sb.WriteString("cosmos ")
	sb.WriteString(e.call.op)
	sb.WriteString(e.call.target())
	sb.WriteString(": ")
	if e.kind != nil {
		sb.WriteString(e.kind.Error())
		sb.WriteString(": ")
	}
	sb.WriteString(shortCause(e.cause))
	if e.interrupted != nil {
		sb.WriteString(" (gave up retrying: ")
		sb.WriteString(e.interrupted.Error())
		sb.WriteString(")")
	}
	return sb.String()
}

func (e *opError) Unwrap() []error {
	errs := make([]error, 0, 3)
	for _, err := range []error{e.kind, e.cause, e.interrupted} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// shortCause describes err in one line: the HTTP status and the service's
// message for a response, the error text otherwise. azcore's own
// ResponseError text spans many lines and repeats the whole body.
func shortCause(err error) string {
	var re *azcore.ResponseError
	if !errors.As(err, &re) {
		return err.Error()
	}
	s := "HTTP " + strconv.Itoa(re.StatusCode)
	if t := http.StatusText(re.StatusCode); t != "" {
		s += " " + t
	}
	if msg := serviceMessage(re.RawResponse); msg != "" {
		s += ": " + msg
	}
	return s
}

// serviceMessage returns the start of the "message" of a Cosmos error body.
func serviceMessage(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	body, err := azruntime.Payload(resp)
	if err != nil || len(body) == 0 {
		return ""
	}
	var e struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	msg := strings.Join(strings.Fields(e.Message), " ")
	const maxLen = 240
	if len(msg) > maxLen {
		msg = msg[:maxLen] + "…"
	}
	return msg
}
