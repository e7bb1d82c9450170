package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/auth"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

// Bearer tokens of the test principals.
const (
	tokAdminA    = "key-tenant-a-admin-0001"
	tokViewerA   = "key-tenant-a-viewer-0001"
	tokAdminB    = "key-tenant-b-admin-0001"
	tokViewerB   = "key-tenant-b-viewer-0001"
	tokPlatform  = "key-platform-admin-0001"
	tenantA      = "tenant-a"
	tenantB      = "tenant-b"
	tenantOps    = "ops"
	testPolicyOK = "hooks.example.com"
)

// memSecrets is an in-memory Secret Management keyed by tenant and ref.
type memSecrets struct {
	mu     sync.Mutex
	n      int
	values map[string][]byte // tenant + "/" + ref -> value
}

func newMemSecrets() *memSecrets { return &memSecrets{values: make(map[string][]byte)} }

func (m *memSecrets) Put(_ context.Context, tenantID string, value []byte) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.n++
	ref := fmt.Sprintf("sec-%d", m.n)
	m.values[tenantID+"/"+ref] = bytes.Clone(value)
	return ref, nil
}

func (m *memSecrets) Get(_ context.Context, tenantID, ref string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[tenantID+"/"+ref]
	if !ok {
		return nil, fmt.Errorf("secret %s of %s: %w", ref, tenantID, store.ErrNotFound)
	}
	return bytes.Clone(v), nil
}

func (m *memSecrets) Replace(_ context.Context, tenantID, ref string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.values[tenantID+"/"+ref]; !ok {
		return fmt.Errorf("secret %s of %s: %w", ref, tenantID, store.ErrNotFound)
	}
	m.values[tenantID+"/"+ref] = bytes.Clone(value)
	return nil
}

func (m *memSecrets) Delete(_ context.Context, tenantID, ref string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.values[tenantID+"/"+ref]; !ok {
		return fmt.Errorf("secret %s of %s: %w", ref, tenantID, store.ErrNotFound)
	}
	delete(m.values, tenantID+"/"+ref)
	return nil
}

func (m *memSecrets) value(tenantID, ref string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.values[tenantID+"/"+ref]
	return string(v), ok
}

// sent is one command the API handed to the CommandSender.
type sent struct {
	tenantID      string
	msg           domain.Message
	correlationID string
}

// recordingSender records commands; err makes it fail, gate makes it wait.
type recordingSender struct {
	mu   sync.Mutex
	sent []sent
	err  error
	gate chan struct{} // when set, Send waits for it to be closed
}

func (s *recordingSender) Send(ctx context.Context, tenantID string, cmd domain.Message) error {
	s.mu.Lock()
	gate, err := s.gate, s.err
	s.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, sent{tenantID: tenantID, msg: cmd, correlationID: CorrelationID(ctx)})
	return nil
}

func (s *recordingSender) all() []sent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sent(nil), s.sent...)
}

func (s *recordingSender) count() int { return len(s.all()) }

// fakePoison is the lead's PoisonQueue stand-in.
type fakePoison struct {
	mu          sync.Mutex
	items       []PoisonMessage
	republished []string
}

func (f *fakePoison) ListPoison(_ context.Context, cursor string, limit int) ([]PoisonMessage, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]PoisonMessage(nil), f.items...), "", nil
}

