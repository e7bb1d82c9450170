package conflicts

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/sender"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/embedded"
)

const (
	testTenant = "tenant-a"
	testTask   = "task-1"
	testEntity = "contacts"
	testExec   = "exe-1"
)

// testMapping renames a field and converts another, so a write-back that
// forgets the inverse mapping shows.
func testMapping() []domain.FieldMapping {
	return []domain.FieldMapping{
		{Source: "full_name", Target: "name"},
		{Source: "score", Target: "score", Convert: domain.ConvertNumber},
	}
}

// fakeExternal is an external system in memory: records in the external
// shape, read through the task's mapping like the lead's adapter does.
type fakeExternal struct {
	mu      sync.Mutex
	records map[string]extRecord
	writes  []ExternalWrite
	now     func() time.Time

	failWrites   int           // the next n writes fail transiently
	rejectWrites bool          // every write is refused permanently
	failReads    int           // the next n reads fail transiently
	holdWrite    chan struct{} // when set, a write waits for it to close
	writeStarted chan struct{} // when set, receives once per write
}

type extRecord struct {
	data       map[string]any
	modifiedAt time.Time
}

func newFakeExternal() *fakeExternal {
	return &fakeExternal{records: map[string]extRecord{}, now: time.Now}
}

func (f *fakeExternal) Read(ctx context.Context, tenantID string, task domain.SyncTask, key string) (*domain.SideRecord, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failReads > 0 {
		f.failReads--
		return nil, errors.New("external API timed out (simulated)")
	}
	rec, ok := f.records[key]
	if !ok {
		return &domain.SideRecord{Deleted: true}, nil
	}
	data, err := domain.ApplyMapping(task.Mapping, rec.data, domain.MapToInternal)
	if err != nil {
		return nil, messaging.Permanent(err)
	}
	return &domain.SideRecord{Data: data, ModifiedAt: rec.modifiedAt}, nil
}

func (f *fakeExternal) Write(ctx context.Context, tenantID string, task domain.SyncTask, w ExternalWrite) error {
	f.mu.Lock()
	started, hold := f.writeStarted, f.holdWrite
	f.mu.Unlock()
	if started != nil {
		started <- struct{}{}
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes = append(f.writes, w)
	switch {
	case f.rejectWrites:
		return messaging.Permanent(errors.New("external API: HTTP 422: email is invalid (simulated)"))
	case f.failWrites > 0:
		f.failWrites--
		return errors.New("external API: HTTP 503 (simulated)")
	}
	_, exists := f.records[w.Key]
	switch {
	case w.Delete:
		delete(f.records, w.Key)
	case w.Create && exists:
		return messaging.Permanent(fmt.Errorf("external API: HTTP 409: %s exists", w.Key))
	case !w.Create && !exists:
		return messaging.Permanent(fmt.Errorf("external API: HTTP 404: no %s to update", w.Key))
	default:
		f.records[w.Key] = extRecord{data: w.Data, modifiedAt: f.now()}
	}
	return nil
}

// set stores a record given in Castiel's shape (nil deletes it).
func (f *fakeExternal) set(t testing.TB, key string, internal map[string]any, at time.Time) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if internal == nil {
		delete(f.records, key)
		return
	}
	data, err := domain.ApplyMapping(testMapping(), internal, domain.MapToExternal)
	if err != nil {
		t.Fatal(err)
	}
	f.records[key] = extRecord{data: data, modifiedAt: at}
}

// raw returns the stored external-shape record (nil if absent).
func (f *fakeExternal) raw(key string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec, ok := f.records[key]
	if !ok {
		return nil
	}
	return maps.Clone(rec.data)
}

func (f *fakeExternal) allWrites() []ExternalWrite {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.writes)
}

