// Package store hides the document databases behind one small document API.
//
// Two backends implement Backend: store/cosmos (Azure Cosmos DB, fleet mode)
// and store/embedded (a single bbolt file, standalone mode). Both pass the one
// conformance suite in store/storetest, so code written against Container and
// Repository behaves the same on either.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors every backend returns (wrapped) so callers can branch with errors.Is.
var (
	// ErrNotFound: no document with that partition key and id.
	ErrNotFound = errors.New("store: document not found")
	// ErrConflict: Create of an id that already exists in the partition.
	ErrConflict = errors.New("store: document already exists")
	// ErrPreconditionFailed: the If-Match ETag no longer matches the stored document.
	ErrPreconditionFailed = errors.New("store: etag precondition failed")
	// ErrThrottled: the store kept refusing for load (429) after its own retries.
	ErrThrottled = errors.New("store: throttled")
	// ErrUnavailable: the store could not be reached or answered 5xx/timeout after retries.
	// Callers treat it as transient: it is never the fault of the message being handled.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrInvalidQuery: the query cannot run on this container (bad field, bad token).
	ErrInvalidQuery = errors.New("store: invalid query")
)

// IsTransient reports whether err is worth retrying later (the store's fault,
// not the request's).
func IsTransient(err error) bool {
	return errors.Is(err, ErrThrottled) || errors.Is(err, ErrUnavailable)
}

// Item is one stored document: its JSON body and the version tag of that body.
type Item struct {
	ID           string
	PartitionKey string
	Body         []byte // a JSON object holding at least "id" and the partition key field
	ETag         string
}

// Container is one collection of JSON documents partitioned by a key.
// Bodies are JSON objects; the backend stores them as given and may add system
// properties (names starting with "_") on read.
type Container interface {
	// Create stores a new document; ErrConflict if the id exists in the partition.
	Create(ctx context.Context, partitionKey, id string, body []byte) (etag string, err error)
	// Read returns the document; ErrNotFound if absent (or expired by TTL).
	Read(ctx context.Context, partitionKey, id string) (Item, error)
	// Replace overwrites an existing document. A non-empty ifMatch must equal the
	// stored ETag, else ErrPreconditionFailed; ErrNotFound if absent.
	Replace(ctx context.Context, partitionKey, id string, body []byte, ifMatch string) (etag string, err error)
	// Upsert creates or overwrites unconditionally.
	Upsert(ctx context.Context, partitionKey, id string, body []byte) (etag string, err error)
	// Delete removes the document; ErrNotFound if absent, ErrPreconditionFailed on a stale ifMatch.
	Delete(ctx context.Context, partitionKey, id string, ifMatch string) error
	// Query returns one page of documents matching q.
	Query(ctx context.Context, q Query) (Page, error)
	// Batch applies ops (at most MaxBatchOps, each id once; see ValidateBatch)
	// to documents of one partition as one durable write: all of them or
	// none. A refused operation (ErrConflict, ErrNotFound,
	// ErrPreconditionFailed) makes the batch write nothing and is reported as
	// a *BatchError naming it. It returns the new ETag of every operation, in
	// order ("" for deletes).
	Batch(ctx context.Context, partitionKey string, ops []Op) (etags []string, err error)
}

// Query selects documents with equality filters, ordered by id (ascending, or
// descending when Descending is set) and paged by an opaque continuation token.
//
// An empty PartitionKey makes the query cross-partition; only containers whose
// spec allows it (small reference data such as the catalog) accept that.
type Query struct {
	PartitionKey string
	Filters      []Filter
	Descending   bool
	Limit        int    // page size; 0 means DefaultPageSize, capped at MaxPageSize
	Continuation string // "" for the first page, else Page.Continuation of the previous page
}

// Filter keeps documents whose top-level property Field equals Value
// (a string, bool or number as it appears in the JSON body).
type Filter struct {
	Field string
	Value any
}

// Page is one page of results. Continuation is empty when there are no more.
type Page struct {
	Items        []Item
	Continuation string
}

// Page size limits shared by the backends.
const (
	DefaultPageSize = 50
	MaxPageSize     = 1000
)

// PageSize normalises a requested limit.
func PageSize(limit int) int {
	switch {
	case limit <= 0:
		return DefaultPageSize
	case limit > MaxPageSize:
		return MaxPageSize
	default:
		return limit
	}
}

// ContainerSpec describes one container: its name, the JSON property holding
// the partition key (without the leading slash), and whether cross-partition
// queries are allowed.
//
// A non-zero TTL turns expiry on (Cosmos: DefaultTimeToLive -1): a document
// expires "ttl" seconds after its last write, where "ttl" is the document's own
// top-level property; backends stamp TTL (in whole seconds) into bodies that
// carry none, so every document of such a container has a retention.
type ContainerSpec struct {
	Name           string
	PartitionKey   string
	TTL            time.Duration
	CrossPartition bool
}

// Backend opens the containers of one database.
type Backend interface {
	// Container returns the named container; the name must be one of the specs
	// the backend was opened with.
	Container(name string) (Container, error)
	// Ping checks the store is reachable (for /readyz).
	Ping(ctx context.Context) error
	Close() error
}
