package httpapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// replayRequest is the body of POST /webhooks/{id}/replay: one delivery by
// its id, or in bulk every delivery of the endpoint whose latest attempt is
// failed_retrying or exhausted (or only the status given) since a time.
type replayRequest struct {
	DeliveryID string                 `json:"deliveryId,omitempty"`
	Status     domain.ExecutionStatus `json:"status,omitempty"`
	Since      *time.Time             `json:"since,omitempty"`
}

// replayAccepted is the 202 answer. A bulk replay sends at most
// maxReplayDeliveries, oldest first; when more matched, Truncated is set and
// NextSince is where to continue.
type replayAccepted struct {
	Replayed  int        `json:"replayed"`
	Truncated bool       `json:"truncated,omitempty"`
	NextSince *time.Time `json:"nextSince,omitempty"`
}

// Bounds of one bulk replay, so one request cannot run for minutes.
const (
	maxReplayDeliveries = 500
	maxReplayScan       = 10_000 // attempt records examined
)

// replayWebhook enqueues new attempts of past deliveries: each continues
// after its last recorded attempt with the same delivery id (the webhook-id
// receivers deduplicate on). Replaying a delivery whose retry is still
// scheduled is allowed; the two then share attempt numbers, and whichever
// runs second finds the attempt recorded and does not call the endpoint.
func (a *api) replayWebhook(c *call) error {
	id, err := c.pathID("id", "the webhook")
	if err != nil {
		return err
	}
	var req replayRequest
	if err := c.decode(&req); err != nil {
		return err
	}
	statuses, err := req.validate()
	if err != nil {
		return err
	}
	w, _, err := a.webhooks.Get(c.ctx, c.tenant(), id)
	if err != nil {
		return orNotFound(err, "the webhook")
	}
	if w.Status != domain.WebhookActive {
		return conflict("the webhook is disabled; enable it before replaying its deliveries")
	}
	if req.DeliveryID != "" {
		return a.replayOne(c, w, req.DeliveryID)
	}
	return a.replaySince(c, w, *req.Since, statuses)
}

func (r replayRequest) validate() ([]domain.ExecutionStatus, error) {
	var ve domain.ValidationError
	if r.DeliveryID != "" {
		if !domain.IsValidID(r.DeliveryID) {
			ve.Add("deliveryId", "must be a delivery id (the webhook-id a receiver got)")
		}
		if r.Status != "" {
			ve.Add("status", "selects deliveries in bulk; leave it out with deliveryId")
		}
		if r.Since != nil {
			ve.Add("since", "selects deliveries in bulk; leave it out with deliveryId")
		}
		return nil, ve.Err()
	}
	if r.Since == nil {
		ve.Add("since", "is required unless deliveryId is given")
	}
	statuses := []domain.ExecutionStatus{domain.ExecFailedRetrying, domain.ExecExhausted}
	switch r.Status {
	case "":
	case domain.ExecFailedRetrying, domain.ExecExhausted:
		statuses = []domain.ExecutionStatus{r.Status}
	default:
		ve.Add("status", "must be failed_retrying or exhausted")
	}
	return statuses, ve.Err()
}

func (a *api) replayOne(c *call, w domain.WebhookEndpoint, deliveryID string) error {
	attempts, err := a.deliveryAttempts(c.ctx, w.TenantID, deliveryID)
	if err != nil {
		return err
	}
	if len(attempts) == 0 || attempts[0].WebhookID != w.ID {
		return notFound("the delivery")
	}
	cmd, err := domain.ReplayDelivery(attempts)
	switch {
	case errors.Is(err, domain.ErrEventExpired), errors.Is(err, domain.ErrAttemptsUsedUp):
		return conflict(err.Error())
	case err != nil:
		return err
	}
	if err := a.deps.Commands.Send(c.ctx, w.TenantID, cmd); err != nil {
		return dependencyError("the message broker", err)
	}
	writeJSON(c.w, http.StatusAccepted, replayAccepted{Replayed: 1})
	return nil
}

func (a *api) replaySince(c *call, w domain.WebhookEndpoint, since time.Time, statuses []domain.ExecutionStatus) error {
	// Attempt records of the wanted statuses name the candidate deliveries;
	// each one's latest attempt says whether it is still in that state.
	candidates := make(map[string]bool)
	scanned := 0
	for _, s := range statuses {
		q := store.Query{PartitionKey: w.TenantID, Limit: store.MaxPageSize, Filters: []store.Filter{
			{Field: "webhookId", Value: w.ID}, {Field: "status", Value: string(s)},
		}}
		for {
			page, next, err := a.executions.List(c.ctx, q)
			if err != nil {
				return err
			}
			scanned += len(page)
			if scanned > maxReplayScan {
				return invalid("since", fmt.Sprintf("selects more than %d attempt records; choose a later time", maxReplayScan))
			}
			for _, e := range page {
				if e.DeliveryID != "" && !e.StartedAt.Before(since) {
					candidates[e.DeliveryID] = true
				}
			}
			if next == "" {
				break
			}
			q.Continuation = next
		}
	}

	var due []domain.DeliveryAttempt // each delivery's latest attempt, when it is in a wanted state
	attemptsOf := make(map[string][]domain.DeliveryAttempt)
	for deliveryID := range candidates {
		attempts, err := a.deliveryAttempts(c.ctx, w.TenantID, deliveryID)
		if err != nil {
			return err
		}
		latest, ok := domain.LatestAttempt(attempts)
		if !ok || latest.WebhookID != w.ID || !slices.Contains(statuses, latest.Status) {
			continue
		}
		due = append(due, latest)
		attemptsOf[deliveryID] = attempts
	}
	slices.SortFunc(due, func(x, y domain.DeliveryAttempt) int {
		if c := x.StartedAt.Compare(y.StartedAt); c != 0 {
			return c
		}
		return cmp.Compare(x.DeliveryID, y.DeliveryID)
	})

	var out replayAccepted
	for i, latest := range due {
		if i == maxReplayDeliveries {
			next := latest.StartedAt
			out.Truncated, out.NextSince = true, &next
			break
		}
		cmd, err := domain.ReplayDelivery(attemptsOf[latest.DeliveryID])
		if err != nil {
			continue // its event expired or it used every attempt: nothing to replay
		}
		if err := a.deps.Commands.Send(c.ctx, w.TenantID, cmd); err != nil {
			return dependencyError("the message broker", err)
		}
		out.Replayed++
	}
	writeJSON(c.w, http.StatusAccepted, out)
	return nil
}

// deliveryAttempts reads every attempt record of one delivery of the tenant.
func (a *api) deliveryAttempts(ctx context.Context, tenantID, deliveryID string) ([]domain.DeliveryAttempt, error) {
	var out []domain.DeliveryAttempt
	q := store.Query{PartitionKey: tenantID, Limit: store.MaxPageSize,
		Filters: []store.Filter{{Field: "deliveryId", Value: deliveryID}}}
	for {
		page, next, err := a.deliveries.List(ctx, q)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if next == "" {
			return out, nil
		}
		q.Continuation = next
	}
}
