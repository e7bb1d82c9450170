package connector

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/castiel/integration-manager/domain"
)

// Create sends rec as JSON with the entity's create request and returns the
// record the API answers with (nil when it answers with no body).
//
// A create is a POST: it is re-sent after a 429 or a connection that never
// opened, but not after a timeout or 5xx, where the API may already have
// created the record. That error is not permanent; the caller decides (e.g.
// look the record up before creating it again).
func (c *Client) Create(ctx context.Context, entity string, rec map[string]any) (map[string]any, error) {
	e, err := c.entity(entity)
	if err != nil {
		return nil, err
	}
	return c.write(ctx, "create "+entity, e.Create, nil, rec, nil)
}

// Update sends rec as JSON with the entity's update request for the record
// id ({id} in the path template).
func (c *Client) Update(ctx context.Context, entity, id string, rec map[string]any) (map[string]any, error) {
	e, err := c.entity(entity)
	if err != nil {
		return nil, err
	}
	return c.write(ctx, "update "+entity, e.Update, map[string]string{"id": id}, rec, nil)
}

// Delete sends the entity's delete request for id. A record the API no
// longer has (404, 410) counts as deleted, so a delete repeated after a
// crash or a redelivery succeeds.
func (c *Client) Delete(ctx context.Context, entity, id string) error {
	e, err := c.entity(entity)
	if err != nil {
		return err
	}
	_, err = c.write(ctx, "delete "+entity, e.Delete, map[string]string{"id": id}, nil, gone)
	return err
}

func (c *Client) write(ctx context.Context, op string, spec *domain.RequestSpec, vars map[string]string, rec map[string]any, okStatus func(int) bool) (map[string]any, error) {
	if spec == nil {
		return nil, fmt.Errorf("%w: %s (no request defined)", ErrUnsupported, op)
	}
	u, err := c.endpoint(spec.Path, vars)
	if err != nil {
		return nil, err
	}
	var body []byte
	if rec != nil {
		if body, err = json.Marshal(rec); err != nil {
			return nil, fmt.Errorf("connector: %s: encoding the record: %w", op, err)
		}
	}
	resp, err := c.do(ctx, call{op: op, method: spec.Method, url: u, body: body, okStatus: okStatus})
	if err != nil {
		return nil, err
	}
	if resp.status < 200 || resp.status >= 300 || len(resp.body) == 0 {
		return nil, nil
	}
	v, err := decodeJSON(resp.body)
	if err != nil {
		return nil, nil // the write succeeded; a non-JSON acknowledgement carries nothing we need
	}
	m, _ := v.(map[string]any)
	return m, nil
}