func (f *fakePoison) RepublishPoison(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range f.items {
		if m.ID == id {
			f.republished = append(f.republished, id)
			return nil
		}
	}
	return fmt.Errorf("poison %s: %w", id, store.ErrNotFound)
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

// harness is one API on a real embedded store.
type harness struct {
	t       *testing.T
	api     *api
	store   *embedded.Backend
	sender  *recordingSender
	secrets *memSecrets
	poison  *fakePoison
	logs    *syncBuffer
	reg     *prometheus.Registry

	mu  sync.Mutex
	now time.Time
}

type harnessOption func(*Deps, *Options)

func newHarness(t *testing.T, opts ...harnessOption) *harness {
	t.Helper()
	db, err := embedded.Open(filepath.Join(t.TempDir(), "db"), store.Containers(time.Hour))
	if err != nil {
		t.Fatalf("open the embedded store: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	keys, err := auth.NewStaticKeys([]config.StaticKey{
		{Key: tokAdminA, TenantID: tenantA, Roles: []string{"tenant_admin"}},
		{Key: tokViewerA, TenantID: tenantA, Roles: []string{"viewer"}},
		{Key: tokAdminB, TenantID: tenantB, Roles: []string{"tenant_admin"}},
		{Key: tokViewerB, TenantID: tenantB, Roles: []string{"viewer"}},
		{Key: tokPlatform, TenantID: tenantOps, Roles: []string{"platform_admin"}},
	})
	if err != nil {
		t.Fatalf("static keys: %v", err)
	}
	h := &harness{
		t: t, store: db, sender: &recordingSender{}, secrets: newMemSecrets(), poison: &fakePoison{},
		logs: &syncBuffer{}, reg: prometheus.NewRegistry(), now: time.Now().UTC().Truncate(time.Second),
	}
	deps := Deps{Store: db, Auth: keys, Commands: h.sender, Secrets: h.secrets, Poison: h.poison, Metrics: h.reg}
	o := Options{
		MaxBodyBytes:          64 << 10,
		URLPolicy:             domain.URLPolicy{RequireHTTPS: true},
		SecretRotationOverlap: time.Hour,
		Now:                   h.clock,
		Logger:                zerolog.New(h.logs),
	}
	for _, opt := range opts {
		opt(&deps, &o)
	}
	a, err := newAPI(deps, o)
	if err != nil {
		t.Fatalf("newAPI: %v", err)
	}
	h.api = a
	return h
}

func (h *harness) clock() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.now
}

func (h *harness) advance(d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.now = h.now.Add(d)
}

// response is a finished request.
type response struct {
	*httptest.ResponseRecorder
	body string
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("answer is not the expected JSON (%v): %s", err, r.body)
	}
}

func (r response) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	return m
}

func (r response) problem(t *testing.T) Problem {
	t.Helper()
	if ct := r.Header().Get("Content-Type"); ct != problemContentType {
		t.Fatalf("error answer has Content-Type %q, want %s; body: %s", ct, problemContentType, r.body)
	}
	var p Problem
	r.json(t, &p)
	if p.Status != r.Code || p.Type == "" || p.Title == "" {
		t.Fatalf("problem document incomplete (status %d vs %d): %s", p.Status, r.Code, r.body)
	}
	return p
}

// do sends a request. body is a string or []byte sent as is, or a value sent as JSON.
func (h *harness) do(method, path, token string, body any, headers ...string) response {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			h.t.Fatalf("encode request body: %v", err)
		}
		rd = bytes.NewReader(raw)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	h.api.ServeHTTP(rec, req)
	return response{ResponseRecorder: rec, body: rec.Body.String()}
}

// must sends a request and fails unless it gets want.
func (h *harness) must(want int, method, path, token string, body any, headers ...string) response {
	h.t.Helper()
	r := h.do(method, path, token, body, headers...)
	if r.Code != want {
		h.t.Fatalf("%s %s answered %d, want %d; body: %s", method, path, r.Code, want, r.body)
	}
	return r
}

// ingressSpec is how the test provider signs its ingress posts.
var ingressSpec = domain.SignatureSpec{
	Header: "X-Signature", Scheme: domain.SchemeHMACSHA256, Encoding: domain.EncodingHex,
	Prefix: "sha256=", TimestampHeader: "X-Timestamp", Tolerance: "5m",
}

