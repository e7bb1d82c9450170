package bench

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRecordMergesRowsByCaseAndTablePrintsEverySection(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "bench"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(Record("sync", Row{Case: "raw paged read", Value: 400000}))
	must(Record("sync", Row{Case: "first pull", Value: 12000, Baseline: "raw paged read", Ratio: 0.03}))
	must(Record("sync", Row{Case: "first pull", Value: 13000, Baseline: "raw paged read", Ratio: 0.0325}))
	must(Record("binaries", Row{Case: "RSS idle, api", Value: 23.5, Unit: "MB"}))
	var out bytes.Buffer
	must(Table(&out, "sync"))
	table := out.String()
	if strings.Contains(table, "| 12000 /s") || !strings.Contains(table, "| sync | first pull | 13000 /s |") {
		t.Errorf("the second record of a case should replace the first:\n%s", table)
	}
	if !strings.Contains(table, "0.03 of raw paged read") || !strings.Contains(table, "| binaries | RSS idle, api | 23.5 MB |") {
		t.Errorf("table misses a ratio or a section:\n%s", table)
	}
	if strings.Index(table, "| sync |") > strings.Index(table, "| binaries |") {
		t.Errorf("sections asked for first should come first:\n%s", table)
	}
}
