package cosmos_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmos"
	"github.com/castiel/integration-manager/store/cosmostest"
)

var testSpecs = []store.ContainerSpec{
	{Name: "hooks", PartitionKey: "tenantId"},
	{Name: "runs", PartitionKey: "tenantId", TTL: 90 * time.Minute},
	{Name: "catalog", PartitionKey: "category", CrossPartition: true},
}

func mustContainer(t *testing.T, b store.Backend, name string) store.Container {
	t.Helper()
	c, err := b.Container(name)
	if err != nil {
		t.Fatalf("container %s: %v", name, err)
	}
	return c
}

func TestOpen_TwiceOnTheSameDatabaseSucceedsAndSharesData(t *testing.T) {
	em := cosmostest.Start(t)
	cfg := em.Config(t)
	ctx := t.Context()
	first, err := cosmos.Open(ctx, cfg, testSpecs, cosmostest.Logger(t))
	if err != nil {
		t.Fatalf("first Open: %v", err)
	}
	defer first.Close()
	second, err := cosmos.Open(ctx, cfg, testSpecs, cosmostest.Logger(t))
	if err != nil {
		t.Fatalf("second Open of an existing database and containers must succeed (every replica opens at start-up): %v", err)
	}
	defer second.Close()

	if _, err := mustContainer(t, first, "hooks").Create(ctx, "t1", "h1", []byte(`{"id":"h1","tenantId":"t1"}`)); err != nil {
		t.Fatalf("Create through the first backend: %v", err)
	}
	if _, err := mustContainer(t, second, "hooks").Read(ctx, "t1", "h1"); err != nil {
		t.Fatalf("the second backend does not see the first one's document: %v", err)
	}
	if err := second.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

func TestOpen_RefusesAnExistingContainerWithAnotherPartitionKey(t *testing.T) {
	em := cosmostest.Start(t)
	cfg := em.Config(t)
	ctx := t.Context()
	b, err := cosmos.Open(ctx, cfg, []store.ContainerSpec{{Name: "hooks", PartitionKey: "tenantId"}}, cosmostest.Logger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	b.Close()
	_, err = cosmos.Open(ctx, cfg, []store.ContainerSpec{{Name: "hooks", PartitionKey: "integrationId"}}, cosmostest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "partition key") {
		t.Fatalf("Open with another partition key for an existing container: got %v, want an error naming the partition key", err)
	}
}

func TestOpen_RejectsSpecsItCannotServe(t *testing.T) {
	cfg := cosmos.Config{Endpoint: "https://localhost:1/", Key: cosmostest.WellKnownKey, Database: "db"}
	for _, tc := range []struct {
		name  string
		specs []store.ContainerSpec
	}{
		{"unnamed", []store.ContainerSpec{{PartitionKey: "tenantId"}}},
		{"declared twice", []store.ContainerSpec{{Name: "a", PartitionKey: "k"}, {Name: "a", PartitionKey: "k"}}},
		{"nested partition key", []store.ContainerSpec{{Name: "a", PartitionKey: "tenant/id"}}},
		{"empty partition key", []store.ContainerSpec{{Name: "a"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := cosmos.Open(t.Context(), cfg, tc.specs, zerolog.Nop()); err == nil {
				t.Error("Open accepted the specs")
			}
		})
	}
}

func TestOpen_UnreachableEndpointIsUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	cfg := cosmos.Config{Endpoint: "https://" + addr + "/", Key: cosmostest.WellKnownKey, Database: "db", InsecureSkipVerify: true}
	_, err = cosmos.Open(ctx, cfg, testSpecs, zerolog.Nop())
	if !errors.Is(err, store.ErrUnavailable) || !store.IsTransient(err) {
		t.Fatalf("Open against a closed port: got %v, want a transient ErrUnavailable", err)
	}
}

func TestErrors_MapToTheStoreSentinels(t *testing.T) {
	em := cosmostest.Start(t)
	b := em.Open(t, testSpecs)
	hooks := mustContainer(t, b, "hooks")
	ctx := t.Context()
	if _, err := hooks.Create(ctx, "t1", "h1", []byte(`{"id":"h1","tenantId":"t1"}`)); err != nil {
		t.Fatalf("Create: %v", err)
	}
	body := []byte(`{"id":"missing","tenantId":"t1"}`)
	_, createErr := hooks.Create(ctx, "t1", "h1", []byte(`{"id":"h1","tenantId":"t1"}`))
	_, readErr := hooks.Read(ctx, "t1", "missing")
	_, replaceErr := hooks.Replace(ctx, "t1", "missing", body, "")
	deleteErr := hooks.Delete(ctx, "t1", "missing", "")
	_, foreignErr := hooks.Read(ctx, "another-tenant", "h1")

	for _, tc := range []struct {
		what string
		err  error
		want error
	}{
		{"Create of an existing id", createErr, store.ErrConflict},
		{"Read of a missing id", readErr, store.ErrNotFound},
		{"Replace of a missing id", replaceErr, store.ErrNotFound},
		{"Delete of a missing id", deleteErr, store.ErrNotFound},
		{"Read of an id under another partition key", foreignErr, store.ErrNotFound},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.what, tc.err, tc.want)
			continue
		}
		if store.IsTransient(tc.err) {
			t.Errorf("%s: %v is reported as transient", tc.what, tc.err)
		}
		if msg := tc.err.Error(); !strings.Contains(msg, "hooks/") || strings.Contains(msg, "\n") {
			t.Errorf("%s: error %q should be one line naming the container and id", tc.what, msg)
		}
	}
	if _, err := b.Container("nope"); err == nil {
		t.Error("Container of an undeclared name returned no error")
	}
}

