package bench

import (
	"fmt"
	"os"
	"runtime/pprof"
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
