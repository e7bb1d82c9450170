// Package embedded is the standalone-mode store: every container lives in one
// bbolt file on local disk, with the same semantics as the Cosmos backend
// (create conflicts, If-Match, TTL expiry, keyset pages), so code written
// against store.Container runs unchanged on a laptop.
//
// Writes are durable when they return (one fsync per commit). Concurrent
// writers share commits: while one transaction is being written, the writes
// that arrive queue up and go into the next transaction together (group
// commit), so throughput grows with concurrency while a lone writer waits for
// nobody.
package embedded

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/castiel/integration-manager/store"
)

// Bucket names the backend keeps beside the containers' buckets. Container
// names may not start with "_", so they never collide.
const (
	metaBucket   = "_meta"   // container name -> persisted spec
	expiryBucket = "_expiry" // one sub-bucket per container: expireAt|docKey -> nil
)

const (
	// lockTimeout bounds the wait for the file lock: a second process opening
	// the same file fails instead of hanging.
	lockTimeout = 2 * time.Second
	// maxBatch bounds how many queued writes share one commit.
	maxBatch = 256
	// sweepChunk bounds the deletions of expired documents per transaction so
	// the sweeper never holds the single writer for long.
	sweepChunk = 500
	// defaultSweepInterval: expired documents are invisible at once; the sweep
	// only reclaims their space.
	defaultSweepInterval = time.Minute
	// initialMmapSize: 1 GiB of address space on 64-bit platforms (a 32-bit
	// one could not map it; there the file grows its mapping as it goes).
	initialMmapSize = (strconv.IntSize / 64) << 30
)

// Option adjusts Open.
type Option func(*config)

type config struct {
	sweepInterval time.Duration
	now           func() time.Time
}

// WithSweepInterval sets how often expired documents are deleted from the file.
func WithSweepInterval(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.sweepInterval = d
		}
	}
}

// WithClock replaces time.Now, for tests of expiry.
func WithClock(now func() time.Time) Option {
	return func(c *config) {
		if now != nil {
			c.now = now
		}
	}
}

// Backend is a store.Backend on one bbolt file.
type Backend struct {
	db         *bolt.DB
	path       string
	now        func() time.Time
	containers map[string]*container

	writes     chan *writeOp
	stop       chan struct{}
	closeOnce  sync.Once
	closeErr   error
	background sync.WaitGroup
}

var _ store.Backend = (*Backend)(nil)

// persistedSpec is what the file remembers of a container, so a reopen with a
// different partition key is refused rather than silently misreading data.
type persistedSpec struct {
	PartitionKey   string `json:"partitionKey"`
	TTLSeconds     int64  `json:"ttlSeconds"`
	CrossPartition bool   `json:"crossPartition"`
}

// Open opens (creating if needed) the database file at path with the given
// containers. Containers already in the file keep their documents; a spec
// may change its TTL or cross-partition flag but not its partition key.
func Open(path string, specs []store.ContainerSpec, opts ...Option) (*Backend, error) {
	cfg := config{sweepInterval: defaultSweepInterval, now: time.Now}
	for _, o := range opts {
		o(&cfg)
	}
	if len(specs) == 0 {
		return nil, errors.New("embedded: open: no container specs")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout: lockTimeout,
		// The freelist is rebuilt on open instead of written on every commit:
		// fewer pages per fsync.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// Growing the file past the mapping remaps it, and a remap waits for
		// every open read transaction: with a large initial mapping (address
		// space only, not memory) readers never hold the writer up.
		InitialMmapSize: initialMmapSize,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s (is another process using it?): %w", path, err)
	}
	b := &Backend{
		db:         db,
		path:       path,
		now:        cfg.now,
		containers: make(map[string]*container, len(specs)),
		writes:     make(chan *writeOp),
		stop:       make(chan struct{}),
	}
	if err := b.declare(specs); err != nil {
		_ = db.Close()
		return nil, err
	}
	b.background.Add(2)
	go b.writer()
	go b.sweeper(cfg.sweepInterval)
	return b, nil
}

