package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
)

// MaxBatchOps is the most operations one Batch may carry: Cosmos DB's limit
// for a transactional batch, enforced by every backend so code that works
// standalone works on Cosmos. Callers with more split them (SplitOps).
const MaxBatchOps = 100

// OpKind is what one operation of a batch does.
type OpKind uint8

// The operations of a batch, with the semantics of the Container method of
// the same name.
const (
	OpCreate OpKind = iota + 1
	OpUpsert
	OpReplace
	OpDelete
)

func (k OpKind) String() string {
	switch k {
	case OpCreate:
		return "create"
	case OpUpsert:
		return "upsert"
	case OpReplace:
		return "replace"
	case OpDelete:
		return "delete"
	}
	return fmt.Sprintf("op(%d)", uint8(k))
}

// Op is one operation of a batch on a document of the batch's partition.
type Op struct {
	Kind    OpKind
	ID      string
	Body    []byte // Create, Upsert, Replace: the document, as for the single-document methods
	IfMatch string // Replace, Delete: "" writes unconditionally
}

// CreateOp creates a document (the batch fails with ErrConflict if it exists).
func CreateOp(id string, body []byte) Op { return Op{Kind: OpCreate, ID: id, Body: body} }

// UpsertOp creates or overwrites a document.
func UpsertOp(id string, body []byte) Op { return Op{Kind: OpUpsert, ID: id, Body: body} }

// ReplaceOp overwrites an existing document, conditionally on ifMatch when set.
func ReplaceOp(id string, body []byte, ifMatch string) Op {
	return Op{Kind: OpReplace, ID: id, Body: body, IfMatch: ifMatch}
}

// DeleteOp removes an existing document, conditionally on ifMatch when set.
func DeleteOp(id, ifMatch string) Op { return Op{Kind: OpDelete, ID: id, IfMatch: ifMatch} }

// EncodeOp encodes doc as one operation of a batch and returns the partition
// the batch must be sent to.
func EncodeOp[T Keyed](kind OpKind, doc T, ifMatch string) (partitionKey string, op Op, err error) {
	pk, id := doc.Key()
	op = Op{Kind: kind, ID: id, IfMatch: ifMatch}
	if kind != OpDelete {
		if op.Body, err = json.Marshal(doc); err != nil {
			return "", Op{}, fmt.Errorf("encode %s: %w", id, err)
		}
	}
	return pk, op, nil
}

// BatchError is the refusal of one operation, which made the whole batch
// write nothing. Err wraps the store sentinel (ErrConflict, ErrNotFound,
// ErrPreconditionFailed, ...), so errors.Is works on a BatchError directly.
type BatchError struct {
	Index int // the refused operation's position in the batch
	Op    OpKind
	ID    string
	Err   error
}

func (e *BatchError) Error() string {
	return fmt.Sprintf("batch operation %d (%s %s) refused, nothing written: %v", e.Index, e.Op, e.ID, e.Err)
}

func (e *BatchError) Unwrap() error { return e.Err }

// ValidateBatch checks what every backend refuses alike, before anything is
// sent: an empty or oversized batch, an unknown kind, a missing id or body,
// and an id written twice (the order of two writes to one document in one
// transaction is not something callers should depend on).
func ValidateBatch(ops []Op) error {
	switch {
	case len(ops) == 0:
		return errors.New("store: empty batch")
	case len(ops) > MaxBatchOps:
		return fmt.Errorf("store: batch of %d operations exceeds the limit of %d", len(ops), MaxBatchOps)
	}
	seen := make(map[string]struct{}, len(ops))
	for i, op := range ops {
		switch op.Kind {
		case OpCreate, OpUpsert, OpReplace:
			if len(op.Body) == 0 {
				return fmt.Errorf("store: batch operation %d (%s %s) has no body", i, op.Kind, op.ID)
			}
		case OpDelete:
		default:
			return fmt.Errorf("store: batch operation %d: unknown kind %d", i, op.Kind)
		}
		if op.ID == "" {
			return fmt.Errorf("store: batch operation %d (%s) has no id", i, op.Kind)
		}
		if _, dup := seen[op.ID]; dup {
			return fmt.Errorf("store: batch writes document %s twice (operation %d)", op.ID, i)
		}
		seen[op.ID] = struct{}{}
	}
	return nil
}

// MultiBatcher is a Container that can apply several batches of one
// partition in one durable write, each all-or-nothing on its own (the
// embedded store: one transaction). It returns each batch's ETags or error.
type MultiBatcher interface {
	Batches(ctx context.Context, partitionKey string, batches [][]Op) ([][]string, []error)
}

// WriteBatches writes ops of one partition, however many, in batches of at
// most MaxBatchOps, each all-or-nothing, sent together: a MultiBatcher commits
// them in one durable write, any other container gets them concurrently (Cosmos:
// one TransactionalBatch each). It returns the batches (as SplitOps cuts them)
// with each one's ETags or error.
func WriteBatches(ctx context.Context, c Container, partitionKey string, ops []Op) (batches [][]Op, etags [][]string, errs []error) {
	batches = SplitOps(ops)
	if mb, ok := c.(MultiBatcher); ok {
		etags, errs = mb.Batches(ctx, partitionKey, batches)
		return batches, etags, errs
	}
	etags, errs = concurrentBatches(ctx, c, partitionKey, batches)
	return batches, etags, errs
}

// concurrentBatches sends each batch on its own, all at once.
func concurrentBatches(ctx context.Context, c Container, partitionKey string, batches [][]Op) ([][]string, []error) {
	etags, errs := make([][]string, len(batches)), make([]error, len(batches))
	var wg sync.WaitGroup
	for i, b := range batches {
		wg.Go(func() { etags[i], errs[i] = c.Batch(ctx, partitionKey, b) })
	}
	wg.Wait()
	return etags, errs
}

// SplitOps cuts ops into batches of at most MaxBatchOps.
func SplitOps(ops []Op) [][]Op {
	var out [][]Op
	for len(ops) > MaxBatchOps {
		out = append(out, ops[:MaxBatchOps:MaxBatchOps])
		ops = ops[MaxBatchOps:]
	}
	if len(ops) > 0 {
		out = append(out, ops)
	}
	return out
}

// Batch applies ops to one partition of the repository's container (see
// Container.Batch).
func (r *Repository[T]) Batch(ctx context.Context, partitionKey string, ops []Op) ([]string, error) {
	return r.c.Batch(ctx, partitionKey, ops)
}

// ManyReader is a Container that reads many documents of one partition in one
// request (the embedded store: one read transaction). items[i] is what Read
// returns for ids[i], or the zero Item (empty ID) where Read finds nothing.
type ManyReader interface {
	ReadMany(ctx context.Context, partitionKey string, ids []string) ([]Item, error)
}

// ManyReaderOf returns c as a ManyReader when it, or the container its
// instrumentation wraps, is one. Where none is, callers read each document on
// its own (concurrently, as a Cosmos client should).
func ManyReaderOf(c Container) (ManyReader, bool) {
	if ic, ok := c.(*instrumentedContainer); ok {
		mr, ok := ic.next.(ManyReader)
		if !ok {
			return nil, false
		}
		return timedManyReader{ic, mr}, true
	}
	mr, ok := c.(ManyReader)
	return mr, ok
}
