package syncrun_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/castiel/integration-manager/bench"
	"github.com/castiel/integration-manager/connector/fakeapi"
	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/handlers/syncrun"
)

// The sync goal: a pull through the whole handler (connector, mapping,
// hashing, sync state and shard writes on the embedded store, checkpoints)
// at no less than 80 % of a plain paged read of the same API. Both are
// measured in the same run against the same fake API and data.
const (
	benchRecords  = 100_000
	benchPageSize = 1000
)

// rawPagedRead pages the fake with plain net/http and encoding/json, doing
// nothing with the records: the ceiling a sync run is held against.
func rawPagedRead(b *testing.B, srv *fakeapi.Server) time.Duration {
	b.Helper()
	start := time.Now()
	n, err := srv.RawPagedRead(benchPageSize)
	if err != nil {
		b.Fatal(err)
	}
	if n != benchRecords {
		b.Fatalf("raw read %d records, want %d", n, benchRecords)
	}
	return time.Since(start)
}

// BenchmarkPull100k: the first full pull of 100,000 records (every record
// new: a shard write and a state write each), then an incremental re-read
// after a reset (every record read, hashed and compared; nothing written).
func BenchmarkPull100k(b *testing.B) {
	var raw, plain, floor, first, again cost
	for i := range b.N {
		b.StopTimer()
		hs := pullHarness(b, 0)
		b.StartTimer()

		raw.add(func() time.Duration { return rawPagedRead(b, hs.srv) })
		plain.add(func() time.Duration { return plainPull(b, hs.srv, floorBare) })
		floor.add(func() time.Duration { return plainPull(b, hs.srv, floorRequired) })
		first.addRun(b, hs, fmt.Sprintf("run-%d", i), func(st domain.SyncStats) bool { return st.Added == benchRecords })
		again.addRun(b, hs, fmt.Sprintf("again-%d", i), func(st domain.SyncStats) bool { return st.Unchanged == benchRecords })
	}
	raw.report(b, "raw")
	plain.report(b, "plain")
	floor.report(b, "floor")
	first.report(b, "pull")
	again.report(b, "resync")
	rate := func(c cost) float64 { return c.rate(b) }
	b.ReportMetric(rate(raw), "raw_records/s")
	b.ReportMetric(rate(first), "pull_records/s")
	b.ReportMetric(rate(again), "resync_records/s")
	b.ReportMetric(100*rate(plain)/rate(raw), "plain_%_of_raw")
	b.ReportMetric(100*rate(floor)/rate(raw), "floor_%_of_raw")
	b.ReportMetric(100*floor.bound(b)/rate(raw), "floor_bound_%_of_raw")
	b.ReportMetric(100*rate(first)/rate(raw), "pull_%_of_raw")
	b.ReportMetric(100*rate(again)/rate(raw), "resync_%_of_raw")
	cpu := func(c cost) string { return c.note(b, &raw) }
	recordBench(b,
		bench.Row{Case: "raw paged read of the fake external API", Value: rate(raw), Unit: "records/s", Note: raw.note(b, nil)},
		bench.Row{Case: "plain-library pull: the raw read, each page kept durably (record and its hash per id, one bbolt commit a page, overlapping the next read)",
			Value: rate(plain), Unit: "records/s", Baseline: "raw paged read", Ratio: rate(plain) / rate(raw),
			Note: "net/http, encoding/json and bbolt only, nothing of ours: what any pull that stores what it reads can reach here; " + cpu(plain)},
		bench.Row{Case: "plain-library pull doing what the issue requires: as above, each record also mapped, kept beside a sync state (both hashes and the base snapshot), and a checkpoint with each page",
			Value: rate(floor), Unit: "records/s", Baseline: "raw paged read", Ratio: rate(floor) / rate(raw),
			Note: "net/http, encoding/json and bbolt only, nothing of ours: the floor of any pull that meets the issue here; " + cpu(floor)},
		bench.Row{Case: "first pull of 100,000 records (every record new)", Value: rate(first), Unit: "records/s",
			Baseline: "raw paged read", Ratio: rate(first) / rate(raw),
			Note: fmt.Sprintf("goal: 0.80; %.2f of the plain-library pull doing what the issue requires; %s", rate(first)/rate(floor), cpu(first))},
		bench.Row{Case: "re-read of 100,000 unchanged records", Value: rate(again), Unit: "records/s",
			Baseline: "raw paged read", Ratio: rate(again) / rate(raw), Note: cpu(again)})
}

