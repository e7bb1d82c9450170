package integrations

import (
	"context"
	"errors"
	"fmt"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/conflicts"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/store"
)

// External is the conflict resolver's access to the external system: it
// reads and writes one record of a sync task through the factory's client
// for the task's integration, so the resolver shares the sync run's
// connection, credentials and rate limit.
//
// Its errors follow the resolver's contract: a request the API or the
// configuration refuses (connector.IsPermanent, IsPermanent) is
// messaging.Permanent; an outage of our own store or of Secret Management
// wraps conflicts.ErrUnavailable; anything else (the API failing after the
// client's retries, a cancelled context) is returned as it is.
type External struct {
	f *Factory
}

var (
	_ conflicts.ExternalReader = (*External)(nil)
	_ conflicts.ExternalWriter = (*External)(nil)
)

// NewExternal reads and writes through f.
func NewExternal(f *Factory) *External { return &External{f: f} }

// Read returns the external side of the task's record key as the sync run
// builds it (domain.ExternalSideRecord): in Castiel's shape, hashed, with its
// modification time; Deleted when the API no longer has it or flags it
// deleted.
func (x *External) Read(ctx context.Context, tenantID string, task domain.SyncTask, key string) (*domain.SideRecord, error) {
	c, e, err := x.client(ctx, tenantID, task)
	if err != nil {
		return nil, err
	}
	raw, found, err := c.Get(ctx, e.Name, key)
	if err != nil {
		return nil, classify(fmt.Errorf("integrations: read %s %s: %w", e.Name, key, err))
	}
	if !found {
		return &domain.SideRecord{Deleted: true}, nil
	}
	rec, err := domain.ExternalSideRecord(e, task.Mapping, raw, c.IsDeleted(e.Name, raw))
	if err != nil {
		// The task's mapping cannot take this record: only an edit helps.
		return nil, messaging.Permanent(fmt.Errorf("integrations: read %s %s: %w", e.Name, key, err))
	}
	return rec, nil
}

// Write applies w to the external system: delete, create (the record's
// primary key set to w.Key when w.Data lacks it, as the sync run's push
// does), or update.
func (x *External) Write(ctx context.Context, tenantID string, task domain.SyncTask, w conflicts.ExternalWrite) error {
	c, e, err := x.client(ctx, tenantID, task)
	if err != nil {
		return err
	}
	var op string
	switch {
	case w.Delete:
		op = "delete"
		err = c.Delete(ctx, e.Name, w.Key)
	case w.Create:
		op = "create"
		err = x.create(ctx, tenantID, c, e, w)
	default:
		op = "update"
		_, err = c.Update(ctx, e.Name, w.Key, w.Data)
	}
	if err != nil {
		return classify(fmt.Errorf("integrations: %s %s %s: %w", op, e.Name, w.Key, err))
	}
	return nil
}

func (x *External) create(ctx context.Context, tenantID string, c *connector.Client, e domain.EntityDef, w conflicts.ExternalWrite) error {
	body, _ := cloneValue(w.Data).(map[string]any) // the caller's record is left as it is
	if body == nil {
		body = map[string]any{}
	}
	if _, ok := domain.GetPath(body, e.PrimaryKey); !ok {
		if err := domain.SetPath(body, e.PrimaryKey, w.Key); err != nil {
			return messaging.Permanent(fmt.Errorf("set the primary key %q: %w", e.PrimaryKey, err))
		}
	}
	resp, err := c.Create(ctx, e.Name, body)
	if err != nil {
		return err
	}
	if id, err := c.RecordID(e.Name, resp); err == nil && id != w.Key {
		// The API chose its own id. The resolver has no way to move the
		// Castiel record to it (the sync run's push does); the next sync run
		// sees the created record as a new one.
		x.f.log.Warn().Str("tenantId", tenantID).Str("entity", e.Name).Str("recordKey", w.Key).Str("externalId", id).
			Msg("the API gave the created record an id of its own; the Castiel record keeps its key")
	}
	return nil
}

// client returns the client of the task's integration and the task's entity.
func (x *External) client(ctx context.Context, tenantID string, task domain.SyncTask) (*connector.Client, domain.EntityDef, error) {
	if task.TenantID != "" && task.TenantID != tenantID {
		return nil, domain.EntityDef{}, messaging.Permanent(fmt.Errorf("integrations: sync task %s belongs to another tenant", task.ID))
	}
	c, p, err := x.f.Client(ctx, tenantID, task.IntegrationID)
	if err != nil {
		return nil, domain.EntityDef{}, classify(err)
	}
	e, ok := p.Entity(task.Entity)
	if !ok {
		return nil, domain.EntityDef{}, messaging.Permanent(fmt.Errorf("integrations: %w: %q in provider %q (sync task %s)", connector.ErrUnknownEntity, task.Entity, p.ID, task.ID))
	}
	return c, e, nil
}

// classify marks err for the resolver. Our outages come first: Secret
// Management unavailable reaches us inside a (non-permanent) connector error.
func classify(err error) error {
	switch {
	case errors.Is(err, secrets.ErrUnavailable), store.IsTransient(err):
		return fmt.Errorf("%w: %w", conflicts.ErrUnavailable, err)
	case IsPermanent(err), connector.IsPermanent(err):
		return messaging.Permanent(err)
	}
	return err
}

func cloneValue(v any) any {
	switch v := v.(type) {
	case map[string]any:
		if v == nil {
			return map[string]any(nil)
		}
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = cloneValue(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = cloneValue(e)
		}
		return out
	}
	return v
}