func (f *fakeExternal) configure(fn func(*fakeExternal)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// countingShards counts writes to Castiel's side and can fail reads.
type countingShards struct {
	shards.Store
	puts, deletes      atomic.Int32
	failGets, failPuts atomic.Int32
}

func (s *countingShards) Get(ctx context.Context, tenantID, entity, key string) (shards.Record, error) {
	if s.failGets.Add(-1) >= 0 {
		return shards.Record{}, fmt.Errorf("shard manager down (simulated): %w", shards.ErrUnavailable)
	}
	return s.Store.Get(ctx, tenantID, entity, key)
}

func (s *countingShards) Put(ctx context.Context, tenantID, entity, key string, data map[string]any) (shards.Record, error) {
	s.puts.Add(1)
	if s.failPuts.Add(-1) >= 0 {
		return shards.Record{}, fmt.Errorf("shard manager down (simulated): %w", shards.ErrUnavailable)
	}
	return s.Store.Put(ctx, tenantID, entity, key, data)
}

func (s *countingShards) Delete(ctx context.Context, tenantID, entity, key string) error {
	s.deletes.Add(1)
	return s.Store.Delete(ctx, tenantID, entity, key)
}

// eventLog records result events and forwards them to the real sender, so
// they pass its validation and reach the in-process broker.
type eventLog struct {
	next EventSender
	mu   sync.Mutex
	sent []domain.Message
}

func (e *eventLog) Send(ctx context.Context, tenantID string, msg domain.Message) error {
	if err := e.next.Send(ctx, tenantID, msg); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.sent = append(e.sent, msg)
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

// harness: resolvers on the real embedded store, the local shard store, the
// in-process transport and the real sender.
type harness struct {
	db          *embedded.Backend
	transport   *messaging.Transport
	shards      *countingShards
	external    *fakeExternal
	events      *eventLog
	conflicts   *store.Repository[conflictDoc]
	resolutions *store.Repository[resolutionDoc]
	tasks       *store.Repository[domain.SyncTask]
	states      *store.Repository[domain.RecordState]
}

func newHarness(t testing.TB) *harness {
	db, err := embedded.Open(filepath.Join(t.TempDir(), "db"), store.Containers(time.Hour))
	if err != nil {
		t.Fatalf("open the embedded store: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	transport := messaging.NewInProcess(zerolog.Nop())
	t.Cleanup(func() { _ = transport.Close() })
	if err := transport.Declare(context.Background(), Role, Topics()...); err != nil {
		t.Fatal(err)
	}
	shardsC, _ := db.Container(store.LocalShardsContainer)
	local, err := shards.NewLocal(shardsC)
	if err != nil {
		t.Fatal(err)
	}
	open := func(name string) store.Container {
		c, err := db.Container(name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	return &harness{
		db: db, transport: transport,
		shards:      &countingShards{Store: local},
		external:    newFakeExternal(),
		events:      &eventLog{next: sender.New(transport.Publisher(), "test")},
		conflicts:   store.NewRepository[conflictDoc](open(domain.ContainerConflicts)),
		resolutions: store.NewRepository[resolutionDoc](open(domain.ContainerSyncConflicts)),
		tasks:       store.NewRepository[domain.SyncTask](open(domain.ContainerSyncTasks)),
		states:      store.NewRepository[domain.RecordState](open(store.SyncStateContainer)),
	}
}

// fastOptions keep write-back retries short.
func fastOptions() Options {
	return Options{WriteInitial: 5 * time.Millisecond, WriteMax: 20 * time.Millisecond, WriteAttempts: 3, WriteMaxElapsed: time.Second}
}

func (h *harness) resolver(t testing.TB, opts Options) *Resolver {
	t.Helper()
	r, err := New(Deps{Store: h.db, Shards: h.shards, External: h.external, Writer: h.external, Events: h.events, Logger: zerolog.Nop()}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

// run starts a router with r's consumers, as one resolver replica.
func (h *harness) run(t testing.TB, r *Resolver) {
	t.Helper()
	policy := messaging.Policy{RetryInitial: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond, RetryMaxElapsed: 10 * time.Second, CloseTimeout: 5 * time.Second}
	router, err := messaging.NewRouter(zerolog.Nop(), policy, h.transport.Publisher())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Register(router, h.transport, 2, 2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = router.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		_ = router.Close()
		<-done
	})
	select {
	case <-router.Running():
	case <-time.After(5 * time.Second):
		t.Fatal("router did not start")
	}
}

// record is one record in conflict: the agreed base and each side's version
// now, in Castiel's shape (nil: deleted on that side, or never synced for base).
type record struct {
	key            string
	base, ext, in  map[string]any
	extAt, inAt    time.Time
	policy         domain.ConflictPolicy
	direction      domain.SyncDirection
	noPendingState bool // leave the state without the pending conflict (as if the run died before marking it)
}

// seed stores the task, both sides, the record's sync state and the
// conflict as a sync run would, and returns the conflict.
func (h *harness) seed(t testing.TB, rec record) domain.Conflict {
	t.Helper()
	ctx := context.Background()
	dir := rec.direction
	if dir == "" {
		dir = domain.DirectionBidirectional
	}
	now := time.Now().UTC()
	task := domain.SyncTask{
		ID: testTask, TenantID: testTenant, IntegrationID: "int-1", Entity: testEntity, Direction: dir,
		Mode: domain.ModeFullRefresh, Mapping: testMapping(), ConflictPolicy: rec.policy, Enabled: true,
		CreatedAt: now, UpdatedAt: now,
	}
	if err := task.Validate(); err != nil {
		t.Fatalf("test task: %v", err)
	}
	if _, err := h.tasks.Upsert(ctx, task); err != nil {
		t.Fatal(err)
	}
	h.external.set(t, rec.key, rec.ext, rec.extAt)
	if rec.in != nil {
		if _, err := h.shards.Store.Put(ctx, testTenant, testEntity, rec.key, rec.in); err != nil {
			t.Fatal(err)
		}
	} else if err := h.shards.Store.Delete(ctx, testTenant, testEntity, rec.key); err != nil && !errors.Is(err, shards.ErrNotFound) {
		t.Fatal(err)
	}
	extSide, err := h.external.Read(ctx, testTenant, task, rec.key)
	if err != nil {
		t.Fatal(err)
	}
	inSide := &domain.SideRecord{Deleted: true}
	if got, err := h.shards.Store.Get(ctx, testTenant, testEntity, rec.key); err == nil {
		inSide = got.Side()
	}

	state := domain.NewRecordState(testTenant, testTask, rec.key)
	if rec.base != nil {
		agreed := &domain.SideRecord{Data: rec.base}
		state.Agree(agreed, agreed, now.Add(-time.Hour))
	}
	d := domain.Classify(dir, state, extSide, inSide)
	if d.Action != domain.ActionConflict {
		t.Fatalf("test record %s is not in conflict: %+v", rec.key, d)
	}
	c := domain.Conflict{
		ID: domain.ConflictID(testExec, testEntity, rec.key), TenantID: testTenant, SyncTaskID: testTask,
		IntegrationID: "int-1", ExecutionID: testExec, Entity: testEntity, RecordKey: rec.key, Kind: d.Conflict,
		External: dataOf(extSide), Internal: dataOf(inSide), Base: rec.base,
		ExternalModifiedAt: timePtr(rec.extAt), InternalModifiedAt: timePtr(rec.inAt),
		Status: domain.ConflictStatusPending, DetectedAt: now, CreatedAt: now, UpdatedAt: now,
	}
	if !rec.noPendingState {
		state.MarkConflict(c.ID, extSide, inSide, now)
	}
	if _, err := h.states.Upsert(ctx, *state); err != nil {
		t.Fatal(err)
	}
	if _, err := h.conflicts.Upsert(ctx, conflictDoc{Conflict: c}); err != nil {
		t.Fatal(err)
	}
	return c
}

func detectedMessage(t testing.TB, c domain.Conflict) *message.Message {
	t.Helper()
	ev := domain.ConflictDetected{
		TenantID: c.TenantID, ConflictID: c.ID, SyncTaskID: c.SyncTaskID, IntegrationID: c.IntegrationID,
		ExecutionID: testExec, Entity: c.Entity, RecordKey: c.RecordKey, Kind: c.Kind, DetectedAt: c.DetectedAt,
	}
	m, err := messaging.NewMessage(context.Background(), domain.TypeConflictDetected, "test", c.TenantID, ev)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func resolveMessage(t testing.TB, c domain.Conflict, actor string, side domain.Side, values map[string]any) *message.Message {
	t.Helper()
	cmd := domain.ResolveConflict{TenantID: c.TenantID, ConflictID: c.ID, Actor: actor, Side: side, Values: values}
	m, err := messaging.NewMessage(context.Background(), domain.TypeResolveConflict, "test", c.TenantID, cmd)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (h *harness) publish(t testing.TB, topic string, m *message.Message) {
	t.Helper()
	if err := h.transport.Publisher().Publish(topic, m); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) detect(t testing.TB, c domain.Conflict) {
	t.Helper()
	h.publish(t, messaging.TopicEvtConflictDetected, detectedMessage(t, c))
}

func (h *harness) conflict(t testing.TB, id string) conflictDoc {
	t.Helper()
	c, _, err := h.conflicts.Get(context.Background(), testTenant, id)
	if err != nil {
		t.Fatalf("read conflict %s: %v", id, err)
	}
	return c
}

// waitStatus waits until the conflict has status want.
func (h *harness) waitStatus(t testing.TB, id string, want domain.ConflictStatus) conflictDoc {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := h.conflict(t, id)
		if c.Status == want {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("conflict %s is %s (%s); want %s", id, c.Status, c.StatusReason, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitEscalated waits until the conflict waits for a person: pending, naming
// escalating attempt gen as the one that set its status.
func (h *harness) waitEscalated(t testing.TB, id string, gen int) conflictDoc {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c := h.conflict(t, id)
		if c.Status == domain.ConflictStatusPending && c.Generation == gen && c.ResolutionID == ResolutionID(id, gen) {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("conflict %s is %s set by %q (generation %d, %s); want pending, set by escalation %q (generation %d)",
				id, c.Status, c.ResolutionID, c.Generation, c.StatusReason, ResolutionID(id, gen), gen)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// manualQueue lists the tenant's conflicts as GET /api/v1/conflicts?status=pending
// does: the conflicts container read as domain.Conflict with the equality
// filter status=pending.
func (h *harness) manualQueue(t testing.TB) []domain.Conflict {
	t.Helper()
	c, err := h.db.Container(domain.ContainerConflicts)
	if err != nil {
		t.Fatal(err)
	}
	repo := store.NewRepository[domain.Conflict](c)
	q := store.Query{PartitionKey: testTenant, Filters: []store.Filter{{Field: "status", Value: string(domain.ConflictStatusPending)}}}
	var out []domain.Conflict
	for {
		items, next, err := repo.List(context.Background(), q)
		if err != nil {
			t.Fatalf("list pending conflicts: %v", err)
		}
		out = append(out, items...)
		if next == "" {
			return out
		}
		q.Continuation = next
	}
}

// attempts lists the conflict's resolution attempts in generation order.
func (h *harness) attempts(t testing.TB, conflictID string) []resolutionDoc {
	t.Helper()
	var out []resolutionDoc
	for gen := 1; ; gen++ {
		doc, _, err := h.resolutions.Get(context.Background(), testTenant, ResolutionID(conflictID, gen))
		if errors.Is(err, store.ErrNotFound) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, doc)
	}
}

func outcomes(docs []resolutionDoc) []domain.ResolutionOutcome {
	var out []domain.ResolutionOutcome
	for _, d := range docs {
		out = append(out, d.Outcome)
	}
	return out
}

// sidesNow reads both sides as a sync run would.
func (h *harness) sidesNow(t testing.TB, key string) (ext, in *domain.SideRecord) {
	t.Helper()
	ctx := context.Background()
	task, _, err := h.tasks.Get(ctx, testTenant, testTask)
	if err != nil {
		t.Fatal(err)
	}
	if ext, err = h.external.Read(ctx, testTenant, task, key); err != nil {
		t.Fatal(err)
	}
	in = &domain.SideRecord{Deleted: true}
	if got, err := h.shards.Store.Get(ctx, testTenant, testEntity, key); err == nil {
		in = got.Side()
	}
	return ext, in
}

// assertConverged checks both sides hold want (nil: deleted on both) and the
// next sync run would find nothing to do.
func (h *harness) assertConverged(t testing.TB, key string, want map[string]any) {
	t.Helper()
	ext, in := h.sidesNow(t, key)
	for _, s := range []struct {
		name string
		rec  *domain.SideRecord
	}{{"external", ext}, {"Castiel", in}} {
		switch {
		case want == nil && s.rec.Present():
			t.Errorf("the %s side still holds %v; want it deleted", s.name, s.rec.Data)
		case want != nil && !s.rec.Present():
			t.Errorf("the %s side has no record; want %v", s.name, want)
		case want != nil && domain.ContentHash(s.rec.Data) != domain.ContentHash(want):
			t.Errorf("the %s side holds %s; want %s", s.name, domain.CanonicalJSON(s.rec.Data), domain.CanonicalJSON(want))
		}
	}
	state, _, err := h.states.Get(context.Background(), testTask, domain.RecordStateID(testTask, key))
	if err != nil {
		t.Fatal(err)
	}
	task, _, _ := h.tasks.Get(context.Background(), testTenant, testTask)
	if d := domain.Classify(task.Direction, &state, ext, in); d.Action != domain.ActionUnchanged || d.Supersedes != "" {
		t.Errorf("the next sync run would %s (external %s, internal %s, supersedes %q); want no change", d.Action, d.External, d.Internal, d.Supersedes)
	}
	if state.Conflict != nil {
		t.Errorf("the record's state still holds pending conflict %s", state.Conflict.ConflictID)
	}
}
