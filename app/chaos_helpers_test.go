package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/rabbittest"
	"github.com/castiel/integration-manager/shards"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmostest"
)

// chaosScenario is how hard and how long the fault-injection suite pushes.
// The short one runs in make test; CHAOS_MODE=full (make chaos) runs the
// issue's durations.
type chaosScenario struct {
	name       string
	rate       int           // events posted per second
	replicas   int           // webhook-dispatcher processes
	kills      int           // SIGKILLs of a replica, at random moments
	warmup     time.Duration // steady traffic before the first fault
	faultEach  time.Duration // the receivers answer 500, then hang, then reset, this long each
	gap        time.Duration // steady traffic between the phases
	brokerDown time.Duration // RabbitMQ node stopped at least this long (its restart adds some seconds)
	storeDown  time.Duration // the Cosmos emulator stopped this long
	tail       time.Duration // steady traffic after the store is back
	settle     time.Duration // how long deliveries may take to arrive after the last post
	syncKeys   int           // records of the synced entity
	perRound   int           // keys of each kind a sync round edits
}

// chaosScenarios: CHAOS_MODE selects one (default short).
var chaosScenarios = map[string]chaosScenario{
	"short": {
		name: "short", rate: 12, replicas: 2, kills: 1,
		warmup: 2 * time.Second, faultEach: 2 * time.Second, gap: 2 * time.Second,
		brokerDown: time.Second, storeDown: 6 * time.Second, tail: 3 * time.Second,
		settle: 60 * time.Second, syncKeys: 120, perRound: 2,
	},
	"full": {
		name: "full", rate: 20, replicas: 2, kills: 5,
		warmup: 5 * time.Second, faultEach: 5 * time.Second, gap: 5 * time.Second,
		brokerDown: 10 * time.Second, storeDown: 30 * time.Second, tail: 10 * time.Second,
		settle: 90 * time.Second, syncKeys: 400, perRound: 3,
	},
}

// Test configuration shared by every process of the suite: short retry
// schedule (12 attempts over ~37 s, far more than the receivers' faults can
// use), a short attempt timeout for the hanging receiver, a short breaker
// cool-down and in-process retry window so deferrals and nacks happen within
// the run.
const (
	chaosSchedule       = "0s,1s,1s,2s,2s,3s,3s,5s,5s,5s,5s,5s"
	chaosAttemptTimeout = 2 * time.Second
	chaosHang           = 3 * time.Second // > chaosAttemptTimeout
	// chaosResumeWithin is the bound for deliveries to resume after a broker restart.
	chaosResumeWithin = 30 * time.Second
)

func chaosConfig() []string {
	return []string{
		"IM_WEBHOOKS_DISPATCHER_SCHEDULE=" + chaosSchedule,
		"IM_WEBHOOKS_DISPATCHER_TIMEOUT=" + chaosAttemptTimeout.String(),
		"IM_WEBHOOKS_DISPATCHER_BREAKERCOOLDOWN=2s",
		"IM_BROKER_RETRY_MAXELAPSED=5s",
		"IM_BROKER_AMQP_QUORUMQUEUES=true", // the production default
		"IM_LOG_LEVEL=warn",
	}
}

// chaosInfra is the private broker node and the stoppable emulator of one run.
type chaosInfra struct {
	node   *rabbittest.Node
	em     *cosmostest.Emulator
	env    []string
	prefix string // exchange name and queue prefix (without the dot)
}

func startChaosInfra(t *testing.T) *chaosInfra {
	t.Helper()
	em := cosmostest.Start(t)
	if !em.Stoppable() {
		t.Skip("the store outage needs the cosmium emulator; a real Cosmos DB account (IM_TEST_COSMOS_ENDPOINT) cannot be stopped")
	}
	node := rabbittest.StartNode(t)
	c := em.Config(t)
	prefix := "im-chaos-" + rabbittest.Suffix()
	env := environ(t, append([]string{
		"IM_BROKER_KIND=amqp",
		"IM_BROKER_AMQP_URL=" + node.URL,
		"IM_BROKER_AMQP_EXCHANGEPREFIX=" + prefix,
		"IM_STORE_KIND=cosmos",
		"IM_STORE_COSMOS_ENDPOINT=" + c.Endpoint,
		"IM_STORE_COSMOS_KEY=" + c.Key,
		"IM_STORE_COSMOS_DATABASE=" + c.Database,
		"IM_STORE_COSMOS_INSECURESKIPVERIFY=" + strconv.FormatBool(c.InsecureSkipVerify),
	}, chaosConfig()...)...)
	return &chaosInfra{node: node, em: em, env: env, prefix: prefix}
}