// pageLatency is what a hosted API typically takes to answer one page of
// 1,000 records; BenchmarkPull100kAt50msPerPage reads the fake with it.
const pageLatency = 50 * time.Millisecond

// BenchmarkPull100kAt50msPerPage: the first full pull again, against a fake
// that takes pageLatency per page, beside a plain paged read of it: whether a
// run keeps up with an API that is not answering from memory. Supplementary
// to BenchmarkPull100k (whose zero-latency read is what the goal is held
// against); skipped with -short.
func BenchmarkPull100kAt50msPerPage(b *testing.B) {
	if testing.Short() {
		b.Skip("100 pages at 50 ms each, twice: not in the quick pass")
	}
	var raw, first time.Duration
	for i := range b.N {
		b.StopTimer()
		hs := pullHarness(b, pageLatency)
		b.StartTimer()

		raw += rawPagedRead(b, hs.srv)
		first += timedRun(b, hs, fmt.Sprintf("run-%d", i), func(st domain.SyncStats) bool { return st.Added == benchRecords })
	}
	rate := func(d time.Duration) float64 { return float64(benchRecords*b.N) / d.Seconds() }
	b.ReportMetric(rate(raw), "raw_records/s")
	b.ReportMetric(rate(first), "pull_records/s")
	b.ReportMetric(100*rate(first)/rate(raw), "pull_%_of_raw")
	recordBench(b,
		bench.Row{Case: "raw paged read, the fake answering each page after 50 ms", Value: rate(raw), Unit: "records/s"},
		bench.Row{Case: "first pull of 100,000 records, the fake answering each page after 50 ms", Value: rate(first), Unit: "records/s",
			Baseline: "raw paged read at 50 ms per page", Ratio: rate(first) / rate(raw),
			Note: "supplementary: a hosted API's page latency; the goal is held against the zero-latency read above"})
}

// pullHarness is a fake API with benchRecords records, answering each page
// after latency (0: at once), and a full-refresh pull task of them.
func pullHarness(b *testing.B, latency time.Duration) *harness {
	hs := newHarness(b, harnessConfig{
		fake:       fakeapi.Options{Mode: fakeapi.Mode{Auth: fakeapi.AuthAPIKeyHeader, PageSize: benchPageSize}},
		opts:       syncrun.Options{Concurrency: 1000},
		logNone:    true,
		asDeployed: true,
	})
	hs.srv.SeedN(entity, benchRecords)
	hs.task("st-bench", domain.DirectionPull, domain.ModeFullRefresh)
	if latency > 0 {
		hs.srv.AddFault(fakeapi.Fault{Method: http.MethodGet, Path: "/api/contacts", Count: 1 << 30, Delay: latency})
	}
	return hs
}

// timedRun runs the bench task as execution id and returns how long it took;
// the run must complete with stats that satisfy want.
func timedRun(b *testing.B, hs *harness, id string, want func(domain.SyncStats) bool) time.Duration {
	stopProfile, err := bench.ProfileCPU(b.Name() + "." + id)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	e := hs.run(id, "st-bench")
	took := time.Since(start)
	stopProfile()
	if e.Status != domain.ExecCompleted || !want(stats(e)) {
		b.Fatalf("bench run %s: status %s, stats %+v", id, e.Status, stats(e))
	}
	return took
}

// cost is what a measured case took over the bench's iterations: wall time,
// and this process's CPU time (the fake API's included, as it serves in-process).
type cost struct {
	wall, cpu time.Duration
	alloc     uint64 // heap bytes allocated
}

// add runs f, which returns its own wall time, and adds that and the CPU the
// process used meanwhile.
func (c *cost) add(f func() time.Duration) {
	before, allocBefore := bench.ProcessCPU(), bench.HeapAllocated()
	c.wall += f()
	c.cpu += bench.ProcessCPU() - before
	c.alloc += bench.HeapAllocated() - allocBefore
}

