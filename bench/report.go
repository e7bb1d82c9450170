// Package bench gathers what `make bench` measures into one file, results.json beside
// this one, and one markdown table. Every benchmark of the module records its rows
// here: the figure, the baseline measured in the same run, and their ratio.
package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Row is one measured case.
type Row struct {
	Case     string  `json:"case"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit"` // "/s" when empty
	P50ms    float64 `json:"p50ms,omitempty"`
	P99ms    float64 `json:"p99ms,omitempty"`
	Baseline string  `json:"baseline,omitempty"` // the raw case it is held against
	Ratio    float64 `json:"ratio,omitempty"`    // Value / the baseline's value, same run
	Note     string  `json:"note,omitempty"`
}

// Section is one benchmark's rows, as last recorded.
type Section struct {
	Date  string `json:"date"`
	Cores int    `json:"cores"`
	Rows  []Row  `json:"rows"`
}

// Record merges rows into section of results.json: a row replaces the recorded
// row of the same case, so sub-benchmarks may record one at a time.
func Record(section string, rows ...Row) error {
	path, all, err := load()
	if err != nil {
		return err
	}
	s := all[section]
	for _, r := range rows {
		if r.Unit == "" {
			r.Unit = "/s"
		}
		if i := slices.IndexFunc(s.Rows, func(old Row) bool { return old.Case == r.Case }); i >= 0 {
			s.Rows[i] = r
		} else {
			s.Rows = append(s.Rows, r)
		}
	}
	s.Date, s.Cores = time.Now().UTC().Format(time.RFC3339), runtime.NumCPU()
	all[section] = s
	out, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(out, '\n'), 0o644)
}

// Table writes every section of results.json as one markdown table, sections in
// the order given (the others after, by name), headed by the machine.
func Table(w io.Writer, order ...string) error {
	_, all, err := load()
	if err != nil {
		return err
	}
	names := slices.Clone(order)
	var rest []string
	for name := range all {
		if !slices.Contains(order, name) {
			rest = append(rest, name)
		}
	}
	slices.Sort(rest)
	names = append(names, rest...)
	fmt.Fprintf(w, "%s, %d cores, %s\n\n", time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), memTotal())
	fmt.Fprintln(w, "| area | case | figure | p50 ms | p99 ms | vs baseline (same run) | note |")
	fmt.Fprintln(w, "| --- | --- | ---: | ---: | ---: | --- | --- |")
	for _, name := range names {
		s, ok := all[name]
		if !ok {
			continue
		}
		for _, r := range s.Rows {
			ratio := ""
			if r.Ratio > 0 {
				ratio = fmt.Sprintf("%.2f of %s", r.Ratio, r.Baseline)
			}
			fmt.Fprintf(w, "| %s | %s | %s %s | %s | %s | %s | %s |\n", name, r.Case, figure(r.Value), r.Unit, opt(r.P50ms), opt(r.P99ms), ratio, r.Note)
		}
	}
	return nil
}

func figure(v float64) string {
	if v >= 100 || v == float64(int64(v)) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func opt(v float64) string {
	if v == 0 {
		return ""
	}
	return fmt.Sprintf("%.1f", v)
}

// load reads results.json (none yet: no sections) and says where it is.
func load() (string, map[string]Section, error) {
	path, err := resultsPath()
	if err != nil {
		return "", nil, err
	}
	all, err := read(path)
	return path, all, err
}

func read(path string) (map[string]Section, error) {
	all := map[string]Section{}
	raw, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return all, nil
	case err != nil:
		return nil, err
	}
	if err := json.Unmarshal(raw, &all); err != nil {
		// An older layout: start over rather than fail the benchmark.
		return map[string]Section{}, nil
	}
	return all, nil
}

// resultsPath is $BENCH_RESULTS, else bench/results.json of the module the working
// directory is in (make test's short run writes elsewhere, leaving the committed
// figures alone).
func resultsPath() (string, error) {
	if p := os.Getenv("BENCH_RESULTS"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bench", "results.json"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("bench: no go.mod above the working directory")
		}
		dir = parent
	}
}

func memTotal() string {
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "memory unknown"
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.Atoi(f[1])
			return fmt.Sprintf("%.0f GiB memory", float64(kb)/(1<<20))
		}
	}
	return "memory unknown"
}
