package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names. They are spelled here and nowhere else; Names lists them for
// the Helm chart's dashboard test.
const (
	ConversionsTotal     = "cimconv_conversions_total"
	StageDurationSeconds = "cimconv_stage_duration_seconds"
	LayersTotal          = "cimconv_layers_total"
	BytesTotal           = "cimconv_bytes_total"
	EventsTotal          = "cimconv_events_total"
	Inflight             = "cimconv_inflight"
	QueuePending         = "cimconv_queue_pending"
)

// Names returns every metric name cimconv exports.
func Names() []string {
	return []string{
		ConversionsTotal, StageDurationSeconds, LayersTotal, BytesTotal,
		EventsTotal, Inflight, QueuePending,
	}
}

// Conversion results (label "result" of cimconv_conversions_total).
const (
	ResultSucceeded = "succeeded" // the artifact was pushed
	ResultRetried   = "retried"   // the attempt failed and the request was re-queued
	ResultFailed    = "failed"    // the request was given up and dead-lettered
)

// Failure reasons (label "reason"). The vocabulary is fixed so the label stays
// bounded: callers map their errors onto it, never pass error strings.
const (
	ReasonNone        = "none"        // success
	ReasonTransient   = "transient"   // retryable error (registry, network, ...)
	ReasonPermanent   = "permanent"   // the request can never succeed as is
	ReasonMaxDeliver  = "max_deliver" // retries exhausted
	ReasonUnparseable = "unparseable" // the message was not a valid request
	ReasonShutdown    = "shutdown"    // the worker stopped before finishing
	ReasonOther       = "other"       // anything not above
)

var reasons = map[string]bool{
	ReasonNone: true, ReasonTransient: true, ReasonPermanent: true, ReasonMaxDeliver: true,
	ReasonUnparseable: true, ReasonShutdown: true, ReasonOther: true,
}

var results = map[string]bool{ResultSucceeded: true, ResultRetried: true, ResultFailed: true}

// Byte directions (label "direction" of cimconv_bytes_total).
const (
	DirectionFetched = "fetched"
	DirectionPushed  = "pushed"
)

// StageBuckets spans a second to an hour: a stage of a small image takes
// seconds, a multi-GB Windows base layer tens of minutes.
var StageBuckets = []float64{0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600}

// Metrics holds every collector. Its methods are safe for concurrent use and
// on a nil *Metrics (they do nothing), so packages can take metrics optionally.
type Metrics struct {
	conversions *prometheus.CounterVec
	stages      *prometheus.HistogramVec
	layers      *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	events      *prometheus.CounterVec
	inflight    prometheus.Gauge
	pending     prometheus.Gauge
}

// New creates the collectors and registers them with reg (nil: not
// registered, useful in tests that only read values back).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		conversions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: ConversionsTotal,
			Help: "Conversion attempts by outcome: succeeded, retried (re-queued after an error) or failed (dead-lettered), and a bounded reason.",
		}, []string{"result", "reason"}),
		stages: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    StageDurationSeconds,
			Help:    "Duration of each conversion stage, failed runs included (result=ok|error).",
			Buckets: StageBuckets,
		}, []string{"stage", "result"}),
		layers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: LayersTotal,
			Help: "Layers handled, by result: built here or cached (chain cache hit).",
		}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: BytesTotal,
			Help: "Bytes fetched from and pushed to registries.",
		}, []string{"direction"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: EventsTotal,
			Help: "Incoming events (webhooks, CLI submits) by source and outcome.",
		}, []string{"source", "outcome"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: Inflight,
			Help: "Conversions running now on this worker.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: QueuePending,
			Help: "Requests waiting in the queue or delivered but not yet acknowledged (consumer lag).",
		}),
	}
	// Counters start at 0 for every known label set: a series that appears
	// at 1 (its first increment) is invisible to rate() and increase(), so
	// without this the first dead letter of a process would never alert.
	for r := range results {
		for reason := range reasons {
			m.conversions.WithLabelValues(r, reason)
		}
	}
	m.layers.WithLabelValues("built")
	m.layers.WithLabelValues("cached")
	m.bytes.WithLabelValues(DirectionFetched)
	m.bytes.WithLabelValues(DirectionPushed)
	if reg != nil {
		reg.MustRegister(m.conversions, m.stages, m.layers, m.bytes, m.events, m.inflight, m.pending)
	}
	return m
}

// ObserveStage records how long a stage took; err marks a failed stage (the
// duration of failures matters as much as that of successes).
func (m *Metrics) ObserveStage(stage string, d time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.stages.WithLabelValues(boundedLabel(stage), result).Observe(d.Seconds())
}

// ConversionDone counts one conversion attempt outcome. Results and reasons
// outside the fixed vocabulary are recorded as "other".
func (m *Metrics) ConversionDone(result, reason string) {
	if m == nil {
		return
	}
	if !results[result] {
		result = ReasonOther
	}
	if !reasons[reason] {
		reason = ReasonOther
	}
	m.conversions.WithLabelValues(result, reason).Inc()
}

// LayerDone counts one layer, built or taken from the chain cache.
func (m *Metrics) LayerDone(cached bool) {
	if m == nil {
		return
	}
	r := "built"
	if cached {
		r = "cached"
	}
	m.layers.WithLabelValues(r).Inc()
}

// AddBytes adds n bytes in direction (DirectionFetched or DirectionPushed).
func (m *Metrics) AddBytes(direction string, n int64) {
	if m == nil || n <= 0 {
		return
	}
	if direction != DirectionFetched && direction != DirectionPushed {
		direction = ReasonOther
	}
	m.bytes.WithLabelValues(direction).Add(float64(n))
}

// Event counts one incoming event (source: "distribution", "harbor", "cli",
// ...; outcome: "queued", "duplicate", "unauthorized", "filtered", ...).
func (m *Metrics) Event(source, outcome string) {
	if m == nil {
		return
	}
	m.events.WithLabelValues(boundedLabel(source), boundedLabel(outcome)).Inc()
}

// Inflight moves the in-flight gauge by delta (+1 when a conversion starts,
// -1 when it ends).
func (m *Metrics) Inflight(delta int) {
	if m == nil {
		return
	}
	m.inflight.Add(float64(delta))
}

// SetQueuePending sets the consumer lag gauge.
func (m *Metrics) SetQueuePending(n uint64) {
	if m == nil {
		return
	}
	m.pending.Set(float64(n))
}

// boundedLabel keeps caller-chosen label values short and printable, so a
// bug that passes free text cannot blow up series cardinality unnoticed.
func boundedLabel(s string) string {
	if s == "" || len(s) > 32 || strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-')
	}) >= 0 {
		return ReasonOther
	}
	return s
}