func (c *chaosInfra) queue(topic, role string) string {
	return messaging.Config{QueuePrefix: c.prefix + "."}.QueueName(topic, role)
}

// ourQueues lists the queues of this run (work and delay queues).
func (c *chaosInfra) ourQueues() ([]rabbittest.QueueStats, error) {
	all, err := c.node.Queues()
	if err != nil {
		return nil, err
	}
	var ours []rabbittest.QueueStats
	for _, q := range all {
		if strings.HasPrefix(q.Name, c.prefix+".") {
			ours = append(ours, q)
		}
	}
	return ours, nil
}

// chaosProcess starts the in-process parts with their log kept for a failure
// report (startStoppable discards it).
func chaosProcess(t *testing.T, env []string, parts ...app.Part) (*running, *tailLog) {
	t.Helper()
	logs := &tailLog{max: 16 << 10}
	r := startProcess(t, env, func(*config.Config) zerolog.Logger {
		return zerolog.New(io.MultiWriter(logs, chaosLogFile(t, "api"))).Level(chaosLogLevel()).With().Timestamp().Logger()
	}, app.StartOptions{}, parts...)
	t.Cleanup(func() {
		r.stop(t) // before the log is shown: it holds the shutdown too
		if t.Failed() {
			t.Logf("in-process API log (last %d bytes):\n%s", logs.Len(), logs.String())
		}
	})
	return r, logs
}

// chaosLogFile is where a process's whole log goes when CHAOS_LOGS names a
// directory (for a bug report: the failure message keeps only the end), or
// io.Discard.
func chaosLogFile(t *testing.T, name string) io.Writer {
	dir := os.Getenv("CHAOS_LOGS")
	if dir == "" {
		return io.Discard
	}
	f, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Errorf("CHAOS_LOGS: %v", err)
		return io.Discard
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// tailLog keeps the last max bytes written to it.
type tailLog struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (l *tailLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	if over := len(l.buf) - l.max; over > 0 {
		l.buf = append(l.buf[:0], l.buf[over:]...)
	}
	return len(p), nil
}

func (l *tailLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.buf)
}

func (l *tailLog) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buf)
}

// --- receivers ---------------------------------------------------------------

// answer is how a receiver treats a request: the fault modes of the suite.
type answer int32

const (
	answerOK    answer = iota // 200
	answer500                 // 500 at once
	answerHang                // no answer until past the attempt timeout (then 500)
	answerReset               // the connection is reset without an answer
)

func (a answer) String() string {
	return [...]string{"ok", "500", "hang", "reset"}[a]
}

// hookCall is one request a receiver got.
type hookCall struct {
	at        time.Time
	webhookID string
	timestamp int64 // webhook-timestamp: when the attempt started, in Unix seconds
	seq       int   // data.seq of the event; -1 if the body had none
	answer    answer
}

// faultyReceiver is a tenant endpoint (an httptest server) that answers as
// its mode says and records the webhook-id of every request.
type faultyReceiver struct {
	name string
	url  string
	mode atomic.Int32 // an answer

	mu    sync.Mutex
	calls []hookCall
}

func newFaultyReceiver(t *testing.T, name string) *faultyReceiver {
	r := &faultyReceiver{name: name}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/" + name
	return r
}

