package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Operation label values of the store metrics.
const (
	opLabelCreate  = "create"
	opLabelRead    = "read"
	opLabelReplace = "replace"
	opLabelUpsert  = "upsert"
	opLabelDelete  = "delete"
	opLabelQuery   = "query"
	opLabelBatch   = "batch"
)

// storeMetrics are shared by every container of one instrumented backend.
type storeMetrics struct {
	duration  *prometheus.HistogramVec
	transient *prometheus.CounterVec
}

// Instrument wraps b so that every request is timed
// (store_request_duration_seconds by container and operation) and every
// request that failed for the store's own reasons is counted
// (store_request_transient_failures_total by container, operation and
// reason: throttled for 429s that outlasted the backend's retries,
// unavailable for 5xx, timeouts and lost connections). The caller owns
// reg; registering twice fails.
func Instrument(b Backend, reg prometheus.Registerer) (Backend, error) {
	m := &storeMetrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "store_request_duration_seconds",
			Help: "Duration of document store requests (retries included), by container and operation.",
			// A commit on local disk takes about a millisecond; a Cosmos request
			// a few; a throttled one waits for the service's hint.
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"container", "operation"}),
		transient: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "store_request_transient_failures_total",
			Help: "Document store requests that failed for the store's own reasons after its retries, by container, operation and reason (throttled, unavailable).",
		}, []string{"container", "operation", "reason"}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.duration, m.transient} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("store: register metrics: %w", err)
			}
		}
	}
	return &instrumentedBackend{Backend: b, m: m, containers: map[string]*instrumentedContainer{}}, nil
}

type instrumentedBackend struct {
	Backend
	m          *storeMetrics
	mu         sync.Mutex
	containers map[string]*instrumentedContainer
}

// Container returns the named container, instrumented (one wrapper per name).
func (b *instrumentedBackend) Container(name string) (Container, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c, ok := b.containers[name]; ok {
		return c, nil
	}
	inner, err := b.Backend.Container(name)
	if err != nil {
		return nil, err
	}
	c := &instrumentedContainer{next: inner, name: name, m: b.m, ops: map[string]prometheus.Observer{}}
	for _, op := range []string{opLabelCreate, opLabelRead, opLabelReplace, opLabelUpsert, opLabelDelete, opLabelQuery, opLabelBatch} {
		c.ops[op] = b.m.duration.WithLabelValues(name, op)
	}
	b.containers[name] = c
	return c, nil
}

type instrumentedContainer struct {
	next Container
	name string
	m    *storeMetrics
	ops  map[string]prometheus.Observer // read-only after construction
}

var _ Container = (*instrumentedContainer)(nil)

// observe records one request that started at start and ended with err.
func (c *instrumentedContainer) observe(op string, start time.Time, err error) {
	c.ops[op].Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
	case errors.Is(err, ErrThrottled):
		c.m.transient.WithLabelValues(c.name, op, "throttled").Inc()
	case errors.Is(err, ErrUnavailable):
		c.m.transient.WithLabelValues(c.name, op, "unavailable").Inc()
	}
}

func (c *instrumentedContainer) Create(ctx context.Context, partitionKey, id string, body []byte) (string, error) {
	start := time.Now()
	etag, err := c.next.Create(ctx, partitionKey, id, body)
	c.observe(opLabelCreate, start, err)
	return etag, err
}

func (c *instrumentedContainer) Read(ctx context.Context, partitionKey, id string) (Item, error) {
	start := time.Now()
	it, err := c.next.Read(ctx, partitionKey, id)
	c.observe(opLabelRead, start, err)
	return it, err
}

func (c *instrumentedContainer) Replace(ctx context.Context, partitionKey, id string, body []byte, ifMatch string) (string, error) {
	start := time.Now()
	etag, err := c.next.Replace(ctx, partitionKey, id, body, ifMatch)
	c.observe(opLabelReplace, start, err)
	return etag, err
}

func (c *instrumentedContainer) Upsert(ctx context.Context, partitionKey, id string, body []byte) (string, error) {
	start := time.Now()
	etag, err := c.next.Upsert(ctx, partitionKey, id, body)
	c.observe(opLabelUpsert, start, err)
	return etag, err
}

func (c *instrumentedContainer) Delete(ctx context.Context, partitionKey, id string, ifMatch string) error {
	start := time.Now()
	err := c.next.Delete(ctx, partitionKey, id, ifMatch)
	c.observe(opLabelDelete, start, err)
	return err
}

func (c *instrumentedContainer) Query(ctx context.Context, q Query) (Page, error) {
	start := time.Now()
	page, err := c.next.Query(ctx, q)
	c.observe(opLabelQuery, start, err)
	return page, err
}

// Batches keeps the container's MultiBatcher (when it has one) visible
// through the instrumentation; it is timed as one batch request.
func (c *instrumentedContainer) Batches(ctx context.Context, partitionKey string, batches [][]Op) ([][]string, []error) {
	start := time.Now()
	var etags [][]string
	var errs []error
	if mb, ok := c.next.(MultiBatcher); ok {
		etags, errs = mb.Batches(ctx, partitionKey, batches)
	} else {
		etags, errs = concurrentBatches(ctx, c.next, partitionKey, batches)
	}
	c.observe(opLabelBatch, start, errors.Join(errs...))
	return etags, errs
}

func (c *instrumentedContainer) Batch(ctx context.Context, partitionKey string, ops []Op) ([]string, error) {
	start := time.Now()
	etags, err := c.next.Batch(ctx, partitionKey, ops)
	c.observe(opLabelBatch, start, err)
	return etags, err
}

// timedManyReader times a ReadMany as one read request of its container.
type timedManyReader struct {
	c    *instrumentedContainer
	next ManyReader
}

func (t timedManyReader) ReadMany(ctx context.Context, partitionKey string, ids []string) ([]Item, error) {
	start := time.Now()
	items, err := t.next.ReadMany(ctx, partitionKey, ids)
	t.c.observe(opLabelRead, start, err)
	return items, err
}