// declare validates the specs, creates their buckets and records them.
func (b *Backend) declare(specs []store.ContainerSpec) error {
	for _, s := range specs {
		switch {
		case s.Name == "" || strings.HasPrefix(s.Name, "_"):
			return fmt.Errorf("embedded: container name %q: must be non-empty and not start with \"_\"", s.Name)
		case s.PartitionKey == "" || strings.Contains(s.PartitionKey, "/"):
			return fmt.Errorf("embedded: container %s: partition key %q must be one top-level property without a slash", s.Name, s.PartitionKey)
		case s.TTL < 0:
			return fmt.Errorf("embedded: container %s: negative TTL %v", s.Name, s.TTL)
		}
		if _, dup := b.containers[s.Name]; dup {
			return fmt.Errorf("embedded: container %s declared twice", s.Name)
		}
		b.containers[s.Name] = &container{
			b:          b,
			spec:       s,
			name:       []byte(s.Name),
			ttlSeconds: int64(math.Ceil(s.TTL.Seconds())),
		}
	}
	err := b.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists([]byte(metaBucket))
		if err != nil {
			return err
		}
		expiry, err := tx.CreateBucketIfNotExists([]byte(expiryBucket))
		if err != nil {
			return err
		}
		for name, c := range b.containers {
			if old := meta.Get(c.name); old != nil {
				var prev persistedSpec
				if err := json.Unmarshal(old, &prev); err != nil {
					return fmt.Errorf("container %s: stored spec unreadable: %w", name, err)
				}
				if prev.PartitionKey != c.spec.PartitionKey {
					return fmt.Errorf("container %s holds documents partitioned by %q; it cannot be reopened partitioned by %q",
						name, prev.PartitionKey, c.spec.PartitionKey)
				}
			}
			if _, err := tx.CreateBucketIfNotExists(c.name); err != nil {
				return err
			}
			if _, err := expiry.CreateBucketIfNotExists(c.name); err != nil {
				return err
			}
			rec, err := json.Marshal(persistedSpec{PartitionKey: c.spec.PartitionKey, TTLSeconds: c.ttlSeconds, CrossPartition: c.spec.CrossPartition})
			if err != nil {
				return err
			}
			if err := meta.Put(c.name, rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("embedded: declare containers in %s: %w", b.path, err)
	}
	return nil
}

// Container returns the named container.
func (b *Backend) Container(name string) (store.Container, error) {
	c, ok := b.containers[name]
	if !ok {
		return nil, fmt.Errorf("embedded: unknown container %q (not among the specs the store was opened with)", name)
	}
	return c, nil
}

// DeclaredTTL reads from the file the retention recorded for a container
// (0 when expiry is off), so tests can check the file itself, not the spec.
func (b *Backend) DeclaredTTL(name string) (time.Duration, error) {
	var ttl time.Duration
	err := b.view(func(tx *bolt.Tx) error {
		raw := tx.Bucket([]byte(metaBucket)).Get([]byte(name))
		if raw == nil {
			return fmt.Errorf("embedded: container %s is not declared in %s", name, b.path)
		}
		var s persistedSpec
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("embedded: container %s: stored spec unreadable: %w", name, err)
		}
		ttl = time.Duration(s.TTLSeconds) * time.Second
		return nil
	})
	return ttl, err
}

// Ping checks the file is open and readable.
func (b *Backend) Ping(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.view(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte(metaBucket)) == nil {
			return fmt.Errorf("embedded: %s: %w: metadata bucket missing", b.path, store.ErrUnavailable)
		}
		return nil
	})
}

// Close stops the sweeper and the writer (queued writes still commit) and
// closes the file. Later calls return ErrUnavailable-wrapped errors.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		close(b.stop)
		b.background.Wait()
		b.closeErr = b.db.Close()
	})
	return b.closeErr
}

func (b *Backend) closed() bool {
	select {
	case <-b.stop:
		return true
	default:
		return false
	}
}

