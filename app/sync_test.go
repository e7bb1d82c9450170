package app_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/rabbittest"
	"github.com/castiel/integration-manager/messaging/sender"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
)

// devTenant is the tenant of the standalone profile's development key.
const devTenant = "dev-tenant"

// syncEntity is the fake API's entity the tests sync.
const syncEntity = "contacts"

// syncMapping renames and nests the fake's fields and keeps its
// modification stamp and deleted flag out of the synced record, so both sides
// hold the same record when they agree.
func syncMapping() []domain.FieldMapping {
	return []domain.FieldMapping{
		{Source: "name", Target: "fullName"},
		{Source: "email", Target: "contact.email"},
		{Source: "updated_at", Ignore: true},
		{Source: "deleted", Ignore: true},
	}
}

// castielContact is a contact in Castiel's shape (the mapping applied).
func castielContact(id, name, email string) map[string]any {
	return map[string]any{"id": id, "fullName": name, "contact": map[string]any{"email": email}}
}

// syncSetup installs the fake API as a provider, connects an integration to
// it and creates a bidirectional sync task of its contacts with the given
// conflict strategy, all through the API as an operator would. It returns
// the task's id.
func syncSetup(t *testing.T, s *started, fake *fakeapi.Server, strategy domain.ConflictStrategy) string {
	t.Helper()
	p := fake.Provider()
	body := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	must := func(want int, method, path, payload string, out any) {
		t.Helper()
		if code := s.do(t, method, path, payload, out); code != want {
			t.Fatalf("%s %s answered %d, want %d", method, path, code, want)
		}
	}
	must(201, "POST", "/api/v1/providers", body(p), nil)
	must(201, "POST", "/api/v1/catalog", body(domain.CatalogEntry{
		ID: "fake-crm-entry", Category: p.Category, ProviderID: p.ID, Name: "Fake CRM", VisibleByDefault: true,
	}), nil)
	var in struct{ ID string }
	must(201, "POST", "/api/v1/integrations", `{"catalogEntryId":"fake-crm-entry","name":"Fake CRM"}`, &in)
	must(200, "PUT", "/api/v1/integrations/"+in.ID+"/connection", body(map[string]any{
		"credentials": map[string]string{"apiKey": fakeapi.APIKey},
	}), nil)
	var task struct{ ID string }
	must(201, "POST", "/api/v1/sync-tasks", body(map[string]any{
		"integrationId":  in.ID,
		"entity":         syncEntity,
		"direction":      domain.DirectionBidirectional,
		"mode":           domain.ModeIncremental,
		"mapping":        syncMapping(),
		"conflictPolicy": domain.ConflictPolicy{Strategy: strategy},
	}), &task)
	return task.ID
}

// runSync triggers a run of the task through the API and waits for its end.
func runSync(t *testing.T, s *started, taskID string) domain.Execution {
	t.Helper()
	var accepted struct{ ExecutionID string }
	if code := s.do(t, "POST", "/api/v1/sync-tasks/"+taskID+"/runs", "", &accepted); code != 202 {
		t.Fatalf("POST /api/v1/sync-tasks/%s/runs answered %d, want 202", taskID, code)
	}
	var e domain.Execution
	eventually(t, 30*time.Second, "the end of sync run "+accepted.ExecutionID, func() bool {
		e = domain.Execution{}
		s.do(t, "GET", "/api/v1/executions/"+accepted.ExecutionID, "", &e)
		switch e.Status {
		case domain.ExecCompleted, domain.ExecCompletedWithErrors, domain.ExecFailed, domain.ExecSkipped:
			return true
		}
		return false
	})
	if e.Status != domain.ExecCompleted {
		t.Fatalf("sync run %s ended %s (error %q), want completed; progress %+v", e.ID, e.Status, e.Error, e.Sync)
	}
	if e.Stats == nil {
		t.Fatalf("sync run %s reports no stats", e.ID)
	}
	return e
}

