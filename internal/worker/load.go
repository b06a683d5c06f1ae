package worker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cimconv/cimconv/internal/queue"
)

// LoadReport is the outcome of RunLoad.
type LoadReport struct {
	N           int
	Concurrency int
	Failed      int
	// Wall is from the first submit to the last result.
	Wall      time.Duration
	PerSecond float64
	// P50 and P99 are end-to-end latencies: submit to result event
	// (queueing behind earlier requests included).
	P50, P99 time.Duration
	// Busy is the time spent inside Converter.Convert, summed.
	Busy time.Duration
	// OverheadShare is the share of worker slot time not spent converting:
	// 1 - Busy / (Wall * Concurrency).
	OverheadShare float64
	// OverheadPerRequest is (Wall*Concurrency - Busy) / N.
	OverheadPerRequest time.Duration
}

func (r *LoadReport) String() string {
	return fmt.Sprintf("n=%d concurrency=%d failed=%d wall=%v conversions/s=%.1f p50=%v p99=%v busy=%v overhead=%.1f%% overhead/request=%v",
		r.N, r.Concurrency, r.Failed, r.Wall.Round(time.Millisecond), r.PerSecond, r.P50.Round(time.Millisecond/10), r.P99.Round(time.Millisecond/10),
		r.Busy.Round(time.Millisecond), 100*r.OverheadShare, r.OverheadPerRequest.Round(time.Microsecond))
}

// RunLoad measures the queue path: it runs a worker with conv on q (opts as
// for New; set WithConcurrency), submits every request at once, waits for
// all their results and reports throughput, latency and the share of time
// spent outside conv. Requests must have distinct idempotency keys.
func RunLoad(ctx context.Context, q *queue.Queue, conv Converter, reqs []queue.Request, opts ...Option) (*LoadReport, error) {
	var mu sync.Mutex
	var busy time.Duration
	timed := ConverterFunc(func(ctx context.Context, req queue.Request, p func(string)) (*queue.Result, error) {
		start := time.Now()
		res, err := conv.Convert(ctx, req, p)
		d := time.Since(start)
		mu.Lock()
		busy += d
		mu.Unlock()
		return res, err
	})
	w, err := New(q, timed, opts...)
	if err != nil {
		return nil, err
	}
	wctx, stopWorker := context.WithCancel(ctx)
	workerDone := make(chan error, 1)
	go func() { workerDone <- w.Run(wctx) }()
	defer func() { stopWorker(); <-workerDone }()

	m, err := SubmitAll(ctx, q, reqs)
	if err != nil {
		return nil, err
	}
	failed := 0
	for _, res := range m.Results {
		if !res.Succeeded() {
			failed++
		}
	}
	wall := m.Wall
	c := w.concurrency
	mu.Lock()
	b := busy
	mu.Unlock()
	slot := wall * time.Duration(c)
	rep := &LoadReport{
		N: len(reqs), Concurrency: c, Failed: failed, Wall: wall,
		PerSecond: float64(len(reqs)) / wall.Seconds(),
		P50:       m.Percentile(0.50), P99: m.Percentile(0.99),
		Busy: b, OverheadShare: 1 - float64(b)/float64(slot),
		OverheadPerRequest: (slot - b) / time.Duration(len(reqs)),
	}
	return rep, nil
}

// Measurement is what SubmitAll observed.
type Measurement struct {
	// Wall is from the first submit to the last result.
	Wall time.Duration
	// Latencies are submit-to-result times, sorted.
	Latencies []time.Duration
	// Results are the result events, in arrival order.
	Results []*queue.Result
}

// Percentile returns the p-th (0..1) latency.
func (m *Measurement) Percentile(p float64) time.Duration {
	return percentile(m.Latencies, p)
}

// SubmitAll submits every request at once to whatever workers consume q and
// waits for each one's result event. Requests must have distinct
// idempotency keys (a duplicate would collapse and never get its own result).
func SubmitAll(ctx context.Context, q *queue.Queue, reqs []queue.Request) (*Measurement, error) {
	keys := make(map[string]int, len(reqs))
	for i, r := range reqs {
		k := r.IdempotencyKey()
		if _, dup := keys[k]; dup {
			return nil, fmt.Errorf("load: requests %d and %d have the same key", keys[k], i)
		}
		keys[k] = i
	}
	// Results are read from the stream, starting after everything already
	// there, by one ordered consumer on all result subjects.
	watch, err := q.WatchResult(ctx, "*")
	if err != nil {
		return nil, err
	}
	submitted := make([]time.Time, len(reqs))
	start := time.Now()
	for i, r := range reqs {
		submitted[i] = time.Now()
		if dup, err := q.Submit(ctx, r); err != nil {
			return nil, fmt.Errorf("load: submit %d: %w", i, err)
		} else if dup {
			return nil, fmt.Errorf("load: submit %d: collapsed as a duplicate of an earlier request", i)
		}
	}
	m := &Measurement{Latencies: make([]time.Duration, 0, len(reqs))}
	var last time.Time
	err = watch.Each(ctx, func(res *queue.Result) bool {
		i, ok := keys[res.Key]
		if !ok {
			return true
		}
		delete(keys, res.Key)
		last = time.Now()
		m.Latencies = append(m.Latencies, last.Sub(submitted[i]))
		m.Results = append(m.Results, res)
		return len(keys) > 0
	})
	if err != nil {
		return nil, fmt.Errorf("load: %d of %d results missing: %w", len(keys), len(reqs), err)
	}
	slices.Sort(m.Latencies)
	m.Wall = last.Sub(start)
	return m, nil
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
