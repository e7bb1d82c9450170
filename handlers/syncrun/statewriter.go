package syncrun

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/castiel/integration-manager/store"
)

// stateWriter writes the states of planned records in store batches, group
// commit style: while one write is in flight the plans that arrive queue up
// and go together into the next. So a push's state follows its API write
// within a commit or two, and a page of pulls costs a handful of batches
// instead of a write per record.
//
// Pushes come one at a time. A commit on a local disk takes a fraction of a
// millisecond, so the next batch would hold two or three states, and a push
// would pay a commit's fixed cost (most of its store CPU) for little more
// than itself. A short batch therefore waits up to gatherWait for as many
// states as there are API writes in flight.
const gatherWait = time.Millisecond

type stateWriter struct {
	r      *run
	ctx    context.Context
	stop   context.CancelCauseFunc // stops the round's planning when a write fails
	gather int                     // a batch shorter than this waits for more (gatherWait)

	mu      sync.Mutex
	queue   []*plan
	closing bool
	wake    chan struct{}
	done    chan struct{}

	// Owned by the loop until done is closed.
	err   error
	raced []*plan
}

func (r *run) newStateWriter(ctx context.Context, stop context.CancelCauseFunc) *stateWriter {
	w := &stateWriter{r: r, ctx: ctx, stop: stop, gather: r.h.opts.MaxWrites, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.loop()
	return w
}

// add queues the states of plans.
func (w *stateWriter) add(plans ...*plan) {
	if len(plans) == 0 {
		return
	}
	w.mu.Lock()
	w.queue = append(w.queue, plans...)
	w.mu.Unlock()
	w.signal()
}

func (w *stateWriter) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// close writes what is queued and returns the first failure and the plans
// whose state raced with another writer.
func (w *stateWriter) close() ([]*plan, error) {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	w.signal()
	<-w.done
	return w.raced, w.err
}

func (w *stateWriter) loop() {
	defer close(w.done)
	for {
		batch, closing := w.take(nil)
		if len(batch) == 0 {
			if closing {
				return
			}
			<-w.wake
			continue
		}
		if w.err != nil {
			continue // the round is failing: its records are replayed
		}
		if len(batch) < w.gather && !closing {
			batch = w.gatherMore(batch)
		}
		raced, err := w.r.writeStates(w.ctx, batch)
		w.raced = append(w.raced, raced...)
		if err != nil {
			w.err = err
			w.stop(err)
		}
	}
}

// take appends the queued plans to batch and empties the queue.
func (w *stateWriter) take(batch []*plan) ([]*plan, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if batch == nil {
		batch = w.queue // no copy for the common case: the queue is taken whole
	} else {
		batch = append(batch, w.queue...)
	}
	w.queue = nil
	return batch, w.closing
}

// gatherMore adds to batch the plans that arrive within gatherWait, until it
// holds w.gather of them or the round is closing.
func (w *stateWriter) gatherMore(batch []*plan) []*plan {
	t := time.NewTimer(gatherWait)
	defer t.Stop()
	for {
		select {
		case <-w.wake:
		case <-t.C:
			batch, _ = w.take(batch)
			return batch
		}
		var closing bool
		if batch, closing = w.take(batch); closing || len(batch) >= w.gather {
			return batch
		}
	}
}

// writeStates writes the states of plans in batches of store.MaxBatchOps,
// sent together (one commit on the embedded store), and counts each record
// once its state is written. A batch refused because one state changed
// meanwhile is sent again without it; that plan is returned as raced.
func (r *run) writeStates(ctx context.Context, plans []*plan) ([]*plan, error) {
	// In id order: a page of new records' states then reaches the store as
	// appends, batch after batch (see shards.Local.WriteBatch).
	plans = slices.SortedFunc(slices.Values(plans), func(a, b *plan) int { return strings.Compare(a.st.ID, b.st.ID) })
	ops := make([]store.Op, len(plans))
	encErrs := make([]error, len(plans))
	inChunks(len(plans), func(lo, hi int) {
		var scratch []byte // encoded into, each body copied out at its size
		for i := lo; i < hi; i++ {
			p := plans[i]
			kind := store.OpReplace
			if p.etag == "" {
				kind = store.OpCreate
			}
			body, err := p.st.AppendJSON(scratch[:0])
			if err != nil {
				encErrs[i] = fmt.Errorf("write the sync state of %s: encode: %w", p.it.key, err)
				continue
			}
			scratch = body
			ops[i] = store.Op{Kind: kind, ID: p.st.ID, Body: bytes.Clone(body), IfMatch: p.etag}
		}
	})
	for _, err := range encErrs {
		if err != nil {
			return nil, err
		}
	}
	var raced []*plan
	var first error
	batches, etags, errs := store.WriteBatches(ctx, r.h.stateC, r.task.ID, ops)
	j := 0 // the first plan of batch k
	for k, batch := range batches {
		ps := plans[j : j+len(batch)]
		j += len(batch)
		if errs[k] == nil {
			for n, p := range ps {
				r.committed(p, etags[k][n])
			}
			continue
		}
		if !isStateRace(errs[k]) {
			first = cmp.Or(first, fmt.Errorf("write the sync state of %d records: %w", len(batch), errs[k]))
			continue
		}
		lost, err := r.retryStateBatch(ctx, ps, batch, errs[k])
		raced = append(raced, lost...)
		first = cmp.Or(first, err)
	}
	return raced, first
}

// retryStateBatch writes again a batch of states refused (err) because one
// of them changed meanwhile, leaving that one out, and counts the records
// written. It returns the plans whose state raced.
func (r *run) retryStateBatch(ctx context.Context, plans []*plan, ops []store.Op, err error) ([]*plan, error) {
	plans, ops = append([]*plan(nil), plans...), append([]store.Op(nil), ops...)
	var raced []*plan
	var etags []string
	for {
		var be *store.BatchError
		switch {
		case err == nil:
			for n, p := range plans {
				r.committed(p, etags[n])
			}
			return raced, nil
		case errors.As(err, &be) && isStateRace(err) && be.Index >= 0 && be.Index < len(ops):
			raced = append(raced, plans[be.Index])
			plans = append(plans[:be.Index], plans[be.Index+1:]...)
			ops = append(ops[:be.Index], ops[be.Index+1:]...)
			if len(ops) == 0 {
				return raced, nil
			}
		case isStateRace(err):
			// Refused without naming the state: write them one at a time.
			for _, p := range plans {
				switch err := r.writeState(ctx, p.st, p.etag); {
				case errors.Is(err, errStateRaced):
					raced = append(raced, p)
				case err != nil:
					return raced, err
				default:
					r.countPlan(p) // writeState noted it
				}
			}
			return raced, nil
		default:
			return raced, fmt.Errorf("write the sync state of %d records: %w", len(ops), err)
		}
		etags, err = r.h.stateC.Batch(ctx, r.task.ID, ops)
	}
}
