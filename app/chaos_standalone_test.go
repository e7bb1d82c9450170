package app_test

import (
	"context"
	"fmt"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// The standalone process keeps its store (bbolt) inside itself, so nothing outside
// can take it away: the outage is injected where the process opens it
// (app.StartOptions.WrapStore). While events flow to two endpoints the store fails
// every operation as unreachable for a while (CHAOS_MODE=full: 30 s; short: 5 s);
// afterwards every accepted event reached each matching endpoint, under one
// webhook-id per delivery, each delivery has one attempt and it is delivered (the
// outage used none up), and nothing was poisoned.
func TestChaos_StandaloneStoreOutageLosesNothingAndUsesNoAttempt(t *testing.T) {
	t.Parallel()
	outage := 5 * time.Second
	if os.Getenv("CHAOS_MODE") == "full" {
		outage = 30 * time.Second
	}
	var down atomic.Bool
	var refused atomic.Int64
	env := environ(t, "IM_LOG_LEVEL=error", "IM_BROKER_RETRY_MAXELAPSED=2s")
	s, stop := startWrapped(t, env, func(b store.Backend) store.Backend { return outageBackend{Backend: b, down: &down, refused: &refused} })
	contacts := createChaosEndpoint(t, s, newFaultyReceiver(t, "contacts"), "contact.*")
	all := createChaosEndpoint(t, s, newFaultyReceiver(t, "all"), "*")

	poster := startPoster(s, 40)
	time.Sleep(time.Second)
	down.Store(true)
	time.Sleep(outage)
	down.Store(false)
	if refused.Load() == 0 {
		t.Fatal("nothing touched the store while it was down: the outage tested nothing")
	}
	time.Sleep(2 * time.Second)
	poster.finish()
	accepted := poster.snapshot()
	if len(accepted) == 0 {
		t.Fatal("no event was accepted")
	}

	eventually(t, 90*time.Second, "every accepted event delivered to each matching endpoint", func() bool {
		return len(missing(accepted, contacts)) == 0 && len(missing(accepted, all)) == 0
	})
	for _, ep := range []*chaosEndpoint{contacts, all} {
		ids := map[int]string{}
		for _, c := range ep.rcv.received() {
			if prev, ok := ids[c.seq]; ok && prev != c.webhookID {
				t.Errorf("%s: event %d came under two webhook-ids, %s and %s", ep.rcv.name, c.seq, prev, c.webhookID)
			}
			ids[c.seq] = c.webhookID
		}
	}

	stop()
	backend := openStoreOf(t, env)
	deliveries := 0
	for id, recs := range deliveryRecords(t, backend) {
		deliveries++
		if len(recs) != 1 || recs[0].Attempt != 1 || recs[0].Status != domain.ExecDelivered {
			statuses := make([]string, len(recs))
			for i, r := range recs {
				statuses[i] = fmt.Sprintf("attempt %d %s", r.Attempt, r.Status)
			}
			t.Errorf("delivery %s: %v, want one attempt, delivered (the store's outage must use none)", id, statuses)
		}
	}
	c, err := backend.Container(store.PoisonContainer)
	if err != nil {
		t.Fatal(err)
	}
	if page, err := c.Query(context.Background(), store.Query{}); err != nil || len(page.Items) != 0 {
		t.Errorf("poison holds %d messages (err %v), want none: an outage of our own store is not a bad message", len(page.Items), err)
	}
	t.Logf("store down %v (%d store operations refused): %d events accepted, %d refused %v, %d deliveries, %d and %d receiver calls",
		outage, refused.Load(), len(accepted), poster.sent-len(accepted), poster.rejected, deliveries, len(contacts.rcv.received()), len(all.rcv.received()))
}

// missing lists the accepted events ep should have received and did not.
func missing(accepted map[int]postedEvent, ep *chaosEndpoint) []int {
	got := map[int]bool{}
	for _, c := range ep.rcv.received() {
		got[c.seq] = true
	}
	var out []int
	for seq, ev := range accepted {
		if domain.MatchesEventType(ep.eventTypes, ev.typ) && !got[seq] {
			out = append(out, seq)
		}
	}
	return out
}

// startWrapped runs a standalone process (every part) whose store goes through
// wrap, until stop is called or the test ends.
func startWrapped(t *testing.T, env []string, wrap func(store.Backend) store.Backend) (s *started, stop func()) {
	t.Helper()
	r := startProcess(t, env, nil, app.StartOptions{WrapStore: wrap},
		app.PartAPI, app.PartDispatcher, app.PartSyncWorker, app.PartScheduler, app.PartConflictResolver)
	return r.started, func() { r.stop(t) }
}

// openStoreOf opens the embedded store of env once its process has stopped
// (bbolt allows one process at a time), for reading what it left.
func openStoreOf(t *testing.T, env []string) store.Backend {
	t.Helper()
	cfg, err := config.Load(config.LoadOptions{Service: "test", DefaultProfile: config.ProfileStandalone, Environ: env})
	if err != nil {
		t.Fatal(err)
	}
	b, err := app.OpenStore(context.Background(), cfg.Store, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// outageBackend fails every operation as an unreachable store while down is set,
// counting the ones it refused.
type outageBackend struct {
	store.Backend
	down    *atomic.Bool
	refused *atomic.Int64
}

func (b outageBackend) Container(name string) (store.Container, error) {
	c, err := b.Backend.Container(name)
	if err != nil {
		return nil, err
	}
	return outageContainer{Container: c, down: b.down, refused: b.refused}, nil
}

func (b outageBackend) Ping(ctx context.Context) error {
	if err := outageErr(b.down, b.refused); err != nil {
		return err
	}
	return b.Backend.Ping(ctx)
}

type outageContainer struct {
	store.Container
	down    *atomic.Bool
	refused *atomic.Int64
}

func outageErr(down *atomic.Bool, refused *atomic.Int64) error {
	if down.Load() {
		refused.Add(1)
		return fmt.Errorf("%w: injected outage", store.ErrUnavailable)
	}
	return nil
}

func (c outageContainer) Create(ctx context.Context, pk, id string, body []byte) (string, error) {
	if err := outageErr(c.down, c.refused); err != nil {
		return "", err
	}
	return c.Container.Create(ctx, pk, id, body)
}

func (c outageContainer) Read(ctx context.Context, pk, id string) (store.Item, error) {
	if err := outageErr(c.down, c.refused); err != nil {
		return store.Item{}, err
	}
	return c.Container.Read(ctx, pk, id)
}

func (c outageContainer) Replace(ctx context.Context, pk, id string, body []byte, ifMatch string) (string, error) {
	if err := outageErr(c.down, c.refused); err != nil {
		return "", err
	}
	return c.Container.Replace(ctx, pk, id, body, ifMatch)
}

func (c outageContainer) Upsert(ctx context.Context, pk, id string, body []byte) (string, error) {
	if err := outageErr(c.down, c.refused); err != nil {
		return "", err
	}
	return c.Container.Upsert(ctx, pk, id, body)
}

func (c outageContainer) Delete(ctx context.Context, pk, id, ifMatch string) error {
	if err := outageErr(c.down, c.refused); err != nil {
		return err
	}
	return c.Container.Delete(ctx, pk, id, ifMatch)
}

func (c outageContainer) Query(ctx context.Context, q store.Query) (store.Page, error) {
	if err := outageErr(c.down, c.refused); err != nil {
		return store.Page{}, err
	}
	return c.Container.Query(ctx, q)
}

func (c outageContainer) Batch(ctx context.Context, pk string, ops []store.Op) ([]string, error) {
	if err := outageErr(c.down, c.refused); err != nil {
		return nil, err
	}
	return c.Container.Batch(ctx, pk, ops)
}
