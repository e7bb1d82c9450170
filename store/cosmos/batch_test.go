package cosmos_test

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmos"
	"github.com/castiel/integration-manager/store/cosmostest"
)

// batchAnswer is what Cosmos DB answers a refused transactional batch: HTTP
// 207 with one result per operation, the culprit's own status and 424 for
// the others (cosmium answers differently, so it is injected here).
func batchAnswer(req *http.Request, statuses ...string) *http.Response {
	body := "[" + strings.Join(statuses, ",") + "]"
	return &http.Response{
		StatusCode: http.StatusMultiStatus, Status: "207 Multi-Status",
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		Request: req,
	}
}

func isBatch(req *http.Request) bool {
	return req.Method == http.MethodPost && req.Header.Get("x-ms-cosmos-is-batch-request") != ""
}

func TestBatch_A207NamesTheRefusedOperationWithoutRetrying(t *testing.T) {
	em := cosmostest.Start(t)
	f := &faults{}
	hooks := mustContainer(t, openWithFaults(t, em, cosmos.Config{MaxRetries: 3}, f), "hooks")
	f.arm(func(_ int, req *http.Request) (*http.Response, error) {
		if isBatch(req) {
			return batchAnswer(req, `{"statusCode":424}`, `{"statusCode":412}`, `{"statusCode":424}`), nil
		}
		return nil, nil
	})
	_, err := hooks.Batch(t.Context(), "t1", []store.Op{
		store.UpsertOp("a", []byte(`{"id":"a","tenantId":"t1"}`)),
		store.ReplaceOp("b", []byte(`{"id":"b","tenantId":"t1"}`), `"stale"`),
		store.DeleteOp("c", ""),
	})
	var be *store.BatchError
	if !errors.As(err, &be) || be.Index != 1 || be.ID != "b" || !errors.Is(err, store.ErrPreconditionFailed) {
		t.Fatalf("Batch refused on its second operation: got %v, want a *store.BatchError for operation 1 wrapping ErrPreconditionFailed", err)
	}
	if store.IsTransient(err) {
		t.Error("a refused operation was reported as transient")
	}
	if got := f.attempts(); got != 1 {
		t.Errorf("%d attempts, want 1 (a refusal is final)", got)
	}
}

func TestBatch_AThrottledBatchIsRetried(t *testing.T) {
	em := cosmostest.Start(t)
	f := &faults{}
	hooks := mustContainer(t, openWithFaults(t, em, cosmos.Config{MaxRetries: 3}, f), "hooks")
	f.arm(func(n int, req *http.Request) (*http.Response, error) {
		if isBatch(req) && n == 1 {
			return batchAnswer(req, `{"statusCode":429}`, `{"statusCode":424}`), nil
		}
		return nil, nil
	})
	etags, err := hooks.Batch(t.Context(), "t1", []store.Op{
		store.CreateOp("x", []byte(`{"id":"x","tenantId":"t1"}`)),
		store.CreateOp("y", []byte(`{"id":"y","tenantId":"t1"}`)),
	})
	if err != nil {
		t.Fatalf("Batch after one throttled attempt: %v (a throttled batch wrote nothing and must be retried)", err)
	}
	if len(etags) != 2 || etags[0] == "" || etags[1] == "" {
		t.Errorf("ETags %q, want one per created document", etags)
	}
	if got := f.attempts(); got < 2 {
		t.Errorf("%d attempts, want the throttled batch sent again", got)
	}
	if _, err := hooks.Read(t.Context(), "t1", "y"); err != nil {
		t.Errorf("the retried batch did not write: %v", err)
	}
}

func TestBatch_IDsThatNeedEscapingAreRefusedBeforeSending(t *testing.T) {
	em := cosmostest.Start(t)
	f := &faults{}
	hooks := mustContainer(t, openWithFaults(t, em, cosmos.Config{}, f), "hooks")
	f.arm(func(_ int, _ *http.Request) (*http.Response, error) { return nil, nil })
	if _, err := hooks.Batch(t.Context(), "t1", []store.Op{store.DeleteOp(`a"b`, "")}); err == nil {
		t.Fatal("a delete of an id holding a quote was sent (azcosmos would put it into the request unescaped)")
	}
	if got := f.attempts(); got != 0 {
		t.Errorf("%d requests sent, want none", got)
	}
}
