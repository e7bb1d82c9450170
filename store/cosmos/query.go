package cosmos

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"

	"github.com/castiel/integration-manager/store"
)

// pageToken is the decoded continuation: where the next page starts. Paging by
// id (keyset) works the same on Cosmos and on the emulator, which has no
// continuation tokens of its own, and a token stays valid however long the
// caller keeps it.
type pageToken struct {
	After string `json:"after"`
	// PK breaks ties between equal ids of different partitions; cross-partition only.
	PK string `json:"pk,omitempty"`
}

func encodeToken(t pageToken) string {
	// Marshalling two strings cannot fail.
	b, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeToken(s string) (*pageToken, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("the continuation token is not one this store issued")
	}
	var t pageToken
	if err := json.Unmarshal(raw, &t); err != nil || t.After == "" {
		return nil, errors.New("the continuation token is not one this store issued")
	}
	return &t, nil
}

// Query returns one page of documents matching q, ordered by id.
//
// In a partition it is one parameterised query: the filters, the keyset
// condition on id, ORDER BY id and TOP limit+1 (the extra document says
// whether another page exists). Across partitions the Cosmos gateway refuses
// ORDER BY and TOP, so the filtered documents past the token are read in full
// and sorted here; only small containers (spec.CrossPartition) allow that.
func (c *container) Query(ctx context.Context, q store.Query) (store.Page, error) {
	cl := c.call(opQuery, "", true)
	invalid := func(err error) (store.Page, error) {
		return store.Page{}, &opError{call: cl, kind: store.ErrInvalidQuery, cause: err}
	}
	var after *pageToken
	if q.Continuation != "" {
		t, err := decodeToken(q.Continuation)
		if err != nil {
			return invalid(err)
		}
		after = t
	}
	conds, params, err := filterConditions(q.Filters)
	if err != nil {
		return invalid(err)
	}
	limit := store.PageSize(q.Limit)
	if q.PartitionKey == "" {
		if !c.spec.CrossPartition {
			return invalid(fmt.Errorf("container %s holds per-%s data: a query needs a partition key", c.spec.Name, c.spec.PartitionKey))
		}
		return c.queryAcross(ctx, cl, conds, params, q.Descending, limit, after)
	}
	return c.queryPartition(ctx, cl, q.PartitionKey, conds, params, q.Descending, limit, after)
}

// filterConditions turns equality filters into conditions on parameters. Field
// names cannot be parameters portably, so only plain identifiers are accepted
// and they are written as c["name"], which also works for reserved words.
func filterConditions(filters []store.Filter) ([]string, []azcosmos.QueryParameter, error) {
	conds := make([]string, 0, len(filters)+2)
	params := make([]azcosmos.QueryParameter, 0, len(filters)+2)
	for i, f := range filters {
		if !isIdentifier(f.Field) {
			return nil, nil, fmt.Errorf("filter field %q is not a plain top-level property name", f.Field)
		}
		v, err := filterValue(f.Value)
		if err != nil {
			return nil, nil, fmt.Errorf("filter on %s: %w", f.Field, err)
		}
		name := fmt.Sprintf("@f%d", i)
		conds = append(conds, fmt.Sprintf("c[%q] = %s", f.Field, name))
		params = append(params, azcosmos.QueryParameter{Name: name, Value: v})
	}
	return conds, params, nil
}

// filterValue accepts what a JSON body can hold as a scalar: string, bool, number.
func filterValue(v any) (any, error) {
	switch x := v.(type) {
	case string, bool, json.Number,
		int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return v, nil
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return nil, errors.New("NaN and infinities never appear in JSON")
		}
		return v, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, errors.New("NaN and infinities never appear in JSON")
		}
		return v, nil
	default:
		return nil, fmt.Errorf("a value of type %T is not a string, bool or number", v)
	}
}

