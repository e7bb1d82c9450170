package bench

import (
	"fmt"
	"os"
	"runtime/pprof"
	"syscall"
	"time"
)

// ProfileCPU writes a CPU profile of this process to $IM_BENCH_CPUPROFILE.<name>
// until stop is called, when that variable is set, so a profile shows one
// measured case alone rather than its baselines too.
func ProfileCPU(name string) (stop func(), err error) {
	base := os.Getenv("IM_BENCH_CPUPROFILE")
	if base == "" {
		return func() {}, nil
	}
	f, err := os.Create(base + "." + name)
	if err != nil {
		return nil, fmt.Errorf("bench: cpu profile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("bench: cpu profile %s: %w", f.Name(), err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
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
