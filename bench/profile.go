package bench

import (
	"fmt"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"syscall"
	"time"
)

// ProfileCPU writes a CPU profile of this process to $IM_BENCH_CPUPROFILE.<name>
// until stop is called, when that variable is set, so a profile shows one
// measured case alone rather than its baselines too. Beside it go the heap
// allocations at the start (<name>.allocs.base) and at the stop
// (<name>.allocs), so `go tool pprof -base` shows what the case allocated.
func ProfileCPU(name string) (stop func(), err error) {
	base := os.Getenv("IM_BENCH_CPUPROFILE")
	if base == "" {
		return func() {}, nil
	}
	path := base + "." + name
	if err := writeAllocs(path + ".allocs.base"); err != nil {
		return nil, err
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("bench: cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: cpu profile %s: %w", f.Name(), err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		_ = writeAllocs(path + ".allocs") // best effort: the CPU profile is written
	}, nil
}

func writeAllocs(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: allocation profile: %w", err)
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		return fmt.Errorf("bench: allocation profile %s: %w", path, err)
	}
	return nil
}

// ProcessCPU is the CPU time (user and system) this process has used so far:
// the difference across a measured case is its CPU cost, whatever its wall
// time.
func ProcessCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// HeapAllocated is the bytes this process has allocated on the heap so far:
// the difference across a measured case is what it allocated (the garbage
// collector's work grows with it).
func HeapAllocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