// conflictView reads a conflict through the API.
func conflictView(t *testing.T, s *started, id string) domain.Conflict {
	t.Helper()
	var c domain.Conflict
	if code := s.do(t, "GET", "/api/v1/conflicts/"+id, "", &c); code != 200 {
		t.Fatalf("GET /api/v1/conflicts/%s answered %d", id, code)
	}
	return c
}

// pendingConflicts lists the tenant's pending conflicts through the API.
func pendingConflicts(t *testing.T, s *started) []domain.Conflict {
	t.Helper()
	var page struct{ Items []domain.Conflict }
	if code := s.do(t, "GET", "/api/v1/conflicts?status=pending", "", &page); code != 200 {
		t.Fatalf("GET /api/v1/conflicts?status=pending answered %d", code)
	}
	return page.Items
}

// waitResolved waits until the conflict is closed and fails unless it was resolved.
func waitResolved(t *testing.T, s *started, id string) domain.Conflict {
	t.Helper()
	var c domain.Conflict
	eventually(t, 30*time.Second, "the resolution of conflict "+id, func() bool {
		c = conflictView(t, s, id)
		return c.Status != domain.ConflictStatusPending
	})
	if c.Status != domain.ConflictStatusResolved {
		t.Fatalf("conflict %s ended %s (%s), want resolved", id, c.Status, c.StatusReason)
	}
	return c
}

