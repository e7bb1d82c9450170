package embedded

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/castiel/integration-manager/store"
)

// container is one bucket of the file.
type container struct {
	b          *Backend
	spec       store.ContainerSpec
	name       []byte
	ttlSeconds int64 // 0: expiry off
}

var (
	_ store.Container    = (*container)(nil)
	_ store.ManyReader   = (*container)(nil)
	_ store.MultiBatcher = (*container)(nil)
)

func (c *container) notFound(pk, id string) error {
	return &notFoundError{container: c.spec.Name, pk: pk, id: id}
}

// notFoundError is store.ErrNotFound for one document, worded only when
// asked: a sync run's reads of records it has never seen all miss.
type notFoundError struct{ container, pk, id string }

func (e *notFoundError) Error() string {
	return fmt.Sprintf("embedded: %s/%s/%s: %v", e.container, e.pk, e.id, store.ErrNotFound)
}

func (e *notFoundError) Unwrap() error { return store.ErrNotFound }

// current returns the live (unexpired) envelope stored at key, if any.
func (c *container) current(bucket *bolt.Bucket, key []byte, now time.Time) (envelope, bool, error) {
	return c.live(key, bucket.Get(key), now)
}

// live decodes v, stored at key (nil: nothing is), and reports whether it is
// live (unexpired).
func (c *container) live(key, v []byte, now time.Time) (envelope, bool, error) {
	if v == nil {
		return envelope{}, false, nil
	}
	e, err := decodeEnvelope(v)
	if err != nil {
		return envelope{}, false, fmt.Errorf("embedded: %s key %q: %w", c.spec.Name, key, err)
	}
	if c.ttlSeconds > 0 && e.expired(now) {
		return e, false, nil
	}
	return e, true, nil
}

// put stores a new version of the document at key, keeping the expiry index
// in step, and returns its ETag. old is the previous envelope, if any.
func (c *container) put(tx *bolt.Tx, key []byte, old *envelope, body []byte, ttl int64) (string, error) {
	bucket := tx.Bucket(c.name)
	seq, err := bucket.NextSequence()
	if err != nil {
		return "", err
	}
	e := envelope{written: c.b.now(), ttl: ttl, etag: formatETag(seq), body: body}
	if err := c.unindex(tx, key, old); err != nil {
		return "", err
	}
	if at := e.expiresAt(); !at.IsZero() {
		if err := tx.Bucket([]byte(expiryBucket)).Bucket(c.name).Put(expiryKey(at, key), nil); err != nil {
			return "", err
		}
	}
	if err := bucket.Put(key, e.encode()); err != nil {
		return "", err
	}
	return e.etag, nil
}

// unindex removes old's entry from the expiry index.
func (c *container) unindex(tx *bolt.Tx, key []byte, old *envelope) error {
	if old == nil {
		return nil
	}
	if at := old.expiresAt(); !at.IsZero() {
		return tx.Bucket([]byte(expiryBucket)).Bucket(c.name).Delete(expiryKey(at, key))
	}
	return nil
}

// Create stores a new document; ErrConflict if a live one has the id.
func (c *container) Create(ctx context.Context, partitionKey, id string, body []byte) (string, error) {
	stored, ttl, err := c.prepareBody(partitionKey, id, body)
	if err != nil {
		return "", err
	}
	key := docKey(partitionKey, id)
	var etag string
	err = c.b.write(ctx, func(tx *bolt.Tx) error {
		old, live, err := c.current(tx.Bucket(c.name), key, c.b.now())
		if err != nil {
			return err
		}
		if live {
			return refuse(fmt.Errorf("embedded: create %s/%s/%s: %w", c.spec.Name, partitionKey, id, store.ErrConflict))
		}
		var prev *envelope
		if old.etag != "" { // expired but not yet swept: replaced in place
			prev = &old
		}
		etag, err = c.put(tx, key, prev, stored, ttl)
		return err
	})
	return etag, err
}

