package syncrun_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/connector"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/syncrun"
	"github.com/castiel/integration-manager/integrations"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/sender"
	"github.com/castiel/integration-manager/secrets"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

const (
	tenant      = "tenant-a"
	integration = "int-crm"
	entity      = "contacts"
)

// testMapping renames, nests, adds a constant and ignores the deleted flag:
// not the identity, so pulls and pushes both go through ApplyMapping.
var testMapping = []domain.FieldMapping{
	{Source: "name", Target: "fullName"},
	{Source: "email", Target: "contact.email"},
	{Target: "source", Constant: "fake-crm"},
	{Source: "deleted", Ignore: true},
}

// countingShards is the real local shard store, counting writes per key and
// calling afterPut after each put (a test kills a run from there).
type countingShards struct {
	*shards.Local
	uncounted bool // puts and deletes are not tallied per key (harnessConfig.asDeployed)
	mu        sync.Mutex
	puts      map[string]int
	deletes   map[string]int
	total     atomic.Int64
	afterPut  atomic.Pointer[func(n int64)]
	afterList atomic.Pointer[func()]
}

// List calls afterList once the page is read (a test changes the shard
// under a run from there).
func (c *countingShards) List(ctx context.Context, tenantID, entity, pageToken string, limit int) ([]shards.Record, string, error) {
	recs, next, err := c.Local.List(ctx, tenantID, entity, pageToken, limit)
	if f := c.afterList.Load(); f != nil && err == nil {
		(*f)()
	}
	return recs, next, err
}

// ListListed is the walk's List (undecoded data): afterList follows it too.
func (c *countingShards) ListListed(ctx context.Context, tenantID, entity, pageToken string, limit int) ([]shards.Listed, string, error) {
	recs, next, err := c.Local.ListListed(ctx, tenantID, entity, pageToken, limit)
	if f := c.afterList.Load(); f != nil && err == nil {
		(*f)()
	}
	return recs, next, err
}

func (c *countingShards) Put(ctx context.Context, tenantID, entity, key string, data map[string]any) (shards.Record, error) {
	rec, err := c.Local.Put(ctx, tenantID, entity, key, data)
	if err != nil {
		return rec, err
	}
	c.tally(c.puts, key)
	n := c.total.Add(1)
	if f := c.afterPut.Load(); f != nil {
		(*f)(n)
	}
	return rec, nil
}

// WriteBatch counts the puts and deletes of a batch as Put and Delete do.
func (c *countingShards) WriteBatch(ctx context.Context, tenantID, entity string, writes []shards.Write) ([]shards.WriteResult, error) {
	res, err := c.Local.WriteBatch(ctx, tenantID, entity, writes)
	if err != nil {
		return res, err
	}
	for i, w := range writes {
		if res[i].Err != nil {
			continue
		}
		if w.Delete {
			c.tally(c.deletes, w.Key)
			continue
		}
		c.tally(c.puts, w.Key)
		n := c.total.Add(1)
		if f := c.afterPut.Load(); f != nil {
			(*f)(n)
		}
	}
	return res, nil
}

func (c *countingShards) Delete(ctx context.Context, tenantID, entity, key string) error {
	err := c.Local.Delete(ctx, tenantID, entity, key)
	if err == nil {
		c.tally(c.deletes, key)
	}
	return err
}

func (c *countingShards) tally(counts map[string]int, key string) {
	if c.uncounted {
		return
	}
	c.mu.Lock()
	counts[key]++
	c.mu.Unlock()
}

func (c *countingShards) putsOf(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.puts[key]
}

func (c *countingShards) allPuts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.puts))
	for k, v := range c.puts {
		out[k] = v
	}
	return out
}

func (c *countingShards) onPut(f func(n int64)) { c.afterPut.Store(&f) }

// eventLog records what the worker publishes and forwards it to the real
// sender (so every message passes its validation and reaches the broker).
type eventLog struct {
	next syncrun.Sender
	mu   sync.Mutex
	sent []domain.Message
	fail atomic.Bool
}

