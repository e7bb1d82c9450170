//go:build bench

package app_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/castiel/integration-manager/bench"
	"github.com/castiel/integration-manager/config"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
)

// TestBench_Binaries measures each binary as an operator runs it: time from exec to
// a ready /readyz, resident memory idle, and resident memory of the API and the
// dispatcher while events flow through them (fleet: RabbitMQ and the Cosmos emulator;
// standalone: its embedded defaults). Run it with `make bench`.
func TestBench_Binaries(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", dir+"/", "github.com/castiel/integration-manager/cmd/...").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}
	fleetEnv := environ(t, append(append(onRabbitMQ(t), onCosmos(t)...), "IM_LOG_LEVEL=error")...)
	var rows []benchRow
	procs := map[string]*binaryProcess{}
	for _, name := range []string{"api", "webhook-dispatcher", "sync-worker", "conflict-resolver", "scheduler"} {
		p := launchBinary(t, filepath.Join(dir, name), fleetEnv, name)
		procs[name] = p
		rows = append(rows, benchRow{Case: "start-up to ready, " + name + " (fleet)", Value: ms(p.startup), Unit: "ms", Note: "exec to /readyz 200 (broker and store connected, queues declared)"})
	}
	time.Sleep(2 * time.Second)
	for _, name := range []string{"api", "webhook-dispatcher", "sync-worker", "conflict-resolver", "scheduler"} {
		rows = append(rows, benchRow{Case: "RSS idle, " + name + " (fleet)", Value: procs[name].rssMB(), Unit: "MB"})
	}
	peakAPI, peakDispatcher, rate, anon := rssUnderLoad(t, procs["api"], procs["webhook-dispatcher"])
	rows = append(rows,
		benchRow{Case: "RSS under load, api (fleet)", Value: peakAPI, Unit: "MB", Note: fmt.Sprintf("peak while %0.f events/s were accepted and delivered; own memory %.0f MB", rate, anon[0])},
		benchRow{Case: "RSS under load, webhook-dispatcher (fleet)", Value: peakDispatcher, Unit: "MB", Note: fmt.Sprintf("peak while delivering %0.f/s; own memory %.0f MB", rate, anon[1])})

	const records = 10000
	fake := fakeapi.New(t, fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthAPIKeyHeader, PageSize: 500}})
	fake.SeedN(syncEntity, records)
	taskID := syncSetup(t, procs["api"].api, fake, domain.StrategyMerge)
	var run domain.Execution
	peaks := peakRSS([]*binaryProcess{procs["sync-worker"]}, func() { run = runSync(t, procs["api"].api, taskID) })
	rows = append(rows, benchRow{Case: "RSS under load, sync-worker (fleet)", Value: peaks[0].rss, Unit: "MB",
		Note: fmt.Sprintf("peak during a first pull of %d records (run took %s); own memory %.0f MB", records, runTook(run), peaks[0].anon)})

	standalone := launchBinary(t, filepath.Join(dir, "standalone"), environ(t, "IM_LOG_LEVEL=error"), "standalone")
	rows = append(rows, benchRow{Case: "start-up to ready, standalone", Value: ms(standalone.startup), Unit: "ms", Note: "exec to /readyz 200"})
	time.Sleep(2 * time.Second)
	rows = append(rows, benchRow{Case: "RSS idle, standalone", Value: standalone.rssMB(), Unit: "MB"})
	peak, _, rate, anon := rssUnderLoad(t, standalone, nil)
	rows = append(rows, benchRow{Case: "RSS under load, standalone", Value: peak, Unit: "MB", Note: fmt.Sprintf("peak while %0.f events/s were accepted and delivered; own memory %.0f MB, the rest pages of the embedded store's mapped file", rate, anon[0])})

	if err := bench.Record("binaries", rows...); err != nil {
		t.Fatal(err)
	}
}

// binaryProcess is one product binary started by the harness.
type binaryProcess struct {
	*subprocess
	api     *started // set when the binary serves the command API
	startup time.Duration
}