func TestWrites_RefuseBodiesThatDisagreeWithTheKeys(t *testing.T) {
	em := cosmostest.Start(t)
	hooks := mustContainer(t, em.Open(t, testSpecs), "hooks")
	ctx := t.Context()
	for _, tc := range []struct{ name, body string }{
		{"other id", `{"id":"b","tenantId":"t1"}`},
		{"no id", `{"tenantId":"t1"}`},
		{"other partition key", `{"id":"a","tenantId":"t2"}`},
		{"numeric partition key", `{"id":"a","tenantId":1}`},
		{"not an object", `["a"]`},
		{"not JSON", `{"id":`},
	} {
		if _, err := hooks.Create(ctx, "t1", "a", []byte(tc.body)); err == nil {
			t.Errorf("Create of a body with %s (%s) under t1/a succeeded", tc.name, tc.body)
		}
	}
	if _, err := hooks.Read(ctx, "t1", "a"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a refused body was stored anyway (Read: %v)", err)
	}
}

func TestQuery_RefusesWhatItCannotExpress(t *testing.T) {
	em := cosmostest.Start(t)
	b := em.Open(t, testSpecs)
	hooks, catalog := mustContainer(t, b, "hooks"), mustContainer(t, b, "catalog")
	ctx := t.Context()
	for _, tc := range []struct {
		name string
		c    store.Container
		q    store.Query
	}{
		{"cross-partition on tenant data", hooks, store.Query{}},
		{"field with a dot", hooks, store.Query{PartitionKey: "t", Filters: []store.Filter{{Field: "a.b", Value: 1}}}},
		{"field with a quote", hooks, store.Query{PartitionKey: "t", Filters: []store.Filter{{Field: `a"] OR 1=1 --`, Value: 1}}}},
		{"empty field", hooks, store.Query{PartitionKey: "t", Filters: []store.Filter{{Field: "", Value: 1}}}},
		{"object value", hooks, store.Query{PartitionKey: "t", Filters: []store.Filter{{Field: "a", Value: map[string]int{"x": 1}}}}},
		{"nil value", hooks, store.Query{PartitionKey: "t", Filters: []store.Filter{{Field: "a", Value: nil}}}},
		{"token of another shape", catalog, store.Query{Continuation: "eyJ4IjoxfQ"}},
	} {
		if _, err := tc.c.Query(ctx, tc.q); !errors.Is(err, store.ErrInvalidQuery) {
			t.Errorf("%s: got %v, want ErrInvalidQuery", tc.name, err)
		}
	}
}

