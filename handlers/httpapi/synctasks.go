package httpapi

import (
	"context"
	"net/http"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// syncTaskRequest is the body of POST and PUT /sync-tasks.
type syncTaskRequest struct {
	IntegrationID  string                `json:"integrationId"`
	Entity         string                `json:"entity"`
	Direction      domain.SyncDirection  `json:"direction"`
	Mode           domain.SyncMode       `json:"mode"`
	Schedule       string                `json:"schedule,omitempty"`
	Mapping        []domain.FieldMapping `json:"mapping"`
	ConflictPolicy domain.ConflictPolicy `json:"conflictPolicy"`
	Enabled        *bool                 `json:"enabled,omitempty"` // default true
}

// runAccepted is the 202 answer of POST /sync-tasks/{id}/runs.
type runAccepted struct {
	ExecutionID string `json:"executionId"`
}

func (req syncTaskRequest) apply(t *domain.SyncTask) {
	t.IntegrationID, t.Entity, t.Direction, t.Mode = req.IntegrationID, req.Entity, req.Direction, req.Mode
	t.Schedule, t.Mapping, t.ConflictPolicy = req.Schedule, req.Mapping, req.ConflictPolicy
	if t.Mapping == nil {
		t.Mapping = []domain.FieldMapping{}
	}
	t.Enabled = req.Enabled == nil || *req.Enabled
}

// validateSyncTask checks the task, that its integration is the tenant's, and
// against the integration's provider when that still exists.
func (a *api) validateSyncTask(ctx context.Context, t domain.SyncTask) error {
	var ve domain.ValidationError
	if !domain.IsValidID(t.IntegrationID) {
		ve.Merge("", t.Validate())
		return ve.Err()
	}
	in, _, err := a.integrations.Get(ctx, t.TenantID, t.IntegrationID)
	if isNotFound(err) {
		ve.Merge("", t.Validate())
		ve.Add("integrationId", "no integration with this id")
		return ve.Err()
	}
	if err != nil {
		return err
	}
	p, _, err := a.providers.Get(ctx, in.ProviderCategory, in.ProviderID)
	switch {
	case err == nil:
		ve.Merge("", t.ValidateFor(p))
	case isNotFound(err):
		ve.Merge("", t.Validate())
	default:
		return err
	}
	return ve.Err()
}

func (a *api) createSyncTask(c *call) error {
	var req syncTaskRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	now := a.now()
	t := domain.SyncTask{ID: newID("st"), TenantID: c.tenant(), CreatedAt: now, UpdatedAt: now}
	req.apply(&t)
	if err := a.validateSyncTask(c.ctx, t); err != nil {
		return err
	}
	etag, err := a.syncTasks.Create(c.ctx, t)
	if err != nil {
		return err
	}
	return c.created(v1+"/sync-tasks/"+t.ID, etag, t)
}

func (a *api) listSyncTasks(c *call) error {
	var filters []store.Filter
	if in := c.r.URL.Query().Get("integrationId"); in != "" {
		filters = append(filters, store.Filter{Field: "integrationId", Value: in})
	}
	q, err := c.pageQuery(c.tenant(), filters...)
	if err != nil {
		return err
	}
	items, next, err := a.syncTasks.List(c.ctx, q)
	if err != nil {
		return err
	}
	return c.respondList(items, next)
}

func (a *api) getSyncTask(c *call) error {
	id, err := c.pathID("id", "the sync task")
	if err != nil {
		return err
	}
	t, etag, err := a.syncTasks.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the sync task")
	}
	return c.respond(http.StatusOK, etag, t)
}

// putSyncTask replaces the definition. The checkpoint is kept unless the
// task now reads another integration or entity, where it means nothing.
func (a *api) putSyncTask(c *call) error {
	id, err := c.pathID("id", "the sync task")
	if err != nil {
		return err
	}
	var req syncTaskRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	candidate := domain.SyncTask{ID: id, TenantID: c.tenant()}
	req.apply(&candidate)
	if _, _, err := a.syncTasks.Get(c.ctx, c.tenant(), id); err != nil {
		return orNotFound(err, "the sync task")
	}
	if err := a.validateSyncTask(c.ctx, candidate); err != nil {
		return err
	}
	t, etag, err := updateDoc(c, a.syncTasks, c.tenant(), id, func(t *domain.SyncTask) error {
		if t.IntegrationID != req.IntegrationID || t.Entity != req.Entity {
			t.Checkpoint = domain.Checkpoint{}
		}
		req.apply(t)
		t.UpdatedAt = a.now()
		return nil
	})
	if err != nil {
		return orNotFound(err, "the sync task")
	}
	return c.respond(http.StatusOK, etag, t)
}

func (a *api) deleteSyncTask(c *call) error {
	id, err := c.pathID("id", "the sync task")
	if err != nil {
		return err
	}
	if err := deleteDoc(c, a.syncTasks, c.tenant(), id); err != nil {
		return orNotFound(err, "the sync task")
	}
	return c.noContent()
}

// resetSyncTask clears the task's checkpoint (a full re-sync that keeps record state).
func (a *api) resetSyncTask(c *call) error {
	id, err := c.pathID("id", "the sync task")
	if err != nil {
		return err
	}
	t, etag, err := a.syncTasks.Update(c.ctx, c.tenant(), id, func(t *domain.SyncTask) error {
		t.Reset(a.now())
		return nil
	})
	if err != nil {
		return orNotFound(err, "the sync task")
	}
	return c.respond(http.StatusOK, etag, t)
}

// runSyncTask records a pending sync_run execution and enqueues RunSync; the
// execution id is what the caller follows the run by.
func (a *api) runSyncTask(c *call) error {
	id, err := c.pathID("id", "the sync task")
	if err != nil {
		return err
	}
	t, _, err := a.syncTasks.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the sync task")
	}
	now := a.now()
	exec := domain.Execution{
		ID:         newID("run"),
		TenantID:   t.TenantID,
		Kind:       domain.ExecutionSyncRun,
		Status:     domain.ExecPending,
		SyncTaskID: t.ID,
		CreatedAt:  now,
		UpdatedAt:  now,
	}
	cmd := domain.RunSync{ExecutionID: exec.ID, TenantID: t.TenantID, SyncTaskID: t.ID, Trigger: domain.TriggerAPI, RequestedAt: now}
	if err := cmd.Validate(); err != nil {
		return err
	}
	if _, err := a.executions.Create(c.ctx, exec); err != nil {
		return err
	}
	if err := a.deps.Commands.Send(c.ctx, t.TenantID, cmd); err != nil {
		// Not enqueued: the pending record would never move, so remove it.
		if derr := a.executions.Delete(context.WithoutCancel(c.ctx), exec.TenantID, exec.ID, ""); derr != nil {
			a.log.Warn().Err(derr).Str("executionId", exec.ID).Msg("could not remove the execution of a run that was not enqueued")
		}
		return dependencyError("the message broker", err)
	}
	c.w.Header().Set("Location", v1+"/executions/"+exec.ID)
	writeJSON(c.w, http.StatusAccepted, runAccepted{ExecutionID: exec.ID})
	return nil
}
