package storetest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/castiel/integration-manager/domain"
	"github.com/castiel/integration-manager/store"
)

// parallelism is the number of goroutines per CPU of the parallel variants.
const parallelism = 8

// benchDoc is about the size of an execution record (~0.5 KB of JSON).
type benchDoc struct {
	ID       string `json:"id"`
	TenantID string `json:"tenantId"`
	Status   string `json:"status"`
	Attempt  int    `json:"attempt"`
	Detail   string `json:"detail"`
}

func benchBody(pk, id string, attempt int) []byte {
	// Marshalling a struct of strings and an int cannot fail.
	body, _ := json.Marshal(benchDoc{ID: id, TenantID: pk, Status: "delivered", Attempt: attempt, Detail: strings.Repeat("x", 400)})
	return body
}

// Bench measures point writes (Create), point reads (Read) and Replace, one
// caller at a time and with b.RunParallel, on the backend open returns. It
// reports ns/op and ops/s so backends can be compared side by side.
//
// The parallel variants run parallelism goroutines per CPU: a worker has
// many handlers in flight at once, and a store that shares commits or
// round trips between callers only shows it with more callers than cores.
func Bench(b *testing.B, open func(b *testing.B) store.Backend) {
	be := open(b)
	c, err := be.Container(domain.ContainerWebhooks)
	if err != nil {
		b.Fatalf("container %s: %v", domain.ContainerWebhooks, err)
	}
	// Each run of a benchmark body writes to its own partition so repeated runs
	// (b.N ramp-up) never collide.
	var run atomic.Int64
	partition := func(name string) string { return fmt.Sprintf("bench-%s-%d", name, run.Add(1)) }

	create := func(b *testing.B, parallel bool) {
		pk := partition("create")
		var seq atomic.Int64
		one := func() error {
			id := fmt.Sprintf("%s-doc-%d", pk, seq.Add(1))
			_, err := c.Create(b.Context(), pk, id, benchBody(pk, id, 1))
			return err
		}
		b.ResetTimer()
		loop(b, parallel, one)
		reportRate(b)
	}

	read := func(b *testing.B, parallel bool) {
		const docs = 256
		pk := partition("read")
		for i := range docs {
			id := fmt.Sprintf("%s-doc-%d", pk, i)
			if _, err := c.Upsert(b.Context(), pk, id, benchBody(pk, id, 1)); err != nil {
				b.Fatalf("seed Upsert: %v", err)
			}
		}
		var seq atomic.Int64
		one := func() error {
			_, err := c.Read(b.Context(), pk, fmt.Sprintf("%s-doc-%d", pk, seq.Add(1)%docs))
			return err
		}
		b.ResetTimer()
		loop(b, parallel, one)
		reportRate(b)
	}

	replace := func(b *testing.B, parallel bool) {
		pk := partition("replace")
		var writer atomic.Int64
		// Each goroutine replaces its own document with If-Match, the way
		// Repository.Update writes, without contention between goroutines.
		writerFor := func() (func() error, error) {
			id := fmt.Sprintf("%s-doc-%d", pk, writer.Add(1))
			etag, err := c.Upsert(b.Context(), pk, id, benchBody(pk, id, 0))
			attempt := 0
			return func() error {
				attempt++
				var err error
				etag, err = c.Replace(b.Context(), pk, id, benchBody(pk, id, attempt), etag)
				return err
			}, err
		}
		if !parallel {
			one, err := writerFor()
			if err != nil {
				b.Fatalf("seed Upsert: %v", err)
			}
			b.ResetTimer()
			loop(b, false, one)
			reportRate(b)
			return
		}
		b.SetParallelism(parallelism)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			one, err := writerFor()
			if err != nil {
				b.Errorf("seed Upsert: %v", err)
				return
			}
			for pb.Next() {
				if err := one(); err != nil {
					b.Errorf("Replace: %v", err)
					return
				}
			}
		})
		reportRate(b)
	}

	for _, bm := range []struct {
		name string
		fn   func(*testing.B, bool)
	}{{"Create", create}, {"Read", read}, {"Replace", replace}} {
		b.Run(bm.name, func(b *testing.B) { bm.fn(b, false) })
		b.Run(bm.name+"Parallel", func(b *testing.B) { bm.fn(b, true) })
	}
}

// loop runs one b.N times; failures stop the loop (b.Errorf, because FailNow
// is not allowed on RunParallel's goroutines).
func loop(b *testing.B, parallel bool, one func() error) {
	b.SetParallelism(parallelism)
	if !parallel {
		for range b.N {
			if err := one(); err != nil {
				b.Fatalf("%s: %v", b.Name(), err)
			}
		}
		return
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := one(); err != nil {
				b.Errorf("%s: %v", b.Name(), err)
				return
			}
		}
	})
}

func reportRate(b *testing.B) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, "ops/s")
	}
}
