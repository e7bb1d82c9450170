package deploy

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/castiel/integration-manager/app"
	"github.com/castiel/integration-manager/messaging"
)

// dashboardFile is the Grafana dashboard operators import.
const dashboardFile = "grafana/integration-manager.json"

// targetLabels are added by the Prometheus scrape (Kubernetes service
// discovery), not by our code; any series may carry them.
var targetLabels = []string{"namespace", "pod", "job", "instance"}

// externalMetrics are the series the dashboard reads from other exporters, with
// their labels: RabbitMQ's rabbitmq_prometheus plugin with per-object metrics
// (prometheus.return_per_object_metrics = true, or /metrics/per-object) for queue
// depth, and the KEDA operator for what each ScaledObject's trigger reports.
var externalMetrics = map[string][]string{
	"rabbitmq_queue_messages_ready":   {"queue", "vhost"},
	"rabbitmq_queue_messages_unacked": {"queue", "vhost"},
	"rabbitmq_queue_consumers":        {"queue", "vhost"},
	"keda_scaler_metrics_value":       {"scaledObject", "scaler", "scalerIndex", "metric", "type", "exported_namespace"},
}

// runtimeMetrics are what client_golang's Go and process collectors export
// (the ones the dashboard uses); allowed only if the code registers them.
var runtimeMetrics = map[string]string{
	"go_goroutines":                 "NewGoCollector",
	"process_resident_memory_bytes": "NewProcessCollector",
	"process_cpu_seconds_total":     "NewProcessCollector",
}

