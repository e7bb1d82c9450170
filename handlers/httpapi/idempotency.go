package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// Idempotency-Key handling: a POST with the header is claimed in the
// integration_idempotency container (create-if-absent) before any work, and
// the answer is recorded once it succeeded. A repeat with the same body gets
// the recorded answer and enqueues nothing; with another body, 422; while the
// first is still running, 409. Failed answers release the key, since they
// changed nothing and the caller should be free to retry.

const (
	maxIdempotencyKeyLength = 255
	// idempotencyLease is how long a claim counts as in flight: a claim older
	// than this belongs to a request whose process died, and may be taken over.
	idempotencyLease = time.Minute

	idemInFlight  = "in_flight"
	idemCompleted = "completed"
)

// idempotencyRecord is one claimed key (partition tenantId; the container's
// TTL expires it after store.IdempotencyRetention).
type idempotencyRecord struct {
	ID          string            `json:"id"`
	TenantID    string            `json:"tenantId"`
	Fingerprint string            `json:"fingerprint"` // SHA-256 of method, path and body
	State       string            `json:"state"`
	Status      int               `json:"status,omitempty"`
	Header      map[string]string `json:"header,omitempty"`
	Body        []byte            `json:"body,omitempty"`
	// Secrets lists response fields removed from Body because they hold a
	// secret; a replay reads them back from Secret Management by reference.
	Secrets     []oneTimeSecret `json:"secrets,omitempty"`
	CreatedAt   time.Time       `json:"createdAt"`
	CompletedAt *time.Time      `json:"completedAt,omitempty"`
}

func (r idempotencyRecord) Key() (partitionKey, id string) { return r.TenantID, r.ID }

// oneTimeSecret is a response field holding the secret stored at Ref.
type oneTimeSecret struct {
	Field string `json:"field"`
	Ref   string `json:"ref"`
}

// replayedHeaders are the response headers a replay repeats.
var replayedHeaders = []string{"Content-Type", "Location", "ETag"}

// idempotencyRecordID names a key's record; the scope is part of it so ids
// never repeat across tenants (the Cosmos emulator keys by id alone).
func idempotencyRecordID(scope, key string) string {
	return domain.DeterministicID("idem", scope, key)
}

func (a *api) idempotent(c *call) error {
	key := c.r.Header.Get(HeaderIdempotencyKey)
	if len(key) > maxIdempotencyKeyLength || !printableASCII(key) {
		return badRequest("the Idempotency-Key header is malformed", domain.FieldError{
			Field: HeaderIdempotencyKey, Message: "must be 1 to 255 printable ASCII characters"})
	}
	scope := c.p.TenantID
	if scope == "" {
		scope = "principal:" + c.p.Subject
	}
	rec := idempotencyRecord{
		ID:          idempotencyRecordID(scope, key),
		TenantID:    scope,
		Fingerprint: fingerprint(c.r.Method, c.r.URL.Path, c.body),
		State:       idemInFlight,
		CreatedAt:   a.now(),
	}
	etag, err := a.claim(c, &rec)
	if err != nil || etag == "" {
		return err // etag "" with no error: the answer was replayed
	}

	cw := &captureWriter{ResponseWriter: c.w}
	c.w = cw
	if err := c.rt.handle(c); err != nil {
		a.fail(c, err)
	}

	// The answer is already on its way; settle the record even if the caller left.
	ctx := context.WithoutCancel(c.ctx)
	if cw.code() < 200 || cw.code() > 299 {
		if err := a.idempotencies.Delete(ctx, rec.TenantID, rec.ID, etag); err != nil {
			a.log.Warn().Err(err).Str("correlationId", c.st.correlationID).Msg("idempotency: could not release the key of a failed request")
		}
		return nil
	}
	done := a.now()
	rec.State, rec.Status, rec.CompletedAt = idemCompleted, cw.code(), &done
	rec.Header = make(map[string]string, len(replayedHeaders))
	for _, h := range replayedHeaders {
		if v := cw.Header().Get(h); v != "" {
			rec.Header[h] = v
		}
	}
	rec.Body, rec.Secrets = withoutSecrets(cw.body.Bytes(), c.st.oneTime)
	if _, err := a.idempotencies.Replace(ctx, rec, etag); err != nil {
		a.log.Warn().Err(err).Str("correlationId", c.st.correlationID).Msg("idempotency: could not record the answer")
	}
	return nil
}

