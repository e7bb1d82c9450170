//go:build bench

package app_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/bench"
)

// benchRow is one line of the benchmark table (see package bench).
type benchRow = bench.Row

// TestBench_Dispatcher measures end-to-end webhook delivery (event accepted by
// the API → receiver got it) in standalone and on RabbitMQ, beside a raw
// RabbitMQ publish→consume→ack loop and a raw HTTP POST loop to the same kind of
// receiver, all in one run; then healthy endpoints' latency beside a slow one.
// Run it with `make bench`.
func TestBench_Dispatcher(t *testing.T) {
	events := envInt("IM_BENCH_EVENTS", 5000)
	isolationFor := 10 * time.Second
	if testing.Short() {
		events, isolationFor = 500, 2*time.Second
	}
	var rows []benchRow

	cores := runtime.NumCPU()
	cpu := startCPU()
	rawRabbit := rawRabbitLoop(t, 4*events)
	rows = append(rows, benchRow{Case: "raw RabbitMQ publish (confirms) → consume → ack", Value: rawRabbit, Note: cpu.note(cores, 4*events)})
	plain := newReceiver(t, 0)
	cpu = startCPU()
	rawHTTP := rawHTTPLoop(t, plain.url(), 4*events)
	rows = append(rows, benchRow{Case: "raw HTTP POST loop to a local receiver (16 in flight)", Value: rawHTTP, Note: cpu.note(cores, 4*events)})
	cpu = startCPU()
	plainPath := plainDeliveryPath(t, plain, benchClients(), 2*events)
	rows = append(rows, benchRow{Case: "plain-client delivery path: HTTP in → confirmed publish → consume → signed POST → durable record → confirmed result → ack",
		Value: plainPath, Baseline: "raw RabbitMQ loop", Ratio: plainPath / rawRabbit,
		Note: fmt.Sprintf("net/http, amqp091 and bbolt only, nothing of ours; %d clients; %s", benchClients(), cpu.note(cores, 2*events))})

	for _, mode := range []benchMode{
		{"standalone (in-process broker, embedded store)", nil},
		fleetMode(t),
	} {
		if only := os.Getenv("IM_BENCH_ONLY"); only != "" && !strings.HasPrefix(mode.name, only) {
			continue
		}
		env := environ(t, append(mode.env,
			"IM_LOG_LEVEL=error",
			// One endpoint takes every delivery here: let it have every consumer.
			"IM_WEBHOOKS_DISPATCHER_MAXINFLIGHTPERENDPOINT=64")...)
		env = append(env, strings.Fields(os.Getenv("IM_BENCH_ENV"))...)
		s := start(t, env, app.PartAPI, app.PartDispatcher)
		rcv := newReceiver(t, 0)
		subscribe(t, s, rcv.url())

		cpu := startCPU()
		stopProfile := profileCPU(t, mode.name)
		rate, p50, p99 := deliverClosedLoop(t, s, rcv, events)
		stopProfile()
		rows = append(rows, benchRow{Case: "deliveries end to end, " + mode.name, Value: rate, P50ms: ms(p50), P99ms: ms(p99),
			Baseline: "raw RabbitMQ loop", Ratio: rate / rawRabbit,
			Note: fmt.Sprintf("%.2f of the plain-client path; %d clients posting as fast as accepted; %s", rate/plainPath, benchClients(), cpu.note(cores, events))})
		half := rate / 2
		hp50, hp99 := deliverOpenLoop(t, s, rcv, half, 5*time.Second)
		rows = append(rows, benchRow{Case: "latency at half the peak rate, " + mode.name,
			Value: half, P50ms: ms(hp50), P99ms: ms(hp99), Note: "goal: p99 < 100 ms"})
	}

	// Isolation: 20 healthy endpoints, with and without one that answers after 10 s.
	var quietP99 float64
	for _, slow := range []bool{false, true} {
		if os.Getenv("IM_BENCH_ISOLATION") == "0" {
			break
		}
		s := start(t, environ(t, append(append(onRabbitMQ(t), "IM_LOG_LEVEL=error"), strings.Fields(os.Getenv("IM_BENCH_ENV"))...)...), app.PartAPI, app.PartDispatcher)
		healthy := make([]*receiver, 20)
		for i := range healthy {
			healthy[i] = newReceiver(t, 0)
			subscribe(t, s, healthy[i].url())
		}
		if slow {
			subscribe(t, s, newReceiver(t, 10*time.Second).url())
		}
		const rate = 50 // events/s, each to every endpoint: 1,000 healthy deliveries/s
		postAtRate(t, s, rate, isolationFor)
		waitFor(t, 30*time.Second, func() bool {
			for _, r := range healthy {
				if r.count.Load() < int64(rate*isolationFor.Seconds()) {
					return false
				}
			}
			return true
		})
		var all []time.Duration
		for _, r := range healthy {
			r.mu.Lock()
			all = append(all, r.latencies...)
			r.mu.Unlock()
		}
		p99 := ms(percentile(all, 99))
		row := benchRow{Case: "20 healthy endpoints, 50 events/s fanned out to each", Value: float64(rate * 20), Unit: "deliveries/s",
			P50ms: ms(percentile(all, 50)), P99ms: p99, Note: "healthy deliveries' latency"}
		if slow {
			row.Case += ", beside 1 endpoint answering after 10 s"
			row.Baseline, row.Ratio = "p99 without the slow one", p99/quietP99
			row.Note = "healthy deliveries' p99 against the run without the slow endpoint; goal: at most 2"
		} else {
			quietP99 = p99
		}
		rows = append(rows, row)
	}

	if err := bench.Record("dispatcher", rows...); err != nil {
		t.Fatal(err)
	}
}

