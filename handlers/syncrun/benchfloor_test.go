package syncrun_test

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/castiel/integration-manager/connector/fakeapi"
)

// floorWork is how much of a sync's work a plain-library floor does.
type floorWork int

const (
	// floorBare keeps each record and its hash: less than any sync can do.
	floorBare floorWork = iota
	// floorRequired does, per record, what the issue asks of every sync and
	// no more: map it (the bench task's mapping, written out by hand), hash
	// it, keep it and a state holding both sides' hashes and the base
	// snapshot a three-way merge needs (the record's bytes again), and keep a
	// checkpoint with every page.
	floorRequired
)

// plainPull is the least a first pull can do with what it reads, written with the
// plain libraries and nothing of ours: page the fake with net/http and
// encoding/json (as rawPagedRead does) and, overlapping the next page's read, keep
// each page durably in one bbolt transaction (fsync): every record as JSON under
// its id, and beside it under the same id its content hash (floorBare) or its
// sync state (floorRequired, which also maps the record and keeps a checkpoint).
// No shard schema, no execution record. It shows what share of the raw read any
// pull that stores what it reads (floorBare), or that stores what the issue
// requires (floorRequired), can reach here.
func plainPull(b *testing.B, srv *fakeapi.Server, work floorWork) time.Duration {
	b.Helper()
	db, records, hashes := openPlainDB(b, "plain-pull.db")
	// A page is encoded (mapped, marshalled, hashed) on a goroutine of its
	// own while the next is read, and committed on another while the one
	// after it is encoded: the commit, which cannot be shared, does no more
	// than put what is ready.
	type kv struct{ id, doc, kept []byte }
	encode := func(page []map[string]any) ([]kv, error) {
		out := make([]kv, len(page))
		for i, r := range page {
			if work == floorRequired {
				mapToCastiel(r)
			}
			doc, err := json.Marshal(r)
			if err != nil {
				return nil, err
			}
			id, _ := r["id"].(string)
			sum := sha256.Sum256(doc)
			kept := sum[:]
			if work == floorRequired {
				kept = appendFloorState(nil, sum, sum, doc)
			}
			out[i] = kv{[]byte(id), doc, kept}
		}
		return out, nil
	}
	store := func(page []kv) error {
		return db.Update(func(tx *bolt.Tx) error {
			recs, sums := tx.Bucket(records), tx.Bucket(hashes)
			for _, r := range page {
				if err := recs.Put(r.id, r.doc); err != nil {
					return err
				}
				if err := sums.Put(r.id, r.kept); err != nil {
					return err
				}
			}
			if work == floorRequired && len(page) > 0 {
				return recs.Put([]byte(checkpointKey), fmt.Appendf(nil, `{"after":%q,"records":%d}`, page[len(page)-1].id, len(page)))
			}
			return nil
		})
	}

	start := time.Now()
	encoded, stored := behind(store)
	pages, done := behind(func(page []map[string]any) error {
		kvs, err := encode(page)
		if err == nil {
			encoded <- kvs
		}
		return err
	})
	n, err := srv.RawPages(benchPageSize, func(page []map[string]any) { pages <- page })
	err = cmp.Or(err, done(), stored())
	took := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if n != benchRecords {
		b.Fatalf("plain pull read %d records, want %d", n, benchRecords)
	}
	var kept int
	if err := db.View(func(tx *bolt.Tx) error { kept = tx.Bucket(records).Stats().KeyN; return nil }); err != nil {
		b.Fatal(err)
	}
	if work == floorRequired {
		kept-- // the checkpoint
	}
	if kept != benchRecords {
		b.Fatalf("plain pull kept %d records, want %d", kept, benchRecords)
	}
	return took
}

// checkpointKey is where floorRequired keeps its checkpoint: after the
// records' ids.
const checkpointKey = "~checkpoint"

// mapToCastiel maps a record of the fake in place as the bench task's
// mapping does (testMapping).
func mapToCastiel(r map[string]any) {
	r["fullName"], r["contact"], r["source"] = r["name"], map[string]any{"email": r["email"]}, "fake-crm"
	delete(r, "name")
	delete(r, "email")
	delete(r, "deleted")
}

