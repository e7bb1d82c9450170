package cosmos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"

	"github.com/castiel/integration-manager/store"
)

// Operation names used in logs and errors.
const (
	opCreate  = "create"
	opRead    = "read"
	opReplace = "replace"
	opUpsert  = "upsert"
	opDelete  = "delete"
	opQuery   = "query"
)

// container is one Cosmos container behind store.Container.
type container struct {
	b          *Backend
	spec       store.ContainerSpec
	cc         *azcosmos.ContainerClient
	ttlSeconds int64 // stamped into bodies without a "ttl"; 0 when the container has no TTL
}

var _ store.Container = (*container)(nil)

func newContainer(b *Backend, spec store.ContainerSpec, cc *azcosmos.ContainerClient) *container {
	c := &container{b: b, spec: spec, cc: cc}
	if spec.TTL > 0 {
		// Whole seconds, rounded up so a sub-second TTL still means "expires".
		c.ttlSeconds = int64((spec.TTL + time.Second - 1) / time.Second)
	}
	return c
}

func (c *container) call(op, id string, repeatable bool) call {
	return call{op: op, container: c.spec.Name, id: id, repeatable: repeatable}
}

// Create stores a new document; ErrConflict if the id exists in the partition.
func (c *container) Create(ctx context.Context, partitionKey, id string, body []byte) (string, error) {
	cl := c.call(opCreate, id, false)
	body, err := c.prepare(cl, partitionKey, id, body)
	if err != nil {
		return "", err
	}
	var resp azcosmos.ItemResponse
	err = c.b.run(ctx, cl, func(ctx context.Context) error {
		var err error
		resp, err = c.cc.CreateItem(ctx, azcosmos.NewPartitionKeyString(partitionKey), body, nil)
		return err
	})
	if err != nil {
		return "", err
	}
	return writtenETag(resp), nil
}