func TestQuery_SendsFilterValuesOnlyAsParameters(t *testing.T) {
	em := cosmostest.Start(t)
	spy := &faults{}
	b := openWithFaults(t, em, cosmos.Config{}, spy)
	hooks := mustContainer(t, b, "hooks")
	ctx := t.Context()
	if _, err := hooks.Create(ctx, "t1", "h1", []byte(`{"id":"h1","tenantId":"t1","name":"a"}`)); err != nil {
		t.Fatal(err)
	}
	const hostile = `a" OR 1=1 --`
	page, err := hooks.Query(ctx, store.Query{PartitionKey: "t1", Filters: []store.Filter{{Field: "name", Value: hostile}}})
	if err != nil {
		t.Fatalf("Query: %v", err)
	}
	if len(page.Items) != 0 {
		t.Errorf("a filter value was interpreted as SQL: %d documents matched %q", len(page.Items), hostile)
	}
	queries := spy.queries()
	if len(queries) == 0 {
		t.Fatal("no query request was sent")
	}
	last := queries[len(queries)-1]
	if strings.Contains(last.Query, "OR 1=1") || strings.Contains(last.Query, "t1") {
		t.Errorf("query text %q contains caller values; they must travel as parameters", last.Query)
	}
	if !strings.Contains(last.Query, "ORDER BY c.id") || !strings.Contains(last.Query, "TOP 51") {
		t.Errorf("query text %q should page by id with TOP limit+1", last.Query)
	}
}

// --- retries and fault injection ---

// faults sits between azcosmos and the network. Once armed, it answers
// requests for documents with respond(n) (n counts them from 1) or passes
// them on when respond returns nil. It also records every query it sees.
type faults struct {
	next policy.Transporter

	mu      sync.Mutex
	respond func(n int, req *http.Request) (*http.Response, error)
	seen    int
	sent    []queryBody
}

type queryBody struct {
	Query      string `json:"query"`
	Parameters []struct {
		Name  string `json:"name"`
		Value any    `json:"value"`
	} `json:"parameters"`
}

func (f *faults) arm(respond func(n int, req *http.Request) (*http.Response, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.respond, f.seen = respond, 0
}

func (f *faults) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen
}

func (f *faults) queries() []queryBody {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]queryBody(nil), f.sent...)
}

func (f *faults) Do(req *http.Request) (*http.Response, error) {
	isDoc := strings.Contains(req.URL.Path, "/docs")
	if isDoc && req.Header.Get("x-ms-documentdb-query") != "" && req.Body != nil {
		raw, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(raw))
		var q queryBody
		if json.Unmarshal(raw, &q) == nil {
			f.mu.Lock()
			f.sent = append(f.sent, q)
			f.mu.Unlock()
		}
	}
	f.mu.Lock()
	respond := f.respond
	if isDoc && respond != nil {
		f.seen++
	}
	n := f.seen
	f.mu.Unlock()
	if isDoc && respond != nil {
		if resp, err := respond(n, req); resp != nil || err != nil {
			return resp, err
		}
	}
	return f.next.Do(req)
}

func statusResponse(req *http.Request, status int, header http.Header) *http.Response {
	if header == nil {
		header = http.Header{}
	}
	header.Set("Content-Type", "application/json")
	body := fmt.Sprintf(`{"code":%q,"message":"injected by the test"}`, http.StatusText(status))
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: header, Body: io.NopCloser(strings.NewReader(body)), ContentLength: int64(len(body)),
		Request: req,
	}
}

