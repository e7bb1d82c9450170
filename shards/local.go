package shards

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/docfields"
)

// DefaultTombstoneRetention is how long Local keeps a deleted record visible
// to List: long enough for a paused or daily sync task to see the deletion.
const DefaultTombstoneRetention = 30 * 24 * time.Hour

// Local is the standalone stand-in for the Shard Manager: one document per
// record in a container partitioned by "partition" = tenantId + "/" + entity
// (store.LocalShardsContainer).
//
// Document ids are OrderedID("shd", [tenant, entity], key): any key is safe
// as an id (escaped, bounded length), ids are unique across partitions too,
// which the Cosmos emulator needs (it keys documents by id alone), and they
// sort like the keys, so records with neighbouring keys share the embedded
// store's pages (a batch of sequential keys rewrites few of them) and List
// returns records in key order.
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
	DataHash   string         `json:"dataHash,omitempty"` // domain.ContentHash(Data); "" in documents written before it was kept
	ModifiedAt time.Time      `json:"modifiedAt"`
	Deleted    bool           `json:"deleted,omitempty"`
	TTL        int            `json:"ttl"`
}

func (d localDoc) Key() (string, string) { return d.Partition, d.ID }

func (d localDoc) record(etag string) Record {
	return Record{Key: d.RecordKey, Data: d.Data, Hash: d.DataHash, Version: etag, ModifiedAt: d.ModifiedAt, Deleted: d.Deleted}
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
	return domain.OrderedID("shd", []string{tenantID, entity}, key)
}

// localIDs returns LocalID(tenantID, entity, ·), for many records.
func localIDs(tenantID, entity string) func(key string) string {
	return domain.OrderedIDs("shd", []string{tenantID, entity})
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
	return doc.live(tenantID, entity, key, etag)
}

// live is the record doc holds (stored with etag) when it is key's and not
// a tombstone; ErrNotFound otherwise.
func (doc localDoc) live(tenantID, entity, key, etag string) (Record, error) {
	if doc.Deleted || !doc.owns(tenantID, entity, key) {
		return Record{}, fmt.Errorf("%w: %s/%s", ErrNotFound, entity, key)
	}
	return doc.record(etag), nil
}

// GetMany returns what Get returns for each of keys (recs[i] and errs[i] are
// keys[i]'s), in one store read when the container can: a sync run reads
// Castiel's side of a page of records at once.
func (l *Local) GetMany(ctx context.Context, tenantID, entity string, keys []string) ([]Record, []error) {
	recs, errs := make([]Record, len(keys)), make([]error, len(keys))
	mr, ok := store.ManyReaderOf(l.c)
	if !ok {
		for i, key := range keys {
			recs[i], errs[i] = l.Get(ctx, tenantID, entity, key)
		}
		return recs, errs
	}
	ids, at := localRefs(tenantID, entity, keys, errs)
	items, err := mr.ReadMany(ctx, LocalPartition(tenantID, entity), ids)
	for n, i := range at {
		key := keys[i]
		if err != nil {
			errs[i] = storeErr("get", key, err)
			continue
		}
		if items[n].ID == "" {
			errs[i] = storeErr("get", key, store.ErrNotFound)
			continue
		}
		var doc localDoc
		if err := json.Unmarshal(items[n].Body, &doc); err != nil {
			errs[i] = storeErr("get", key, fmt.Errorf("decode %s: %w", items[n].ID, err))
			continue
		}
		recs[i], errs[i] = doc.live(tenantID, entity, key, items[n].ETag)
	}
	return recs, errs
}

// localRefs returns the document ids of the valid keys, and the index in keys
// of each; errs[i] gets the refusal of an invalid keys[i].
func localRefs(tenantID, entity string, keys []string, errs []error) (ids []string, at []int) {
	ids, at = make([]string, 0, len(keys)), make([]int, 0, len(keys))
	localID := localIDs(tenantID, entity)
	for i, key := range keys {
		if errs[i] = checkRef(tenantID, entity, key); errs[i] == nil {
			ids, at = append(ids, localID(key)), append(at, i)
		}
	}
	return ids, at
}

