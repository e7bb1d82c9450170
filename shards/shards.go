// Package shards reaches Castiel's data shards, where synced records live,
// behind one small Store interface used by the sync worker and the conflict
// resolver.
//
// Two implementations: HTTP (the fleet's Shard Manager service, URL from
// services.shardManager.url) and Local (the standalone stand-in: records as
// documents in the embedded store's integration_local_shards container).
// NewHandler serves the Shard Manager's REST contract on top of any Store,
// so a test or a local setup can stand up a Shard Manager of its own.
package shards

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/castiel/integration-manager/domain"
)

// Store reads and writes one tenant's records of one entity.
type Store interface {
	// Get returns a live record; ErrNotFound if it never existed or is deleted.
	Get(ctx context.Context, tenantID, entity, key string) (Record, error)
	// Put creates or overwrites the record (a deleted one comes back).
	Put(ctx context.Context, tenantID, entity, key string, data map[string]any) (Record, error)
	// Delete removes the record; ErrNotFound if it is not there (callers that
	// want an idempotent delete ignore that).
	Delete(ctx context.Context, tenantID, entity, key string) error
	// List returns one page of every record, deleted ones included as
	// tombstones (Deleted set) for a retention period, so a sync sees
	// deletions made in Castiel. The order is stable; pass the returned token
	// to resume ("" when there are no more pages). limit <= 0 means
	// DefaultListLimit; it is capped at MaxListLimit.
	List(ctx context.Context, tenantID, entity, pageToken string, limit int) ([]Record, string, error)
	// WriteBatch applies puts and deletes of one tenant's records of one
	// entity in as few durable writes as the implementation can (Local: store
	// batches sent together; HTTP: the Shard Manager's contract has no batch
	// request, so one request per write, concurrently), and reports each write's outcome in order: the record a put wrote, or the
	// error of that write alone (ErrInvalid, ErrNotFound for a delete of a
	// record that is not there, ErrUnavailable). A put's record is the
	// caller's own, decoded as from JSON: it shares no maps with the write
	// or the store. Writes are not atomic together. The error is for the call as a whole (a bad tenant or entity,
	// a key written twice).
	WriteBatch(ctx context.Context, tenantID, entity string, writes []Write) ([]WriteResult, error)
}

// Write is one change of a WriteBatch: a put of Data, or, with Delete, a
// deletion.
type Write struct {
	Key    string
	Data   map[string]any
	Delete bool
	// Hash is domain.ContentHash(Data) when the caller has it (a sync run
	// hashed the record it pulls), so a store that keeps hashes need not
	// hash it again; "": the store hashes what it keeps.
	Hash string
}

// WriteResult is the outcome of one Write. Record is set for a put that
// succeeded.
type WriteResult struct {
	Record Record
	Err    error
}

// checkWrites refuses what no implementation accepts in a batch.
func checkWrites(tenantID, entity string, writes []Write) error {
	if err := checkTenantEntity(tenantID, entity); err != nil {
		return err
	}
	seen := make(map[string]struct{}, len(writes))
	for _, w := range writes {
		if _, dup := seen[w.Key]; dup {
			return fmt.Errorf("%w: record %q is written twice in one batch", ErrInvalid, w.Key)
		}
		seen[w.Key] = struct{}{}
	}
	return nil
}

// Record is one record in a shard. Version changes on every write; Data is
// nil for a tombstone.
type Record struct {
	Key        string         `json:"key"`
	Data       map[string]any `json:"data,omitempty"`
	Version    string         `json:"version"`
	ModifiedAt time.Time      `json:"modifiedAt"`
	Deleted    bool           `json:"deleted,omitempty"`
	// Hash is domain.ContentHash(Data) when the store kept it beside the data
	// (the local store does), so a sync run walking the shard need not hash
	// every record again; "" when it did not. Never taken from the wire.
	Hash string `json:"-"`
}

// Side returns the record as a sync side for domain.Classify.
func (r Record) Side() *domain.SideRecord {
	return &domain.SideRecord{Data: r.Data, Hash: r.Hash, ModifiedAt: r.ModifiedAt, Deleted: r.Deleted}
}

// Errors callers branch on with errors.Is.
var (
	// ErrNotFound: no live record with that key.
	ErrNotFound = errors.New("shards: record not found")
	// ErrUnavailable: the shard store could not be reached or failed
	// transiently (5xx, 429, timeout, connection error, store unavailable). It
	// is never the fault of the record being written: retry later.
	ErrUnavailable = errors.New("shards: shard store unavailable")
	// ErrInvalid: the request itself is unacceptable (bad tenant, entity or
	// key, a record too large, a page token this store did not issue).
	ErrInvalid = errors.New("shards: invalid request")
)

// IsTransient reports whether err is worth retrying later.
func IsTransient(err error) bool { return errors.Is(err, ErrUnavailable) }

// Limits shared by the implementations.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
	MaxKeyBytes      = 1024
	MaxRecordBytes   = domain.MaxPayloadBytes
)

func listLimit(limit int) int {
	switch {
	case limit <= 0:
		return DefaultListLimit
	case limit > MaxListLimit:
		return MaxListLimit
	default:
		return limit
	}
}

// checkRef validates what every implementation refuses alike.
func checkRef(tenantID, entity, key string) error {
	if !domain.IsValidID(tenantID) {
		return fmt.Errorf("%w: %q is not a valid tenant id", ErrInvalid, tenantID)
	}
	if !domain.IsValidID(entity) {
		return fmt.Errorf("%w: %q is not a valid entity name", ErrInvalid, entity)
	}
	return checkKey(key)
}

// checkKey accepts any printable key an external system may use, "/" and
// spaces included: keys never become document ids or raw path segments.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty record key", ErrInvalid)
	case len(key) > MaxKeyBytes:
		return fmt.Errorf("%w: record key of %d bytes exceeds %d", ErrInvalid, len(key), MaxKeyBytes)
	case !utf8.ValidString(key) || strings.ContainsFunc(key, unicode.IsControl):
		return fmt.Errorf("%w: record key %q is not printable UTF-8", ErrInvalid, key)
	}
	return nil
}

func checkTenantEntity(tenantID, entity string) error {
	return checkRef(tenantID, entity, "-")
}