func openWithFaults(t *testing.T, em *cosmostest.Emulator, tune cosmos.Config, f *faults) *cosmos.Backend {
	t.Helper()
	cfg := em.Config(t)
	cfg.MaxRetries, cfg.RequestTimeout = tune.MaxRetries, tune.RequestTimeout
	b, err := cosmos.OpenWithTransport(t.Context(), cfg, testSpecs, cosmostest.Logger(t), func(next policy.Transporter) policy.Transporter {
		f.next = next
		return f
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func seed(t *testing.T, c store.Container) {
	t.Helper()
	if _, err := c.Upsert(t.Context(), "t1", "h1", []byte(`{"id":"h1","tenantId":"t1"}`)); err != nil {
		t.Fatalf("seed: %v", err)
	}
}

func TestRetry_ThrottledReadWaitsForTheServiceHintThenSucceeds(t *testing.T) {
	em := cosmostest.Start(t)
	f := &faults{}
	hooks := mustContainer(t, openWithFaults(t, em, cosmos.Config{MaxRetries: 3}, f), "hooks")
	seed(t, hooks)
	const hint = 400 * time.Millisecond
	f.arm(func(n int, req *http.Request) (*http.Response, error) {
		if n == 1 {
			return statusResponse(req, http.StatusTooManyRequests, http.Header{"X-Ms-Retry-After-Ms": {"400"}}), nil
		}
		return nil, nil
	})
	start := time.Now()
	it, err := hooks.Read(t.Context(), "t1", "h1")
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Read after one 429: %v (a throttled request must be retried)", err)
	}
	if it.ID != "h1" {
		t.Errorf("Read returned %q", it.ID)
	}
	if got := f.attempts(); got != 2 {
		t.Errorf("%d attempts, want 2 (one throttled, one retried; no second layer of retries)", got)
	}
	if elapsed < hint {
		t.Errorf("the retry came after %v, before the service's x-ms-retry-after-ms of %v", elapsed, hint)
	}
}

func TestRetry_ThrottledWriteIsRetriedToo(t *testing.T) {
	em := cosmostest.Start(t)
	f := &faults{}
	hooks := mustContainer(t, openWithFaults(t, em, cosmos.Config{MaxRetries: 3}, f), "hooks")
	f.arm(func(n int, req *http.Request) (*http.Response, error) {
		if n <= 2 {
			return statusResponse(req, http.StatusTooManyRequests, http.Header{"X-Ms-Retry-After-Ms": {"20"}}), nil
		}
		return nil, nil
	})
	etag, err := hooks.Create(t.Context(), "t1", "w1", []byte(`{"id":"w1","tenantId":"t1"}`))
	if err != nil || etag == "" {
		t.Fatalf("Create after two 429s: etag %q, err %v", etag, err)
	}
	if got := f.attempts(); got != 3 {
		t.Errorf("%d attempts, want 3", got)
	}
}

func TestRetry_PersistentUnavailableEndsAsErrUnavailable(t *testing.T) {
	em := cosmostest.Start(t)
	f := &faults{}
	const maxRetries = 2
	hooks := mustContainer(t, openWithFaults(t, em, cosmos.Config{MaxRetries: maxRetries}, f), "hooks")
	seed(t, hooks)
	f.arm(func(_ int, req *http.Request) (*http.Response, error) {
		return statusResponse(req, http.StatusServiceUnavailable, nil), nil
	})
	for _, op := range []struct {
		name string
		do   func() error
	}{
		{"Read", func() error { _, err := hooks.Read(t.Context(), "t1", "h1"); return err }},
		{"Create", func() error {
			_, err := hooks.Create(t.Context(), "t1", "h2", []byte(`{"id":"h2","tenantId":"t1"}`))
			return err
		}},
		{"Query", func() error { _, err := hooks.Query(t.Context(), store.Query{PartitionKey: "t1"}); return err }},
	} {
		f.arm(func(_ int, req *http.Request) (*http.Response, error) {
			return statusResponse(req, http.StatusServiceUnavailable, nil), nil
		})
		err := op.do()
		if !errors.Is(err, store.ErrUnavailable) || !store.IsTransient(err) {
			t.Errorf("%s against a persistent 503: got %v, want a transient ErrUnavailable", op.name, err)
		}
		if got := f.attempts(); got != maxRetries+1 {
			t.Errorf("%s: %d attempts, want %d (MaxRetries %d bounds all retries)", op.name, got, maxRetries+1, maxRetries)
		}
	}
}

func TestRetry_ThrottlingBeyondMaxRetriesIsErrThrottled(t *testing.T) {
	em := cosmostest.Start(t)
	f := &faults{}
	hooks := mustContainer(t, openWithFaults(t, em, cosmos.Config{MaxRetries: 1}, f), "hooks")
	f.arm(func(_ int, req *http.Request) (*http.Response, error) {
		return statusResponse(req, http.StatusTooManyRequests, http.Header{"X-Ms-Retry-After-Ms": {"10"}}), nil
	})
	_, err := hooks.Read(t.Context(), "t1", "h1")
	if !errors.Is(err, store.ErrThrottled) || !store.IsTransient(err) {
		t.Fatalf("Read throttled beyond MaxRetries: got %v, want a transient ErrThrottled", err)
	}
	if got := f.attempts(); got != 2 {
		t.Errorf("%d attempts, want 2", got)
	}
}

func TestRetry_CallerDeadlineEndsTheWait(t *testing.T) {
	em := cosmostest.Start(t)
	f := &faults{}
	hooks := mustContainer(t, openWithFaults(t, em, cosmos.Config{MaxRetries: 10}, f), "hooks")
	f.arm(func(_ int, req *http.Request) (*http.Response, error) {
		return statusResponse(req, http.StatusTooManyRequests, http.Header{"X-Ms-Retry-After-Ms": {"5000"}}), nil
	})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := hooks.Read(ctx, "t1", "h1")
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Read returned after %v; the caller's 300 ms deadline must end the retries", d)
	}
	if !errors.Is(err, store.ErrThrottled) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want ErrThrottled and context.DeadlineExceeded", err)
	}
}