// launchBinary starts bin on free ports and waits for its /readyz.
func launchBinary(t *testing.T, bin string, env []string, name string) *binaryProcess {
	t.Helper()
	apiAddr, adminAddr := freeAddr(t), freeAddr(t)
	env = append(append([]string{}, env...), "IM_HTTP_API_ADDR="+apiAddr, "IM_HTTP_ADMIN_ADDR="+adminAddr)
	began := time.Now()
	p := &binaryProcess{subprocess: startBinary(t, bin, env, name)}
	ready := "http://" + adminAddr + "/readyz"
	for {
		if resp, err := http.Get(ready); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Since(began) > 60*time.Second {
			t.Fatalf("%s not ready within 60s:\n%s", name, p.stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.startup = time.Since(began)
	if name == "api" || name == "standalone" {
		cfg, err := config.Load(config.LoadOptions{Service: name, DefaultProfile: config.ProfileStandalone, Environ: env})
		if err != nil {
			t.Fatal(err)
		}
		k, ok := cfg.DevelopmentKey()
		if !ok {
			t.Fatal("the standalone profile has no development key")
		}
		p.api = &started{baseURL: "http://" + apiAddr, adminURL: "http://" + adminAddr, key: k.Key.Reveal(), cfg: cfg}
	}
	return p
}

// rssMB is the process's resident set now, in MB.
func (p *binaryProcess) rssMB() float64 { return p.status("VmRSS:") }

// anonMB is the part of the resident set that is the process's own memory (heap,
// stacks), not pages of mapped files such as the embedded store's.
func (p *binaryProcess) anonMB() float64 { return p.status("RssAnon:") }

func (p *binaryProcess) status(field string) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.Atoi(f[1])
			return float64(kb) / 1024
		}
	}
	return 0
}

// peak is a process's highest resident set and own memory seen, in MB.
type peak struct{ rss, anon float64 }

// peakRSS samples procs every 50 ms while fn runs.
func peakRSS(procs []*binaryProcess, fn func()) []peak {
	out := make([]peak, len(procs))
	stop := make(chan struct{})
	var sampling sync.WaitGroup
	sampling.Add(1)
	go func() {
		defer sampling.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for i, p := range procs {
				out[i].rss, out[i].anon = max(out[i].rss, p.rssMB()), max(out[i].anon, p.anonMB())
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	fn()
	close(stop)
	sampling.Wait()
	return out
}

func runTook(e domain.Execution) string {
	if e.FinishedAt == nil {
		return "?"
	}
	return e.FinishedAt.Sub(e.StartedAt).Round(10 * time.Millisecond).String()
}

// rssUnderLoad posts events to api's binary for 5 s from 16 clients, delivered to a
// local receiver (by dispatcher, or by api itself when standalone), and returns the
// peak RSS of both and the delivered rate.
func rssUnderLoad(t *testing.T, api, dispatcher *binaryProcess) (apiPeak, dispatcherPeak, rate float64, anonPeak [2]float64) {
	rcv := newReceiver(t, 0)
	subscribe(t, api.api, rcv.url())
	procs := []*binaryProcess{api}
	if dispatcher != nil {
		procs = append(procs, dispatcher)
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var posted atomic.Int64
	var began time.Time
	peaks := peakRSS(procs, func() {
		deadline := time.Now().Add(5 * time.Second)
		var clients sync.WaitGroup
		began = time.Now()
		for range 16 {
			clients.Add(1)
			go func() {
				defer clients.Done()
				for time.Now().Before(deadline) {
					postBenchEvent(t, client, api.api)
					posted.Add(1)
				}
			}()
		}
		clients.Wait()
		waitFor(t, 120*time.Second, func() bool { return rcv.count.Load() >= posted.Load() })
	})
	apiPeak, anonPeak[0] = peaks[0].rss, peaks[0].anon
	if dispatcher != nil {
		dispatcherPeak, anonPeak[1] = peaks[1].rss, peaks[1].anon
	}
	return apiPeak, dispatcherPeak, float64(posted.Load()) / time.Since(began).Seconds(), anonPeak
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestBench_Table prints every section of bench/results.json as one table: what
// `make bench` ends with, and what the README shows.
func TestBench_Table(t *testing.T) {
	if err := bench.Table(os.Stdout, "api", "dispatcher", "sync", "conflicts", "binaries"); err != nil {
		t.Fatal(err)
	}
}
