package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/castiel/integration-manager/auth"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// Problem is an RFC 9457 problem document, the body of every error answer.
type Problem struct {
	Type   string              `json:"type"`
	Title  string              `json:"title"`
	Status int                 `json:"status"`
	Detail string              `json:"detail,omitempty"`
	Errors []domain.FieldError `json:"errors,omitempty"`
}

// Problem types (relative URI references, described in /openapi.json).
const (
	problemBase              = "/problems/"
	ProblemValidation        = problemBase + "validation-error"
	ProblemMalformed         = problemBase + "malformed-request"
	ProblemUnsupportedMedia  = problemBase + "unsupported-media-type"
	ProblemTooLarge          = problemBase + "payload-too-large"
	ProblemNotFound          = problemBase + "not-found"
	ProblemMethodNotAllowed  = problemBase + "method-not-allowed"
	ProblemUnauthenticated   = problemBase + "unauthenticated"
	ProblemForbidden         = problemBase + "forbidden"
	ProblemConflict          = problemBase + "conflict"
	ProblemPrecondition      = problemBase + "precondition-failed"
	ProblemIdempotencyReused = problemBase + "idempotency-key-reused"
	ProblemIdempotencyBusy   = problemBase + "idempotency-key-in-flight"
	ProblemUnavailable       = problemBase + "service-unavailable"
	ProblemInternal          = problemBase + "internal-error"
)

const problemContentType = "application/problem+json"

// apiError is an error that already knows its HTTP answer. cause, when set,
// is logged for 5xx answers and never shown to the caller.
type apiError struct {
	problem    Problem
	retryAfter int // seconds; 0: no Retry-After
	header     http.Header
	cause      error
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("%d %s", e.problem.Status, e.problem.Title)
	if e.problem.Detail != "" {
		msg += ": " + e.problem.Detail
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

func (e *apiError) Unwrap() error { return e.cause }

func newProblem(status int, typ, title, detail string) *apiError {
	return &apiError{problem: Problem{Type: typ, Title: title, Status: status, Detail: detail}}
}

func badRequest(detail string, fields ...domain.FieldError) *apiError {
	e := newProblem(http.StatusBadRequest, ProblemMalformed, "Malformed request", detail)
	e.problem.Errors = fields
	return e
}

func invalid(field, message string) *apiError {
	return validationProblem([]domain.FieldError{{Field: field, Message: message}})
}

func validationProblem(fields []domain.FieldError) *apiError {
	e := newProblem(http.StatusUnprocessableEntity, ProblemValidation, "Validation failed", "the request has invalid fields; see errors")
	e.problem.Errors = fields
	return e
}

func notFound(what string) *apiError {
	return newProblem(http.StatusNotFound, ProblemNotFound, "Not found", what+" does not exist")
}

func conflict(detail string) *apiError {
	return newProblem(http.StatusConflict, ProblemConflict, "Conflict", detail)
}

func forbidden(detail string) *apiError {
	return newProblem(http.StatusForbidden, ProblemForbidden, "Forbidden", detail)
}

func unauthenticated(detail string) *apiError {
	e := newProblem(http.StatusUnauthorized, ProblemUnauthenticated, "Unauthenticated", detail)
	e.header = http.Header{"Www-Authenticate": {`Bearer realm="integration-manager"`}}
	return e
}

func unavailable(detail string, cause error) *apiError {
	e := newProblem(http.StatusServiceUnavailable, ProblemUnavailable, "Service unavailable", detail)
	e.retryAfter = 1
	e.cause = cause
	return e
}

// dependencyError marks a failure of one of our dependencies (secret store,
// broker): the request was fine, so the caller should retry.
func dependencyError(what string, err error) error {
	if err == nil {
		return nil
	}
	var ae *apiError
	if errors.As(err, &ae) {
		return err
	}
	return unavailable(what+" is unavailable; retry later", err)
}

// problemFor maps any error to the answer. Store and validation errors have
// fixed answers; anything unknown is a 500 that says nothing of its cause.
func problemFor(err error) *apiError {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae
	}
	var ve *domain.ValidationError
	if errors.As(err, &ve) {
		e := validationProblem(ve.Fields)
		e.cause = err
		return e
	}
	var e *apiError
	switch {
	case errors.Is(err, store.ErrNotFound):
		e = notFound("the resource")
	case errors.Is(err, store.ErrConflict):
		e = conflict("a resource with this id already exists")
	case errors.Is(err, store.ErrPreconditionFailed):
		e = newProblem(http.StatusPreconditionFailed, ProblemPrecondition, "Precondition failed",
			"the resource changed since the ETag in If-Match; read it again and retry")
	case store.IsTransient(err):
		e = unavailable("the store is unavailable; retry later", nil)
	case errors.Is(err, store.ErrInvalidQuery):
		e = badRequest("the query cannot run: check the cursor and filters",
			domain.FieldError{Field: "cursor", Message: "is not a cursor returned by this list"})
	case errors.Is(err, auth.ErrUnavailable):
		e = unavailable("authentication is unavailable; retry later", nil)
	case errors.Is(err, auth.ErrUnauthenticated):
		e = unauthenticated("the bearer token was not accepted")
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		e = unavailable("the request did not finish in time; retry later", nil)
	default:
		e = newProblem(http.StatusInternalServerError, ProblemInternal, "Internal error",
			"the request failed on our side; it has been logged")
	}
	e.cause = err
	return e
}

// writeProblem writes the answer for err.
func writeProblem(w http.ResponseWriter, e *apiError) {
	h := w.Header()
	for k, vs := range e.header {
		h[k] = vs
	}
	if e.retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(e.retryAfter))
	}
	h.Set("Content-Type", problemContentType)
	h.Set("Cache-Control", "no-store")
	h.Del("ETag")
	w.WriteHeader(e.problem.Status)
	_ = json.NewEncoder(w).Encode(e.problem)
}
