package syncrun_test

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"path/filepath"
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
	db, err := bolt.Open(filepath.Join(b.TempDir(), "plain-pull.db"), 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	records, hashes := []byte("records"), []byte("hashes")
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
	pages := make(chan []map[string]any, 1)
	stored := make(chan error, 1)
	go func() {
		var err error
		for page := range pages {
			if err == nil {
				err = store(page)
			}
		}
		stored <- err
	}()
	n, err := srv.RawPages(benchPageSize, func(page []map[string]any) { pages <- page })
	close(pages)
	if err := <-stored; err != nil {
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