func (e *eventLog) Send(ctx context.Context, tenantID string, msg domain.Message) error {
	if e.fail.Load() {
		return fmt.Errorf("broker unreachable (simulated)")
	}
	if err := e.next.Send(ctx, tenantID, msg); err != nil {
		return err
	}
	e.mu.Lock()
	e.sent = append(e.sent, msg)
	e.mu.Unlock()
	return nil
}

func (e *eventLog) ofType(ceType string) []domain.Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []domain.Message
	for _, m := range e.sent {
		if m.CEType() == ceType {
			out = append(out, m)
		}
	}
	return out
}

// auditLog records audit events.
type auditLog struct {
	mu     sync.Mutex
	events []syncrun.AuditEvent
}

func (a *auditLog) Record(_ context.Context, ev syncrun.AuditEvent) error {
	a.mu.Lock()
	a.events = append(a.events, ev)
	a.mu.Unlock()
	return nil
}

func (a *auditLog) count(action syncrun.AuditAction) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, e := range a.events {
		if e.Action == action {
			n++
		}
	}
	return n
}

// pooledTransport keeps as many idle connections per host as the processes do
// (app/shared.go): with the default two, most of a run's concurrent writes
// would dial a new connection each.
func pooledTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	return t
}

// writeCounter counts successful writes (POST, PATCH, PUT, DELETE) that
// reach the API and calls after with the running total.
type writeCounter struct {
	next      http.RoundTripper
	n         atomic.Int64
	after     atomic.Pointer[func(n int64)]
	reads     atomic.Int64
	afterRead atomic.Pointer[func(n int64)] // called after each GET is answered, before the caller sees it
}