func (r *faultyReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	var payload struct{ Data struct{ Seq *int } }
	seq := -1
	if json.Unmarshal(body, &payload) == nil && payload.Data.Seq != nil {
		seq = *payload.Data.Seq
	}
	ts, _ := strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64)
	a := answer(r.mode.Load())
	r.mu.Lock()
	r.calls = append(r.calls, hookCall{at: time.Now(), webhookID: req.Header.Get("webhook-id"), timestamp: ts, seq: seq, answer: a})
	r.mu.Unlock()
	switch a {
	case answerOK:
		w.WriteHeader(http.StatusOK)
	case answer500:
		w.WriteHeader(http.StatusInternalServerError)
	case answerHang:
		select {
		case <-req.Context().Done():
		case <-time.After(chaosHang):
		}
		w.WriteHeader(http.StatusInternalServerError)
	case answerReset:
		hj, ok := w.(http.Hijacker)
		if !ok {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		conn, _, err := hj.Hijack()
		if err != nil {
			return
		}
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // close with RST
		}
		_ = conn.Close()
	}
}

func (r *faultyReceiver) received() []hookCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]hookCall(nil), r.calls...)
}

// chaosEndpoint is a webhook of the tenant and its receiver.
type chaosEndpoint struct {
	id         string
	eventTypes []string
	rcv        *faultyReceiver
}

func createChaosEndpoint(t *testing.T, s *started, rcv *faultyReceiver, eventTypes ...string) *chaosEndpoint {
	t.Helper()
	types, _ := json.Marshal(eventTypes)
	var created struct{ ID string }
	if code := s.do(t, "POST", "/api/v1/webhooks", fmt.Sprintf(`{"url":%q,"eventTypes":%s}`, rcv.url, types), &created); code != http.StatusCreated {
		t.Fatalf("create webhook for %s: %d", rcv.name, code)
	}
	return &chaosEndpoint{id: created.ID, eventTypes: eventTypes, rcv: rcv}
}

// --- dispatcher replicas -----------------------------------------------------

// replicaSet keeps n webhook-dispatcher processes running; kill SIGKILLs one
// and starts its replacement.
type replicaSet struct {
	t   *testing.T
	bin string
	env []string

	mu      sync.Mutex
	procs   []*subprocess
	started int
	killed  []string // "replica N (pid P) at T"
	hold    sync.Mutex
}

func newReplicaSet(t *testing.T, bin string, env []string) *replicaSet {
	return &replicaSet{t: t, bin: bin, env: env}
}

// add starts one more replica.
func (rs *replicaSet) add(t *testing.T) {
	t.Helper()
	p, err := rs.launch()
	if err != nil {
		t.Fatal(err)
	}
	rs.mu.Lock()
	rs.procs = append(rs.procs, p)
	rs.mu.Unlock()
}

// launch starts one replica. Safe off the test goroutine: it reports errors
// instead of failing the test.
func (rs *replicaSet) launch() (*subprocess, error) {
	rs.mu.Lock()
	rs.started++
	n := rs.started
	rs.mu.Unlock()
	name := fmt.Sprintf("dispatcher replica %d", n)
	p := &subprocess{cmd: exec.Command(rs.bin), done: make(chan error, 1), stderr: &lockedBuffer{}}
	p.cmd.Env = rs.env
	p.cmd.Stderr = io.MultiWriter(p.stderr, chaosLogFile(rs.t, fmt.Sprintf("dispatcher-%d", n)))
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	rs.t.Cleanup(func() {
		if _, err := p.terminate(30 * time.Second); err != nil {
			rs.t.Errorf("%s (pid %d): %v", name, p.cmd.Process.Pid, err)
		}
		if rs.t.Failed() {
			rs.t.Logf("%s (pid %d) stderr (last 8 KiB):\n%s", name, p.cmd.Process.Pid, lastBytes(p.stderr.String(), 8<<10))
		}
	})
	return p, nil
}

// kill SIGKILLs replica i, waits for it to die, and starts a replacement after pause.
func (rs *replicaSet) kill(i int, pause time.Duration) {
	rs.hold.Lock() // no kill while the broker restart is being measured
	defer rs.hold.Unlock()
	rs.mu.Lock()
	p := rs.procs[i]
	rs.mu.Unlock()
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	})
	rs.mu.Lock()
	rs.killed = append(rs.killed, fmt.Sprintf("pid %d at %s", p.cmd.Process.Pid, time.Now().Format("15:04:05.000")))
	rs.mu.Unlock()
	time.Sleep(pause)
	np, err := rs.launch()
	if err != nil {
		rs.t.Errorf("replace a killed dispatcher: %v", err)
		return
	}
	rs.mu.Lock()
	rs.procs[i] = np
	rs.mu.Unlock()
}