// mapToExternal is mapToCastiel's inverse.
func mapToExternal(r map[string]any) {
	r["name"] = r["fullName"]
	if c, ok := r["contact"].(map[string]any); ok {
		r["email"] = c["email"]
	}
	delete(r, "fullName")
	delete(r, "contact")
	delete(r, "source")
}

// appendFloorState appends a record's sync state as floorRequired keeps it.
func appendFloorState(b []byte, external, internal [sha256.Size]byte, base []byte) []byte {
	b = append(b, `{"externalHash":"`...)
	b = hex.AppendEncode(b, external[:])
	b = append(b, `","internalHash":"`...)
	b = hex.AppendEncode(b, internal[:])
	b = append(b, `","baseSnapshot":`...)
	b = append(b, base...)
	return append(b, '}')
}

// pushKeeping is when plainPush makes the hashes of what it POSTed durable.
type pushKeeping int

const (
	// keepPerPage: one commit per page, overlapping the next page's POSTs. A
	// kill may lose up to two pages of hashes, so a resumed push would POST
	// those records again.
	keepPerPage pushKeeping = iota
	// keepPerPost: each hash goes into the next group commit as soon as its
	// POST returns (one commit in flight, the hashes that arrive meanwhile
	// gathered into the next), as the sync worker keeps a push's state: a
	// kill loses only the hashes of the POSTs in flight, which is what "a
	// resumed run writes no record twice" asks of a push.
	keepPerPost
)