// AreCurrent reports for each key whether versions[i] (a Record.Version) is
// still its stored version, live or tombstone, without decoding it: a sync
// run checks records it listed are unchanged before it pushes them. One
// store read where the container can read many documents at once.
func (l *Local) AreCurrent(ctx context.Context, tenantID, entity string, keys, versions []string) ([]bool, []error) {
	current, errs := make([]bool, len(keys)), make([]error, len(keys))
	ids, at := localRefs(tenantID, entity, keys, errs)
	etags := make([]string, len(ids)) // "": not stored
	if mr, ok := store.ManyReaderOf(l.c); ok {
		items, err := mr.ReadMany(ctx, LocalPartition(tenantID, entity), ids)
		for n, i := range at {
			if err != nil {
				errs[i] = storeErr("get", keys[i], err)
				continue
			}
			etags[n] = items[n].ETag
		}
	} else {
		for n, i := range at {
			it, err := l.c.Read(ctx, LocalPartition(tenantID, entity), ids[n])
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				errs[i] = storeErr("get", keys[i], err)
				continue
			}
			etags[n] = it.ETag
		}
	}
	for n, i := range at {
		current[i] = errs[i] == nil && versions[i] != "" && etags[n] == versions[i]
	}
	return current, errs
}

// Put writes the record, replacing any version or tombstone.
func (l *Local) Put(ctx context.Context, tenantID, entity, key string, data map[string]any) (Record, error) {
	if err := checkRef(tenantID, entity, key); err != nil {
		return Record{}, err
	}
	put, _ := l.encodePut(nil, LocalID(tenantID, entity, key), tenantID, entity, key, data, "")
	if put.err != nil {
		return Record{}, put.err
	}
	etag, err := l.c.Upsert(ctx, LocalPartition(tenantID, entity), put.id, put.body)
	if err != nil {
		return Record{}, storeErr("put", key, err)
	}
	put.rec.Version = etag
	return put.rec, nil
}

// encodePut returns the put of data as document id: its body, and the
// record it writes (without its version). The record's data is what a later
// Get would give (numbers become float64, and so on) and shares no maps with
// data. The body is assembled in scratch around the data, encoded once (the
// fields of localDoc, in order), and copied out at its size; scratch, grown,
// is returned for the next put: a pull puts every record.
func (l *Local) encodePut(scratch []byte, id, tenantID, entity, key string, data map[string]any, hash string) (encodedPut, []byte) {
	at := l.now().UTC()
	b := append(scratch[:0], `{"id":`...)
	b = domain.AppendJSONString(b, id)
	b = append(b, `,"partition":`...)
	b = domain.AppendJSONString(b, LocalPartition(tenantID, entity))
	b = append(b, `,"tenantId":`...)
	b = domain.AppendJSONString(b, tenantID)
	b = append(b, `,"entity":`...)
	b = domain.AppendJSONString(b, entity)
	b = append(b, `,"recordKey":`...)
	b = domain.AppendJSONString(b, key)
	b = append(b, `,"data":`...)
	start := len(b)
	b, err := domain.AppendJSON(b, data)
	if err != nil {
		return encodedPut{err: fmt.Errorf("%w: record %s cannot be encoded as JSON: %v", ErrInvalid, key, err)}, scratch
	}
	raw := b[start:]
	if len(raw) > MaxRecordBytes {
		return encodedPut{err: fmt.Errorf("%w: record %s of %d bytes exceeds %d", ErrInvalid, key, len(raw), MaxRecordBytes)}, b
	}
	back, same, ok := jsonClone(data)
	if !same {
		hash = "" // the caller's hash is of other values than the stored ones
	}
	if !ok {
		back, hash = map[string]any{}, ""
		if len(data) > 0 {
			if err := json.Unmarshal(raw, &back); err != nil {
				return encodedPut{err: fmt.Errorf("shards: re-read record %s: %w", key, err)}, b
			}
		}
	}
	if len(data) == 0 {
		b = b[:start-len(`,"data":`)] // stored without data, as the field's omitempty says
	}
	// The hash of what a Get gives, which is what a sync run hashes.
	if hash == "" {
		hash = domain.ContentHash(back)
	}
	b = append(b, `,"dataHash":"`...)
	b = append(b, hash...)
	b = append(b, `","modifiedAt":`...)
	b = at.AppendFormat(append(b, '"'), time.RFC3339Nano)
	b = append(b, `","ttl":-1}`...)
	return encodedPut{id: id, body: bytes.Clone(b), rec: Record{Key: key, Data: back, Hash: hash, ModifiedAt: at}}, b
}

