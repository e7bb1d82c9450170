package syncrun

import (
	"context"
	"errors"
	"fmt"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// Ingress turns a post from an external system into an incremental run of
// each enabled pull or bidirectional task of its integration, unless a run
// of that task is already pending or running (the post is then coalesced
// into it). Each run's execution id is derived from the post and the task,
// so a redelivered post finds the runs it asked for instead of adding more.
func (h *Handler) Ingress(ctx context.Context, cmd domain.IngressReceived) error {
	log := h.log.With().Str("tenantId", cmd.TenantID).Str("integrationId", cmd.IntegrationID).Str("ingressId", cmd.IngressID).Logger()
	q := store.Query{PartitionKey: cmd.TenantID, Limit: store.MaxPageSize, Filters: []store.Filter{{Field: "integrationId", Value: cmd.IntegrationID}}}
	triggered, coalesced := 0, 0
	for {
		tasks, next, err := h.tasks.List(ctx, q)
		if err != nil {
			return fmt.Errorf("list the integration's sync tasks: %w", err)
		}
		for _, t := range tasks {
			if !t.Enabled || t.Direction == domain.DirectionPush {
				continue
			}
			sent, err := h.triggerIngressRun(ctx, cmd, t)
			if err != nil {
				return err
			}
			if sent {
				triggered++
			} else {
				coalesced++
			}
		}
		if next == "" {
			break
		}
		q.Continuation = next
	}
	log.Debug().Int("triggered", triggered).Int("coalesced", coalesced).Msg("ingress post handled")
	return nil
}

// triggerIngressRun asks for a run of t unless one is pending or running.
func (h *Handler) triggerIngressRun(ctx context.Context, cmd domain.IngressReceived, t domain.SyncTask) (bool, error) {
	id := domain.IngressRunID(cmd.IngressID, t.ID)
	exec, _, err := h.execs.Get(ctx, t.TenantID, id)
	switch {
	case err == nil:
		if exec.Status != domain.ExecPending {
			return false, nil // this post's run already started (or finished)
		}
		// This post created it and the send may have failed: send again (a
		// duplicate RunSync of one execution runs once).
		return true, h.sendRun(ctx, exec)
	case !errors.Is(err, store.ErrNotFound):
		return false, fmt.Errorf("read execution %s: %w", id, err)
	}

	busy, err := h.pendingOrRunning(ctx, t)
	if err != nil || busy {
		return false, err
	}
	now := h.now()
	exec = domain.Execution{
		ID: id, TenantID: t.TenantID, Kind: domain.ExecutionSyncRun, Status: domain.ExecPending, SyncTaskID: t.ID,
		Sync:      &domain.SyncRunProgress{Trigger: domain.TriggerIngress, IntegrationID: t.IntegrationID, Entity: t.Entity},
		CreatedAt: now, UpdatedAt: now,
	}
	if _, err := h.execs.Create(ctx, exec); err != nil && !errors.Is(err, store.ErrConflict) {
		return false, fmt.Errorf("record run %s: %w", id, err)
	}
	return true, h.sendRun(ctx, exec)
}

func (h *Handler) sendRun(ctx context.Context, exec domain.Execution) error {
	cmd := domain.RunSync{ExecutionID: exec.ID, TenantID: exec.TenantID, SyncTaskID: exec.SyncTaskID,
		Trigger: domain.TriggerIngress, RequestedAt: h.now()}
	if err := h.events.Send(ctx, exec.TenantID, cmd); err != nil {
		// The pending execution stays: the redelivered post sends it again.
		return fmt.Errorf("enqueue run %s: %w", exec.ID, err)
	}
	return nil
}

// pendingOrRunning reports whether a run of t holds its lease or waits to
// start (a pending execution younger than PendingTTL; an older one is taken
// to be lost).
func (h *Handler) pendingOrRunning(ctx context.Context, t domain.SyncTask) (bool, error) {
	held, err := h.leaseHeld(ctx, t.ID)
	if err != nil || held {
		return held, err
	}
	q := store.Query{PartitionKey: t.TenantID, Limit: 100, Filters: []store.Filter{
		{Field: "syncTaskId", Value: t.ID}, {Field: "status", Value: string(domain.ExecPending)},
	}}
	cutoff := h.now().Add(-h.opts.PendingTTL)
	for {
		execs, next, err := h.execs.List(ctx, q)
		if err != nil {
			return false, fmt.Errorf("look for a pending run of task %s: %w", t.ID, err)
		}
		for _, e := range execs {
			if e.Kind == domain.ExecutionSyncRun && e.CreatedAt.After(cutoff) {
				return true, nil
			}
		}
		if next == "" {
			return false, nil
		}
		q.Continuation = next
	}
}