func (b *Backend) errClosed() error {
	return fmt.Errorf("embedded: %s is closed: %w", b.path, store.ErrUnavailable)
}

// view runs a read transaction; failures of the file itself are ErrUnavailable.
func (b *Backend) view(fn func(tx *bolt.Tx) error) error {
	if b.closed() {
		return b.errClosed()
	}
	var fnErr error
	err := b.db.View(func(tx *bolt.Tx) error {
		fnErr = fn(tx)
		return fnErr
	})
	if err != nil && (fnErr == nil || !errors.Is(err, fnErr)) {
		return fmt.Errorf("embedded: read %s: %w: %w", b.path, store.ErrUnavailable, err)
	}
	return err
}

// writeOp is one write waiting for a commit. apply runs inside the shared
// transaction: it returns a refusal (an outcome that wrote nothing, such as a
// conflict) or nil after writing; any other error aborts the transaction.
type writeOp struct {
	apply func(tx *bolt.Tx) error
	done  chan error
}

// refusal marks the outcome of a write that changed nothing (not found,
// conflict, precondition failed), so the shared transaction goes on.
type refusal struct{ err error }

func (r refusal) Error() string { return r.err.Error() }

func refuse(err error) error { return refusal{err: err} }

// write hands apply to the writer goroutine and waits for its commit. Once a
// write is queued the caller waits for the truth about it, even if ctx ends.
func (b *Backend) write(ctx context.Context, apply func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &writeOp{apply: apply, done: make(chan error, 1)}
	select {
	case b.writes <- op:
	case <-b.stop:
		return b.errClosed()
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-op.done
}

// writer is the single goroutine that commits: it takes one queued write,
// gathers every other write already waiting, and commits them together.
func (b *Backend) writer() {
	defer b.background.Done()
	for {
		var first *writeOp
		select {
		case first = <-b.writes:
		case <-b.stop:
			return
		}
		batch := []*writeOp{first}
	gather:
		for len(batch) < maxBatch {
			select {
			case op := <-b.writes:
				batch = append(batch, op)
			default:
				break gather
			}
		}
		b.commit(batch)
	}
}

// commit applies a batch in one transaction. If the transaction fails, each
// write is retried alone so one bad write cannot fail its neighbours.
func (b *Backend) commit(batch []*writeOp) {
	results := make([]error, len(batch))
	err := b.db.Update(func(tx *bolt.Tx) error {
		for i, op := range batch {
			err := op.apply(tx)
			var r refusal
			switch {
			case errors.As(err, &r):
				results[i] = r.err
			case err != nil:
				return err
			default:
				results[i] = nil
			}
		}
		return nil
	})
	if err == nil {
		for i, op := range batch {
			op.done <- results[i]
		}
		return
	}
	if len(batch) == 1 {
		batch[0].done <- fmt.Errorf("embedded: write %s: %w: %w", b.path, store.ErrUnavailable, err)
		return
	}
	for _, op := range batch {
		b.commit([]*writeOp{op})
	}
}

// sweeper deletes expired documents periodically until Close.
func (b *Backend) sweeper(every time.Duration) {
	defer b.background.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-b.stop:
			return
		case <-t.C:
			// A failed sweep is retried at the next tick; expired documents
			// stay invisible meanwhile.
			_, _ = b.sweep(context.Background())
		}
	}
}

// sweep deletes every document whose expiry has passed and reports how many.
func (b *Backend) sweep(ctx context.Context) (int, error) {
	total := 0
	for _, c := range b.containers {
		if c.ttlSeconds == 0 {
			continue
		}
		for {
			var n int
			err := b.write(ctx, func(tx *bolt.Tx) error {
				var err error
				n, err = c.deleteExpired(tx, b.now(), sweepChunk)
				return err
			})
			total += n
			if err != nil {
				return total, err
			}
			if n < sweepChunk {
				break
			}
		}
	}
	return total, nil
}