// rate is the case's records per second.
func (c cost) rate(b *testing.B) float64 { return float64(benchRecords*b.N) / c.wall.Seconds() }

// addRun adds the bench task's run id (timedRun) to c.
func (c *cost) addRun(b *testing.B, hs *harness, id string, want func(domain.SyncStats) bool) {
	c.add(func() time.Duration { return timedRun(b, hs, id, want) })
}

// perRecord is the case's CPU per record, in µs.
func (c cost) perRecord(b *testing.B) float64 {
	return float64(c.cpu.Nanoseconds()) / 1e3 / float64(benchRecords*b.N)
}

// bound is the most records a second the machine's CPUs could give the case
// at its CPU per record, were they all busy with it: a case whose bound is
// below a goal cannot meet it here, however it is scheduled.
func (c cost) bound(b *testing.B) float64 {
	return float64(runtime.NumCPU()) * 1e6 / c.perRecord(b)
}

// note is the case's CPU per record and the bound it sets, against raw's
// rate if there is one to hold it against.
func (c cost) note(b *testing.B, raw *cost) string {
	s := fmt.Sprintf("CPU per record %.1f µs; %d cores bound it to %.0f records/s", c.perRecord(b), runtime.NumCPU(), c.bound(b))
	if raw != nil {
		s += fmt.Sprintf(", %.2f of the raw rate", c.bound(b)/raw.rate(b))
	}
	return s
}

// report adds the case's CPU and heap allocated per record to the
// benchmark's metrics.
func (c cost) report(b *testing.B, name string) {
	b.ReportMetric(c.perRecord(b), name+"_cpu_µs/rec")
	b.ReportMetric(float64(c.alloc)/1024/float64(benchRecords*b.N), name+"_alloc_KiB/rec")
}

// recordBench adds rows to the sync section of bench/results.json.
func recordBench(b *testing.B, rows ...bench.Row) {
	if err := bench.Record("sync", rows...); err != nil {
		b.Fatal(err)
	}
}