// loadConfig is the configuration a process started with env has.
func loadConfig(t *testing.T, env []string) *config.Config {
	t.Helper()
	cfg, err := config.Load(config.LoadOptions{Service: "test", DefaultProfile: config.ProfileStandalone, Environ: env})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// openBackend opens the store the processes started with env share.
func openBackend(t *testing.T, env []string) store.Backend {
	t.Helper()
	b, err := app.OpenStore(context.Background(), loadConfig(t, env).Store, zerolog.New(io.Discard))
	if err != nil {
		t.Fatalf("open the processes' store: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// castielSide is the standalone Castiel side (the embedded shard stand-in
// on the shared store), as a Castiel user reads and edits it.
func castielSide(t *testing.T, env []string, backend store.Backend) shards.Store {
	t.Helper()
	cfg := loadConfig(t, env)
	cfg.Services.ShardManager.URL = ""
	s, err := app.ShardStore(cfg, backend, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// countingShards is a shard store that counts the puts and deletes it serves.
type countingShards struct {
	shards.Store
	mu     sync.Mutex
	writes map[string]int
}

func (c *countingShards) Put(ctx context.Context, tenantID, entity, key string, data map[string]any) (shards.Record, error) {
	rec, err := c.Store.Put(ctx, tenantID, entity, key, data)
	if err == nil {
		c.count(key)
	}
	return rec, err
}

func (c *countingShards) Delete(ctx context.Context, tenantID, entity, key string) error {
	err := c.Store.Delete(ctx, tenantID, entity, key)
	if err == nil {
		c.count(key)
	}
	return err
}

func (c *countingShards) count(key string) {
	c.mu.Lock()
	c.writes[key]++
	c.mu.Unlock()
}

func (c *countingShards) writesOf(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes[key]
}

// shardManager serves the Shard Manager's REST contract over the standalone
// shard stand-in, counting what the processes write through it.
func shardManager(t *testing.T, local shards.Store) (*countingShards, string) {
	t.Helper()
	c := &countingShards{Store: local, writes: map[string]int{}}
	h, err := shards.NewHandler(c)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return c, srv.URL
}

// observer is a queue of a role of its own bound to a topic: it sees every
// message published there.
type observer struct {
	mu  sync.Mutex
	got []*message.Message
}

func observe(t *testing.T, cfg *config.Config, topic string) *observer {
	t.Helper()
	const role = "test-observer"
	prefix := cfg.Broker.AMQP.ExchangePrefix
	rabbittest.Track(t, cfg.Broker.AMQP.URL.Reveal()).Queue(messaging.Config{QueuePrefix: prefix + "."}.QueueName(topic, role))
	ctx, cancel := context.WithCancel(context.Background())
	tr, err := app.OpenTransport(ctx, cfg, nil, zerolog.New(io.Discard))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = tr.Close()
	})
	if err := tr.Declare(ctx, role, topic); err != nil {
		t.Fatal(err)
	}
	ch, err := tr.Subscriber(role).Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	o := &observer{}
	go func() {
		for m := range ch {
			o.mu.Lock()
			o.got = append(o.got, m)
			o.mu.Unlock()
			m.Ack()
		}
	}()
	return o
}

// takeOne takes one message from the role's queue of topic, as a replica of
// the role would, and stops consuming at once (so the queue's consumers are
// the processes' again).
func takeOne(t *testing.T, cfg *config.Config, role, topic string) *message.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tr, err := app.OpenTransport(ctx, cfg, nil, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	ch, err := tr.Subscriber(role).Subscribe(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case msg := <-ch:
		msg.Ack()
		return msg
	case <-ctx.Done():
		t.Fatalf("nothing arrived on %s for %s", topic, role)
		return nil
	}
}

// resolvedEvents returns the conflict.resolved events seen for a conflict.
func (o *observer) resolvedEvents(t *testing.T, conflictID string) []domain.ConflictResolved {
	t.Helper()
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []domain.ConflictResolved
	for _, m := range o.got {
		ev, err := messaging.Decode[domain.ConflictResolved](m, domain.TypeConflictResolved)
		if err != nil {
			t.Fatalf("undecodable conflict.resolved event: %v", err)
		}
		if ev.ConflictID == conflictID {
			out = append(out, ev)
		}
	}
	return out
}

// resolutionRecords lists what integration_sync_conflicts holds for a conflict.
func resolutionRecords(t *testing.T, backend store.Backend, conflictID string) []domain.ConflictResolution {
	t.Helper()
	return storedAll[domain.ConflictResolution](t, backend, domain.ContainerSyncConflicts,
		store.Query{PartitionKey: devTenant, Filters: []store.Filter{{Field: "conflictId", Value: conflictID}}})
}

// metricSum adds up every series of a counter on a process's /metrics.
func metricSum(t *testing.T, s *started, name string) float64 {
	t.Helper()
	resp, err := http.Get(s.adminURL + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sum := 0.0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return sum
}

// handledConflictMessages is how many conflict messages a resolver process
// finished with: those that claimed their conflict (an outcome) plus those
// that found it claimed or closed by someone else (lost).
func handledConflictMessages(t *testing.T, s *started) int {
	t.Helper()
	return int(metricSum(t, s, "conflict_resolutions_total") + metricSum(t, s, "conflict_resolution_lost_total"))
}

// externalInCastielShape is the fake's record with the task's mapping applied.
func externalInCastielShape(t *testing.T, fake *fakeapi.Server, key string) map[string]any {
	t.Helper()
	rec, ok := fake.Get(syncEntity, key)
	if !ok || rec.Deleted {
		t.Fatalf("the external API has no record %s", key)
	}
	raw, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	out, err := domain.ApplyMapping(syncMapping(), m, domain.MapToInternal)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func castielRecord(t *testing.T, side shards.Store, key string) shards.Record {
	t.Helper()
	rec, err := side.Get(context.Background(), devTenant, syncEntity, key)
	if err != nil {
		t.Fatalf("read %s on the Castiel side: %v", key, err)
	}
	return rec
}

// assertSidesEqual checks both sides hold want for key.
func assertSidesEqual(t *testing.T, fake *fakeapi.Server, side shards.Store, key string, want map[string]any) {
	t.Helper()
	ext := externalInCastielShape(t, fake, key)
	in := castielRecord(t, side, key).Data
	for _, s := range []struct {
		name string
		got  map[string]any
	}{{"external", ext}, {"Castiel", in}} {
		if domain.ContentHash(s.got) != domain.ContentHash(want) {
			t.Errorf("the %s side holds %s, want %s", s.name, domain.CanonicalJSON(s.got), domain.CanonicalJSON(want))
		}
	}
}

// editCastiel changes a record on the Castiel side, as a Castiel user would.
func editCastiel(t *testing.T, side shards.Store, key string, edit func(map[string]any)) {
	t.Helper()
	data := castielRecord(t, side, key).Data
	edit(data)
	if _, err := side.Put(context.Background(), devTenant, syncEntity, key, data); err != nil {
		t.Fatal(err)
	}
}

// seedConflict syncs one record created externally and one created in
// Castiel, then edits different fields of the first on each side and runs
// the task again: that run detects a conflict on the first record, returned.
func seedConflict(t *testing.T, s *started, fake *fakeapi.Server, side shards.Store, taskID string) domain.Conflict {
	t.Helper()
	fake.Seed(syncEntity, fakeapi.Record{ID: "c-ada", Name: "Ada", Email: "ada@example.com"})
	if _, err := side.Put(context.Background(), devTenant, syncEntity, "c-grace",
		castielContact("c-grace", "Grace", "grace@example.com")); err != nil {
		t.Fatal(err)
	}
	first := runSync(t, s, taskID)
	if st := *first.Stats; st.Added != 2 || st.Conflicts != 0 || st.Failed != 0 {
		t.Fatalf("the first run did %+v, want 2 added (one pulled, one pushed)", st)
	}
	if _, ok := fake.Get(syncEntity, "c-grace"); !ok {
		t.Fatal("the first run did not push the record created in Castiel")
	}
	castielRecord(t, side, "c-ada") // pulled

	fake.Edit(syncEntity, "c-ada", func(r *fakeapi.Record) { r.Name = "Ada Lovelace" })
	editCastiel(t, side, "c-ada", func(d map[string]any) { d["contact"] = map[string]any{"email": "ada@castiel.example"} })
	second := runSync(t, s, taskID)
	if st := *second.Stats; st.Conflicts != 1 {
		t.Fatalf("the run after editing both sides did %+v, want 1 conflict", st)
	}
	id := domain.ConflictID(second.ID, syncEntity, "c-ada")
	c := conflictView(t, s, id)
	if c.Kind != domain.ConflictUpdateUpdate || c.RecordKey != "c-ada" || c.SyncTaskID != taskID {
		t.Fatalf("conflict %s is %s on %s of task %s, want update_update on c-ada of %s", id, c.Kind, c.RecordKey, c.SyncTaskID, taskID)
	}
	return c
}

// Two resolver replicas (separate processes on one RabbitMQ and one Cosmos
// database) get the same conflict several times each: it is applied once.
// The external API sees one write, the Castiel side one put, the store holds
// one applied resolution record and one conflict.resolved event is published.
func TestConflictResolver_TwoReplicasApplyOnce(t *testing.T) {
	t.Parallel()
	env := environ(t, append(onRabbitMQ(t), onCosmos(t)...)...)
	backend := openBackend(t, env)
	side := castielSide(t, env, backend)
	// The processes reach the same stand-in through the Shard Manager's REST
	// contract, so the test can count what they write to Castiel.
	writesToCastiel, mgrURL := shardManager(t, side)
	env = append(env, "IM_SERVICES_SHARDMANAGER_URL="+mgrURL)

	api := start(t, env, app.PartAPI, app.PartSyncWorker)
	resolved := observe(t, api.cfg, messaging.TopicEvtConflictResolved)
	fake := fakeapi.New(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthAPIKeyHeader}})
	taskID := syncSetup(t, api, fake, domain.StrategyMerge)
	c := seedConflict(t, api, fake, side, taskID)

	// No resolver runs yet: the run's conflict.detected waits in the
	// resolvers' queue. Take it, so the copies below are all there is.
	msg := takeOne(t, api.cfg, app.RoleConflictResolver, messaging.TopicEvtConflictDetected)
	detected, err := messaging.Decode[domain.ConflictDetected](msg, domain.TypeConflictDetected)
	if err != nil {
		t.Fatal(err)
	}
	if detected.ConflictID != c.ID {
		t.Fatalf("the run announced conflict %s, want %s", detected.ConflictID, c.ID)
	}
	if p := pendingConflicts(t, api); len(p) != 1 || p[0].ID != c.ID {
		t.Fatalf("pending conflicts %+v, want only %s", p, c.ID)
	}
	externalWritesBefore := len(fake.WriteLog())
	castielWritesBefore := writesToCastiel.writesOf("c-ada")

	replicas := []*started{start(t, env, app.PartConflictResolver), start(t, env, app.PartConflictResolver)}
	amqpCfg := loadConfig(t, env).Broker.AMQP
	perReplica := amqpCfg.ConsumersPerQueue
	channels := (perReplica + amqpCfg.Prefetch - 1) / amqpCfg.Prefetch // how AddConsumer spreads them
	queue := messaging.Config{QueuePrefix: api.cfg.Broker.AMQP.ExchangePrefix + "."}.QueueName(messaging.TopicEvtConflictDetected, app.RoleConflictResolver)
	eventually(t, 15*time.Second, "both replicas consuming conflict.detected", func() bool {
		_, consumers, err := rabbittest.QueueDepth(api.cfg.Broker.AMQP.URL.Reveal(), queue)
		return err == nil && consumers == 2*channels
	})

	// One copy per place in hand: RabbitMQ hands them out round robin up to each
	// channel's prefetch, so both replicas get the conflict several times at once.
	tr, err := app.OpenTransport(context.Background(), api.cfg, nil, zerolog.New(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	events := sender.New(tr.Publisher(), "test")
	copies := 2 * perReplica
	for range copies {
		if err := events.Send(context.Background(), devTenant, detected); err != nil {
			t.Fatalf("publish conflict.detected: %v", err)
		}
	}

	got := waitResolved(t, api, c.ID)
	eventually(t, 60*time.Second, fmt.Sprintf("both replicas finishing all %d copies", copies), func() bool {
		return handledConflictMessages(t, replicas[0])+handledConflictMessages(t, replicas[1]) >= copies
	})
	for i, r := range replicas {
		if n := handledConflictMessages(t, r); n == 0 {
			t.Errorf("replica %d handled none of the %d copies; the test did not make the replicas race", i+1, copies)
		}
	}
	if n := handledConflictMessages(t, replicas[0]) + handledConflictMessages(t, replicas[1]); n != copies {
		t.Errorf("the replicas finished %d messages, want the %d copies", n, copies)
	}
	if n := metricSum(t, replicas[0], "conflict_resolutions_total") + metricSum(t, replicas[1], "conflict_resolutions_total"); n != 1 {
		t.Errorf("the replicas recorded %v resolution attempts, want 1 (the others lost the claim)", n)
	}
	time.Sleep(2 * time.Second) // an extra write or event would show by now
	for i, r := range replicas {
		t.Logf("replica %d: %v attempts, %v lost, %v put back while the other applied", i+1,
			metricSum(t, r, "conflict_resolutions_total"), metricSum(t, r, "conflict_resolution_lost_total"), metricSum(t, r, "conflict_resolution_busy_total"))
	}

	// One application.
	if w := fake.WriteLog()[externalWritesBefore:]; len(w) != 1 || w[0].ID != "c-ada" || w[0].Method != http.MethodPatch {
		t.Errorf("the external API received writes %+v, want one update of c-ada", w)
	}
	if n := writesToCastiel.writesOf("c-ada") - castielWritesBefore; n != 1 {
		t.Errorf("the Castiel side received %d writes of c-ada, want 1", n)
	}
	want := castielContact("c-ada", "Ada Lovelace", "ada@castiel.example")
	assertSidesEqual(t, fake, side, "c-ada", want)

	// One record.
	records := resolutionRecords(t, backend, c.ID)
	if len(records) != 1 {
		t.Fatalf("integration_sync_conflicts holds %d records for %s, want 1: %+v", len(records), c.ID, records)
	}
	rec := records[0]
	if rec.Outcome != domain.OutcomeApplied || rec.Strategy != domain.StrategyMerge || rec.Actor != domain.ActorSystem || rec.ID != got.ResolutionID {
		t.Errorf("resolution record %s: outcome %s, strategy %s, actor %s; want applied by the system with merge, the conflict's resolution %s",
			rec.ID, rec.Outcome, rec.Strategy, rec.Actor, got.ResolutionID)
	}
	if len(rec.Decisions) == 0 || rec.After == nil {
		t.Errorf("resolution record %s has decisions %+v and after %v; want the field decisions and the result", rec.ID, rec.Decisions, rec.After)
	}

	// One event.
	evs := resolved.resolvedEvents(t, c.ID)
	if len(evs) != 1 {
		t.Fatalf("%d conflict.resolved events for %s, want 1: %+v", len(evs), c.ID, evs)
	}
	if evs[0].Outcome != domain.OutcomeApplied || evs[0].Strategy != domain.StrategyMerge || evs[0].SyncTaskID != taskID {
		t.Errorf("conflict.resolved %+v, want outcome applied with merge for task %s", evs[0], taskID)
	}
}

// A sync run finds a conflict, the resolver resolves it by merging through
// the local fake API and the Castiel stand-in, and then both sides hold the
// same record and the next sync run has nothing to do.
func TestSyncConflictResolve_RoundTrip(t *testing.T) {
	t.Parallel()
	env := environ(t, append(onRabbitMQ(t), onCosmos(t)...)...)
	s := start(t, env, app.PartAPI, app.PartSyncWorker, app.PartConflictResolver)
	backend := openBackend(t, env)
	side := castielSide(t, env, backend)
	fake := fakeapi.New(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthAPIKeyHeader}})
	taskID := syncSetup(t, s, fake, domain.StrategyMerge)

	c := seedConflict(t, s, fake, side, taskID)
	waitResolved(t, s, c.ID)

	// The external name and the Castiel email both survive, on both sides.
	assertSidesEqual(t, fake, side, "c-ada", castielContact("c-ada", "Ada Lovelace", "ada@castiel.example"))
	assertSidesEqual(t, fake, side, "c-grace", castielContact("c-grace", "Grace", "grace@example.com"))

	writesBefore := len(fake.WriteLog())
	versionBefore := castielRecord(t, side, "c-ada").Version
	e := runSync(t, s, taskID)
	if st := *e.Stats; st.Added != 0 || st.Updated != 0 || st.Deleted != 0 || st.Conflicts != 0 || st.Failed != 0 {
		t.Errorf("the run after the resolution did %+v, want no change", st)
	}
	if e.Sync == nil || e.Sync.Read == 0 || e.Stats.Unchanged == 0 {
		t.Errorf("the run after the resolution read %+v with stats %+v; want it to read the resolver's write-back again and find it unchanged", e.Sync, *e.Stats)
	}
	if w := fake.WriteLog()[writesBefore:]; len(w) != 0 {
		t.Errorf("the run after the resolution wrote %+v to the external API, want nothing", w)
	}
	if v := castielRecord(t, side, "c-ada").Version; v != versionBefore {
		t.Errorf("the run after the resolution rewrote c-ada on the Castiel side (version %s, was %s)", v, versionBefore)
	}
	if p := pendingConflicts(t, s); len(p) != 0 {
		t.Errorf("pending conflicts after the round trip: %+v", p)
	}
	var all struct{ Items []domain.Conflict }
	s.do(t, "GET", "/api/v1/conflicts", "", &all)
	if len(all.Items) != 1 {
		t.Errorf("the tenant has %d conflicts, want the one resolved", len(all.Items))
	}
}