// plainPush is the least a push can do, written with the plain libraries and
// nothing of ours: n records kept in bbolt are read a page at a time, each page
// POSTed to the fake 16 at a time (as rawPost does), and for every record it
// took, kept durably in bbolt as keeping says, its content hash (floorBare: what
// a later run needs to tell a change) or its sync state (floorRequired: the
// record is also decoded, mapped to the API's shape, and the API's answer read
// and mapped back, so the state holds the hash of each side and the base
// snapshot). No shard schema, no checkpoint, no execution record.
func plainPush(b *testing.B, srv *fakeapi.Server, n int, keeping pushKeeping, work floorWork) time.Duration {
	b.Helper()
	db, records, hashes := openPlainDB(b, "plain-push.db")
	if err := db.Update(func(tx *bolt.Tx) error {
		recs := tx.Bucket(records)
		for i := range n {
			id := fmt.Sprintf("plain-%07d", i)
			doc := fmt.Sprintf(`{"id":%q,"name":"Plain %d","email":"plain%d@example.com"}`, id, i, i)
			if work == floorRequired {
				doc = fmt.Sprintf(`{"contact":{"email":"plain%d@example.com"},"fullName":"Plain %d","id":%q,"source":"fake-crm"}`, i, i, id)
			}
			if err := recs.Put([]byte(id), []byte(doc)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	// kv is a record read, and what is kept of it once POSTed.
	type kv struct{ id, doc, kept []byte }
	keep := func(page []kv) error {
		return db.Update(func(tx *bolt.Tx) error {
			sums := tx.Bucket(hashes)
			for _, r := range page {
				if err := sums.Put(r.id, r.kept); err != nil {
					return err
				}
			}
			return nil
		})
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	post := func(r *kv) error {
		body := r.doc
		if work == floorRequired {
			var rec map[string]any
			if err := json.Unmarshal(r.doc, &rec); err != nil {
				return err
			}
			mapToExternal(rec)
			var err error
			if body, err = json.Marshal(rec); err != nil {
				return err
			}
		}
		resp, err := hc.Post(srv.URL+"/api/contacts", "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("plain push: HTTP %d", resp.StatusCode)
		}
		if work == floorBare {
			_, _ = io.Copy(io.Discard, resp.Body)
			sum := sha256.Sum256(r.doc)
			r.kept = sum[:]
			return nil
		}
		var answer map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
			return err
		}
		mapToCastiel(answer)
		external, err := json.Marshal(answer)
		if err != nil {
			return err
		}
		r.kept = appendFloorState(nil, sha256.Sum256(external), sha256.Sum256(r.doc), r.doc)
		return nil
	}
	var (
		pushed chan<- []kv // keepPerPage: each page whose POSTs returned
		posted chan<- kv   // keepPerPost: each record whose POST returned
		kept   func() error
	)
	pushPage := func(page []kv) error {
		next := make(chan int)
		errs := make([]error, 16)
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for i := range next {
					if err := post(&page[i]); err != nil {
						errs[w] = cmp.Or(errs[w], err)
						continue
					}
					if posted != nil {
						posted <- page[i]
					}
				}
			})
		}
		for i := range page {
			next <- i
		}
		close(next)
		wg.Wait()
		return errors.Join(errs...)
	}

	start := time.Now()
	if keeping == keepPerPage {
		pushed, kept = behind(keep)
	} else {
		posted, kept = groupCommitted(keep)
	}
	// A page is read in a read transaction of its own: one held across the
	// run would keep the concurrent commits from growing the file's mapping.
	readPage := func(after []byte) ([]kv, error) {
		var page []kv
		err := db.View(func(tx *bolt.Tx) error {
			cur := tx.Bucket(records).Cursor()
			k, v := cur.First()
			if after != nil {
				if k, v = cur.Seek(after); bytes.Equal(k, after) {
					k, v = cur.Next()
				}
			}
			for ; k != nil && len(page) < benchPageSize; k, v = cur.Next() {
				page = append(page, kv{id: bytes.Clone(k), doc: bytes.Clone(v)})
			}
			return nil
		})
		return page, err
	}
	var after []byte
	var err error
	for {
		var page []kv
		if page, err = readPage(after); err != nil || len(page) == 0 {
			break
		}
		if err = pushPage(page); err != nil {
			break
		}
		if pushed != nil {
			pushed <- page
		}
		after = page[len(page)-1].id
	}
	err = cmp.Or(err, kept())
	took := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	var hashed int
	if err := db.View(func(tx *bolt.Tx) error { hashed = tx.Bucket(hashes).Stats().KeyN; return nil }); err != nil {
		b.Fatal(err)
	}
	if hashed != n {
		b.Fatalf("plain push kept %d hashes, want %d", hashed, n)
	}
	return took
}

// groupCommitted keeps what is sent to items with keep, group commit style:
// one keep at a time, the items that arrive meanwhile gathered into the next,
// a batch of fewer than 16 (the POSTs in flight) waiting up to 1 ms for more,
// as the sync worker's state writer does; done ends the items and returns the
// first error.
func groupCommitted[T any](keep func([]T) error) (items chan<- T, done func() error) {
	ch := make(chan T, 1024)
	result := make(chan error, 1)
	go func() {
		var err error
		for first := range ch {
			batch := []T{first}
			wait := time.NewTimer(time.Millisecond)
		gather:
			for len(batch) < 16 {
				select {
				case it, ok := <-ch:
					if !ok {
						break gather
					}
					batch = append(batch, it)
				case <-wait.C:
					break gather
				}
			}
			wait.Stop()
		more: // whatever else is already there
			for {
				select {
				case it, ok := <-ch:
					if !ok {
						break more
					}
					batch = append(batch, it)
				default:
					break more
				}
			}
			if err == nil {
				err = keep(batch)
			}
		}
		result <- err
	}()
	return ch, func() error { close(ch); return <-result }
}

// openPlainDB opens a bbolt file of the test's, with the embedded store's
// options, holding empty records and hashes buckets; closed when the test ends.
func openPlainDB(b *testing.B, name string) (db *bolt.DB, records, hashes []byte) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), name), 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	records, hashes = []byte("records"), []byte("hashes")
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{records, hashes} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	return db, records, hashes
}

// behind runs keep on each page sent to pages, in order, on a goroutine of its
// own, so a page's commit overlaps the work on the next; done ends the pages
// and returns the first error (keep is not called after it).
func behind[T any](keep func(T) error) (pages chan<- T, done func() error) {
	ch := make(chan T, 1)
	result := make(chan error, 1)
	go func() {
		var err error
		for page := range ch {
			if err == nil {
				err = keep(page)
			}
		}
		result <- err
	}()
	return ch, func() error { close(ch); return <-result }
}
