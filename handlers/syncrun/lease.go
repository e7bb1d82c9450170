package syncrun

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// leaseDoc lets one run of a task proceed at a time. It lives in the sync
// state container, in the task's partition, under domain.SyncLeaseID. A lease
// past ExpiresAt belongs to a worker that stopped renewing it (a crash) and
// may be taken over.
type leaseDoc struct {
	ID          string    `json:"id"`
	SyncTaskID  string    `json:"syncTaskId"`
	TenantID    string    `json:"tenantId"`
	Kind        string    `json:"kind"` // kindLease: tells it from record states in the partition
	ExecutionID string    `json:"executionId"`
	Owner       string    `json:"owner"` // the handler instance holding it
	AcquiredAt  time.Time `json:"acquiredAt"`
	ExpiresAt   time.Time `json:"expiresAt"`
}

func (l leaseDoc) Key() (string, string) { return l.SyncTaskID, l.ID }

const (
	kindLease = "lease"
	kindSeen  = "seen"
)

// busyError: another run holds the task's lease.
type busyError struct {
	holder string // its execution id
	same   bool   // it is this very run (a redelivery while a worker still works on it)
}

func (e *busyError) Error() string {
	if e.same {
		return fmt.Sprintf("run %s is already in progress on another worker (its lease is live)", e.holder)
	}
	return fmt.Sprintf("run %s of this task holds the lease", e.holder)
}

// claim marks executionID as handled by this handler until done is called; ok
// is false when one of its goroutines already handles it (a redelivered copy).
func (h *Handler) claim(executionID string) (done func(), ok bool) {
	h.runningMu.Lock()
	defer h.runningMu.Unlock()
	if h.running[executionID] {
		return nil, false
	}
	h.running[executionID] = true
	return func() {
		h.runningMu.Lock()
		delete(h.running, executionID)
		h.runningMu.Unlock()
	}, true
}

// heldLease is a lease this handler holds; keep renews it until the run ends.
type heldLease struct {
	h    *Handler
	doc  leaseDoc
	mu   sync.Mutex
	etag string
}

// acquire takes the task's lease for executionID: creates it if absent, or
// takes over an expired one (If-Match, so of two contenders one wins).
func (h *Handler) acquire(ctx context.Context, task domain.SyncTask, executionID string) (*heldLease, error) {
	id := domain.SyncLeaseID(task.ID)
	for attempt := 0; attempt < 5; attempt++ {
		now := h.now()
		doc := leaseDoc{ID: id, SyncTaskID: task.ID, TenantID: task.TenantID, Kind: kindLease,
			ExecutionID: executionID, Owner: h.owner, AcquiredAt: now, ExpiresAt: now.Add(h.opts.LeaseTTL)}
		etag, err := h.leases.Create(ctx, doc)
		if err == nil {
			return &heldLease{h: h, doc: doc, etag: etag}, nil
		}
		if !errors.Is(err, store.ErrConflict) {
			return nil, fmt.Errorf("take the task's lease: %w", err)
		}
		cur, curTag, err := h.leases.Get(ctx, task.ID, id)
		if errors.Is(err, store.ErrNotFound) {
			continue // released meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("read the task's lease: %w", err)
		}
		// The caller claimed executionID (see claim), so no goroutine of this handler runs it.
		ownStale := cur.Owner == h.owner && cur.ExecutionID == executionID
		if now.Before(cur.ExpiresAt) && !ownStale {
			return nil, &busyError{holder: cur.ExecutionID, same: cur.ExecutionID == executionID}
		}
		// Expired, or ours and left behind: this handler held it for this very run,
		// which is not running here any more (its release failed, say while the store
		// was down). Waiting for the expiry would stall the task for a lease TTL.
		etag, err = h.leases.Replace(ctx, doc, curTag)
		switch {
		case err == nil:
			h.log.Warn().Str("syncTaskId", task.ID).Str("expiredHolder", cur.ExecutionID).Str("executionId", executionID).
				Msg("took over a sync lease: expired (its worker stopped renewing it), or this worker's own for this run, left behind")
			return &heldLease{h: h, doc: doc, etag: etag}, nil
		case errors.Is(err, store.ErrPreconditionFailed), errors.Is(err, store.ErrNotFound):
			continue // another contender moved first: look again
		default:
			return nil, fmt.Errorf("take over the task's lease: %w", err)
		}
	}
	return nil, fmt.Errorf("take the task's lease: too much contention: %w", store.ErrPreconditionFailed)
}

var errLeaseLost = errors.New("the run lost its lease (it was not renewed in time and another run took it over)")

// keep renews the lease every third of its TTL until stop is called; if a
// renewal finds the lease taken, the returned context is cancelled with
// errLeaseLost so the run stops writing at once.
func (l *heldLease) keep(ctx context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(l.h.opts.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				if err := l.renew(ctx); errors.Is(err, errLeaseLost) {
					cancel(errLeaseLost)
					return
				} else if err != nil {
					// A transient store failure: try again at the next tick, while
					// the lease still has two thirds of its life.
					l.h.log.Warn().Err(err).Str("syncTaskId", l.doc.SyncTaskID).Msg("renewing the sync lease failed")
				}
			}
		}
	}()
	return ctx, func() {
		close(done)
		wg.Wait()
		cancel(nil)
	}
}

func (l *heldLease) renew(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	doc := l.doc
	doc.ExpiresAt = l.h.now().Add(l.h.opts.LeaseTTL)
	etag, err := l.h.leases.Replace(ctx, doc, l.etag)
	if errors.Is(err, store.ErrPreconditionFailed) || errors.Is(err, store.ErrNotFound) {
		return errLeaseLost
	}
	if err != nil {
		return err
	}
	l.doc, l.etag = doc, etag
	return nil
}

// release deletes the lease if this run still holds it. It runs detached from
// the run's context (which may be cancelled): a lease left behind would hold
// the task's next runs back until it expires.
func (l *heldLease) release(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	err := l.h.leases.Delete(ctx, l.doc.SyncTaskID, l.doc.ID, l.etag)
	if err != nil && !errors.Is(err, store.ErrNotFound) && !errors.Is(err, store.ErrPreconditionFailed) {
		l.h.log.Warn().Err(err).Str("syncTaskId", l.doc.SyncTaskID).Msg("could not release the sync lease; it expires by itself")
	}
}

// leaseHeld reports whether a live lease exists for the task (for ingress
// coalescing).
func (h *Handler) leaseHeld(ctx context.Context, taskID string) (bool, error) {
	cur, _, err := h.leases.Get(ctx, taskID, domain.SyncLeaseID(taskID))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return h.now().Before(cur.ExpiresAt), nil
}
