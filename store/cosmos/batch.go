package cosmos

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/data/azcosmos"

	"github.com/castiel/integration-manager/store"
)

const opBatch = "batch"

// batchOpFailure is a transactional batch the service refused because of one
// of its operations (HTTP 207 with per-operation statuses: the culprit's own,
// 424 Failed Dependency for the rest).
type batchOpFailure struct {
	index  int
	status int
	resp   *http.Response
}

func (e *batchOpFailure) Error() string {
	s := "operation " + strconv.Itoa(e.index) + " answered HTTP " + strconv.Itoa(e.status)
	if t := http.StatusText(e.status); t != "" {
		s += " " + t
	}
	return s + "; the batch wrote nothing"
}

// Batch runs ops as one TransactionalBatch in partitionKey. ExecuteTransactionalBatch
// returns a nil error for a refused batch, so every operation's status is
// checked: the response's Success flag, and each result too (an emulator
// may answer 200 with a failed operation inside).
func (c *container) Batch(ctx context.Context, partitionKey string, ops []store.Op) ([]string, error) {
	cl := c.call(opBatch, "", repeatableBatch(ops))
	if err := store.ValidateBatch(ops); err != nil {
		return nil, &opError{call: cl, cause: err}
	}
	bodies := make([][]byte, len(ops))
	for i, op := range ops {
		if op.Kind == store.OpDelete || op.Kind == store.OpReplace {
			// azcosmos writes these ids into the request without JSON escaping.
			if q, _ := json.Marshal(op.ID); string(q) != `"`+op.ID+`"` {
				return nil, &opError{call: c.call(opBatch, op.ID, false),
					cause: fmt.Errorf("operation %d: id %q cannot be sent in a batch (it needs JSON escaping)", i, op.ID)}
			}
		}
		if op.Kind == store.OpDelete {
			continue
		}
		body, err := c.prepare(c.call(opBatch, op.ID, false), partitionKey, op.ID, op.Body)
		if err != nil {
			return nil, err
		}
		bodies[i] = body
	}
	pk := azcosmos.NewPartitionKeyString(partitionKey)
	var resp azcosmos.TransactionalBatchResponse
	err := c.b.run(ctx, cl, func(ctx context.Context) error {
		b := c.cc.NewTransactionalBatch(pk)
		for i, op := range ops {
			var opts *azcosmos.TransactionalBatchItemOptions
			if op.IfMatch != "" {
				etag := azcore.ETag(op.IfMatch)
				opts = &azcosmos.TransactionalBatchItemOptions{IfMatchETag: &etag}
			}
			switch op.Kind {
			case store.OpCreate:
				b.CreateItem(bodies[i], nil)
			case store.OpUpsert:
				b.UpsertItem(bodies[i], nil)
			case store.OpReplace:
				b.ReplaceItem(op.ID, bodies[i], opts)
			case store.OpDelete:
				b.DeleteItem(op.ID, opts)
			}
		}
		var err error
		resp, err = c.cc.ExecuteTransactionalBatch(ctx, b, nil)
		if err != nil {
			return err
		}
		return batchFailure(resp, len(ops))
	})
	if err != nil {
		var f *batchOpFailure
		var oe *opError
		if errors.As(err, &f) && errors.As(err, &oe) && isRefusal(oe.kind) {
			return nil, &store.BatchError{Index: f.index, Op: ops[f.index].Kind, ID: ops[f.index].ID, Err: err}
		}
		return nil, err
	}
	etags := make([]string, len(ops))
	for i, r := range resp.OperationResults {
		if ops[i].Kind != store.OpDelete {
			etags[i] = resultETag(r)
		}
	}
	return etags, nil
}

// batchFailure reports the operation that made a batch fail, or nil.
func batchFailure(resp azcosmos.TransactionalBatchResponse, n int) error {
	for i, r := range resp.OperationResults {
		if s := int(r.StatusCode); s >= 300 && s != http.StatusFailedDependency {
			return &batchOpFailure{index: i, status: s, resp: resp.RawResponse}
		}
	}
	if !resp.Success {
		status := 0
		if resp.RawResponse != nil {
			status = resp.RawResponse.StatusCode
		}
		return fmt.Errorf("the batch failed (HTTP %d) without naming an operation", status)
	}
	if len(resp.OperationResults) != n {
		return fmt.Errorf("the batch of %d operations answered %d results", n, len(resp.OperationResults))
	}
	return nil
}

// resultETag is an operation's new ETag: from its result, or the body's
// "_etag" when the result carries none (cosmium names the field differently).
func resultETag(r azcosmos.TransactionalBatchResult) string {
	if r.ETag != "" {
		return string(r.ETag)
	}
	var sys struct {
		ETag string `json:"_etag"`
	}
	if len(r.ResourceBody) > 0 && json.Unmarshal(r.ResourceBody, &sys) == nil {
		return sys.ETag
	}
	return ""
}

// repeatableBatch: a batch of upserts may be sent again after an ambiguous
// failure; any other operation could turn its own earlier success into a
// refusal.
func repeatableBatch(ops []store.Op) bool {
	for _, op := range ops {
		if op.Kind != store.OpUpsert {
			return false
		}
	}
	return true
}

func isRefusal(kind error) bool {
	return errors.Is(kind, store.ErrConflict) || errors.Is(kind, store.ErrNotFound) || errors.Is(kind, store.ErrPreconditionFailed)
}