func (rs *replicaSet) pids() []int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []int
	for _, p := range rs.procs {
		out = append(out, p.cmd.Process.Pid)
	}
	return out
}

// exitedByThemselves lists replicas that exited on their own (not killed by the test).
func (rs *replicaSet) exitedByThemselves() []string {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	var out []string
	for _, p := range rs.procs {
		select {
		case err := <-p.done:
			p.done <- err // keep it for terminate
			out = append(out, fmt.Sprintf("pid %d: %v", p.cmd.Process.Pid, err))
		default:
		}
	}
	return out
}

func lastBytes(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// --- events ------------------------------------------------------------------

// postedEvent is an event the API accepted.
type postedEvent struct {
	id, typ string
	at      time.Time // when the 202 arrived
}

// eventPoster posts events at a steady rate, each on its own goroutine (so a
// slow answer during an outage does not slow the rate), until stopped.
type eventPoster struct {
	api    *started
	client *http.Client

	mu       sync.Mutex
	accepted map[int]postedEvent
	rejected map[string]int // reason → count
	sent     int
	unknown  int // no answer (client timeout): may or may not have been accepted

	stop chan struct{}
	done chan struct{}
}

func chaosEventType(seq int) string {
	if seq%2 == 0 {
		return "contact.updated"
	}
	return "invoice.paid"
}

func startPoster(api *started, rate int) *eventPoster {
	p := &eventPoster{
		api: api, client: &http.Client{Timeout: 20 * time.Second},
		accepted: map[int]postedEvent{}, rejected: map[string]int{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	go func() {
		defer close(p.done)
		var wg sync.WaitGroup
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for seq := 0; ; seq++ {
			select {
			case <-p.stop:
				wg.Wait()
				return
			case <-tick.C:
			}
			p.mu.Lock()
			p.sent++
			p.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				p.post(seq)
			}()
		}
	}()
	return p
}

func (p *eventPoster) post(seq int) {
	typ := chaosEventType(seq)
	req, err := http.NewRequest("POST", p.api.baseURL+"/api/v1/events",
		strings.NewReader(fmt.Sprintf(`{"type":%q,"data":{"seq":%d}}`, typ, seq)))
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.api.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		p.mu.Lock()
		p.unknown++
		p.mu.Unlock()
		return
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	derr := json.NewDecoder(resp.Body).Decode(&out)
	p.mu.Lock()
	defer p.mu.Unlock()
	if resp.StatusCode != http.StatusAccepted || derr != nil || out.ID == "" {
		p.rejected[strconv.Itoa(resp.StatusCode)]++
		return
	}
	p.accepted[seq] = postedEvent{id: out.ID, typ: typ, at: time.Now()}
}

func (p *eventPoster) finish() {
	close(p.stop)
	<-p.done
}

func (p *eventPoster) snapshot() map[int]postedEvent {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[int]postedEvent, len(p.accepted))
	for k, v := range p.accepted {
		out[k] = v
	}
	return out
}

// --- poison ------------------------------------------------------------------

// badCommand is a malformed message injected on the bus, as a broken producer
// would publish it; it must end in the poison queue, with a reason.
type badCommand struct {
	id, topic, ceType string
	body              []byte
	why               string // a word the recorded reason must contain
}

func badCommands(suffix string) []badCommand {
	return []badCommand{
		{id: "chaos-bad-json-" + suffix, topic: messaging.TopicCmdEventPublish, ceType: domain.TypePublishEvent,
			body: []byte(`{"eventId":"evt_1","tenantId":`), why: "undecodable"},
		{id: "chaos-bad-type-" + suffix, topic: messaging.TopicCmdEventPublish, ceType: "com.example.unknown.v1",
			body: []byte(`{}`), why: "type"},
		{id: "chaos-bad-deliver-" + suffix, topic: messaging.TopicCmdWebhookDeliver, ceType: domain.TypeDeliverWebhook,
			body: []byte(`{"tenantId":"dev-tenant","attempt":1}`), why: "deliveryId"},
	}
}

func (c *chaosInfra) inject(b badCommand) error {
	return rabbittest.Publish(c.node.URL, c.prefix, b.topic, amqp.Publishing{
		MessageId:    b.id,
		DeliveryMode: amqp.Persistent,
		Headers: amqp.Table{
			"_watermill_message_uuid": b.id,
			messaging.MetaID:          b.id,
			messaging.MetaType:        b.ceType,
			messaging.MetaTenantID:    devTenant,
		},
		Body: b.body,
	})
}

// --- records -----------------------------------------------------------------

// deliveryRecords reads every webhook delivery attempt of the tenant from
// the store, by delivery id, in attempt order.
func deliveryRecords(t *testing.T, backend store.Backend) map[string][]domain.DeliveryAttempt {
	t.Helper()
	out := map[string][]domain.DeliveryAttempt{}
	for _, r := range storedAll[domain.DeliveryAttempt](t, backend, domain.ContainerExecutions,
		store.Query{PartitionKey: devTenant, Filters: []store.Filter{{Field: "kind", Value: string(domain.ExecutionWebhookDelivery)}}}) {
		out[r.DeliveryID] = append(out[r.DeliveryID], r)
	}
	for _, recs := range out {
		sort.Slice(recs, func(i, j int) bool { return recs[i].Attempt < recs[j].Attempt })
	}
	return out
}

// explainsFailure reports whether the receiver's answer to a call is what the
// failed attempt record says happened.
func explainsFailure(a answer, rec domain.DeliveryAttempt) bool {
	switch a {
	case answer500:
		return rec.ResponseStatus == http.StatusInternalServerError
	case answerHang:
		return rec.ErrorClass == domain.ErrorClassTimeout
	case answerReset:
		return rec.ErrorClass == domain.ErrorClassConnection
	}
	return false
}

// chaosSeed is CHAOS_SEED or a fresh one, logged so a failing run can be replayed.
func chaosSeed(t *testing.T) uint64 {
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", s, err)
		}
		return v
	}
	return rand.Uint64()
}