// claim creates the record, or deals with the one already there: it replays
// a completed answer (returning ""), refuses a different body or a request in
// flight, and takes over a claim whose request died.
func (a *api) claim(c *call, rec *idempotencyRecord) (string, error) {
	for range 3 {
		etag, err := a.idempotencies.Create(c.ctx, *rec)
		if err == nil {
			return etag, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return "", err
		}
		existing, existingTag, err := a.idempotencies.Get(c.ctx, rec.TenantID, rec.ID)
		if errors.Is(err, store.ErrNotFound) {
			continue // released or expired meanwhile: claim again
		}
		if err != nil {
			return "", err
		}
		switch {
		case existing.Fingerprint != rec.Fingerprint:
			return "", newProblem(http.StatusUnprocessableEntity, ProblemIdempotencyReused, "Idempotency key reused",
				"this Idempotency-Key was used for a different request; use a new key for a new request")
		case existing.State == idemCompleted:
			return "", a.replay(c, existing)
		case a.now().Sub(existing.CreatedAt) < idempotencyLease:
			e := newProblem(http.StatusConflict, ProblemIdempotencyBusy, "Request in progress",
				"a request with this Idempotency-Key is still being processed; retry shortly")
			e.retryAfter = 1
			return "", e
		}
		etag, err = a.idempotencies.Replace(c.ctx, *rec, existingTag)
		if errors.Is(err, store.ErrPreconditionFailed) {
			continue // another retry took it over first
		}
		return etag, err
	}
	e := newProblem(http.StatusConflict, ProblemIdempotencyBusy, "Request in progress",
		"a request with this Idempotency-Key is being processed concurrently; retry shortly")
	e.retryAfter = 1
	return "", e
}

// replay writes a recorded answer again, reading back its one-time secrets.
func (a *api) replay(c *call, rec idempotencyRecord) error {
	body := rec.Body
	if len(rec.Secrets) > 0 {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			return err
		}
		for _, s := range rec.Secrets {
			value, err := a.deps.Secrets.Get(c.ctx, c.tenantOrScope(rec), s.Ref)
			if errors.Is(err, store.ErrNotFound) {
				continue // deleted since (the resource was removed): nothing to show
			}
			if err != nil {
				return dependencyError("secret management", err)
			}
			fields[s.Field], _ = json.Marshal(string(value))
		}
		var err error
		if body, err = json.Marshal(fields); err != nil {
			return err
		}
	}
	h := c.w.Header()
	for k, v := range rec.Header {
		h.Set(k, v)
	}
	h.Set(HeaderReplayed, "true")
	c.w.WriteHeader(rec.Status)
	_, _ = c.w.Write(body)
	return nil
}

// tenantOrScope is the tenant the record's secrets belong to.
func (c *call) tenantOrScope(rec idempotencyRecord) string {
	if c.p.TenantID != "" {
		return c.p.TenantID
	}
	return rec.TenantID
}

// withoutSecrets removes the secret fields from a JSON object body.
func withoutSecrets(body []byte, secrets []oneTimeSecret) ([]byte, []oneTimeSecret) {
	if len(secrets) == 0 {
		return bytes.Clone(body), nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return nil, secrets // never store what might hold a secret
	}
	for _, s := range secrets {
		delete(fields, s.Field)
	}
	out, err := json.Marshal(fields)
	if err != nil {
		return nil, secrets
	}
	return out, secrets
}

func fingerprint(method, path string, body []byte) string {
	h := sha256.New()
	h.Write([]byte(method))
	h.Write([]byte{0})
	h.Write([]byte(path))
	h.Write([]byte{0})
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

func printableASCII(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// captureWriter passes the answer through and keeps a copy for the record.
type captureWriter struct {
	http.ResponseWriter
	status int
	body   bytes.Buffer
}

func (w *captureWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *captureWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *captureWriter) code() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}