func (w *writeCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := w.next.RoundTrip(r)
	if err == nil && r.Method == http.MethodGet {
		n := w.reads.Add(1)
		if f := w.afterRead.Load(); f != nil {
			(*f)(n)
		}
	}
	if err == nil && r.Method != http.MethodGet && resp.StatusCode < 300 && r.URL.Path != "/oauth/token" {
		n := w.n.Add(1)
		if f := w.after.Load(); f != nil {
			(*f)(n)
		}
	}
	return resp, err
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// harness is the sync worker on the real embedded store, the real local
// secret and shard stores, the in-process transport and the fake external API.
type harness struct {
	t         testing.TB
	db        *embedded.Backend
	srv       *fakeapi.Server
	secrets   *secrets.Local
	shards    *countingShards
	events    *eventLog
	audit     *auditLog
	writes    *writeCounter
	transport *messaging.Transport
	factory   *integrations.Factory
	h         *syncrun.Handler
	logs      *syncBuffer
	credRef   string
	metrics   *prometheus.Registry // the worker's metrics

	tasks     *store.Repository[domain.SyncTask]
	execs     *store.Repository[domain.Execution]
	conflicts *store.Repository[domain.Conflict]
	conns     *store.Repository[domain.Connection]
}

type harnessConfig struct {
	fake    fakeapi.Options
	opts    syncrun.Options
	logNone bool
	// asDeployed wires the worker as the standalone process does (app/sync.go):
	// the audit trail goes to the log, and the shard store keeps no per-key
	// tally of writes. For the benchmarks, so the tests' bookkeeping (a
	// map entry per record written, every audit event kept) is not charged
	// to the run; tests that count writes or audit events leave it off.
	asDeployed bool
}

func newHarness(t testing.TB, cfg harnessConfig) *harness {
	t.Helper()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "db"), store.Containers(time.Hour))
	if err != nil {
		t.Fatalf("open the embedded store: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx := context.Background()
	logs := &syncBuffer{}
	logger := zerolog.New(logs).Level(zerolog.DebugLevel)
	if cfg.logNone {
		logger = zerolog.Nop()
	}
	transport := messaging.NewInProcess(zerolog.Nop())
	t.Cleanup(func() { _ = transport.Close() })

	open := func(name string) store.Container {
		c, err := db.Container(name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	local, err := secrets.NewLocal(open(store.LocalSecretsContainer), key)
	if err != nil {
		t.Fatal(err)
	}
	local2, err := shards.NewLocal(open(store.LocalShardsContainer))
	if err != nil {
		t.Fatal(err)
	}
	srv := fakeapi.New(t, cfg.fake)
	hs := &harness{
		t: t, db: db, srv: srv, secrets: local, logs: logs, transport: transport,
		shards: &countingShards{Local: local2, uncounted: cfg.asDeployed, puts: map[string]int{}, deletes: map[string]int{}},
		events: &eventLog{next: sender.New(transport.Publisher(), "test")},
		audit:  &auditLog{},
		writes: &writeCounter{next: pooledTransport()},
		tasks:  store.NewRepository[domain.SyncTask](open(domain.ContainerSyncTasks)),
		execs:  store.NewRepository[domain.Execution](open(domain.ContainerExecutions)),
		conns:  store.NewRepository[domain.Connection](open(domain.ContainerConnections)),
	}
	hs.conflicts = store.NewRepository[domain.Conflict](open(domain.ContainerConflicts))

	// The integration as the API would have installed and connected it.
	p := srv.Provider()
	if _, err := store.NewRepository[domain.Provider](open(domain.ContainerProviders)).Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	in := domain.Integration{ID: integration, TenantID: tenant, CatalogEntryID: "cat-crm", ProviderID: p.ID,
		ProviderCategory: p.Category, Name: "CRM", Status: domain.IntegrationActive, CreatedAt: now, UpdatedAt: now}
	if _, err := store.NewRepository[domain.Integration](open(domain.ContainerIntegrations)).Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	conn := domain.Connection{ID: integration, IntegrationID: integration, TenantID: tenant, Status: domain.ConnectionConnected, CreatedAt: now, UpdatedAt: now}
	if cred, ok := credentialFor(srv, srv.Provider().Auth.Kind); ok {
		b, err := connector.EncodeCredential(cred)
		if err != nil {
			t.Fatal(err)
		}
		if conn.CredentialRef, err = local.Put(ctx, tenant, b); err != nil {
			t.Fatal(err)
		}
		hs.credRef = conn.CredentialRef
	}
	if _, err := hs.conns.Create(ctx, conn); err != nil {
		t.Fatal(err)
	}

	hs.factory, err = integrations.NewFactory(db, local, integrations.Options{
		Connector: connector.Options{
			HTTPClient:     &http.Client{Transport: hs.writes},
			BackoffInitial: time.Millisecond, BackoffMax: 10 * time.Millisecond,
			RetryAfterCap: 20 * time.Millisecond, Timeout: 10 * time.Second,
		},
		Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs.metrics = prometheus.NewRegistry()
	var auditor syncrun.Auditor = hs.audit
	if cfg.asDeployed {
		auditor = syncrun.LogAuditor{Logger: logger}
	}
	hs.h, err = syncrun.New(syncrun.Deps{
		Store: db, Clients: hs.factory, Shards: hs.shards, Events: hs.events, Auditor: auditor, Logger: logger,
		Metrics: hs.metrics,
	}, cfg.opts)
	if err != nil {
		t.Fatalf("syncrun.New: %v", err)
	}
	return hs
}

// credentialFor is what a connection to the fake holds after setup.
func credentialFor(srv *fakeapi.Server, kind domain.AuthKind) (connector.Credential, bool) {
	switch kind {
	case domain.AuthAPIKey:
		return connector.Credential{APIKey: fakeapi.APIKey}, true
	case domain.AuthBearer:
		return connector.Credential{Token: fakeapi.BearerToken}, true
	case domain.AuthBasic:
		return connector.Credential{Username: fakeapi.Username, Password: fakeapi.Password}, true
	case domain.AuthOAuth2ClientCredentials:
		return connector.Credential{ClientID: fakeapi.ClientID, ClientSecret: fakeapi.ClientSecret}, true
	case domain.AuthOAuth2RefreshToken:
		return connector.Credential{ClientID: fakeapi.ClientID, ClientSecret: fakeapi.ClientSecret, RefreshToken: srv.IssueRefreshToken()}, true
	}
	return connector.Credential{}, false
}

// task stores a sync task of the fake's contacts.
func (hs *harness) task(id string, dir domain.SyncDirection, mode domain.SyncMode, mutate ...func(*domain.SyncTask)) domain.SyncTask {
	hs.t.Helper()
	now := time.Now().UTC()
	t := domain.SyncTask{
		ID: id, TenantID: tenant, IntegrationID: integration, Entity: entity, Direction: dir, Mode: mode,
		Mapping: testMapping, ConflictPolicy: domain.ConflictPolicy{Strategy: domain.StrategyManual},
		Enabled: true, CreatedAt: now, UpdatedAt: now,
	}
	for _, m := range mutate {
		m(&t)
	}
	if err := t.Validate(); err != nil {
		hs.t.Fatalf("test task is invalid: %v", err)
	}
	if _, err := hs.tasks.Create(context.Background(), t); err != nil {
		hs.t.Fatal(err)
	}
	return t
}

func (hs *harness) storedTask(id string) domain.SyncTask {
	hs.t.Helper()
	t, _, err := hs.tasks.Get(context.Background(), tenant, id)
	if err != nil {
		hs.t.Fatal(err)
	}
	return t
}

func runCmd(execID, taskID string) domain.RunSync {
	return domain.RunSync{ExecutionID: execID, TenantID: tenant, SyncTaskID: taskID, Trigger: domain.TriggerAPI, RequestedAt: time.Now().UTC()}
}

// run runs the task once to its end and returns its execution; the handler
// must ack (nil) the run.
func (hs *harness) run(execID, taskID string) domain.Execution {
	hs.t.Helper()
	if err := hs.h.Run(context.Background(), runCmd(execID, taskID)); err != nil {
		hs.t.Fatalf("run %s: the handler returned %v; want the run to finish (ack)\nlogs:\n%s", execID, err, tail(hs.logs.String(), 4000))
	}
	return hs.execution(execID)
}

func (hs *harness) execution(id string) domain.Execution {
	hs.t.Helper()
	e, _, err := hs.execs.Get(context.Background(), tenant, id)
	if err != nil {
		hs.t.Fatalf("read execution %s: %v", id, err)
	}
	return e
}

// shardRecord reads a record from the shard; ok false if absent.
func (hs *harness) shardRecord(key string) (map[string]any, bool) {
	rec, err := hs.shards.Get(context.Background(), tenant, entity, key)
	if err != nil {
		return nil, false
	}
	return rec.Data, true
}

// shardKeys lists the live keys in the shard.
func (hs *harness) shardKeys() []string {
	hs.t.Helper()
	var keys []string
	token := ""
	for {
		recs, next, err := hs.shards.List(context.Background(), tenant, entity, token, 1000)
		if err != nil {
			hs.t.Fatal(err)
		}
		for _, r := range recs {
			if !r.Deleted {
				keys = append(keys, r.Key)
			}
		}
		if next == "" {
			break
		}
		token = next
	}
	slices.Sort(keys)
	return keys
}

// putInternal writes a record on the Castiel side, as a Castiel user would.
func (hs *harness) putInternal(key string, data map[string]any) {
	hs.t.Helper()
	if _, err := hs.shards.Local.Put(context.Background(), tenant, entity, key, data); err != nil {
		hs.t.Fatal(err)
	}
}

func mustStatus(t testing.TB, e domain.Execution, want domain.ExecutionStatus) {
	t.Helper()
	if e.Status != want {
		t.Fatalf("run %s ended %s (error %q, class %q), want %s; progress %+v", e.ID, e.Status, e.Error, e.ErrorClass, want, e.Sync)
	}
}

func stats(e domain.Execution) domain.SyncStats {
	if e.Stats == nil {
		return domain.SyncStats{}
	}
	return *e.Stats
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// mapped is the fake's record in Castiel's shape (what a pull stores).
func mapped(r fakeapi.Record) map[string]any {
	return map[string]any{
		"id": r.ID, "fullName": r.Name, "contact": map[string]any{"email": r.Email},
		"source": "fake-crm", "updated_at": domain.FormatTime(r.UpdatedAt),
	}
}
