//go:build bench

package app_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuMeter measures the CPU time this process and the RabbitMQ broker spend on a
// stretch of work, so each benchmark row can say what one delivery costs in CPU and
// what rate the machine's cores bound it to.
type cpuMeter struct {
	brokerPID    int
	self, broker time.Duration
	brokerKnown  bool
}

// startCPU begins a measurement; the broker is the process listening on port 5672
// (found through /proc), when it can be seen.
func startCPU() *cpuMeter {
	m := &cpuMeter{brokerPID: listenerPID(5672)}
	m.self = selfCPU()
	m.broker, m.brokerKnown = procCPU(m.brokerPID)
	return m
}

// per returns the CPU time per unit of work (n units since start) of this process and
// of the broker (0 when the broker cannot be seen).
func (m *cpuMeter) per(n int) (self, broker time.Duration) {
	self = (selfCPU() - m.self) / time.Duration(n)
	if b, ok := procCPU(m.brokerPID); ok && m.brokerKnown {
		broker = (b - m.broker) / time.Duration(n)
	}
	return self, broker
}

// note formats the CPU cost per unit of n units since start, and the rate the
// machine's cores would allow if CPU were the only limit.
func (m *cpuMeter) note(cores, n int) string {
	self, broker := m.per(n)
	total := self + broker
	if total <= 0 {
		return ""
	}
	return fmt.Sprintf("CPU per item: %d µs ours + %d µs broker; %d cores bound it to %.0f/s",
		self.Microseconds(), broker.Microseconds(), cores, float64(cores)*float64(time.Second)/float64(total))
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU reads utime+stime of pid from /proc/<pid>/stat (clock ticks of 10 ms).
func procCPU(pid int) (time.Duration, bool) {
	if pid <= 0 {
		return 0, false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false
	}
	// The command name may hold spaces: fields start after the closing parenthesis.
	rest := string(raw)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0, false
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, true
}

// listenerPID finds the process with a socket listening on port (IPv4 or IPv6), or 0.
func listenerPID(port int) int {
	inodes := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		raw, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A: LISTEN
				continue
			}
			if i := strings.LastIndexByte(f[1], ':'); i >= 0 {
				if p, err := strconv.ParseInt(f[1][i+1:], 16, 32); err == nil && int(p) == port {
					inodes["socket:["+f[9]+"]"] = true
				}
			}
		}
	}
	if len(inodes) == 0 {
		return 0
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		if target, err := os.Readlink(fd); err == nil && inodes[target] {
			pid, _ := strconv.Atoi(strings.Split(fd, "/")[2])
			return pid
		}
	}
	return 0
}
