package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/rs/zerolog"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/logging"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/rabbittest"
	"github.com/castiel/integration-manager/store"
	"github.com/castiel/integration-manager/store/cosmostest"
)

// started is one running process of the product for a test.
type started struct {
	baseURL  string
	adminURL string
	key      string
	cfg      *config.Config
}

// environ is the environment of a test process: the standalone profile on a
// temporary store and free ports, plus the given overrides.
func environ(t testing.TB, extra ...string) []string {
	env := []string{
		"IM_PROFILE=standalone",
		"IM_STORE_EMBEDDED_PATH=" + filepath.Join(t.TempDir(), "im.db"),
		"IM_HTTP_API_ADDR=127.0.0.1:0",
		"IM_HTTP_ADMIN_ADDR=127.0.0.1:0",
		"IM_LOG_LEVEL=warn",
	}
	return append(env, extra...)
}

// onRabbitMQ returns overrides that put a process on the real broker with an
// exchange and queues of its own, deleted when the test ends.
func onRabbitMQ(t testing.TB) []string {
	url := rabbittest.URL(t)
	exchange := "im-test-" + rabbittest.Suffix()
	res := rabbittest.Track(t, url)
	res.Exchange(exchange)
	cfg := messaging.Config{QueuePrefix: exchange + "."}
	for _, role := range []string{app.RoleWebhookDispatcher, app.RoleSyncWorker, app.RoleConflictResolver, app.RolePoisonRecorder} {
		for _, tp := range messaging.Topics() {
			res.Queue(cfg.QueueName(tp.Name, role))
		}
	}
	return []string{
		"IM_BROKER_KIND=amqp",
		"IM_BROKER_AMQP_URL=" + url,
		"IM_BROKER_AMQP_EXCHANGEPREFIX=" + exchange,
		"IM_BROKER_AMQP_QUORUMQUEUES=false",
	}
}

// onCosmos returns overrides that put processes on the Cosmos emulator with a
// database of their own (the fleet's store; several processes may share it).
func onCosmos(t testing.TB) []string {
	em := cosmostest.Start(t)
	c := em.Config(t)
	return []string{
		"IM_STORE_KIND=cosmos",
		"IM_STORE_COSMOS_ENDPOINT=" + c.Endpoint,
		"IM_STORE_COSMOS_KEY=" + c.Key,
		"IM_STORE_COSMOS_DATABASE=" + c.Database,
		"IM_STORE_COSMOS_INSECURESKIPVERIFY=" + strconv.FormatBool(c.InsecureSkipVerify),
	}
}

// start runs a process with the given parts until the test ends.
func start(t testing.TB, env []string, parts ...app.Part) *started {
	t.Helper()
	return startStoppable(t, env, parts...).started
}

// running is a started process a test may stop early.
type running struct {
	*started
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// stop shuts the process down (as SIGTERM would) and waits for it.
func (r *running) stop(t testing.TB) {
	r.once.Do(func() {
		r.cancel()
		if err := <-r.done; err != nil {
			t.Errorf("process stopped with an error: %v", err)
		}
	})
}

func startStoppable(t testing.TB, env []string, parts ...app.Part) *running {
	t.Helper()
	return startProcess(t, env, nil, app.StartOptions{}, parts...)
}

// startProcess runs the parts in this process until the test ends (or stop),
// logging through logger(cfg); a nil logger discards the log, but at the
// configured level: a disabled log line costs what it would in production
// (nothing), so benchmarks do not pay for debug lines nobody reads.
func startProcess(t testing.TB, env []string, logger func(*config.Config) zerolog.Logger, opts app.StartOptions, parts ...app.Part) *running {
	t.Helper()
	cfg, err := config.Load(config.LoadOptions{Service: "test", DefaultProfile: config.ProfileStandalone, Environ: env})
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	trackDelayQueues(t, cfg)
	var log zerolog.Logger
	if logger != nil {
		log = logger(cfg)
	} else if log, err = logging.New(io.Discard, cfg.Log.Level, cfg.Log.Format, "test"); err != nil {
		t.Fatalf("logger: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p, err := app.StartWith(ctx, cfg, log, opts, parts...)
	if err != nil {
		cancel()
		t.Fatalf("start: %v", err)
	}
	r := &running{cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	k, ok := cfg.DevelopmentKey()
	if !ok {
		t.Fatal("the standalone profile has no development key")
	}
	r.started = &started{baseURL: "http://" + p.APIAddr, adminURL: "http://" + p.AdminAddr, key: k.Key.Reveal(), cfg: cfg}
	return r
}

// trackDelayQueues deletes, once the test's processes have stopped (call it
// before starting them), the delay-tier queues cfg may declare on RabbitMQ;
// onRabbitMQ tracks the work queues.
func trackDelayQueues(t testing.TB, cfg *config.Config) {
	if cfg.Broker.Kind != config.BrokerAMQP {
		return
	}
	mc := app.MessagingConfig(cfg).WithDefaults()
	res := rabbittest.Track(t, mc.URL)
	for _, q := range mc.DelayQueueNames(messaging.TopicCmdWebhookDeliver, app.RoleWebhookDispatcher) {
		res.Queue(q)
	}
}

// do sends one API request and decodes a JSON answer into out (if non-nil).
func (s *started) do(t testing.TB, method, path, body string, out any, headers ...string) int {
	t.Helper()
	req, err := http.NewRequest(method, s.baseURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.NewDecoder(bytes.NewReader(raw)).Decode(out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// storedAll reads every document of container that q selects, all pages.
func storedAll[T store.Keyed](t testing.TB, backend store.Backend, container string, q store.Query) []T {
	t.Helper()
	c, err := backend.Container(container)
	if err != nil {
		t.Fatal(err)
	}
	repo := store.NewRepository[T](c)
	q.Limit = store.MaxPageSize
	var out []T
	for {
		page, next, err := repo.List(context.Background(), q)
		if err != nil {
			t.Fatalf("list %s: %v", container, err)
		}
		out = append(out, page...)
		if next == "" {
			return out
		}
		q.Continuation = next
	}
}

// listedAll reads every page of an API list (path already holding its query,
// e.g. "/api/v1/conflicts?limit=500").
func listedAll[T any](t testing.TB, s *started, path string) []T {
	t.Helper()
	var all []T
	cursor := ""
	for {
		var page struct {
			Items      []T
			NextCursor string
		}
		p := path
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		if code := s.do(t, "GET", p, "", &page); code != http.StatusOK {
			t.Fatalf("GET %s: %d", p, code)
		}
		all = append(all, page.Items...)
		if page.NextCursor == "" {
			return all
		}
		cursor = page.NextCursor
	}
}