// jsonClone returns a deep copy of data holding what decoding its JSON
// encoding gives (float64 numbers, valid UTF-8), without the round trip;
// ok is false for anything it cannot vouch for, which the caller then
// decodes. same reports that the copy holds data's values unchanged (no
// number given as json.Number had to become a float64), so it hashes alike.
func jsonClone(data map[string]any) (clone map[string]any, same, ok bool) {
	if len(data) == 0 {
		return map[string]any{}, true, true // stored without data: read back as an empty object
	}
	converted := false
	v, ok := jsonCloneValue(data, 0, &converted)
	if !ok {
		return nil, false, false
	}
	return v.(map[string]any), !converted, true
}

// maxCloneDepth leaves deep records to the decoder (and its own limits).
const maxCloneDepth = 32

func jsonCloneValue(v any, depth int, converted *bool) (any, bool) {
	if depth > maxCloneDepth {
		return nil, false
	}
	switch x := v.(type) {
	case nil, bool:
		return x, true
	case string:
		return x, utf8.ValidString(x)
	case float64:
		return x, !math.IsInf(x, 0) && !math.IsNaN(x)
	case json.Number:
		*converted = true
		f, err := strconv.ParseFloat(string(x), 64)
		return f, err == nil && domain.IsJSONNumber(string(x))
	case map[string]any:
		if x == nil {
			return nil, true // null
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			if !utf8.ValidString(k) {
				return nil, false
			}
			c, ok := jsonCloneValue(e, depth+1, converted)
			if !ok {
				return nil, false
			}
			out[k] = c
		}
		return out, true
	case []any:
		if x == nil {
			return nil, true // null
		}
		out := make([]any, len(x))
		for i, e := range x {
			c, ok := jsonCloneValue(e, depth+1, converted)
			if !ok {
				return nil, false
			}
			out[i] = c
		}
		return out, true
	}
	return nil, false
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
		l.bury(doc)
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

// bury turns doc into the tombstone of its record.
func (l *Local) bury(doc *localDoc) {
	doc.Deleted = true
	doc.Data, doc.DataHash = nil, ""
	doc.ModifiedAt = l.now().UTC()
	doc.TTL = max(int(l.retention/time.Second), 1)
}

// WriteBatch writes the records in store batches of up to store.MaxBatchOps,
// sent together (store.WriteBatches): the embedded store commits them all in
// one transaction, Cosmos runs them as concurrent transactional batches. A
// delete reads the record first (its tombstone keeps the key) and is written
// If-Match; a batch refused because a record changed meanwhile is written
// again one record at a time.
func (l *Local) WriteBatch(ctx context.Context, tenantID, entity string, writes []Write) ([]WriteResult, error) {
	if err := checkWrites(tenantID, entity, writes); err != nil {
		return nil, err
	}
	pk := LocalPartition(tenantID, entity)
	results := make([]WriteResult, len(writes))
	ops := make([]store.Op, 0, len(writes))
	at := make([]int, 0, len(writes)) // the write of each op
	recs := make([]Record, 0, len(writes))
	puts := l.encodePuts(tenantID, entity, writes)
	for i, w := range writes {
		if err := checkKey(w.Key); err != nil {
			results[i].Err = err
			continue
		}
		if w.Delete {
			doc, etag, err := l.docs.Get(ctx, pk, LocalID(tenantID, entity, w.Key))
			switch {
			case errors.Is(err, store.ErrNotFound), err == nil && (doc.Deleted || !doc.owns(tenantID, entity, w.Key)):
				results[i].Err = fmt.Errorf("%w: %s/%s", ErrNotFound, entity, w.Key)
				continue
			case err != nil:
				results[i].Err = storeErr("delete", w.Key, err)
				continue
			}
			l.bury(&doc)
			_, op, err := store.EncodeOp(store.OpReplace, doc, etag)
			if err != nil {
				results[i].Err = fmt.Errorf("shards: delete %s: %w", w.Key, err)
				continue
			}
			ops, at, recs = append(ops, op), append(at, i), append(recs, Record{})
			continue
		}
		put := puts[i]
		if put.err != nil {
			results[i].Err = put.err
			continue
		}
		ops, at, recs = append(ops, store.UpsertOp(put.id, put.body)), append(at, i), append(recs, put.rec)
	}
	sortByID(ops, at, recs)
	batches, etags, errs := store.WriteBatches(ctx, l.c, pk, ops)
	j := 0 // the first op of batch k
	for k, batch := range batches {
		err := errs[k]
		for n := range batch {
			i, w := at[j+n], writes[at[j+n]]
			switch {
			case err == nil && w.Delete:
			case err == nil:
				recs[j+n].Version = etags[k][n]
				results[i].Record = recs[j+n]
			case errors.Is(err, store.ErrPreconditionFailed), errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrConflict):
				// A record changed since it was read: nothing of this
				// batch was written; write its records one by one.
				if w.Delete {
					results[i].Err = l.Delete(ctx, tenantID, entity, w.Key)
				} else {
					results[i].Record, results[i].Err = l.Put(ctx, tenantID, entity, w.Key, w.Data)
				}
			default:
				results[i].Err = storeErr("write", w.Key, err)
			}
		}
		j += len(batch)
	}
	return results, nil
}

