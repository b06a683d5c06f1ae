package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Node-side metric names (`converter snapshotter`).
const (
	SnapshotterFastPathTotal    = "cimconv_snapshotter_fastpath_total"
	SnapshotterFallThroughTotal = "cimconv_snapshotter_fallthrough_total"
	SnapshotterBytesTotal       = "cimconv_snapshotter_bytes_total"
	SnapshotterLayerSeconds     = "cimconv_snapshotter_layer_seconds"
)

// SnapshotterNames returns the node-side metric names.
func SnapshotterNames() []string {
	return []string{SnapshotterFastPathTotal, SnapshotterFallThroughTotal, SnapshotterBytesTotal, SnapshotterLayerSeconds}
}

// Snapshotter holds the snapshotter's collectors. Methods are safe on nil.
type Snapshotter struct {
	hits    *prometheus.CounterVec
	falls   *prometheus.CounterVec
	bytes   prometheus.Counter
	seconds *prometheus.HistogramVec
}

// NewSnapshotter creates the snapshotter collectors and registers them with
// reg (nil: not registered).
func NewSnapshotter(reg prometheus.Registerer) *Snapshotter {
	m := &Snapshotter{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: SnapshotterFastPathTotal,
			Help: "Layers committed by the fast path, by source: registry (artifact downloaded) or cache (warmed by converter fetch --root).",
		}, []string{"source"}),
		falls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: SnapshotterFallThroughTotal,
			Help: "Layers handed back to containerd's normal fetch and import, by reason.",
		}, []string{"reason"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: SnapshotterBytesTotal,
			Help: "Artifact bytes the fast path downloaded.",
		}),
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    SnapshotterLayerSeconds,
			Help:    "Time the fast path spent per layer, by result (hit or fallthrough).",
			Buckets: []float64{0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.hits, m.falls, m.bytes, m.seconds)
	}
	return m
}

// Hit counts a layer placed by the fast path.
func (m *Snapshotter) Hit(source string, d time.Duration) {
	if m == nil {
		return
	}
	m.hits.WithLabelValues(boundedLabel(source)).Inc()
	m.seconds.WithLabelValues("hit").Observe(d.Seconds())
}

// FallThrough counts a layer handed back to the normal path.
func (m *Snapshotter) FallThrough(reason string, d time.Duration) {
	if m == nil {
		return
	}
	m.falls.WithLabelValues(boundedLabel(reason)).Inc()
	m.seconds.WithLabelValues("fallthrough").Observe(d.Seconds())
}

// AddBytes adds downloaded artifact bytes.
func (m *Snapshotter) AddBytes(n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.bytes.Add(float64(n))
}