// Read returns the live document with "_etag" and "_ts" added to its body.
func (c *container) Read(ctx context.Context, partitionKey, id string) (store.Item, error) {
	if err := ctx.Err(); err != nil {
		return store.Item{}, err
	}
	var it store.Item
	err := c.b.view(func(tx *bolt.Tx) error {
		e, live, err := c.current(tx.Bucket(c.name), docKey(partitionKey, id), c.b.now())
		if err != nil {
			return err
		}
		if !live {
			return c.notFound(partitionKey, id)
		}
		it = store.Item{ID: id, PartitionKey: partitionKey, Body: withSystemProperties(e.body, e), ETag: e.etag}
		return nil
	})
	return it, err
}

// ReadMany reads the live documents of one partition with the given ids in
// one read transaction: items[i] is what Read returns for ids[i], or the zero
// Item (empty ID) when Read would find nothing. A sync run reads the states
// of a page of records at once: one transaction instead of one per record,
// whose begin and end each take the file's meta lock, contended by every
// reader at once.
func (c *container) ReadMany(ctx context.Context, partitionKey string, ids []string) ([]store.Item, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	items := make([]store.Item, len(ids))
	prefix := partitionPrefix(partitionKey)
	err := c.b.view(func(tx *bolt.Tx) error {
		// One cursor for every id: bucket.Get makes one per call.
		s, now := seeker{cur: tx.Bucket(c.name).Cursor()}, c.b.now()
		key := bytes.Clone(prefix)
		for i, id := range ids {
			key = append(key[:len(prefix)], id...)
			v := s.get(key)
			if v == nil {
				continue
			}
			e, live, err := c.live(key, v, now)
			if err != nil {
				return err
			}
			if live {
				items[i] = store.Item{ID: id, PartitionKey: partitionKey, Body: withSystemProperties(e.body, e), ETag: e.etag}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return items, nil
}

// seeker reads keys with one cursor. Keys sought in increasing order (the
// ids of a page of records listed in key order) step forward from where the
// last one left the cursor, instead of descending the tree again for each:
// a run of keys the bucket does not hold costs one descent, and a run it
// holds one step a key.
type seeker struct {
	cur     *bolt.Cursor
	started bool
	last    []byte // the last key sought
	k, v    []byte // the first stored key at or after last, and its value (k nil: none)
}

// maxSteps bounds the steps forward before a seek descends the tree instead.
const maxSteps = 8

// get returns the value stored at key, nil if none (or a nested bucket), as
// bucket.Get does.
func (s *seeker) get(key []byte) []byte {
	if !s.started || bytes.Compare(key, s.last) <= 0 {
		s.k, s.v = s.cur.Seek(key)
	} else {
		// Nothing is stored between last and k: k is where key is, or
		// would be, unless k is before it.
		for n := 0; s.k != nil && bytes.Compare(s.k, key) < 0; n++ {
			if n == maxSteps {
				s.k, s.v = s.cur.Seek(key)
				break
			}
			s.k, s.v = s.cur.Next()
		}
	}
	s.started, s.last = true, append(s.last[:0], key...)
	if !bytes.Equal(s.k, key) {
		return nil
	}
	return s.v
}

// Replace overwrites a live document, conditionally on ifMatch when given.
func (c *container) Replace(ctx context.Context, partitionKey, id string, body []byte, ifMatch string) (string, error) {
	stored, ttl, err := c.prepareBody(partitionKey, id, body)
	if err != nil {
		return "", err
	}
	key := docKey(partitionKey, id)
	var etag string
	err = c.b.write(ctx, func(tx *bolt.Tx) error {
		old, live, err := c.current(tx.Bucket(c.name), key, c.b.now())
		if err != nil {
			return err
		}
		if !live {
			return refuse(c.notFound(partitionKey, id))
		}
		if ifMatch != "" && ifMatch != old.etag {
			return refuse(fmt.Errorf("embedded: replace %s/%s/%s if-match %s (now %s): %w",
				c.spec.Name, partitionKey, id, ifMatch, old.etag, store.ErrPreconditionFailed))
		}
		etag, err = c.put(tx, key, &old, stored, ttl)
		return err
	})
	return etag, err
}

// Upsert creates or overwrites unconditionally.
func (c *container) Upsert(ctx context.Context, partitionKey, id string, body []byte) (string, error) {
	stored, ttl, err := c.prepareBody(partitionKey, id, body)
	if err != nil {
		return "", err
	}
	key := docKey(partitionKey, id)
	var etag string
	err = c.b.write(ctx, func(tx *bolt.Tx) error {
		old, _, err := c.current(tx.Bucket(c.name), key, c.b.now())
		if err != nil {
			return err
		}
		var prev *envelope
		if old.etag != "" {
			prev = &old
		}
		etag, err = c.put(tx, key, prev, stored, ttl)
		return err
	})
	return etag, err
}

// Delete removes a live document, conditionally on ifMatch when given.
func (c *container) Delete(ctx context.Context, partitionKey, id string, ifMatch string) error {
	key := docKey(partitionKey, id)
	return c.b.write(ctx, func(tx *bolt.Tx) error {
		bucket := tx.Bucket(c.name)
		old, live, err := c.current(bucket, key, c.b.now())
		if err != nil {
			return err
		}
		if !live {
			return refuse(c.notFound(partitionKey, id))
		}
		if ifMatch != "" && ifMatch != old.etag {
			return refuse(fmt.Errorf("embedded: delete %s/%s/%s if-match %s (now %s): %w",
				c.spec.Name, partitionKey, id, ifMatch, old.etag, store.ErrPreconditionFailed))
		}
		if err := c.unindex(tx, key, &old); err != nil {
			return err
		}
		return bucket.Delete(key)
	})
}

// deleteExpired removes up to limit documents whose expiry is at or before now.
func (c *container) deleteExpired(tx *bolt.Tx, now time.Time, limit int) (int, error) {
	index := tx.Bucket([]byte(expiryBucket)).Bucket(c.name)
	docs := tx.Bucket(c.name)
	var due [][]byte
	cur := index.Cursor()
	for k, _ := cur.First(); k != nil && len(due) < limit; k, _ = cur.Next() {
		if len(k) < 8 || time.Unix(0, int64(binary.BigEndian.Uint64(k[:8]))).After(now) {
			break
		}
		due = append(due, bytes.Clone(k))
	}
	for _, k := range due {
		key := k[8:]
		// The index entry is deleted by the document's own writes; this one is
		// due, so the document it names has expired unless it was rewritten
		// (then its index entry is another key and this one is stale).
		if v := docs.Get(key); v != nil {
			if e, err := decodeEnvelope(v); err == nil && e.expired(now) && bytes.Equal(expiryKey(e.expiresAt(), key), k) {
				if err := docs.Delete(key); err != nil {
					return 0, err
				}
			}
		}
		if err := index.Delete(k); err != nil {
			return 0, err
		}
	}
	return len(due), nil
}

// Query returns one page of live documents matching q, in id order.
func (c *container) Query(ctx context.Context, q store.Query) (store.Page, error) {
	if err := ctx.Err(); err != nil {
		return store.Page{}, err
	}
	cross := q.PartitionKey == ""
	if cross && !c.spec.CrossPartition {
		return store.Page{}, fmt.Errorf("embedded: query %s without a partition key: %w: container is partitioned by %q and allows no cross-partition queries",
			c.spec.Name, store.ErrInvalidQuery, c.spec.PartitionKey)
	}
	m, err := newMatcher(q.Filters)
	if err != nil {
		return store.Page{}, fmt.Errorf("embedded: query %s: %w", c.spec.Name, err)
	}
	var after *continuation
	if q.Continuation != "" {
		t, err := decodeToken(q.Continuation, cross)
		if err != nil {
			return store.Page{}, fmt.Errorf("embedded: query %s: %w", c.spec.Name, err)
		}
		after = &t
	}
	limit := store.PageSize(q.Limit)
	var page store.Page
	err = c.b.view(func(tx *bolt.Tx) error {
		var err error
		if cross {
			page, err = c.scanAll(tx, m, q.Descending, after, limit)
		} else {
			page, err = c.scanPartition(tx, q.PartitionKey, m, q.Descending, after, limit)
		}
		return err
	})
	if err != nil {
		return store.Page{}, err
	}
	return page, nil
}

// scanPartition walks one partition's key range from the token onwards.
func (c *container) scanPartition(tx *bolt.Tx, pk string, m matcher, desc bool, after *continuation, limit int) (store.Page, error) {
	prefix := partitionPrefix(pk)
	cur := tx.Bucket(c.name).Cursor()
	var k, v []byte
	switch {
	case !desc && after == nil:
		k, v = cur.Seek(prefix)
	case !desc:
		from := append(bytes.Clone(prefix), after.After...)
		if k, v = cur.Seek(from); bytes.Equal(k, from) {
			k, v = cur.Next()
		}
	default:
		// Descending: position on the first key past the range (or the token),
		// then step back.
		var bound []byte
		if after != nil {
			bound = append(bytes.Clone(prefix), after.After...)
		} else {
			bound = prefixEnd(prefix)
		}
		if bound == nil {
			k, v = cur.Last()
		} else if k, _ = cur.Seek(bound); k == nil {
			k, v = cur.Last()
		} else {
			k, v = cur.Prev()
		}
	}
	step := cur.Next
	if desc {
		step = cur.Prev
	}
	now := c.b.now()
	var page store.Page
	for ; k != nil && bytes.HasPrefix(k, prefix); k, v = step() {
		e, err := decodeEnvelope(v)
		if err != nil {
			return store.Page{}, fmt.Errorf("embedded: %s key %q: %w", c.spec.Name, k, err)
		}
		if c.ttlSeconds > 0 && e.expired(now) {
			continue
		}
		ok, err := m.match(e.body)
		if err != nil {
			return store.Page{}, fmt.Errorf("embedded: %s key %q: stored body: %w", c.spec.Name, k, err)
		}
		if !ok {
			continue
		}
		id := string(k[len(prefix):])
		if len(page.Items) == limit {
			// One more match exists: the page is full and not the last.
			last := page.Items[len(page.Items)-1]
			page.Continuation = encodeToken(continuation{After: last.ID})
			break
		}
		page.Items = append(page.Items, store.Item{ID: id, PartitionKey: pk, Body: withSystemProperties(e.body, e), ETag: e.etag})
	}
	return page, nil
}

// scanAll serves cross-partition queries, which only small reference
// containers allow: it gathers the matching documents of every partition and
// orders them by (id, partition key).
func (c *container) scanAll(tx *bolt.Tx, m matcher, desc bool, after *continuation, limit int) (store.Page, error) {
	type hit struct {
		pk, id string
		e      envelope
	}
	var hits []hit
	now := c.b.now()
	err := tx.Bucket(c.name).ForEach(func(k, v []byte) error {
		pk, id, err := splitKey(k)
		if err != nil {
			return fmt.Errorf("embedded: %s: %w", c.spec.Name, err)
		}
		e, err := decodeEnvelope(v)
		if err != nil {
			return fmt.Errorf("embedded: %s key %q: %w", c.spec.Name, k, err)
		}
		if c.ttlSeconds > 0 && e.expired(now) {
			return nil
		}
		ok, err := m.match(e.body)
		if err != nil || !ok {
			return err
		}
		hits = append(hits, hit{pk: pk, id: id, e: e})
		return nil
	})
	if err != nil {
		return store.Page{}, err
	}
	order := func(a, b hit) int { return cmp.Or(cmp.Compare(a.id, b.id), cmp.Compare(a.pk, b.pk)) }
	if desc {
		slices.SortFunc(hits, func(a, b hit) int { return order(b, a) })
	} else {
		slices.SortFunc(hits, order)
	}
	start := 0
	if after != nil {
		mark := hit{pk: after.PK, id: after.After}
		start, _ = slices.BinarySearchFunc(hits, mark, func(h, t hit) int {
			if desc {
				return order(t, h)
			}
			return order(h, t)
		})
		if start < len(hits) && hits[start].id == mark.id && hits[start].pk == mark.pk {
			start++
		}
	}
	var page store.Page
	for _, h := range hits[start:] {
		if len(page.Items) == limit {
			last := page.Items[len(page.Items)-1]
			page.Continuation = encodeToken(continuation{After: last.ID, PK: last.PartitionKey})
			break
		}
		page.Items = append(page.Items, store.Item{ID: h.id, PartitionKey: h.pk, Body: withSystemProperties(h.e.body, h.e), ETag: h.e.etag})
	}
	return page, nil
}

// Batch applies ops to one partition in one transaction. Every operation is
// checked before anything is written, so a refusal leaves the shared (group)
// commit untouched and the batch writes nothing.
func (c *container) Batch(ctx context.Context, partitionKey string, ops []store.Op) ([]string, error) {
	b := &preparedBatch{ops: ops}
	if err := c.prepareBatch(partitionKey, b); err != nil {
		return nil, err
	}
	err := c.b.write(ctx, func(tx *bolt.Tx) error {
		if err := c.applyBatch(tx, partitionKey, b); err != nil {
			return err
		}
		if b.refused != nil {
			return refuse(b.refused)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return b.etags, nil
}

// Batches applies several batches of one partition in one transaction (one
// commit), each all-or-nothing on its own: a refused batch writes nothing
// and the others are written. It implements store.MultiBatcher.
func (c *container) Batches(ctx context.Context, partitionKey string, batches [][]store.Op) ([][]string, []error) {
	bs := make([]*preparedBatch, len(batches))
	for i, ops := range batches {
		bs[i] = &preparedBatch{ops: ops}
	}
	// Checked concurrently, a batch per goroutine: the checks read every
	// body, and the caller (a sync run between two checkpoints) waits.
	invalid := make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Go(func() { invalid[i] = c.prepareBatch(partitionKey, b) })
	}
	wg.Wait()
	valid := 0
	for _, err := range invalid {
		if err == nil {
			valid++
		}
	}
	var err error
	if valid > 0 {
		err = c.b.write(ctx, func(tx *bolt.Tx) error {
			for i, b := range bs {
				if invalid[i] != nil {
					continue
				}
				if err := c.applyBatch(tx, partitionKey, b); err != nil {
					return err
				}
			}
			return nil
		})
	}
	etags := make([][]string, len(batches))
	errs := make([]error, len(batches))
	for i, b := range bs {
		switch {
		case invalid[i] != nil:
			errs[i] = invalid[i]
		case err != nil:
			errs[i] = err
		case b.refused != nil:
			errs[i] = b.refused
		default:
			etags[i] = b.etags
		}
	}
	return etags, errs
}

// preparedBatch is one batch on its way through a commit.
type preparedBatch struct {
	ops    []store.Op
	keys   [][]byte
	bodies [][]byte
	ttls   []int64
	// Set by applyBatch.
	etags   []string
	refused *store.BatchError
}

// prepareBatch checks a batch and its bodies, outside the writer.
func (c *container) prepareBatch(partitionKey string, b *preparedBatch) error {
	if err := store.ValidateBatch(b.ops); err != nil {
		return fmt.Errorf("embedded: batch %s/%s: %w", c.spec.Name, partitionKey, err)
	}
	n := len(b.ops)
	b.keys, b.bodies, b.ttls = make([][]byte, n), make([][]byte, n), make([]int64, n)
	for i, op := range b.ops {
		b.keys[i] = docKey(partitionKey, op.ID)
		if op.Kind == store.OpDelete {
			if err := checkKey(partitionKey, op.ID); err != nil {
				return fmt.Errorf("embedded: %s: %w", c.spec.Name, err)
			}
			continue
		}
		var err error
		if b.bodies[i], b.ttls[i], err = c.prepareBody(partitionKey, op.ID, op.Body); err != nil {
			return err
		}
	}
	return nil
}

// applyBatch checks every operation of b against what is stored, then, if
// none is refused, writes them all; a refusal is left in b.refused with
// nothing written. The error is a failure of the transaction itself.
// appendFill is how full bbolt leaves the pages it splits in a transaction
// where a batch goes in at one place among the stored keys (a sync page of new
// records, whose ids are ordered, written in id order: an append to their
// range). The pages behind such an insert are not written again, so leaving
// them half empty (bbolt's default, right for keys spread among stored ones)
// would only double the pages each commit writes and syncs.
const appendFill = 0.9

// inOnePlace reports whether no stored key lies between the smallest and the
// largest of keys (given in any order), so they all go in at one place.
func inOnePlace(cur *bolt.Cursor, keys [][]byte) bool {
	if len(keys) == 0 {
		return false
	}
	least, most := keys[0], keys[0]
	for _, k := range keys[1:] {
		if bytes.Compare(k, least) < 0 {
			least = k
		}
		if bytes.Compare(k, most) > 0 {
			most = k
		}
	}
	k, _ := cur.Seek(least)
	return k == nil || bytes.Compare(k, most) > 0
}

func (c *container) applyBatch(tx *bolt.Tx, partitionKey string, b *preparedBatch) error {
	b.etags, b.refused = nil, nil // a commit that failed is retried
	bucket := tx.Bucket(c.name)
	cur := bucket.Cursor() // one for every lookup: bucket.Get makes one per call
	if inOnePlace(cur, b.keys) {
		bucket.FillPercent = appendFill
	}
	now := c.b.now()
	olds := make([]*envelope, len(b.ops)) // the stored version each operation replaces
	for i, op := range b.ops {
		var v []byte
		if k, kv := cur.Seek(b.keys[i]); bytes.Equal(k, b.keys[i]) {
			v = kv
		}
		old, live, err := c.live(b.keys[i], v, now)
		if err != nil {
			return err
		}
		refuse := func(kind error, detail string) error {
			b.refused = &store.BatchError{Index: i, Op: op.Kind, ID: op.ID,
				Err: fmt.Errorf("embedded: %s %s/%s/%s%s: %w", op.Kind, c.spec.Name, partitionKey, op.ID, detail, kind)}
			return nil
		}
		switch op.Kind {
		case store.OpCreate:
			if live {
				return refuse(store.ErrConflict, "")
			}
		case store.OpReplace, store.OpDelete:
			if !live {
				return refuse(store.ErrNotFound, "")
			}
			if op.IfMatch != "" && op.IfMatch != old.etag {
				return refuse(store.ErrPreconditionFailed, fmt.Sprintf(" if-match %s (now %s)", op.IfMatch, old.etag))
			}
		}
		if old.etag != "" { // live, or expired but not yet swept: replaced in place
			olds[i] = &old
		}
	}
	b.etags = make([]string, len(b.ops))
	for i, op := range b.ops {
		if op.Kind == store.OpDelete {
			if err := c.unindex(tx, b.keys[i], olds[i]); err != nil {
				return err
			}
			if err := bucket.Delete(b.keys[i]); err != nil {
				return err
			}
			continue
		}
		etag, err := c.put(tx, b.keys[i], olds[i], b.bodies[i], b.ttls[i])
		if err != nil {
			return err
		}
		b.etags[i] = etag
	}
	return nil
}
