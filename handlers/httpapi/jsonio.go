package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// decode reads the request body into v, rejecting unknown fields.
func (c *call) decode(v any) error {
	if len(bytes.TrimSpace(c.body)) == 0 {
		if c.rt.body == bodyOptional {
			return nil
		}
		return badRequest("a JSON body is required", domain.FieldError{Field: "body", Message: "is required"})
	}
	return decodeStrict(c.body, v)
}

func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("the body must hold exactly one JSON value",
			domain.FieldError{Field: "body", Message: "has data after the JSON value"})
	}
	return nil
}

// jsonProblem explains a decoding error by field, quoting no values.
func jsonProblem(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("the body is not valid JSON", domain.FieldError{Field: "body", Message: "is not valid JSON"})
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			field = "body"
		}
		return badRequest("a field has the wrong JSON type",
			domain.FieldError{Field: field, Message: "must be " + jsonTypeName(typ.Type)})
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badRequest("the body has a field this endpoint does not accept",
			domain.FieldError{Field: strings.Trim(name, `"`), Message: "is not a known field"})
	}
	return badRequest("the body could not be decoded", domain.FieldError{Field: "body", Message: "could not be decoded"})
}

func jsonTypeName(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonTypeName(t.Elem())
	}
	return "another type"
}

// writeJSON writes v as the JSON answer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// respond writes a single resource with its ETag.
func (c *call) respond(status int, etag string, v any) error {
	if etag != "" {
		c.w.Header().Set("ETag", httpETag(etag))
	}
	writeJSON(c.w, status, v)
	return nil
}

// created answers 201 with the resource's location.
func (c *call) created(location, etag string, v any) error {
	c.w.Header().Set("Location", location)
	return c.respond(http.StatusCreated, etag, v)
}

func (c *call) noContent() error {
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// respondList writes the body of every list answer.
func (c *call) respondList(items any, next string) error {
	v := reflect.ValueOf(items)
	if v.IsNil() { // "items": [] rather than null
		items = reflect.MakeSlice(v.Type(), 0, 0).Interface()
	}
	writeJSON(c.w, http.StatusOK, struct {
		Items      any    `json:"items"`
		NextCursor string `json:"nextCursor,omitempty"`
	}{items, next})
	return nil
}

// pageQuery reads ?limit= and ?cursor= into a store query.
func (c *call) pageQuery(partitionKey string, filters ...store.Filter) (store.Query, error) {
	q := store.Query{PartitionKey: partitionKey, Filters: filters, Continuation: c.r.URL.Query().Get("cursor")}
	if raw := c.r.URL.Query().Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > store.MaxPageSize {
			return q, badRequest("limit is out of range",
				domain.FieldError{Field: "limit", Message: fmt.Sprintf("must be an integer between 1 and %d", store.MaxPageSize)})
		}
		q.Limit = n
	}
	return q, nil
}

// pathID returns the {name} path value; an id outside the id grammar cannot
// exist, so it is answered like an unknown one.
func (c *call) pathID(name, what string) (string, error) {
	id := c.r.PathValue(name)
	if !domain.IsValidID(id) {
		return "", notFound(what)
	}
	return id, nil
}

// httpETag quotes a store ETag for the ETag header when the store did not.
func httpETag(etag string) string {
	if strings.HasPrefix(etag, `"`) || strings.HasPrefix(etag, `W/"`) {
		return etag
	}
	return `"` + etag + `"`
}

// ifMatch reports whether the request's If-Match (if any) accepts the stored
// ETag. Weak tags never match, as RFC 9110 requires for If-Match.
func ifMatch(r *http.Request, stored string) bool {
	h := r.Header.Get("If-Match")
	if h == "" {
		return true
	}
	want := httpETag(stored)
	for _, tag := range strings.Split(h, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" || tag == want {
			return true
		}
	}
	return false
}

func preconditionFailed() *apiError {
	return newProblem(http.StatusPreconditionFailed, ProblemPrecondition, "Precondition failed",
		"the resource changed since the ETag in If-Match; read it again and retry")
}

// checkIfMatch answers 412 when If-Match names another version.
func (c *call) checkIfMatch(stored string) error {
	if !ifMatch(c.r, stored) {
		return preconditionFailed()
	}
	return nil
}

// updateDoc is read → fn → replace-if-match. Without If-Match it retries on
// concurrent writes (store.Repository.Update); with If-Match the caller's
// version must be the stored one, and a concurrent write answers 412.
func updateDoc[T store.Keyed](c *call, repo *store.Repository[T], pk, id string, fn func(*T) error) (T, string, error) {
	if c.r.Header.Get("If-Match") == "" {
		return repo.Update(c.ctx, pk, id, fn)
	}
	var zero T
	doc, etag, err := repo.Get(c.ctx, pk, id)
	if err != nil {
		return zero, "", err
	}
	if err := c.checkIfMatch(etag); err != nil {
		return zero, "", err
	}
	if err := fn(&doc); err != nil {
		return zero, "", err
	}
	newTag, err := repo.Replace(c.ctx, doc, etag)
	if err != nil {
		return zero, "", err
	}
	return doc, newTag, nil
}

// deleteDoc deletes a document, honouring If-Match.
func deleteDoc[T store.Keyed](c *call, repo *store.Repository[T], pk, id string) error {
	etag := ""
	if c.r.Header.Get("If-Match") != "" {
		_, stored, err := repo.Get(c.ctx, pk, id)
		if err != nil {
			return err
		}
		if err := c.checkIfMatch(stored); err != nil {
			return err
		}
		etag = stored
	}
	return repo.Delete(c.ctx, pk, id, etag)
}

// orNotFound turns store.ErrNotFound into a 404 naming what was missing.
func orNotFound(err error, what string) error {
	if errors.Is(err, store.ErrNotFound) {
		return notFound(what)
	}
	return err
}
