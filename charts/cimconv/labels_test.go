package chart_test

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cimconv/cimconv/internal/metrics"
)

// targetLabels are added by Prometheus to every series it scrapes through the
// chart's ServiceMonitor (Prometheus Operator target labels), plus "le" of
// histogram buckets.
var targetLabels = []string{"namespace", "pod", "service", "job", "instance", "container", "endpoint", "le"}

// exportedLabels drives every collector of internal/metrics through its API,
// with every value of the fixed vocabularies the package defines, and returns
// metric -> label -> values exported. closed lists the labels whose values
// were all produced here (the others are open: stage names, event sources).
func exportedLabels(t *testing.T) (seen map[string]map[string][]string, closed map[string][]string) {
	t.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	results := []string{metrics.ResultSucceeded, metrics.ResultRetried, metrics.ResultFailed}
	reasons := []string{metrics.ReasonNone, metrics.ReasonTransient, metrics.ReasonPermanent, metrics.ReasonMaxDeliver,
		metrics.ReasonUnparseable, metrics.ReasonShutdown, metrics.ReasonOther}
	for _, r := range results {
		for _, why := range reasons {
			m.ConversionDone(r, why)
		}
	}
	m.ObserveStage("resolve", 0, nil)
	m.ObserveStage("resolve", 0, errors.New("failed"))
	m.LayerDone(true)
	m.LayerDone(false)
	m.AddBytes(metrics.DirectionFetched, 1)
	m.AddBytes(metrics.DirectionPushed, 1)
	m.Event("distribution", "accepted")
	m.Inflight(1)
	m.SetQueuePending(1)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen = map[string]map[string][]string{}
	for _, mf := range mfs {
		labels := map[string][]string{}
		for _, mt := range mf.GetMetric() {
			for _, lp := range mt.GetLabel() {
				if !slices.Contains(labels[lp.GetName()], lp.GetValue()) {
					labels[lp.GetName()] = append(labels[lp.GetName()], lp.GetValue())
				}
			}
		}
		seen[mf.GetName()] = labels
	}
	for _, name := range metrics.Names() {
		if _, ok := seen[name]; !ok {
			t.Errorf("metric %s not exported after exercising every collector", name)
		}
	}
	closed = map[string][]string{
		metrics.ConversionsTotal:     {"result", "reason"},
		metrics.StageDurationSeconds: {"result"},
		metrics.LayersTotal:          {"result"},
		metrics.BytesTotal:           {"direction"},
	}
	return seen, closed
}

var (
	selectorRE = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	groupingRE = regexp.MustCompile(`\b(?:by|without|on|ignoring)\s*\(([^)]*)\)`)
)

// TestDashboardLabels: every label a dashboard query matches or groups by is
// one the metric exports (or a scrape target label), and every value matched
// exactly on a fixed-vocabulary label is one the service can export — e.g.
// the stage histogram's result is ok|error, not succeeded.
func TestDashboardLabels(t *testing.T) {
	seen, closed := exportedLabels(t)
	for _, expr := range loadDashboardExprs(t) {
		names, err := metricNames(expr)
		if err != nil {
			t.Errorf("%q: %v", expr, err)
			continue
		}
		exprLabels := slices.Clone(targetLabels)
		for _, n := range names {
			for l := range seen[baseMetricName(n)] {
				exprLabels = append(exprLabels, l)
			}
		}
		for _, sel := range selectorRE.FindAllStringSubmatch(expr, -1) {
			metric := baseMetricName(sel[1])
			labels := seen[metric]
			for _, mt := range matcherRE.FindAllStringSubmatch(sel[2], -1) {
				label, op, value := mt[1], mt[2], mt[3]
				if slices.Contains(targetLabels, label) {
					continue
				}
				values, ok := labels[label]
				if !ok {
					t.Errorf("%q: %s has no label %q", expr, metric, label)
					continue
				}
				if (op == "=" || op == "!=") && slices.Contains(closed[metric], label) && !slices.Contains(values, value) {
					t.Errorf("%q: %s{%s} is never %q (exported: %s)", expr, metric, label, value, strings.Join(values, ", "))
				}
			}
		}
		for _, g := range groupingRE.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(g[1], ",") {
				if l = strings.TrimSpace(l); l != "" && !slices.Contains(exprLabels, l) {
					t.Errorf("%q: groups by %q, a label of none of its metrics", expr, l)
				}
			}
		}
	}
}