// Read returns the document; ErrNotFound if absent.
func (c *container) Read(ctx context.Context, partitionKey, id string) (store.Item, error) {
	cl := c.call(opRead, id, true)
	var resp azcosmos.ItemResponse
	err := c.b.run(ctx, cl, func(ctx context.Context) error {
		var err error
		resp, err = c.cc.ReadItem(ctx, azcosmos.NewPartitionKeyString(partitionKey), id, nil)
		return err
	})
	if err != nil {
		return store.Item{}, err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(resp.Value, &fields); err != nil {
		return store.Item{}, &opError{call: cl, cause: fmt.Errorf("the stored document is not a JSON object: %w", err)}
	}
	if got, _ := stringField(fields, c.spec.PartitionKey); got != partitionKey {
		// Cosmos scopes a read to its partition; an emulator that keys by id
		// alone would hand back another partition's document. Never do that.
		return store.Item{}, &opError{call: cl, kind: store.ErrNotFound,
			cause: errors.New("the document with that id belongs to another partition")}
	}
	etag := string(resp.ETag)
	if etag == "" {
		// Some emulators send the ETag only in the body.
		etag, _ = stringField(fields, "_etag")
	}
	return store.Item{ID: id, PartitionKey: partitionKey, Body: resp.Value, ETag: etag}, nil
}

// Replace overwrites an existing document, conditionally when ifMatch is set.
func (c *container) Replace(ctx context.Context, partitionKey, id string, body []byte, ifMatch string) (string, error) {
	cl := c.call(opReplace, id, false)
	body, err := c.prepare(cl, partitionKey, id, body)
	if err != nil {
		return "", err
	}
	var resp azcosmos.ItemResponse
	err = c.b.run(ctx, cl, func(ctx context.Context) error {
		var err error
		resp, err = c.cc.ReplaceItem(ctx, azcosmos.NewPartitionKeyString(partitionKey), id, body, ifMatchOptions(ifMatch))
		return err
	})
	if err != nil {
		return "", err
	}
	return writtenETag(resp), nil
}

// Upsert creates or overwrites unconditionally. Repeating it is harmless, so
// it is retried after timeouts too.
func (c *container) Upsert(ctx context.Context, partitionKey, id string, body []byte) (string, error) {
	cl := c.call(opUpsert, id, true)
	body, err := c.prepare(cl, partitionKey, id, body)
	if err != nil {
		return "", err
	}
	var resp azcosmos.ItemResponse
	err = c.b.run(ctx, cl, func(ctx context.Context) error {
		var err error
		resp, err = c.cc.UpsertItem(ctx, azcosmos.NewPartitionKeyString(partitionKey), body, nil)
		return err
	})
	if err != nil {
		return "", err
	}
	return writtenETag(resp), nil
}

// Delete removes the document, conditionally when ifMatch is set.
func (c *container) Delete(ctx context.Context, partitionKey, id string, ifMatch string) error {
	cl := c.call(opDelete, id, false)
	return c.b.run(ctx, cl, func(ctx context.Context) error {
		_, err := c.cc.DeleteItem(ctx, azcosmos.NewPartitionKeyString(partitionKey), id, ifMatchOptions(ifMatch))
		return err
	})
}

func ifMatchOptions(ifMatch string) *azcosmos.ItemOptions {
	if ifMatch == "" {
		return nil
	}
	etag := azcore.ETag(ifMatch)
	return &azcosmos.ItemOptions{IfMatchEtag: &etag}
}

// writtenETag returns the new version tag of a write: Cosmos sends it as a
// header (the body is empty since content responses are off); cosmium sends
// it only in the body it returns anyway.
func writtenETag(resp azcosmos.ItemResponse) string {
	if resp.ETag != "" {
		return string(resp.ETag)
	}
	var sys struct {
		ETag string `json:"_etag"`
	}
	if len(resp.Value) > 0 && json.Unmarshal(resp.Value, &sys) == nil {
		return sys.ETag
	}
	return ""
}

// prepare checks that body is a JSON object naming the same id and partition
// key as the call (Cosmos would otherwise store it under the body's own id, or
// refuse it with a 400), and stamps the container's ttl into bodies without one.
func (c *container) prepare(cl call, partitionKey, id string, body []byte) ([]byte, error) {
	invalid := func(format string, args ...any) error {
		return &opError{call: cl, cause: fmt.Errorf(format, args...)}
	}
	if id == "" {
		return nil, invalid("the document id is empty")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, invalid("the body is not a JSON object")
	}
	if got, ok := stringField(fields, "id"); !ok || got != id {
		return nil, invalid("the body's \"id\" is %s, want %q", rawOrMissing(fields["id"]), id)
	}
	if got, ok := stringField(fields, c.spec.PartitionKey); !ok || got != partitionKey {
		return nil, invalid("the body's %q is %s, want the partition key %q",
			c.spec.PartitionKey, rawOrMissing(fields[c.spec.PartitionKey]), partitionKey)
	}
	if c.ttlSeconds == 0 {
		return body, nil
	}
	if _, ok := fields["ttl"]; ok {
		return body, nil // the document's own retention wins
	}
	// Append "ttl" before the closing brace instead of re-encoding the body,
	// so every other byte is stored exactly as the caller wrote it.
	trimmed := bytes.TrimRight(body, " \t\r\n")
	out := make([]byte, 0, len(trimmed)+24)
	out = append(out, trimmed[:len(trimmed)-1]...)
	if len(fields) > 0 {
		out = append(out, ',')
	}
	out = append(out, `"ttl":`...)
	out = strconv.AppendInt(out, c.ttlSeconds, 10)
	return append(out, '}'), nil
}

// stringField returns fields[name] when it is a JSON string.
func stringField(fields map[string]json.RawMessage, name string) (string, bool) {
	raw, ok := fields[name]
	if !ok {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

func rawOrMissing(raw json.RawMessage) string {
	if raw == nil {
		return "missing"
	}
	const maxLen = 80
	if len(raw) > maxLen {
		return string(raw[:maxLen]) + "…"
	}
	return string(raw)
}
