package shards

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// DefaultTombstoneRetention is how long Local keeps a deleted record visible
// to List: long enough for a paused or daily sync task to see the deletion.
const DefaultTombstoneRetention = 30 * 24 * time.Hour

// Local is the standalone stand-in for the Shard Manager: one document per
// record in a container partitioned by "partition" = tenantId + "/" + entity
// (store.LocalShardsContainer).
//
// Document ids are DeterministicID("shd", tenant, entity, key): any key is
// safe as an id (no '/', bounded length), and ids are unique across partitions
// too, which the Cosmos emulator needs (it keys documents by id alone).
//
// Delete leaves a tombstone so List can report the deletion. Tombstones older
// than the retention are hidden and removed as List passes them; they also
// carry a Cosmos "ttl" of the retention (live records -1, never), so on a
// container declared with TTL the store expires them by itself.
type Local struct {
	docs      *store.Repository[localDoc]
	c         store.Container
	retention time.Duration
	now       func() time.Time
}

var _ Store = (*Local)(nil)

// LocalOption adjusts NewLocal.
type LocalOption func(*Local)

// WithTombstoneRetention sets how long deleted records stay listed.
func WithTombstoneRetention(d time.Duration) LocalOption {
	return func(l *Local) {
		if d > 0 {
			l.retention = d
		}
	}
}

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) LocalOption {
	return func(l *Local) {
		if now != nil {
			l.now = now
		}
	}
}

// localDoc is the stored form of one record.
type localDoc struct {
	ID         string         `json:"id"`
	Partition  string         `json:"partition"`
	TenantID   string         `json:"tenantId"`
	Entity     string         `json:"entity"`
	RecordKey  string         `json:"recordKey"`
	Data       map[string]any `json:"data,omitempty"`
	ModifiedAt time.Time      `json:"modifiedAt"`
	Deleted    bool           `json:"deleted,omitempty"`
	TTL        int            `json:"ttl"`
}

func (d localDoc) Key() (string, string) { return d.Partition, d.ID }

func (d localDoc) record(etag string) Record {
	return Record{Key: d.RecordKey, Data: d.Data, Version: etag, ModifiedAt: d.ModifiedAt, Deleted: d.Deleted}
}

// NewLocal keeps records in c, a container partitioned by "partition".
func NewLocal(c store.Container, opts ...LocalOption) (*Local, error) {
	if c == nil {
		return nil, errors.New("shards: local shard store needs a container")
	}
	l := &Local{docs: store.NewRepository[localDoc](c), c: c, retention: DefaultTombstoneRetention, now: time.Now}
	for _, o := range opts {
		o(l)
	}
	return l, nil
}

// LocalPartition is the partition key of one tenant's records of one entity.
func LocalPartition(tenantID, entity string) string { return tenantID + "/" + entity }

// LocalID is the document id of one record.
func LocalID(tenantID, entity, key string) string {
	return domain.DeterministicID("shd", tenantID, entity, key)
}

// Get returns the live record.
func (l *Local) Get(ctx context.Context, tenantID, entity, key string) (Record, error) {
	if err := checkRef(tenantID, entity, key); err != nil {
		return Record{}, err
	}
	doc, etag, err := l.docs.Get(ctx, LocalPartition(tenantID, entity), LocalID(tenantID, entity, key))
	if err != nil {
		return Record{}, storeErr("get", key, err)
	}
	if doc.Deleted || !doc.owns(tenantID, entity, key) {
		return Record{}, fmt.Errorf("%w: %s/%s", ErrNotFound, entity, key)
	}
	return doc.record(etag), nil
}

// Put writes the record, replacing any version or tombstone.
func (l *Local) Put(ctx context.Context, tenantID, entity, key string, data map[string]any) (Record, error) {
	if err := checkRef(tenantID, entity, key); err != nil {
		return Record{}, err
	}
	if data == nil {
		data = map[string]any{}
	}
	doc := localDoc{
		ID:         LocalID(tenantID, entity, key),
		Partition:  LocalPartition(tenantID, entity),
		TenantID:   tenantID,
		Entity:     entity,
		RecordKey:  key,
		Data:       data,
		ModifiedAt: l.now().UTC(),
		TTL:        -1,
	}
	if err := checkSize(doc); err != nil {
		return Record{}, err
	}
	etag, err := l.docs.Upsert(ctx, doc)
	if err != nil {
		return Record{}, storeErr("put", key, err)
	}
	// Data as read back later (numbers become float64, and so on), so a caller
	// hashing the returned record gets what a later Get would give, and the
	// record does not share maps with the caller's data.
	if err := roundTrip(&doc.Data); err != nil {
		return Record{}, err
	}
	return doc.record(etag), nil
}