// phaseLog is the timeline of a run, for the report.
type phaseLog struct {
	began time.Time
	mu    sync.Mutex
	lines []string
}

func (l *phaseLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%6.1fs ", time.Since(l.began).Seconds())+fmt.Sprintf(format, args...))
}

func (l *phaseLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var b bytes.Buffer
	for _, s := range l.lines {
		b.WriteString("  " + s + "\n")
	}
	return b.String()
}

// --- syncs and conflicts -----------------------------------------------------

// syncDriver edits both sides of a synced entity in rounds and runs the task
// after each, while the faults happen. Each round edits keys no round edited
// before: some only externally (their name), some only in Castiel (their
// email), some on both sides (a conflict, or two plain updates if a run falls
// in between; merged, both end the same). A round waits for its run and for
// the conflicts it found to be resolved before the next one edits Castiel: a
// run that read a record before a concurrent Castiel edit could overwrite it,
// a race this suite does not look for.
type syncDriver struct {
	t        *testing.T
	api      *started
	client   *http.Client
	fake     *fakeapi.Server
	side     shards.Store
	taskID   string
	perRound int
	patience time.Duration // longest wait for a run or a resolution (outages included)
	pools    [3][]string   // external only, Castiel only, both sides

	mu        sync.Mutex
	extEdited map[string]bool
	inEdited  map[string]bool
	triggers  map[int]int // answer of POST /runs → count
	rounds    int
	stalls    []string

	stop chan struct{}
	done chan struct{}
}

