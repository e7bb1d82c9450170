package connector

import (
	"context"
	"fmt"
	"net/http"
)

// Get reads the record id with the entity's get request (ErrUnsupported when
// the definition has none). found is false, with no error, when the API no
// longer has the record (404, 410): the caller treats it as deleted. Retries,
// rate limits and credential renewal are those of every other request.
//
// A 404 cannot tell a deleted record from a wrong path in the definition;
// the definition's path is validated to name the record ({id}), and the
// list endpoint of the same definition works, so a 404 is taken at its word.
func (c *Client) Get(ctx context.Context, entity, id string) (rec map[string]any, found bool, err error) {
	e, err := c.entity(entity)
	if err != nil {
		return nil, false, err
	}
	op := "get " + entity
	if e.Get == nil {
		return nil, false, fmt.Errorf("%w: %s (no request defined)", ErrUnsupported, op)
	}
	if id == "" {
		// An empty id would address the collection, not a record.
		return nil, false, &Error{Op: op, Permanent: true, Msg: "no record id given"}
	}
	u, err := c.endpoint(e.Get.Path, map[string]string{"id": id})
	if err != nil {
		return nil, false, err
	}
	resp, err := c.do(ctx, call{op: op, method: http.MethodGet, url: u, okStatus: gone})
	if err != nil {
		return nil, false, err
	}
	if gone(resp.status) {
		return nil, false, nil
	}
	v, err := decodeJSON(resp.body)
	if err != nil {
		return nil, false, &Error{Op: op, Status: resp.status, Permanent: true, Msg: "the answer is not JSON"}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false, &Error{Op: op, Status: resp.status, Permanent: true, Msg: "the answer is not a JSON object (a record)"}
	}
	return m, true, nil
}

// gone: the API no longer has the record.
func gone(status int) bool { return status == http.StatusNotFound || status == http.StatusGone }
