package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// publishEventRequest is the body of POST /events.
type publishEventRequest struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
}

// accepted is the 202 answer of a command: the id to follow it by.
type accepted struct {
	ID string `json:"id"`
}

// resolutionRequest is the body of POST /conflicts/{id}/resolution.
type resolutionRequest struct {
	Side   domain.Side    `json:"side,omitempty"`
	Values map[string]any `json:"values,omitempty"`
}

// publishEvent enqueues the event for the dispatcher, which fans it out to
// the tenant's matching webhooks.
func (a *api) publishEvent(c *call) error {
	var req publishEventRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	if bytes.Equal(bytes.TrimSpace(req.Data), []byte("null")) {
		req.Data = nil
	}
	cmd := domain.PublishEvent{EventID: newID("evt"), TenantID: c.tenant(), Type: req.Type, Data: req.Data, OccurredAt: a.now()}
	if err := cmd.Validate(); err != nil {
		return err
	}
	if err := a.deps.Commands.Send(c.ctx, c.tenant(), cmd); err != nil {
		return dependencyError("the message broker", err)
	}
	writeJSON(c.w, http.StatusAccepted, accepted{ID: cmd.EventID})
	return nil
}

func (a *api) listConflicts(c *call) error {
	var filters []store.Filter
	if s := c.r.URL.Query().Get("status"); s != "" {
		switch domain.ConflictStatus(s) {
		case domain.ConflictStatusPending, domain.ConflictStatusResolved, domain.ConflictStatusEscalated,
			domain.ConflictStatusSuperseded, domain.ConflictStatusFailed:
		default:
			return badRequest("status is not a conflict status", domain.FieldError{Field: "status",
				Message: "must be one of: pending, resolved, escalated, superseded, failed"})
		}
		filters = append(filters, store.Filter{Field: "status", Value: s})
	}
	q, err := c.pageQuery(c.tenant(), filters...)
	if err != nil {
		return err
	}
	items, next, err := a.conflicts.List(c.ctx, q)
	if err != nil {
		return err
	}
	views := make([]conflictView, len(items))
	for i, cf := range items {
		views[i] = viewConflict(cf)
	}
	return c.respondList(views, next)
}

// conflictView is a conflict with its field-by-field diff (base, external,
// internal), what a person needs to decide.
type conflictView struct {
	domain.Conflict
	Diff []domain.FieldDiff `json:"diff"`
}

func viewConflict(cf domain.Conflict) conflictView {
	diff := domain.DiffConflict(cf)
	if diff == nil {
		diff = []domain.FieldDiff{}
	}
	return conflictView{Conflict: cf, Diff: diff}
}

func (a *api) getConflict(c *call) error {
	id, err := c.pathID("id", "the conflict")
	if err != nil {
		return err
	}
	cf, etag, err := a.conflicts.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the conflict")
	}
	return c.respond(http.StatusOK, etag, viewConflict(cf))
}

// resolveConflict enqueues a person's decision for the conflict resolver.
func (a *api) resolveConflict(c *call) error {
	id, err := c.pathID("id", "the conflict")
	if err != nil {
		return err
	}
	var req resolutionRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	cf, _, err := a.conflicts.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the conflict")
	}
	switch cf.Status {
	case domain.ConflictStatusPending, domain.ConflictStatusEscalated, domain.ConflictStatusFailed:
		// failed: a person retries after the cause (say, the external API) is fixed.
	default:
		return conflict(fmt.Sprintf("the conflict is %s; only pending, escalated or failed conflicts can be resolved", cf.Status))
	}
	cmd := domain.ResolveConflict{TenantID: cf.TenantID, ConflictID: cf.ID, Actor: actorID(c.p.Subject), Side: req.Side, Values: req.Values}
	if err := cmd.Validate(); err != nil {
		return err
	}
	if err := a.deps.Commands.Send(c.ctx, cf.TenantID, cmd); err != nil {
		return dependencyError("the message broker", err)
	}
	writeJSON(c.w, http.StatusAccepted, accepted{ID: cf.ID})
	return nil
}

// actorID is the principal's subject as an audit actor: kept when it is a
// valid id, else a stable digest of it (resolutions require the id grammar).
func actorID(subject string) string {
	if subject != domain.ActorSystem && domain.IsValidID(subject) {
		return subject
	}
	return domain.DeterministicID("usr", subject)
}

func (a *api) listExecutions(c *call) error {
	query := c.r.URL.Query()
	var filters []store.Filter
	if k := query.Get("kind"); k != "" {
		if k != string(domain.ExecutionWebhookDelivery) && k != string(domain.ExecutionSyncRun) {
			return badRequest("kind is not an execution kind", domain.FieldError{Field: "kind", Message: "must be webhook_delivery or sync_run"})
		}
		filters = append(filters, store.Filter{Field: "kind", Value: k})
	}
	for _, name := range []string{"status", "webhookId", "deliveryId", "syncTaskId"} {
		v := query.Get(name)
		if v == "" {
			continue
		}
		if !domain.IsValidID(v) {
			return badRequest(name+" is malformed", domain.FieldError{Field: name, Message: "must be an id or status name"})
		}
		filters = append(filters, store.Filter{Field: name, Value: v})
	}
	q, err := c.pageQuery(c.tenant(), filters...)
	if err != nil {
		return err
	}
	items, next, err := a.executions.List(c.ctx, q)
	if err != nil {
		return err
	}
	return c.respondList(items, next)
}

func (a *api) getExecution(c *call) error {
	id, err := c.pathID("id", "the execution")
	if err != nil {
		return err
	}
	e, etag, err := a.executions.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the execution")
	}
	return c.respond(http.StatusOK, etag, e)
}

// ---- poison queue ----

func (a *api) listPoison(c *call) error {
	q, err := c.pageQuery("")
	if err != nil {
		return err
	}
	items, next, err := a.deps.Poison.ListPoison(c.ctx, q.Continuation, store.PageSize(q.Limit))
	if err != nil {
		return poisonError(err)
	}
	return c.respondList(items, next)
}

func (a *api) republishPoison(c *call) error {
	id := c.r.PathValue("id")
	if id == "" || len(id) > domain.MaxIDLength {
		return notFound("the poisoned message")
	}
	if err := a.deps.Poison.RepublishPoison(c.ctx, id); err != nil {
		return poisonError(err)
	}
	writeJSON(c.w, http.StatusAccepted, accepted{ID: id})
	return nil
}

// poisonError keeps the store's answers (404, 400 for a bad cursor, 503) and
// treats anything else, such as a failed publish, as retryable.
func poisonError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return notFound("the poisoned message")
	case errors.Is(err, store.ErrInvalidQuery), store.IsTransient(err):
		return err
	}
	return dependencyError("the poison queue", err)
}
