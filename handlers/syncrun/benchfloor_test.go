package syncrun_test

import (
	"bytes"
	"cmp"
	"crypto/sha256"
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

// plainPull is the least a first pull can do with what it reads, written with the
// plain libraries and nothing of ours: page the fake with net/http and
// encoding/json (as rawPagedRead does) and, overlapping the next page's read, keep
// each page durably in one bbolt transaction (fsync): every record as JSON under
// its id, and its content hash under the same id beside it (what a later run needs
// to tell a change). No mapping, no shard schema, no checkpoint, no execution
// record. It shows what share of the raw read any pull that stores what it reads
// can reach here.
func plainPull(b *testing.B, srv *fakeapi.Server) time.Duration {
	b.Helper()
	db, records, hashes := openPlainDB(b, "plain-pull.db")
	store := func(page []map[string]any) error {
		return db.Update(func(tx *bolt.Tx) error {
			recs, sums := tx.Bucket(records), tx.Bucket(hashes)
			for _, r := range page {
				doc, err := json.Marshal(r)
				if err != nil {
					return err
				}
				id, _ := r["id"].(string)
				sum := sha256.Sum256(doc)
				if err := recs.Put([]byte(id), doc); err != nil {
					return err
				}
				if err := sums.Put([]byte(id), sum[:]); err != nil {
					return err
				}
			}
			return nil
		})
	}

	start := time.Now()
	pages, stored := behind(store)
	n, err := srv.RawPages(benchPageSize, func(page []map[string]any) { pages <- page })
	if err := stored(); err != nil {
		b.Fatal(fmt.Errorf("plain pull: store: %w", err))
	}
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
	if kept != benchRecords {
		b.Fatalf("plain pull kept %d records, want %d", kept, benchRecords)
	}
	return took
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
// POSTed to the fake 16 at a time (as rawPost does), and the content hash of
// every record it took kept durably in bbolt (what a later run needs to tell a
// change) as keeping says. No mapping, no shard schema, no reading of the
// answer, no checkpoint, no execution record.
func plainPush(b *testing.B, srv *fakeapi.Server, n int, keeping pushKeeping) time.Duration {
	b.Helper()
	db, records, hashes := openPlainDB(b, "plain-push.db")
	if err := db.Update(func(tx *bolt.Tx) error {
		recs := tx.Bucket(records)
		for i := range n {
			id := fmt.Sprintf("plain-%07d", i)
			doc := fmt.Sprintf(`{"id":%q,"name":"Plain %d","email":"plain%d@example.com"}`, id, i, i)
			if err := recs.Put([]byte(id), []byte(doc)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		b.Fatal(err)
	}
	type kv struct{ id, doc []byte }
	keep := func(page []kv) error {
		return db.Update(func(tx *bolt.Tx) error {
			sums := tx.Bucket(hashes)
			for _, r := range page {
				sum := sha256.Sum256(r.doc)
				if err := sums.Put(r.id, sum[:]); err != nil {
					return err
				}
			}
			return nil
		})
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	post := func(doc []byte) error {
		resp, err := hc.Post(srv.URL+"/api/contacts", "application/json", bytes.NewReader(doc))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("plain push: HTTP %d", resp.StatusCode)
		}
		return nil
	}
	var (
		pushed chan<- []kv // keepPerPage: each page whose POSTs returned
		posted chan<- kv   // keepPerPost: each record whose POST returned
		kept   func() error
	)
	pushPage := func(page []kv) error {
		next := make(chan kv)
		errs := make([]error, 16)
		var wg sync.WaitGroup
		for w := range 16 {
			wg.Go(func() {
				for r := range next {
					if err := post(r.doc); err != nil {
						errs[w] = cmp.Or(errs[w], err)
						continue
					}
					if posted != nil {
						posted <- r
					}
				}
			})
		}
		for _, r := range page {
			next <- r
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
				page = append(page, kv{bytes.Clone(k), bytes.Clone(v)})
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