func testProvider() domain.Provider {
	return domain.Provider{
		ID: "acme-crm", Category: "crm", Name: "Acme CRM",
		Auth:       domain.AuthSpec{Kind: domain.AuthBearer},
		BaseURL:    "https://api.acme.example",
		Pagination: domain.PaginationSpec{Kind: domain.PaginationNone},
		Entities: []domain.EntityDef{{
			Name: "contacts", ListPath: "/contacts", PrimaryKey: "id",
			CursorParam: "updated_since", CursorField: "updatedAt",
			Create: &domain.RequestSpec{Method: "POST", Path: "/contacts"},
		}},
		Ingress: &ingressSpec,
	}
}

// world is the resources each tenant owns after seed.
type world struct {
	catalogEntry string
	tenants      map[string]*tenantWorld
}

type tenantWorld struct {
	token, viewer string
	integration   string
	ingressSecret string
	webhook       string
	webhookSecret string
	syncTask      string
	conflict      string
	execution     string
	credentials   string
}

// seed creates the platform data and, for tenants A and B, one of every resource.
func (h *harness) seed() *world {
	h.t.Helper()
	h.must(201, "POST", "/api/v1/providers", tokPlatform, testProvider())
	h.must(201, "POST", "/api/v1/catalog", tokPlatform, domain.CatalogEntry{
		ID: "acme-crm-entry", Category: "crm", ProviderID: "acme-crm", Name: "Acme CRM", VisibleByDefault: true,
	})
	w := &world{catalogEntry: "acme-crm-entry", tenants: map[string]*tenantWorld{
		tenantA: {token: tokAdminA, viewer: tokViewerA},
		tenantB: {token: tokAdminB, viewer: tokViewerB},
	}}
	for tenant, tw := range w.tenants {
		var in integrationCreated
		h.must(201, "POST", "/api/v1/integrations", tw.token, map[string]any{"catalogEntryId": w.catalogEntry, "name": "CRM of " + tenant}).json(h.t, &in)
		tw.integration, tw.ingressSecret = in.ID, in.IngressSecret
		tw.credentials = "credential-value-of-" + tenant
		h.must(200, "PUT", "/api/v1/integrations/"+in.ID+"/connection", tw.token, map[string]any{"credentials": map[string]string{"apiKey": tw.credentials}})
		var wh webhookCreated
		h.must(201, "POST", "/api/v1/webhooks", tw.token, map[string]any{"url": "https://hooks.example.com/" + tenant, "eventTypes": []string{"contact.*"}}).json(h.t, &wh)
		tw.webhook, tw.webhookSecret = wh.ID, wh.Secret
		var st domain.SyncTask
		h.must(201, "POST", "/api/v1/sync-tasks", tw.token, validSyncTask(in.ID)).json(h.t, &st)
		tw.syncTask = st.ID
		tw.conflict = "cfl-" + tenant
		now := h.clock()
		if _, err := h.api.conflicts.Create(context.Background(), domain.Conflict{
			ID: tw.conflict, TenantID: tenant, SyncTaskID: st.ID, IntegrationID: in.ID, Entity: "contacts", RecordKey: "42",
			Kind: domain.ConflictUpdateUpdate, Status: domain.ConflictStatusPending, DetectedAt: now, CreatedAt: now, UpdatedAt: now,
		}); err != nil {
			h.t.Fatalf("seed conflict: %v", err)
		}
		tw.execution = "exe-" + tenant
		if _, err := h.api.executions.Create(context.Background(), domain.Execution{
			ID: tw.execution, TenantID: tenant, Kind: domain.ExecutionWebhookDelivery, Status: domain.ExecDelivered,
			WebhookID: wh.ID, StartedAt: now, CreatedAt: now, UpdatedAt: now,
		}); err != nil {
			h.t.Fatalf("seed execution: %v", err)
		}
	}
	return w
}

func validSyncTask(integrationID string) map[string]any {
	return map[string]any{
		"integrationId":  integrationID,
		"entity":         "contacts",
		"direction":      "pull",
		"mode":           "incremental",
		"schedule":       "15m",
		"mapping":        []map[string]any{{"source": "email", "target": "email"}},
		"conflictPolicy": map[string]any{"strategy": "newest_wins"},
	}
}