func (c *container) queryPartition(ctx context.Context, cl call, pk string, conds []string,
	params []azcosmos.QueryParameter, desc bool, limit int, after *pageToken) (store.Page, error) {
	// The partition condition is redundant on Cosmos (the request is scoped to
	// the partition) but keeps an emulator that ignores the scope honest.
	conds = append(conds, fmt.Sprintf("c[%q] = @pk", c.spec.PartitionKey))
	params = append(params, azcosmos.QueryParameter{Name: "@pk", Value: pk})
	order, op := "ASC", ">"
	if desc {
		order, op = "DESC", "<"
	}
	if after != nil {
		conds = append(conds, "c.id "+op+" @after")
		params = append(params, azcosmos.QueryParameter{Name: "@after", Value: after.After})
	}
	// TOP takes a literal: limit is an int we computed, never caller text.
	sql := fmt.Sprintf("SELECT TOP %d * FROM c WHERE %s ORDER BY c.id %s", limit+1, strings.Join(conds, " AND "), order)

	pager := c.cc.NewQueryItemsPager(sql, azcosmos.NewPartitionKeyString(pk), &azcosmos.QueryOptions{
		QueryParameters: params,
		PageSizeHint:    int32(limit + 1),
	})
	items := make([]store.Item, 0, limit+1)
	// The service may split even a TOP query into several pages: follow them
	// until the extra document arrives or the results end.
	for pager.More() && len(items) <= limit {
		resp, err := c.nextPage(ctx, cl, pager)
		if err != nil {
			return store.Page{}, err
		}
		for _, raw := range resp.Items {
			it, err := c.queriedItem(cl, raw)
			if err != nil {
				return store.Page{}, err
			}
			if it.PartitionKey == pk {
				items = append(items, it)
			}
		}
	}
	return cut(items, limit, false), nil
}

func (c *container) queryAcross(ctx context.Context, cl call, conds []string,
	params []azcosmos.QueryParameter, desc bool, limit int, after *pageToken) (store.Page, error) {
	if after != nil {
		op := ">="
		if desc {
			op = "<="
		}
		conds = append(conds, "c.id "+op+" @after")
		params = append(params, azcosmos.QueryParameter{Name: "@after", Value: after.After})
	}
	sql := "SELECT * FROM c"
	if len(conds) > 0 {
		sql += " WHERE " + strings.Join(conds, " AND ")
	}
	pager := c.cc.NewQueryItemsPager(sql, azcosmos.NewPartitionKey(), &azcosmos.QueryOptions{QueryParameters: params})
	var items []store.Item
	// Cross-partition results arrive in pages of any size, empty ones included:
	// read them all.
	for pager.More() {
		resp, err := c.nextPage(ctx, cl, pager)
		if err != nil {
			return store.Page{}, err
		}
		for _, raw := range resp.Items {
			it, err := c.queriedItem(cl, raw)
			if err != nil {
				return store.Page{}, err
			}
			if after == nil || pastToken(it, *after, desc) {
				items = append(items, it)
			}
		}
	}
	slices.SortFunc(items, func(a, b store.Item) int {
		r := cmp.Or(strings.Compare(a.ID, b.ID), strings.Compare(a.PartitionKey, b.PartitionKey))
		if desc {
			return -r
		}
		return r
	})
	return cut(items, limit, true), nil
}

// pastToken reports whether it comes strictly after the token's position in
// (id, partition key) order, or strictly before it when descending.
func pastToken(it store.Item, t pageToken, desc bool) bool {
	r := cmp.Or(strings.Compare(it.ID, t.After), strings.Compare(it.PartitionKey, t.PK))
	if desc {
		return r < 0
	}
	return r > 0
}

// cut keeps the first limit items and, if more were found, issues the token
// of the last one kept.
func cut(items []store.Item, limit int, withPK bool) store.Page {
	if len(items) <= limit {
		return store.Page{Items: items}
	}
	items = items[:limit]
	last := items[limit-1]
	t := pageToken{After: last.ID}
	if withPK {
		t.PK = last.PartitionKey
	}
	return store.Page{Items: items, Continuation: encodeToken(t)}
}

func (c *container) nextPage(ctx context.Context, cl call, pager interface {
	NextPage(context.Context) (azcosmos.QueryItemsResponse, error)
}) (azcosmos.QueryItemsResponse, error) {
	var resp azcosmos.QueryItemsResponse
	// A failed fetch leaves the pager where it was, so a retry asks for the same page.
	err := c.b.run(ctx, cl, func(ctx context.Context) error {
		var err error
		resp, err = pager.NextPage(ctx)
		return err
	})
	return resp, err
}

// queriedItem reads the id, partition key and ETag a query result carries.
func (c *container) queriedItem(cl call, raw []byte) (store.Item, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return store.Item{}, &opError{call: cl, cause: fmt.Errorf("a query result is not a JSON object: %w", err)}
	}
	id, _ := stringField(fields, "id")
	pk, _ := stringField(fields, c.spec.PartitionKey)
	etag, _ := stringField(fields, "_etag")
	return store.Item{ID: id, PartitionKey: pk, Body: raw, ETag: etag}, nil
}

// isIdentifier reports whether s is a plain property name: a letter or
// underscore, then letters, digits or underscores.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && r >= '0' && r <= '9':
		default:
			return false
		}
	}
	return true
}