// sortByID orders ops by id, and at and recs with them: a page of new records
// (ordered ids) then reaches the store as appends, batch after batch, which
// the embedded store writes into full pages.
func sortByID(ops []store.Op, at []int, recs []Record) {
	order := make([]int, len(ops))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(ops[a].ID, ops[b].ID) })
	sortedOps, sortedAt, sortedRecs := slices.Clone(ops), slices.Clone(at), slices.Clone(recs)
	for i, o := range order {
		ops[i], at[i], recs[i] = sortedOps[o], sortedAt[o], sortedRecs[o]
	}
}

// encodedPut is a put of a batch, encoded (encodePut).
type encodedPut struct {
	id   string
	body []byte
	rec  Record
	err  error
}

// minEncodeChunk is the fewest puts encodePuts gives a goroutine of their own.
const minEncodeChunk = 64

// encodePuts encodes the puts among writes (puts[i] is writes[i]'s) on up to
// every CPU: a sync run waits for its page's batch.
func (l *Local) encodePuts(tenantID, entity string, writes []Write) []encodedPut {
	puts := make([]encodedPut, len(writes))
	localID := localIDs(tenantID, entity)
	encode := func(lo, hi int) {
		var scratch []byte // one a goroutine
		for i := lo; i < hi; i++ {
			if w := writes[i]; !w.Delete {
				puts[i], scratch = l.encodePut(scratch, localID(w.Key), tenantID, entity, w.Key, w.Data, w.Hash)
			}
		}
	}
	n := len(writes)
	w := min(runtime.GOMAXPROCS(0), n/minEncodeChunk)
	if w <= 1 {
		encode(0, n)
		return puts
	}
	var wg sync.WaitGroup
	for k := range w {
		wg.Go(func() { encode(k*n/w, (k+1)*n/w) })
	}
	wg.Wait()
	return puts
}

