package conflicts

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/castiel/integration-manager/bench"
	"github.com/castiel/integration-manager/domain"
)

// BenchmarkResolver measures conflicts resolved per second through the
// handler (decode, claim, re-read both sides, write-back, sync state,
// record, event, status) on the embedded store, the local shard store and
// an in-memory external system, beside the store's raw create rate in the
// same run. Each resolution costs 4 durable store writes of its own (claim,
// sync state, final record, conflict status), the write-back (a shard write,
// itself a store write in standalone; an external call), 7 point reads and
// one publish.
func BenchmarkResolver(b *testing.B) {
	rates := map[string]float64{}
	policies := []struct {
		name   string
		policy domain.ConflictPolicy
	}{
		{"external_wins", domain.ConflictPolicy{Strategy: domain.StrategyExternalWins}},
		{"merge_both_sides", domain.ConflictPolicy{Strategy: domain.StrategyMerge, FieldOverrides: map[string]domain.ConflictStrategy{"score": domain.StrategyExternalWins}}},
	}
	for _, p := range policies {
		for _, parallel := range []bool{false, true} {
			name := p.name
			if parallel {
				name += "/parallel"
			}
			b.Run(name, func(b *testing.B) {
				h := newHarness(b)
				r := h.resolver(b, fastOptions())
				msgs := make([]*message.Message, b.N)
				for i := range b.N {
					c := h.seed(b, bothEdited(fmt.Sprintf("rec-%d", i), p.policy))
					msgs[i] = detectedMessage(b, c)
				}
				var next atomic.Int64
				one := func() {
					m := msgs[next.Add(1)-1]
					if err := r.HandleDetected(m); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				if parallel {
					b.SetParallelism(4)
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							one()
						}
					})
				} else {
					for range b.N {
						one()
					}
				}
				b.StopTimer()
				rates[name] = float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(rates[name], "resolutions/s")
				if got := sum(r.metrics.outcomes); int(got) != b.N {
					b.Fatalf("%v resolutions recorded for %d conflicts", got, b.N)
				}
			})
		}
	}
	// The store's raw create rate, same size of document, same run.
	b.Run("store_create_baseline", func(b *testing.B) {
		h := newHarness(b)
		c, _ := h.db.Container(domain.ContainerSyncConflicts)
		b.ResetTimer()
		for i := range b.N {
			id := fmt.Sprintf("doc-%d", i)
			body := []byte(`{"id":"` + id + `","tenantId":"bench","detail":"` + strings.Repeat("x", 400) + `"}`)
			if _, err := c.Create(context.Background(), "bench", id, body); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		rates["store_create_baseline"] = float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(rates["store_create_baseline"], "creates/s")
	})
	base := rates["store_create_baseline"]
	rows := []bench.Row{{Case: "raw store creates (embedded, one at a time)", Value: base, Note: "a resolution makes 5 durable writes, 7 reads and a publish"}}
	for _, p := range policies {
		for _, suffix := range []string{"", "/parallel"} {
			if r, ok := rates[p.name+suffix]; ok && base > 0 {
				rows = append(rows, bench.Row{Case: "conflicts resolved, " + p.name + suffix, Value: r, Baseline: "raw store creates", Ratio: r / base})
			}
		}
	}
	if err := bench.Record("conflicts", rows...); err != nil {
		b.Fatal(err)
	}
}