// Every metric a panel (or a template variable) queries is one the code
// registers — found by reading every Go source of the module, so a metric that
// lands later is picked up without touching this test — or one of the named
// external exporters'. Labels a query filters or groups by must exist on the
// metrics it reads, topic values must be topics, and the queue patterns must
// match the queues the code declares.
func TestDashboard_QueriesOnlyMetricsTheCodeExports(t *testing.T) {
	dash := loadDashboard(t)
	exported, unresolved := exportedMetrics(t, "..")
	if len(exported) < 10 {
		t.Fatalf("found only %d metric definitions in the Go sources; the scan is broken", len(exported))
	}
	for _, u := range unresolved {
		t.Logf("a metric defined at %s has a name this test cannot resolve (not a string constant)", u)
	}
	topics := map[string]bool{}
	for _, tp := range messaging.Topics() {
		topics[tp.Name] = true
	}

	var missing []string
	check := func(where, expr string) {
		q, err := parsePromQL(expr)
		if err != nil {
			t.Errorf("%s: %v in %q", where, err, expr)
			return
		}
		if len(q.selectors) == 0 {
			t.Errorf("%s: no metric found in %q", where, expr)
			return
		}
		known := map[string]bool{} // labels of every metric the query reads
		unknownLabels := false
		for _, sel := range q.selectors {
			labels, ok := metricLabels(exported, sel.metric)
			if !ok {
				missing = append(missing, fmt.Sprintf("%s: %s", where, sel.metric))
				unknownLabels = true // its labels cannot be checked either
				t.Errorf("%s queries %s, which no Go source of the module registers and no listed exporter provides", where, sel.metric)
				continue
			}
			if labels == nil {
				unknownLabels = true
				continue
			}
			for _, l := range labels {
				known[l] = true
			}
			for _, m := range sel.matchers {
				if !slices.Contains(labels, m.label) && !slices.Contains(targetLabels, m.label) {
					t.Errorf("%s filters %s by label %q; it has %v (plus the scrape's %v)", where, sel.metric, m.label, labels, targetLabels)
				}
				if m.label == "topic" && m.op == "=" && !topics[m.value] {
					t.Errorf("%s filters on topic %q, which is not a topic of messaging.Topics()", where, m.value)
				}
			}
		}
		if unknownLabels {
			return
		}
		for _, l := range q.grouping {
			if !known[l] && !slices.Contains(targetLabels, l) {
				t.Errorf("%s groups by %q, which none of its metrics has (%v)", where, l, slices.Sorted(mapsKeys(known)))
			}
		}
	}

	panels := 0
	ids := map[int]string{}
	for _, p := range dash.allPanels() {
		if prev, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", prev, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.Type == "row" {
			continue
		}
		panels++
		if p.Title == "" || p.Description == "" {
			t.Errorf("panel %d needs a title and a description (what it shows, what to do)", p.ID)
		}
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q uses data source %q, want the dashboard's ${datasource} variable", p.Title, p.Datasource.UID)
		}
		if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("panel %q has grid position %+v, outside the 24-column grid", p.Title, g)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			check(fmt.Sprintf("panel %q (%s)", p.Title, tg.RefID), tg.Expr)
		}
	}
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var query string
		if err := json.Unmarshal(v.Query, &query); err != nil {
			var obj struct{ Query string }
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Errorf("variable %q: unreadable query %s", v.Name, v.Query)
				continue
			}
			query = obj.Query
		}
		m := regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`).FindStringSubmatch(strings.TrimSpace(query))
		if m == nil {
			t.Errorf("variable %q: want label_values(<selector>, <label>), have %q", v.Name, query)
			continue
		}
		check(fmt.Sprintf("variable %q", v.Name), m[1])
		q, _ := parsePromQL(m[1])
		for _, sel := range q.selectors {
			if labels, ok := metricLabels(exported, sel.metric); ok && labels != nil && !slices.Contains(labels, m[2]) && !slices.Contains(targetLabels, m[2]) {
				t.Errorf("variable %q lists label %q of %s, which has %v", v.Name, m[2], sel.metric, labels)
			}
		}
	}
	if panels < 20 {
		t.Errorf("the dashboard has %d panels; expected the full set (messaging, webhooks, syncs, conflicts, store, API)", panels)
	}
	if len(missing) > 0 {
		t.Logf("metrics the dashboard expects and the code does not (yet) register:\n  %s\n"+
			"Either the metric is still to land (then this test passes once it does) or its name changed (then fix the panel).",
			strings.Join(missing, "\n  "))
	}
}

// The queue patterns of the depth panels match the queues the code declares:
// work queues (<prefix>.<topic>.<role>) and delay tiers (<prefix>.delay....)
// separately, with the dashboard's default prefix being the configuration's.
func TestDashboard_QueuePatternsMatchTheDeclaredQueues(t *testing.T) {
	dash := loadDashboard(t)
	prefix := ""
	for _, v := range dash.Templating.List {
		if v.Name == "prefix" {
			_ = json.Unmarshal(v.Query, &prefix)
		}
	}
	if prefix != messaging.DefaultExchange {
		t.Fatalf("the dashboard's $prefix defaults to %q, want broker.amqp.exchangePrefix's default %q", prefix, messaging.DefaultExchange)
	}
	cfg := messaging.Config{QueuePrefix: prefix + "."}
	var work, delay []string
	for role, topics := range app.Consumption() {
		for _, tp := range topics {
			work = append(work, cfg.QueueName(tp, role))
			delay = append(delay, cfg.DelayQueueName(tp, role, 5*time.Second), cfg.DelayQueueName(tp, role, 10*time.Hour))
		}
	}

	patterns := 0
	for _, p := range dash.allPanels() {
		for _, tg := range p.Targets {
			q, err := parsePromQL(tg.Expr)
			if err != nil {
				continue // reported by the other test
			}
			for _, sel := range q.selectors {
				for _, m := range sel.matchers {
					if m.label != "queue" {
						continue
					}
					patterns++
					if m.op != "=~" {
						t.Errorf("panel %q: queue %s %q, want a =~ pattern", p.Title, m.op, m.value)
						continue
					}
					re, err := regexp.Compile("^(?:" + strings.ReplaceAll(m.value, "$prefix", regexp.QuoteMeta(prefix)) + ")$")
					if err != nil {
						t.Errorf("panel %q: queue pattern %q: %v", p.Title, m.value, err)
						continue
					}
					w, d := countMatches(re, work), countMatches(re, delay)
					isDelay := strings.Contains(p.Title, "delay")
					switch {
					case isDelay && (d != len(delay) || w != 0):
						t.Errorf("panel %q: pattern %q matches %d of %d delay queues and %d work queues; want every delay queue and no work queue", p.Title, m.value, d, len(delay), w)
					case !isDelay && (w != len(work) || d != 0):
						t.Errorf("panel %q: pattern %q matches %d of %d work queues (e.g. %s) and %d delay queues; want every work queue and no delay queue", p.Title, m.value, w, len(work), work[0], d)
					}
				}
			}
		}
	}
	if patterns == 0 {
		t.Fatal("no panel filters by queue: the queue depth panels are gone")
	}
}

// The PromQL reader finds the metrics, matchers and grouping labels of the
// queries the dashboard uses; the metric check above is only as good as this.
func TestDashboard_PromQLReader(t *testing.T) {
	for _, tc := range []struct {
		expr     string
		metrics  []string
		grouping []string
	}{
		{`histogram_quantile(0.99, sum by (le, topic) (rate(message_handler_duration_seconds_bucket{namespace=~"$namespace",topic=~"$topic"}[$__rate_interval])))`,
			[]string{"message_handler_duration_seconds_bucket"}, []string{"le", "topic"}},
		{`sum(rate(a_total{code=~"5.."}[5m])) / sum without (pod) (rate(b_total[5m] offset 1h))`, []string{"a_total", "b_total"}, []string{"pod"}},
		{`max(x:recorded{q="a}b"}) > bool 0 or on (job) up`, []string{"x:recorded", "up"}, []string{"job"}},
		{`{__name__="named", a="b"}`, []string{"named"}, nil},
		{`sum by (reason) (increase(c_total[$__interval]))`, []string{"c_total"}, []string{"reason"}},
	} {
		q, err := parsePromQL(tc.expr)
		if err != nil {
			t.Errorf("%q: %v", tc.expr, err)
			continue
		}
		var got []string
		for _, s := range q.selectors {
			got = append(got, s.metric)
		}
		if !slices.Equal(got, tc.metrics) || !slices.Equal(q.grouping, tc.grouping) {
			t.Errorf("%q: metrics %q grouping %q, want %q and %q", tc.expr, got, q.grouping, tc.metrics, tc.grouping)
		}
	}
	q, _ := parsePromQL(`rate(m_total{topic="t",queue=~"a\\.b"}[1m])`)
	if len(q.selectors) != 1 || len(q.selectors[0].matchers) != 2 || q.selectors[0].matchers[1] != (matcher{"queue", "=~", `a\.b`}) {
		t.Errorf("matchers read as %+v", q.selectors)
	}
	if _, err := parsePromQL(`sum(rate(x[1m])`); err == nil {
		t.Error("an unbalanced query was accepted")
	}
}

// --- the dashboard

type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID          int    `json:"id"`
	Type        string `json:"type"`
	Title       string `json:"title"`
	Description string `json:"description"`
	Datasource  struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Fatalf("%s: the dashboard needs a uid and a title", dashboardFile)
	}
	return d
}

func (d dashboard) allPanels() []panel {
	var out []panel
	for _, p := range d.Panels {
		out = append(out, p)
		out = append(out, p.Panels...)
	}
	return out
}

func countMatches(re *regexp.Regexp, names []string) int {
	n := 0
	for _, s := range names {
		if re.MatchString(s) {
			n++
		}
	}
	return n
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// --- metrics the code registers

// metricDef is one metric a Go source defines. labels is nil when they could
// not be read (not a literal list).
type metricDef struct {
	name      string
	histogram bool // or summary: _bucket, _sum and _count series
	labels    []string
}

// metricLabels returns the labels of the series name (a metric, or a
// histogram's _bucket/_sum/_count series), and whether anybody exports it.
func metricLabels(exported map[string]metricDef, name string) ([]string, bool) {
	if def, ok := exported[name]; ok {
		return def.labels, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if def, ok := exported[base]; ok && def.histogram {
				if suffix == "_bucket" && def.labels != nil {
					return append(slices.Clone(def.labels), "le"), true
				}
				return def.labels, true
			}
		}
	}
	if labels, ok := externalMetrics[name]; ok {
		return labels, true
	}
	return nil, false
}

// exportedMetrics reads every non-test Go file under root and returns the
// metrics defined through client_golang's Opts literals (CounterOpts,
// GaugeOpts, HistogramOpts, SummaryOpts) with the labels of their *Vec
// constructor, plus the Go/process collector metrics when those collectors are
// registered. unresolved lists definitions whose name is not a constant.
func exportedMetrics(t *testing.T, root string) (map[string]metricDef, []string) {
	t.Helper()
	fset := token.NewFileSet()
	files := map[string][]*ast.File{} // by directory (package)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || name == "vendor" || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files[filepath.Dir(path)] = append(files[filepath.Dir(path)], f)
		return nil
	})
	if err != nil {
		t.Fatalf("read the Go sources: %v", err)
	}

	out := map[string]metricDef{}
	var unresolved []string
	collectors := map[string]bool{}
	optsTypes := []string{"CounterOpts", "GaugeOpts", "HistogramOpts", "SummaryOpts", "Opts"}
	for _, pkgFiles := range files {
		consts := stringConsts(pkgFiles)
		for _, f := range pkgFiles {
			prom := importName(f, "github.com/prometheus/client_golang/prometheus", "prometheus")
			coll := importName(f, "github.com/prometheus/client_golang/prometheus/collectors", "collectors")
			for _, decl := range f.Decls {
				lists := map[string][]string{}
				if fn, ok := decl.(*ast.FuncDecl); ok && fn.Body != nil {
					lists = stringLists(fn.Body, consts)
				}
				// Labels of each Opts literal passed straight to a constructor:
				// NewXxxVec(opts, labels), or none for NewCounter(opts) and the like.
				labelsOf := map[*ast.CompositeLit][]string{}
				ast.Inspect(decl, func(n ast.Node) bool {
					call, ok := n.(*ast.CallExpr)
					if !ok {
						return true
					}
					sel, ok := call.Fun.(*ast.SelectorExpr)
					switch {
					case ok && coll != "" && isIdent(sel.X, coll):
						collectors[sel.Sel.Name] = true
					case ok && prom != "" && isIdent(sel.X, prom) && strings.HasPrefix(sel.Sel.Name, "New") && len(call.Args) > 0:
						if lit, ok := call.Args[0].(*ast.CompositeLit); ok {
							labelsOf[lit] = []string{}
							if strings.HasSuffix(sel.Sel.Name, "Vec") && len(call.Args) == 2 {
								labelsOf[lit] = labelList(call.Args[1], lists, consts) // nil: unknown
							}
						}
					}
					return true
				})
				ast.Inspect(decl, func(n ast.Node) bool {
					lit, ok := n.(*ast.CompositeLit)
					if !ok || prom == "" {
						return true
					}
					sel, ok := lit.Type.(*ast.SelectorExpr)
					if !ok || !isIdent(sel.X, prom) || !slices.Contains(optsTypes, sel.Sel.Name) {
						return true
					}
					parts := map[string]string{}
					resolved := true
					for _, el := range lit.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						if key, ok := kv.Key.(*ast.Ident); ok && slices.Contains([]string{"Namespace", "Subsystem", "Name"}, key.Name) {
							v, ok := stringValue(kv.Value, consts)
							resolved = resolved && ok
							parts[key.Name] = v
						}
					}
					if !resolved || parts["Name"] == "" {
						unresolved = append(unresolved, fset.Position(lit.Pos()).String())
						return true
					}
					name := buildFQName(parts["Namespace"], parts["Subsystem"], parts["Name"])
					out[name] = metricDef{
						name:      name,
						histogram: sel.Sel.Name == "HistogramOpts" || sel.Sel.Name == "SummaryOpts",
						labels:    labelsOf[lit], // nil when built elsewhere: labels unknown
					}
					return true
				})
			}
		}
	}
	for name, collector := range runtimeMetrics {
		if collectors[collector] {
			out[name] = metricDef{name: name, labels: []string{}}
		}
	}
	return out, unresolved
}

// buildFQName joins the name parts as client_golang's BuildFQName does.
func buildFQName(namespace, subsystem, name string) string {
	var parts []string
	for _, p := range []string{namespace, subsystem, name} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, "_")
}

func importName(f *ast.File, path, def string) string {
	for _, imp := range f.Imports {
		if p, _ := strconv.Unquote(imp.Path.Value); p == path {
			if imp.Name != nil {
				return imp.Name.Name
			}
			return def
		}
	}
	return ""
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

// stringConsts are the package-level string constants of a package.
func stringConsts(files []*ast.File) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i < len(vs.Values) {
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							out[n.Name], _ = strconv.Unquote(lit.Value)
						}
					}
				}
			}
		}
	}
	return out
}

func stringValue(e ast.Expr, consts map[string]string) (string, bool) {
	switch v := e.(type) {
	case *ast.BasicLit:
		if v.Kind == token.STRING {
			s, err := strconv.Unquote(v.Value)
			return s, err == nil
		}
	case *ast.Ident:
		s, ok := consts[v.Name]
		return s, ok
	}
	return "", false
}

// stringLists are the []string literals assigned to local names in a function
// body (labels := []string{"topic", "handler"}).
func stringLists(body *ast.BlockStmt, consts map[string]string) map[string][]string {
	out := map[string][]string{}
	ast.Inspect(body, func(n ast.Node) bool {
		if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == len(as.Rhs) {
			for i, l := range as.Lhs {
				if id, ok := l.(*ast.Ident); ok {
					if list := literalList(as.Rhs[i], consts); list != nil {
						out[id.Name] = list
					}
				}
			}
		}
		return true
	})
	return out
}

func labelList(e ast.Expr, lists map[string][]string, consts map[string]string) []string {
	if id, ok := e.(*ast.Ident); ok {
		return lists[id.Name]
	}
	return literalList(e, consts)
}

func literalList(e ast.Expr, consts map[string]string) []string {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	if at, ok := lit.Type.(*ast.ArrayType); !ok || !isIdent(at.Elt, "string") {
		return nil
	}
	out := []string{}
	for _, el := range lit.Elts {
		s, ok := stringValue(el, consts)
		if !ok {
			return nil
		}
		out = append(out, s)
	}
	return out
}

// --- a small PromQL reader: enough to list the metrics, matchers and grouping
// labels of a query (Prometheus' own parser is not a dependency of this module).

type promQuery struct {
	selectors []selector
	grouping  []string // labels of by/without/on/ignoring/group_left/group_right
}

type selector struct {
	metric   string
	matchers []matcher
}

type matcher struct{ label, op, value string }

var promKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
	"bool": true, "and": true, "or": true, "unless": true, "offset": true, "atan2": true, "inf": true, "nan": true,
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true, "count": true,
	"count_values": true, "bottomk": true, "topk": true, "quantile": true, "limitk": true, "limit_ratio": true,
}

var groupingKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}

func parsePromQL(expr string) (promQuery, error) {
	var q promQuery
	depth := 0
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdentChar := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func(i int) int {
		for i < len(expr) && strings.ContainsRune(" \t\n\r", rune(expr[i])) {
			i++
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			_, n, err := readString(expr[i:])
			if err != nil {
				return q, err
			}
			i += n
		case c == '[':
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return q, fmt.Errorf("unclosed [")
			}
			i += end + 1
		case c == '(':
			depth++
			i++
		case c == ')':
			depth--
			if depth < 0 {
				return q, fmt.Errorf("unbalanced )")
			}
			i++
		case c == '{':
			ms, n, err := readMatchers(expr[i:])
			if err != nil {
				return q, err
			}
			i += n
			sel := selector{}
			for _, m := range ms {
				if m.label == "__name__" && m.op == "=" {
					sel.metric = m.value
				} else {
					sel.matchers = append(sel.matchers, m)
				}
			}
			if sel.metric == "" {
				return q, fmt.Errorf("a selector without a metric name")
			}
			q.selectors = append(q.selectors, sel)
		case c == '$': // a Grafana variable outside a string
			i++
			for i < len(expr) && isIdentChar(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isIdentChar(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			start := i
			for i < len(expr) && isIdentChar(expr[i]) {
				i++
			}
			word := expr[start:i]
			next := skipSpace(i)
			switch {
			case groupingKeywords[word]:
				if next >= len(expr) || expr[next] != '(' {
					return q, fmt.Errorf("%s without a label list", word)
				}
				end := strings.IndexByte(expr[next:], ')')
				if end < 0 {
					return q, fmt.Errorf("unclosed %s (", word)
				}
				for _, l := range strings.Split(expr[next+1:next+end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						q.grouping = append(q.grouping, l)
					}
				}
				i = next + end + 1
			case promKeywords[word]:
			case next < len(expr) && expr[next] == '(':
				// a function call
			default:
				sel := selector{metric: word}
				if next < len(expr) && expr[next] == '{' {
					ms, n, err := readMatchers(expr[next:])
					if err != nil {
						return q, err
					}
					sel.matchers = ms
					i = next + n
				}
				q.selectors = append(q.selectors, sel)
			}
		default:
			i++
		}
	}
	if depth != 0 {
		return q, fmt.Errorf("unbalanced (")
	}
	return q, nil
}

// readMatchers reads {label op "value", ...} at the start of s.
func readMatchers(s string) ([]matcher, int, error) {
	re := regexp.MustCompile(`^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*`)
	var out []matcher
	i := 1
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == ',') {
			i++
		}
		if i >= len(s) {
			return nil, 0, fmt.Errorf("unclosed {")
		}
		if s[i] == '}' {
			return out, i + 1, nil
		}
		m := re.FindStringSubmatch(s[i:])
		if m == nil {
			return nil, 0, fmt.Errorf("unreadable matcher at %q", s[i:])
		}
		i += len(m[0])
		v, n, err := readString(s[i:])
		if err != nil {
			return nil, 0, err
		}
		i += n
		out = append(out, matcher{m[1], m[2], v})
	}
}

// readString reads a PromQL string literal at the start of s.
func readString(s string) (string, int, error) {
	if s == "" || !strings.ContainsRune("\"'`", rune(s[0])) {
		return "", 0, fmt.Errorf("want a string at %q", s)
	}
	q := s[0]
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && q != '`':
			i++
		case s[i] == q:
			raw := s[:i+1]
			if q == '\'' {
				raw = `"` + strings.ReplaceAll(raw[1:len(raw)-1], `"`, `\"`) + `"`
			}
			v, err := strconv.Unquote(raw)
			if err != nil {
				return "", 0, fmt.Errorf("string %s: %w", raw, err)
			}
			return v, i + 1, nil
		}
	}
	return "", 0, fmt.Errorf("unclosed string %q", s)
}