// deliverClosedLoop posts n events from 16 clients and waits until the receiver
// has them all. It returns deliveries/s and the latency percentiles.
func deliverClosedLoop(t *testing.T, s *started, rcv *receiver, n int) (float64, time.Duration, time.Duration) {
	rcv.reset()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	begin := time.Now()
	closedLoop(benchClients(), n, func() bool { postBenchEvent(t, client, s); return true })
	waitFor(t, 60*time.Second, func() bool { return rcv.count.Load() >= int64(n) })
	elapsed := time.Unix(0, rcv.last.Load()).Sub(begin)
	return float64(n) / elapsed.Seconds(), rcv.percentile(50), rcv.percentile(99)
}

// profileCPU profiles this process (the API, the dispatcher, the bench clients
// and receivers; not the broker) during one mode's closed loop.
func profileCPU(t *testing.T, mode string) (stop func()) {
	stop, err := bench.ProfileCPU(strings.Fields(mode)[0])
	if err != nil {
		t.Fatal(err)
	}
	return stop
}

func deliverOpenLoop(t *testing.T, s *started, rcv *receiver, rate float64, d time.Duration) (time.Duration, time.Duration) {
	rcv.reset()
	sent := postAtRate(t, s, rate, d)
	waitFor(t, 60*time.Second, func() bool { return rcv.count.Load() >= sent })
	return rcv.percentile(50), rcv.percentile(99)
}

// postAtRate sends events at rate per second for d, each request on its own
// goroutine so a slow answer does not slow the schedule.
func postAtRate(t *testing.T, s *started, rate float64, d time.Duration) int64 {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	interval := time.Duration(float64(time.Second) / rate)
	var wg sync.WaitGroup
	var sent int64
	deadline := time.Now().Add(d)
	for next := time.Now(); next.Before(deadline); next = next.Add(interval) {
		time.Sleep(time.Until(next))
		wg.Add(1)
		sent++
		go func() { defer wg.Done(); postBenchEvent(t, client, s) }()
	}
	wg.Wait()
	return sent
}

func postBenchEvent(t *testing.T, client *http.Client, s *started) {
	body := `{"type":"contact.updated","data":{"sentAt":` + strconv.FormatInt(time.Now().UnixNano(), 10) + `}}`
	req, _ := http.NewRequest("POST", s.baseURL+"/api/v1/events", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+s.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Error(err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("POST /api/v1/events answered %d", resp.StatusCode)
	}
}

func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not done within %s", within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// benchMode is a deployment the harness measures.
type benchMode struct {
	name string
	env  []string
}

// fleetMode is RabbitMQ with the embedded store, or with the Cosmos emulator when
// IM_BENCH_STORE=cosmos (the emulator then shares the two cores and is measured too).
func fleetMode(t *testing.T) benchMode {
	if os.Getenv("IM_BENCH_STORE") == "cosmos" {
		return benchMode{"fleet (RabbitMQ with confirms, Cosmos emulator)", append(onRabbitMQ(t), onCosmos(t)...)}
	}
	return benchMode{"fleet (RabbitMQ with confirms, embedded store)", onRabbitMQ(t)}
}

// benchClients is how many clients post events at once in the closed loop.
func benchClients() int { return envInt("IM_BENCH_CLIENTS", 16) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}