// Delete turns the live record into a tombstone.
func (l *Local) Delete(ctx context.Context, tenantID, entity, key string) error {
	if err := checkRef(tenantID, entity, key); err != nil {
		return err
	}
	_, _, err := l.docs.Update(ctx, LocalPartition(tenantID, entity), LocalID(tenantID, entity, key), func(doc *localDoc) error {
		if doc.Deleted || !doc.owns(tenantID, entity, key) {
			return fmt.Errorf("%w: %s/%s", ErrNotFound, entity, key)
		}
		doc.Deleted = true
		doc.Data = nil
		doc.ModifiedAt = l.now().UTC()
		doc.TTL = max(int(l.retention/time.Second), 1)
		return nil
	})
	if errors.Is(err, ErrNotFound) {
		return err
	}
	if err != nil {
		return storeErr("delete", key, err)
	}
	return nil
}

// List returns one page of records and tombstones within the retention.
func (l *Local) List(ctx context.Context, tenantID, entity, pageToken string, limit int) ([]Record, string, error) {
	if err := checkTenantEntity(tenantID, entity); err != nil {
		return nil, "", err
	}
	pk := LocalPartition(tenantID, entity)
	page, err := l.c.Query(ctx, store.Query{PartitionKey: pk, Limit: listLimit(limit), Continuation: pageToken})
	if err != nil {
		return nil, "", storeErr("list", entity, err)
	}
	cutoff := l.now().Add(-l.retention)
	out := make([]Record, 0, len(page.Items))
	for _, it := range page.Items {
		var doc localDoc
		if err := json.Unmarshal(it.Body, &doc); err != nil {
			return nil, "", fmt.Errorf("shards: list %s: decode %s: %w", entity, it.ID, err)
		}
		if doc.Deleted && doc.ModifiedAt.Before(cutoff) {
			// Expired tombstone: reclaim it. If-Match, so a record put back
			// meanwhile survives; a failure only leaves it for the next pass.
			_ = l.c.Delete(ctx, pk, it.ID, it.ETag)
			continue
		}
		out = append(out, doc.record(it.ETag))
	}
	return out, page.Continuation, nil
}

// owns guards against a hash collision handing back another record.
func (d localDoc) owns(tenantID, entity, key string) bool {
	return d.TenantID == tenantID && d.Entity == entity && d.RecordKey == key
}

func checkSize(doc localDoc) error {
	raw, err := json.Marshal(doc.Data)
	if err != nil {
		return fmt.Errorf("%w: record %s cannot be encoded as JSON: %v", ErrInvalid, doc.RecordKey, err)
	}
	if len(raw) > MaxRecordBytes {
		return fmt.Errorf("%w: record %s of %d bytes exceeds %d", ErrInvalid, doc.RecordKey, len(raw), MaxRecordBytes)
	}
	return nil
}

func roundTrip(data *map[string]any) error {
	raw, err := json.Marshal(*data)
	if err != nil {
		return fmt.Errorf("shards: re-read record: %w", err)
	}
	var back map[string]any
	if err := json.Unmarshal(raw, &back); err != nil {
		return fmt.Errorf("shards: re-read record: %w", err)
	}
	*data = back
	return nil
}

// storeErr maps the store's errors onto this package's.
func storeErr(op, what string, err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return fmt.Errorf("%w: %s %s", ErrNotFound, op, what)
	case store.IsTransient(err):
		return fmt.Errorf("shards: %s %s: %w: %w", op, what, ErrUnavailable, err)
	case errors.Is(err, store.ErrInvalidQuery):
		return fmt.Errorf("shards: %s %s: %w: %w", op, what, ErrInvalid, err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("shards: %s %s: %w: %w", op, what, ErrUnavailable, err)
	default:
		return fmt.Errorf("shards: %s %s: %w", op, what, err)
	}
}