func startSyncDriver(t *testing.T, api *started, fake *fakeapi.Server, side shards.Store, taskID string, keys []string, perRound int, patience time.Duration) *syncDriver {
	d := &syncDriver{
		t: t, api: api, client: &http.Client{Timeout: 20 * time.Second}, fake: fake, side: side, taskID: taskID, perRound: perRound, patience: patience,
		extEdited: map[string]bool{}, inEdited: map[string]bool{}, triggers: map[int]int{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for i, k := range keys {
		if p := i % 10; p < len(d.pools) {
			d.pools[p] = append(d.pools[p], k)
		}
	}
	go d.loop()
	return d
}

func (d *syncDriver) finish() {
	close(d.stop)
	<-d.done
}

func (d *syncDriver) loop() {
	defer close(d.done)
	for {
		select {
		case <-d.stop:
			return
		default:
		}
		var keys [3][]string
		for i := range d.pools {
			n := min(d.perRound, len(d.pools[i]))
			keys[i], d.pools[i] = d.pools[i][:n], d.pools[i][n:]
		}
		for _, k := range slices.Concat(keys[0], keys[2]) {
			if _, ok := d.fake.Edit(syncEntity, k, func(r *fakeapi.Record) { r.Name += " (edited externally)" }); ok {
				d.mark(d.extEdited, k)
			}
		}
		for _, k := range slices.Concat(keys[1], keys[2]) {
			if d.editCastiel(k) == nil { // fails while the store is down: then not edited
				d.mark(d.inEdited, k)
			}
		}
		code, runID := d.trigger()
		d.mu.Lock()
		d.triggers[code]++
		d.rounds++
		d.mu.Unlock()
		if code == http.StatusAccepted {
			d.await("the end of sync run "+runID, func() bool {
				var e domain.Execution
				return d.get("/api/v1/executions/"+runID, &e) == nil && e.Status.Terminal()
			})
		}
		d.await("no pending conflict", func() bool {
			var page struct{ Items []domain.Conflict }
			return d.get("/api/v1/conflicts?status=pending", &page) == nil && len(page.Items) == 0
		})
		time.Sleep(300 * time.Millisecond)
	}
}

func (d *syncDriver) mark(m map[string]bool, k string) {
	d.mu.Lock()
	m[k] = true
	d.mu.Unlock()
}

// await polls cond for up to d.patience; a stall is reported at the end
// rather than failing from this goroutine.
func (d *syncDriver) await(what string, cond func() bool) {
	began := time.Now()
	for !cond() {
		if time.Since(began) > d.patience {
			d.mu.Lock()
			d.stalls = append(d.stalls, what)
			d.mu.Unlock()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (d *syncDriver) editCastiel(key string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec, err := d.side.Get(ctx, devTenant, syncEntity, key)
	if err != nil {
		return err
	}
	rec.Data["contact"] = map[string]any{"email": key + "@castiel.example"}
	_, err = d.side.Put(ctx, devTenant, syncEntity, key, rec.Data)
	return err
}

func (d *syncDriver) trigger() (int, string) {
	req, err := http.NewRequest("POST", d.api.baseURL+"/api/v1/sync-tasks/"+d.taskID+"/runs", nil)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+d.api.key)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	var out struct{ ExecutionID string }
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out.ExecutionID
}

func (d *syncDriver) get(path string, out any) error {
	req, err := http.NewRequest("GET", d.api.baseURL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.api.key)
	resp, err := d.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// syncRuns lists every run execution of the task from the store.
func syncRuns(t *testing.T, backend store.Backend, taskID string) []domain.Execution {
	t.Helper()
	return storedAll[domain.Execution](t, backend, domain.ContainerExecutions,
		store.Query{PartitionKey: devTenant, Filters: []store.Filter{{Field: "syncTaskId", Value: taskID}}})
}

// allConflicts lists every conflict of the tenant through the API.
func allConflicts(t *testing.T, s *started) []domain.Conflict {
	t.Helper()
	return listedAll[domain.Conflict](t, s, "/api/v1/conflicts?limit=500")
}

// chaosLogLevel is warn, or info with CHAOS_LOGS (a bug report wants the story).
func chaosLogLevel() zerolog.Level {
	if os.Getenv("CHAOS_LOGS") != "" {
		return zerolog.InfoLevel
	}
	return zerolog.WarnLevel
}