// List returns one page of records and tombstones within the retention.
func (l *Local) List(ctx context.Context, tenantID, entity, pageToken string, limit int) ([]Record, string, error) {
	listed, next, err := l.ListListed(ctx, tenantID, entity, pageToken, limit)
	if err != nil {
		return nil, "", err
	}
	out := make([]Record, len(listed))
	for i := range listed {
		if err := listed[i].Decode(); err != nil {
			return nil, "", fmt.Errorf("shards: list %s: %w", entity, err)
		}
		out[i] = listed[i].Record
	}
	return out, next, nil
}

// Listed is a record as a walk over the shard lists it: its data is decoded
// only when asked for (Decode). A walk mostly finds records unchanged, which
// their kept hash tells without the data.
type Listed struct {
	Record        // Data is nil until Decode
	data   []byte // the stored data object, undecoded
}

// Decode fills Data from the stored record.
func (r *Listed) Decode() error {
	if r.data == nil {
		return nil
	}
	var m map[string]any
	if err := json.Unmarshal(r.data, &m); err != nil {
		return fmt.Errorf("decode the data of %s: %w", r.Key, err)
	}
	r.Data, r.data = m, nil
	return nil
}

// ListListed is List with each record's data left undecoded until Decode
// (a document written before hashes were kept is decoded at once, so its
// Hash is "" and its Data set).
func (l *Local) ListListed(ctx context.Context, tenantID, entity, pageToken string, limit int) ([]Listed, string, error) {
	if err := checkTenantEntity(tenantID, entity); err != nil {
		return nil, "", err
	}
	pk := LocalPartition(tenantID, entity)
	page, err := l.c.Query(ctx, store.Query{PartitionKey: pk, Limit: listLimit(limit), Continuation: pageToken})
	if err != nil {
		return nil, "", storeErr("list", entity, err)
	}
	cutoff := l.now().Add(-l.retention)
	out := make([]Listed, 0, len(page.Items))
	for _, it := range page.Items {
		r, err := listedFrom(it.Body, it.ETag)
		if err != nil {
			return nil, "", fmt.Errorf("shards: list %s: decode %s: %w", entity, it.ID, err)
		}
		if r.Deleted && r.ModifiedAt.Before(cutoff) {
			// Expired tombstone: reclaim it. If-Match, so a record put back
			// meanwhile survives; a failure only leaves it for the next pass.
			_ = l.c.Delete(ctx, pk, it.ID, it.ETag)
			continue
		}
		out = append(out, r)
	}
	return out, page.Continuation, nil
}

// listedFrom reads a stored document's record, its data left undecoded: the
// top-level fields are read in place. A document that has data but no kept
// hash, or that the scan cannot read, is decoded in full.
func listedFrom(body []byte, etag string) (Listed, error) {
	r := Listed{Record: Record{Version: etag}}
	var err error
	ok := docfields.TopLevel(body, func(name, value []byte) bool {
		switch string(name) {
		case "recordKey":
			r.Key, err = docfields.String(value)
		case "dataHash":
			r.Hash, err = docfields.String(value)
		case "modifiedAt":
			err = r.ModifiedAt.UnmarshalJSON(value)
		case "deleted":
			switch string(value) {
			case "true":
				r.Deleted = true
			case "false", "null":
			default:
				err = errors.New("deleted is not a boolean")
			}
		case "data":
			if !docfields.IsNull(value) {
				r.data = value
			}
		}
		return err == nil
	})
	if ok && err == nil && (r.Hash != "" || r.data == nil) {
		return r, nil
	}
	var doc localDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return Listed{}, err
	}
	return Listed{Record: doc.record(etag)}, nil
}

// owns guards against a hash collision handing back another record.
func (d localDoc) owns(tenantID, entity, key string) bool {
	return d.TenantID == tenantID && d.Entity == entity && d.RecordKey == key
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
