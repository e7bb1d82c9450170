package app_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/messaging"
	"github.com/castiel/integration-manager/messaging/rabbittest"
)

// A dispatcher replica stopped with SIGTERM while deliveries are in flight
// finishes or returns what it holds: with a second replica taking over, every
// accepted event reaches the endpoint, a repeated call keeps its webhook-id,
// each delivery has one delivered record and the queues drain. The API runs in
// this process; the dispatchers are the real binary on RabbitMQ and Cosmos.
func TestShutdown_SIGTERMUnderLoadLosesNothing(t *testing.T) {
	t.Parallel()
	const (
		rate       = 100 // events per second
		sendFor    = 4 * time.Second
		termAfter  = 2 * time.Second
		answerTime = 30 * time.Millisecond
	)
	env := environ(t, append(onRabbitMQ(t), onCosmos(t)...)...)
	bin := buildBinary(t, "webhook-dispatcher")
	api := start(t, env, app.PartAPI)
	var inFlight atomic.Int64
	rcv := newHookReceiver(t, func(int) (int, map[string]string) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		time.Sleep(answerTime) // keeps deliveries in flight when SIGTERM arrives
		return http.StatusOK, nil
	})
	webhookID, _ := subscribe(t, api, rcv.url)

	brokerURL := envValue(env, "IM_BROKER_AMQP_URL")
	qcfg := messaging.Config{QueuePrefix: envValue(env, "IM_BROKER_AMQP_EXCHANGEPREFIX") + "."}
	queues := []string{
		qcfg.QueueName(messaging.TopicCmdEventPublish, app.RoleWebhookDispatcher),
		qcfg.QueueName(messaging.TopicCmdWebhookDeliver, app.RoleWebhookDispatcher),
	}
	first := startBinary(t, bin, env, "first dispatcher")
	eventually(t, 15*time.Second, "the first dispatcher consuming its queues", func() bool {
		for _, q := range queues {
			if _, consumers, err := rabbittest.QueueDepth(brokerURL, q); err != nil || consumers == 0 {
				return false
			}
		}
		return true
	})

	// Post at a steady rate; each post runs on its own so a slow answer does not slow the rate.
	var (
		mu       sync.Mutex
		accepted = map[int]string{} // seq → event id
		rejected []string
		posts    sync.WaitGroup
	)
	began := time.Now()
	tick := time.NewTicker(time.Second / rate)
	var (
		exited         chan struct{} // closed when the first dispatcher has exited
		exitedIn       time.Duration
		exitErr        error
		callsBefore    int   // calls the receiver had got when SIGTERM was sent...
		inFlightAtTerm int64 // ...and of those, the ones not answered yet
		second         *subprocess
	)
	sent := 0
	for time.Since(began) < sendFor || second == nil {
		<-tick.C
		if exited == nil && time.Since(began) >= termAfter && inFlight.Load() > 0 {
			exited = make(chan struct{})
			callsBefore, inFlightAtTerm = len(rcv.received()), inFlight.Load()
			go func() {
				defer close(exited)
				exitedIn, exitErr = first.terminate(api.cfg.Shutdown.Timeout)
			}()
		}
		if second == nil && exited != nil {
			select {
			case <-exited:
				second = startBinary(t, bin, env, "second dispatcher")
			default:
			}
		}
		if time.Since(began) >= sendFor {
			if exited == nil {
				t.Fatalf("no delivery was in flight at any moment after %v of load", termAfter)
			}
			continue // waiting for the first dispatcher to exit
		}
		seq := sent
		sent++
		posts.Add(1)
		go func() {
			defer posts.Done()
			id, err := postEvent(api, seq)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rejected = append(rejected, err.Error())
				return
			}
			accepted[seq] = id
		}()
	}
	tick.Stop()
	posts.Wait()

	if exitErr != nil {
		t.Fatalf("the dispatcher did not stop cleanly on SIGTERM: %v", exitErr)
	}
	t.Logf("the dispatcher exited with status 0 %v after SIGTERM, sent with %d calls made and %d in flight",
		exitedIn.Round(time.Millisecond), callsBefore, inFlightAtTerm)
	if len(rejected) > 0 {
		t.Errorf("%d of %d events were refused by the API, first: %s", len(rejected), sent, rejected[0])
	}

	// Every accepted event reaches the receiver.
	bySeq := func() map[int][]string { // seq → webhook-id of each call
		out := map[int][]string{}
		for _, a := range rcv.received() {
			var body struct{ Data struct{ Seq *int } }
			if err := json.Unmarshal(a.body, &body); err != nil || body.Data.Seq == nil {
				t.Fatalf("the receiver got a body without data.seq: %q", a.body)
			}
			out[*body.Data.Seq] = append(out[*body.Data.Seq], a.header.Get("webhook-id"))
		}
		return out
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := bySeq()
		missing := 0
		for seq := range accepted {
			if len(got[seq]) == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d accepted events never reached the receiver", missing, len(accepted))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A repeated call is the same delivery: same webhook-id; distinct events never share one.
	got := bySeq()
	duplicates := 0
	owner := map[string]int{} // webhook-id → seq
	for seq, ids := range got {
		if _, ok := accepted[seq]; !ok {
			t.Errorf("the receiver got seq %d, which the API did not accept", seq)
		}
		duplicates += len(ids) - 1
		for _, id := range ids {
			if id == "" || id != ids[0] {
				t.Errorf("event %d was delivered with webhook-ids %q, want one and the same", seq, ids)
				break
			}
		}
		if prev, ok := owner[ids[0]]; ok && prev != seq {
			t.Errorf("events %d and %d were delivered with the same webhook-id %s", prev, seq, ids[0])
		}
		owner[ids[0]] = seq
	}

	// Each delivery has exactly one attempt record, and it says delivered.
	var records map[string][]executionView
	eventually(t, 15*time.Second, "one attempt record per delivery", func() bool {
		records = map[string][]executionView{}
		for _, e := range allExecutions(t, api, webhookID) {
			records[e.DeliveryID] = append(records[e.DeliveryID], e)
		}
		return len(records) >= len(owner)
	})
	for id, seq := range owner {
		recs := records[id]
		if len(recs) != 1 || recs[0].Status != "delivered" {
			t.Errorf("delivery %s (event %d) has records %+v, want exactly one delivered attempt", id, seq, recs)
		}
	}
	if len(records) != len(owner) {
		t.Errorf("%d deliveries are recorded for %d delivered events", len(records), len(owner))
	}

	// Nothing is left waiting, and nothing was poisoned.
	eventually(t, 10*time.Second, "the dispatcher's queues empty", func() bool {
		for _, q := range queues {
			if n, _, err := rabbittest.QueueDepth(brokerURL, q); err != nil || n != 0 {
				return false
			}
		}
		return true
	})
	var poisoned struct{ Items []json.RawMessage }
	api.do(t, "GET", "/api/v1/poison", "", &poisoned)
	if len(poisoned.Items) > 0 {
		t.Errorf("%d messages were poisoned, first: %s", len(poisoned.Items), poisoned.Items[0])
	}
	t.Logf("events sent %d, accepted %d, received %d (calls %d, duplicates %d); SIGTERM exit after %v",
		sent, len(accepted), len(got), len(rcv.received()), duplicates, exitedIn.Round(time.Millisecond))
}

// postEvent publishes one event carrying seq in its data, without failing the
// test from a goroutine.
func postEvent(s *started, seq int) (string, error) {
	req, err := http.NewRequest("POST", s.baseURL+"/api/v1/events",
		strings.NewReader(fmt.Sprintf(`{"type":"contact.updated","data":{"seq":%d}}`, seq)))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+s.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("event %d: %w", seq, err)
	}
	defer resp.Body.Close()
	var out struct{ ID string }
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("event %d: status %d", seq, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.ID == "" {
		return "", fmt.Errorf("event %d: no id in the answer (%v)", seq, err)
	}
	return out.ID, nil
}

// allExecutions reads every page of a webhook's attempt records.
func allExecutions(t *testing.T, s *started, webhookID string) []executionView {
	t.Helper()
	return listedAll[executionView](t, s, "/api/v1/executions?webhookId="+webhookID+"&limit=500")
}

// buildBinary builds cmd/<name> into a temporary directory.
func buildBinary(t *testing.T, name string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("go", "build", "-o", bin, "github.com/castiel/integration-manager/cmd/"+name).CombinedOutput()
	if err != nil {
		t.Fatalf("go build cmd/%s: %v\n%s", name, err, out)
	}
	return bin
}

// envValue returns the value of key in an environment list.
func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// subprocess is a product binary run by a test.
type subprocess struct {
	cmd    *exec.Cmd
	done   chan error
	once   sync.Once
	exit   error
	stderr *lockedBuffer
}

// startBinary runs bin with exactly env; the process is terminated when the
// test ends, and its stderr is logged if the test failed.
func startBinary(t *testing.T, bin string, env []string, name string) *subprocess {
	t.Helper()
	p := &subprocess{cmd: exec.Command(bin), done: make(chan error, 1), stderr: &lockedBuffer{}}
	p.cmd.Env = env
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if _, err := p.terminate(30 * time.Second); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if t.Failed() {
			t.Logf("%s stderr:\n%s", name, p.stderr.String())
		}
	})
	return p
}

// terminate sends SIGTERM and waits up to within for the process to exit;
// it returns how long that took and an error unless it exited with status 0.
func (p *subprocess) terminate(within time.Duration) (time.Duration, error) {
	var took time.Duration
	p.once.Do(func() {
		began := time.Now()
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			p.exit = fmt.Errorf("send SIGTERM: %w", err)
			return
		}
		select {
		case err := <-p.done:
			took = time.Since(began)
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				p.exit = fmt.Errorf("exited with status %d %v after SIGTERM", ee.ExitCode(), took.Round(time.Millisecond))
			} else if err != nil {
				p.exit = err
			}
		case <-time.After(within):
			_ = p.cmd.Process.Kill()
			<-p.done
			p.exit = fmt.Errorf("still running %v after SIGTERM (killed)", within)
		}
	})
	return took, p.exit
}

// kill ends the process with SIGKILL, as a crash would, and waits for it.
func (p *subprocess) kill() {
	p.once.Do(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
}

// lockedBuffer is a bytes.Buffer safe for a subprocess writer and a test reader.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
