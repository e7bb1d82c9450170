package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Keyed is a document that knows its partition key and id.
type Keyed interface {
	Key() (partitionKey, id string)
}

// Repository stores one document type in one container as JSON.
type Repository[T Keyed] struct {
	c Container
}

// NewRepository returns a typed view of c.
func NewRepository[T Keyed](c Container) *Repository[T] {
	return &Repository[T]{c: c}
}

// Create stores doc if its id is new in its partition (ErrConflict otherwise):
// the create-if-absent that makes handlers idempotent.
func (r *Repository[T]) Create(ctx context.Context, doc T) (string, error) {
	pk, id := doc.Key()
	body, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", id, err)
	}
	return r.c.Create(ctx, pk, id, body)
}

// Get reads one document and its ETag.
func (r *Repository[T]) Get(ctx context.Context, partitionKey, id string) (T, string, error) {
	var doc T
	it, err := r.c.Read(ctx, partitionKey, id)
	if err != nil {
		return doc, "", err
	}
	if err := json.Unmarshal(it.Body, &doc); err != nil {
		return doc, "", fmt.Errorf("decode %s: %w", id, err)
	}
	return doc, it.ETag, nil
}

// Replace overwrites doc; a non-empty ifMatch makes it conditional.
func (r *Repository[T]) Replace(ctx context.Context, doc T, ifMatch string) (string, error) {
	pk, id := doc.Key()
	body, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", id, err)
	}
	return r.c.Replace(ctx, pk, id, body, ifMatch)
}

// Upsert creates or overwrites doc unconditionally.
func (r *Repository[T]) Upsert(ctx context.Context, doc T) (string, error) {
	pk, id := doc.Key()
	body, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("encode %s: %w", id, err)
	}
	return r.c.Upsert(ctx, pk, id, body)
}

// Delete removes one document; a non-empty ifMatch makes it conditional.
func (r *Repository[T]) Delete(ctx context.Context, partitionKey, id, ifMatch string) error {
	return r.c.Delete(ctx, partitionKey, id, ifMatch)
}

// maxUpdateAttempts bounds the optimistic-concurrency loop of Update; past it
// the contention is reported rather than spun on.
const maxUpdateAttempts = 20

// Backoff between Update attempts. Without it, writers that lost a race retry
// in lockstep and lose again: 8 writers on one document exhausted the attempts.
const (
	updateBackoffBase = time.Millisecond
	updateBackoffMax  = 50 * time.Millisecond
)

// updateBackoff waits a random ("full jitter") time below an exponentially
// growing bound, or until ctx ends.
func updateBackoff(ctx context.Context, attempt int) error {
	bound := min(updateBackoffBase<<min(attempt, 10), updateBackoffMax)
	t := time.NewTimer(rand.N(bound) + 1)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ErrSkipUpdate, returned by an Update callback, ends the update without writing.
var ErrSkipUpdate = errors.New("store: update skipped")

// Update runs read → fn → replace-if-match, retrying on ETag conflicts, so
// callers never handle ETags. fn may run more than once and must only mutate
// the document it is given. If fn returns ErrSkipUpdate nothing is written and
// the current document is returned with a nil error.
func (r *Repository[T]) Update(ctx context.Context, partitionKey, id string, fn func(*T) error) (T, string, error) {
	var zero T
	for attempt := range maxUpdateAttempts {
		if attempt > 0 {
			if err := updateBackoff(ctx, attempt-1); err != nil {
				return zero, "", fmt.Errorf("update %s: %w", id, err)
			}
		}
		it, err := r.c.Read(ctx, partitionKey, id)
		if err != nil {
			return zero, "", err
		}
		var doc T
		if err := json.Unmarshal(it.Body, &doc); err != nil {
			return zero, "", fmt.Errorf("decode %s: %w", id, err)
		}
		etag := it.ETag
		if err := fn(&doc); err != nil {
			if errors.Is(err, ErrSkipUpdate) {
				// fn may have changed doc before skipping: return what is stored.
				var current T
				if err := json.Unmarshal(it.Body, &current); err != nil {
					return zero, "", fmt.Errorf("decode %s: %w", id, err)
				}
				return current, etag, nil
			}
			return zero, "", err
		}
		if pk, newID := doc.Key(); pk != partitionKey || newID != id {
			return zero, "", fmt.Errorf("update %s: the key of a document cannot change", id)
		}
		newTag, err := r.Replace(ctx, doc, etag)
		if errors.Is(err, ErrPreconditionFailed) {
			continue
		}
		if err != nil {
			return zero, "", err
		}
		return doc, newTag, nil
	}
	return zero, "", fmt.Errorf("update %s: %d concurrent modifications in a row: %w", id, maxUpdateAttempts, ErrPreconditionFailed)
}

// List returns one page of documents and the token of the next page.
func (r *Repository[T]) List(ctx context.Context, q Query) ([]T, string, error) {
	page, err := r.c.Query(ctx, q)
	if err != nil {
		return nil, "", err
	}
	out := make([]T, 0, len(page.Items))
	for _, it := range page.Items {
		var doc T
		if err := json.Unmarshal(it.Body, &doc); err != nil {
			return nil, "", fmt.Errorf("decode %s: %w", it.ID, err)
		}
		out = append(out, doc)
	}
	return out, page.Continuation, nil
}