func TestRetry_TimedOutReadIsRetriedButTimedOutCreateIsNot(t *testing.T) {
	em := cosmostest.Start(t)
	f := &faults{}
	hooks := mustContainer(t, openWithFaults(t, em, cosmos.Config{MaxRetries: 3, RequestTimeout: 300 * time.Millisecond}, f), "hooks")
	seed(t, hooks)
	hangFirst := func(n int, req *http.Request) (*http.Response, error) {
		if n == 1 {
			<-req.Context().Done() // the per-attempt RequestTimeout ends it
			return nil, req.Context().Err()
		}
		return nil, nil
	}

	f.arm(hangFirst)
	if _, err := hooks.Read(t.Context(), "t1", "h1"); err != nil {
		t.Errorf("Read whose first attempt timed out: %v (reads are safe to repeat)", err)
	}
	if got := f.attempts(); got != 2 {
		t.Errorf("Read: %d attempts, want 2", got)
	}

	f.arm(hangFirst)
	_, err := hooks.Create(t.Context(), "t1", "c1", []byte(`{"id":"c1","tenantId":"t1"}`))
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Create whose attempt timed out: got %v, want ErrUnavailable", err)
	}
	if got := f.attempts(); got != 1 {
		t.Errorf("Create: %d attempts, want 1: a timed-out create may have been applied, repeating it would report a false conflict", got)
	}
}

func TestSecrets_TheKeyAppearsInNoLogOrError(t *testing.T) {
	em := cosmostest.Start(t)
	var logs bytes.Buffer
	logger := zerolog.New(&logs).Level(zerolog.DebugLevel)
	var errs []string

	// A wrong key: the service refuses it.
	wrong := em.Config(t)
	wrong.Key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="
	if _, err := cosmos.Open(t.Context(), wrong, testSpecs, logger); err == nil {
		t.Error("Open with a wrong key succeeded")
	} else {
		errs = append(errs, err.Error())
	}
	// The right key, with retried and failed operations logged at debug level.
	f := &faults{}
	cfg := em.Config(t)
	cfg.MaxRetries = 1
	b, err := cosmos.OpenWithTransport(t.Context(), cfg, testSpecs, logger, func(next policy.Transporter) policy.Transporter {
		f.next = next
		return f
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	f.arm(func(_ int, req *http.Request) (*http.Response, error) {
		return statusResponse(req, http.StatusServiceUnavailable, nil), nil
	})
	if _, err := mustContainer(t, b, "hooks").Read(t.Context(), "t1", "x"); err != nil {
		errs = append(errs, err.Error())
	}
	errs = append(errs, fmt.Sprintf("%v %+v %#v", cfg, cfg, cfg))

	for _, key := range []string{wrong.Key, cfg.Key} {
		if strings.Contains(logs.String(), key) {
			t.Errorf("a log line contains the account key:\n%s", logs.String())
		}
		for _, e := range errs {
			if strings.Contains(e, key) {
				t.Errorf("an error or printed Config contains the account key: %s", e)
			}
		}
	}
	if !strings.Contains(logs.String(), "retrying") {
		t.Errorf("the retried request was not logged; logs:\n%s", logs.String())
	}
}
