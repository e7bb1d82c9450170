package cosmos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"

	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmos"
	"github.com/castiel/integration-manager/store/cosmostest"
	"github.com/castiel/integration-manager/store/storetest"
)

const (
	noIfMatchReason = "cosmium v0.1.20 does not enforce If-Match; set IM_TEST_COSMOS_ENDPOINT (and IM_TEST_COSMOS_KEY) to run this against a real account"
	noTTLReason     = "cosmium v0.1.20 does not expire by TTL; set IM_TEST_COSMOS_ENDPOINT (and IM_TEST_COSMOS_KEY) to run this against a real account"
	// cosmium keys documents by id alone within a container
	// (internal/repositories/documents.go), so the same id in two partitions
	// conflicts and a write under another partition key reaches the document.
	// cosmium applies the operations of a batch one by one and answers 200
	// (api/handlers/documents.go handleBatchRequest): a refused operation
	// leaves the earlier ones written.
	noAtomicBatchReason    = "cosmium v0.1.20 does not make batches atomic (it applies each operation alone); set IM_TEST_COSMOS_ENDPOINT (and IM_TEST_COSMOS_KEY) to run this against a real account"
	noPartitionScopeReason = "cosmium v0.1.20 keys documents by id alone within a container (same id in two partitions → 409, writes ignore the partition key); set IM_TEST_COSMOS_ENDPOINT (and IM_TEST_COSMOS_KEY) to run this against a real account"
)

func TestConformance_Cosmos(t *testing.T) {
	em := cosmostest.Start(t)
	// What each backend asked for when it created its containers: cosmium
	// v0.1.20 drops DefaultTimeToLive from container properties, so on the
	// emulator the request is the only evidence the backend turned expiry on.
	var mu sync.Mutex
	requested := map[store.Backend]*containerRecorder{}

	open := func(t *testing.T, specs []store.ContainerSpec) store.Backend {
		rec := &containerRecorder{}
		b := openRecorded(t, em, specs, rec)
		mu.Lock()
		requested[b] = rec
		mu.Unlock()
		return b
	}
	ttlDeclared := func(t *testing.T, b store.Backend, name string) bool {
		t.Helper()
		ttl, err := b.(*cosmos.Backend).ContainerDefaultTTL(t.Context(), name)
		if err != nil {
			t.Fatalf("read the properties of container %s: %v", name, err)
		}
		if ttl != nil || em.Real {
			return ttl != nil && *ttl == -1
		}
		mu.Lock()
		rec := requested[b]
		mu.Unlock()
		sent, ok := rec.defaultTTL(name)
		if !ok {
			t.Fatalf("the backend never asked to create container %s", name)
		}
		t.Logf("cosmium does not keep DefaultTimeToLive: checking the container request instead (defaultTtl %v)", deref(sent))
		return sent != nil && *sent == -1
	}
	storetest.Run(t, open, storetest.Capabilities{
		EnforcesIfMatch: em.Real,
		ExpiresTTL:      em.Real,
		NoIfMatchReason: noIfMatchReason,
		NoTTLReason:     noTTLReason,
		TTLDeclared:     ttlDeclared,

		PartitionScopedIDs:     em.Real,
		NoPartitionScopeReason: noPartitionScopeReason,
		AtomicBatch:            em.Real,
		NoAtomicBatchReason:    noAtomicBatchReason,
	})
}

func BenchmarkCosmos(b *testing.B) {
	em := cosmostest.Start(b)
	storetest.Bench(b, func(b *testing.B) store.Backend {
		return em.Open(b, store.Containers(time.Hour))
	})
}

func openRecorded(t testing.TB, em *cosmostest.Emulator, specs []store.ContainerSpec, rec *containerRecorder) *cosmos.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := cosmos.OpenWithTransport(ctx, em.Config(t), specs, cosmostest.Logger(t), func(next policy.Transporter) policy.Transporter {
		rec.next = next
		return rec
	})
	if err != nil {
		t.Fatalf("open the Cosmos store on %s: %v", em.Endpoint, err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// containerRecorder passes every request on and remembers the properties of
// each container-create request.
type containerRecorder struct {
	next policy.Transporter
	mu   sync.Mutex
	ttl  map[string]*int32
}

func (r *containerRecorder) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && strings.HasSuffix(strings.TrimSuffix(req.URL.Path, "/"), "/colls") && req.Body != nil {
		body, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		var props struct {
			ID         string `json:"id"`
			DefaultTTL *int32 `json:"defaultTtl"`
		}
		if json.Unmarshal(body, &props) == nil {
			r.mu.Lock()
			if r.ttl == nil {
				r.ttl = map[string]*int32{}
			}
			r.ttl[props.ID] = props.DefaultTTL
			r.mu.Unlock()
		}
	}
	return r.next.Do(req)
}

func (r *containerRecorder) defaultTTL(name string) (*int32, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ttl, ok := r.ttl[name]
	return ttl, ok
}

func deref(p *int32) any {
	if p == nil {
		return nil
	}
	return *p
}
