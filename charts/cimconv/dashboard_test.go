package chart_test

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/metrics"
)

// grafanaDashboard is the part of Grafana's dashboard model the chart relies
// on; unknown fields are allowed (Grafana's model is large), missing ones are
// checked below.
type grafanaDashboard struct {
	Title         string          `json:"title"`
	UID           string          `json:"uid"`
	SchemaVersion int             `json:"schemaVersion"`
	Panels        []grafanaPanel  `json:"panels"`
	Templating    json.RawMessage `json:"templating"`
}

type grafanaPanel struct {
	ID      int    `json:"id"`
	Type    string `json:"type"`
	Title   string `json:"title"`
	GridPos *struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

type templating struct {
	List []struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query any    `json:"query"`
	} `json:"list"`
}

func loadDashboard(t testing.TB) grafanaDashboard {
	t.Helper()
	b, err := os.ReadFile("dashboards/cimconv.json")
	if err != nil {
		t.Fatal(err)
	}
	var d grafanaDashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboards/cimconv.json: %v", err)
	}
	return d
}

func TestDashboardShape(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" || len(d.UID) > 40 {
		t.Errorf("title %q, uid %q: both required, uid at most 40 characters", d.Title, d.UID)
	}
	if d.SchemaVersion < 30 {
		t.Errorf("schemaVersion %d: want a current Grafana model (>= 30)", d.SchemaVersion)
	}
	if len(d.Panels) == 0 {
		t.Fatal("dashboard has no panels")
	}
	ids := map[int]bool{}
	titles := map[string]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] || p.ID == 0 {
			t.Errorf("panel %q: id %d missing or duplicated", p.Title, p.ID)
		}
		ids[p.ID] = true
		titles[p.Title] = true
		if p.Type == "" || p.Title == "" || p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %d: type, title and gridPos are required", p.ID)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || tg.RefID == "" {
				t.Errorf("panel %q: target without expr or refId", p.Title)
			}
		}
	}
	// The panels issue 6 asks for.
	for _, want := range []string{
		"Conversion throughput", "Stage duration p50 / p95", "Failures by reason",
		"Queue lag over time", "Layer cache", "Registry bytes", "In-flight conversions",
	} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
}

// TestDashboardMetricsExist: every metric a dashboard query reads is one the
// service exports (internal/metrics.Names), and every exported metric is shown.
func TestDashboardMetricsExist(t *testing.T) {
	d := loadDashboard(t)
	exported := metrics.Names()
	used := map[string]bool{}
	check := func(where, expr string) {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		if len(names) == 0 {
			t.Errorf("%s: query %q reads no metric", where, expr)
		}
		for _, n := range names {
			base := baseMetricName(n)
			used[base] = true
			if !slices.Contains(exported, base) {
				t.Errorf("%s: metric %q (from %q) is not exported by internal/metrics", where, n, expr)
			}
		}
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			check("panel "+p.Title, tg.Expr)
		}
	}
	var tm templating
	if err := json.Unmarshal(d.Templating, &tm); err != nil {
		t.Fatalf("templating: %v", err)
	}
	for _, v := range tm.List {
		if v.Type != "query" {
			continue
		}
		q := ""
		switch qq := v.Query.(type) {
		case string:
			q = qq
		case map[string]any:
			q, _ = qq["query"].(string)
		}
		m := labelValuesRE.FindStringSubmatch(q)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q)
			continue
		}
		check("variable "+v.Name, m[1])
	}
	for _, n := range exported {
		if !used[n] {
			t.Errorf("exported metric %s is on no dashboard panel", n)
		}
	}
}

var labelValuesRE = regexp.MustCompile(`^label_values\(\s*([^,]+?)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)$`)

// baseMetricName maps the series of a histogram or summary to its family.
func baseMetricName(n string) string {
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(n, suf) {
			return strings.TrimSuffix(n, suf)
		}
	}
	return n
}