// rawPost creates n records in srv with plain net/http, 16 at a time (the
// worker's default MaxWrites): the ceiling of a push.
func rawPost(b *testing.B, srv *fakeapi.Server, n int) time.Duration {
	b.Helper()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	ids := make(chan int, 1024)
	var wg sync.WaitGroup
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range ids {
				body := fmt.Sprintf(`{"id":"raw-%d","name":"Raw %d","email":"raw%d@example.com"}`, i, i, i)
				resp, err := hc.Post(srv.URL+"/api/contacts", "application/json", strings.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					b.Errorf("raw create: HTTP %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	for i := range n {
		ids <- i
	}
	close(ids)
	wg.Wait()
	return time.Since(start)
}

// BenchmarkPush100k: 100,000 records created in Castiel pushed to the API
// through the whole handler (shard walk, state read, mapping, POST, state
// write), beside plain concurrent POSTs of as many records to the same kind
// of fake API.
func BenchmarkPush100k(b *testing.B) {
	var raw, plain, plainEach, floor, push, rewalk cost
	for i := range b.N {
		b.StopTimer()
		hs := newHarness(b, harnessConfig{
			fake:       fakeapi.Options{Mode: fakeapi.Mode{PageSize: benchPageSize}},
			logNone:    true,
			asDeployed: true,
		})
		rawSrv := fakeapi.New(b, fakeapi.Options{Mode: fakeapi.Mode{PageSize: benchPageSize}})
		plainSrv := fakeapi.New(b, fakeapi.Options{Mode: fakeapi.Mode{PageSize: benchPageSize}})
		plainEachSrv := fakeapi.New(b, fakeapi.Options{Mode: fakeapi.Mode{PageSize: benchPageSize}})
		floorSrv := fakeapi.New(b, fakeapi.Options{Mode: fakeapi.Mode{PageSize: benchPageSize}})
		seedShard(b, hs, benchRecords)
		hs.task("st-bench", domain.DirectionPush, domain.ModeIncremental)
		b.StartTimer()

		raw.add(func() time.Duration { return rawPost(b, rawSrv, benchRecords) })
		plain.add(func() time.Duration { return plainPush(b, plainSrv, benchRecords, keepPerPage, floorBare) })
		plainEach.add(func() time.Duration { return plainPush(b, plainEachSrv, benchRecords, keepPerPost, floorBare) })
		floor.add(func() time.Duration { return plainPush(b, floorSrv, benchRecords, keepPerPost, floorRequired) })
		push.addRun(b, hs, fmt.Sprintf("run-%d", i), func(st domain.SyncStats) bool { return st.Added == benchRecords })
		rewalk.addRun(b, hs, fmt.Sprintf("again-%d", i), func(st domain.SyncStats) bool { return st.Added+st.Updated+st.Deleted == 0 })
	}
	raw.report(b, "raw")
	plainEach.report(b, "plain_each")
	floor.report(b, "floor")
	push.report(b, "push")
	rewalk.report(b, "rewalk")
	rate := func(c cost) float64 { return c.rate(b) }
	b.ReportMetric(rate(rewalk), "rewalk_records/s")
	b.ReportMetric(rate(raw), "raw_post_records/s")
	b.ReportMetric(rate(push), "push_records/s")
	b.ReportMetric(100*rate(plain)/rate(raw), "plain_push_%_of_raw")
	b.ReportMetric(100*rate(plainEach)/rate(raw), "plain_push_each_%_of_raw")
	b.ReportMetric(100*rate(floor)/rate(raw), "floor_%_of_raw")
	b.ReportMetric(100*floor.bound(b)/rate(raw), "floor_bound_%_of_raw")
	b.ReportMetric(100*rate(push)/rate(raw), "push_%_of_raw")
	cpu := func(c cost) string { return c.note(b, &raw) }
	recordBench(b,
		bench.Row{Case: "raw POSTs creating records in the fake API (16 at a time)", Value: rate(raw), Unit: "records/s", Note: raw.note(b, nil)},
		bench.Row{Case: "plain-library push: records read from bbolt a page at a time, POSTed 16 at a time, each page's hashes kept in one bbolt commit overlapping the next page's POSTs",
			Value: rate(plain), Unit: "records/s", Baseline: "raw POSTs", Ratio: rate(plain) / rate(raw),
			Note: "net/http and bbolt only, nothing of ours; a kill loses up to two pages of hashes, so a resumed push would POST those records again"},
		bench.Row{Case: "kill-safe plain-library push: as above, each hash kept as its POST returns (group commit, a short batch waiting up to 1 ms)",
			Value: rate(plainEach), Unit: "records/s", Baseline: "raw POSTs", Ratio: rate(plainEach) / rate(raw),
			Note: "net/http and bbolt only, nothing of ours: what any push that writes no record twice after a kill can reach here; " + cpu(plainEach)},
		bench.Row{Case: "kill-safe plain-library push doing what the issue requires: as above, each record also decoded and mapped to the API's shape, the answer read and mapped back, and a sync state (both hashes and the base snapshot) kept instead of the hash",
			Value: rate(floor), Unit: "records/s", Baseline: "raw POSTs", Ratio: rate(floor) / rate(raw),
			Note: "net/http, encoding/json and bbolt only, nothing of ours: the floor of any push that meets the issue here; " + cpu(floor)},
		bench.Row{Case: "push of 100,000 new Castiel records", Value: rate(push), Unit: "records/s",
			Baseline: "raw POSTs", Ratio: rate(push) / rate(raw),
			Note: fmt.Sprintf("goal: 0.80; %.2f of the kill-safe plain-library push doing what the issue requires; %s", rate(push)/rate(floor), cpu(push))},
		bench.Row{Case: "walk of the same 100,000 Castiel records, unchanged (nothing to push)", Value: rate(rewalk), Unit: "records/s",
			Note: "what every later run of a push or bidirectional task pays; " + rewalk.note(b, nil)})
}

// seedShard puts n Castiel records, concurrently.
func seedShard(b *testing.B, hs *harness, n int) {
	b.Helper()
	keys := make(chan int, 1024)
	var wg sync.WaitGroup
	for range 256 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range keys {
				rec := internalRecord(fmt.Sprintf("Local %d", i), fmt.Sprintf("local%d@example.com", i))
				if _, err := hs.shards.Local.Put(context.Background(), tenant, entity, fmt.Sprintf("l%07d", i), rec); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for i := range n {
		keys <- i
	}
	close(keys)
	wg.Wait()
}
