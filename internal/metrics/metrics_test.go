package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestNamesAreRegistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	// Vectors only appear once a series exists.
	m.ConversionDone(ResultSucceeded, ReasonNone)
	m.ObserveStage("build", time.Second, nil)
	m.LayerDone(false)
	m.AddBytes(DirectionFetched, 1)
	m.Event("cli", "queued")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, mf := range mfs {
		got[mf.GetName()] = true
	}
	for _, n := range Names() {
		if !got[n] {
			t.Errorf("metric %s not registered", n)
		}
		if !strings.HasPrefix(n, "cimconv_") {
			t.Errorf("metric %s lacks the cimconv_ prefix", n)
		}
	}
	if len(got) != len(Names()) {
		t.Errorf("registered %d metrics, Names lists %d", len(got), len(Names()))
	}
}

func TestLabelsStayBounded(t *testing.T) {
	tests := []struct {
		name           string
		result, reason string
		wantResult     string
		wantReason     string
	}{
		{"known", ResultFailed, ReasonPermanent, ResultFailed, ReasonPermanent},
		{"error string as reason", ResultFailed, "GET https://x: 500 Internal", ResultFailed, ReasonOther},
		{"unknown result", "weird", ReasonNone, ReasonOther, ReasonNone},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(nil)
			// Every known result x reason starts at 0 (visible to increase()).
			if n := testutil.CollectAndCount(m.conversions); n != len(results)*len(reasons) {
				t.Fatalf("%d series before any conversion, want %d", n, len(results)*len(reasons))
			}
			m.ConversionDone(tt.result, tt.reason)
			if got := testutil.ToFloat64(m.conversions.WithLabelValues(tt.wantResult, tt.wantReason)); got != 1 {
				t.Errorf("conversions{%s,%s} = %v, want 1", tt.wantResult, tt.wantReason, got)
			}
			// At most the one "other" result series is added: labels stay bounded.
			want := len(results) * len(reasons)
			if !results[tt.wantResult] {
				want++
			}
			if n := testutil.CollectAndCount(m.conversions); n != want {
				t.Errorf("%d series, want %d", n, want)
			}
		})
	}
}

func TestObserveStageCountsFailures(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg)
	m.ObserveStage("fetch", 2*time.Second, nil)
	m.ObserveStage("fetch", 3*time.Second, errors.New("boom"))
	m.ObserveStage("Fetch Stage With Spaces", time.Second, nil)
	if n := testutil.CollectAndCount(m.stages); n != 3 {
		t.Fatalf("%d stage series, want 3 (fetch/ok, fetch/error, other/ok)", n)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != StageDurationSeconds {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["stage"] == "fetch" && labels["result"] == "error" {
				found = true
				if c, sum := s.GetHistogram().GetSampleCount(), s.GetHistogram().GetSampleSum(); c != 1 || sum != 3 {
					t.Errorf("fetch/error count=%d sum=%v, want 1 and 3", c, sum)
				}
			}
		}
	}
	if !found {
		t.Error("no fetch/error series: failures are not observed")
	}
}

func TestInflightGauge(t *testing.T) {
	m := New(nil)
	exp := `
# HELP cimconv_inflight Conversions running now on this worker.
# TYPE cimconv_inflight gauge
cimconv_inflight 1
`
	m.Inflight(1)
	m.Inflight(1)
	m.Inflight(-1)
	if err := testutil.CollectAndCompare(m.inflight, strings.NewReader(exp)); err != nil {
		t.Error(err)
	}
}

func TestNilMetricsIsNoop(t *testing.T) {
	var m *Metrics
	m.ConversionDone(ResultSucceeded, ReasonNone)
	m.ObserveStage("x", time.Second, nil)
	m.LayerDone(true)
	m.AddBytes(DirectionPushed, 5)
	m.Event("a", "b")
	m.Inflight(1)
	m.SetQueuePending(3)
}
