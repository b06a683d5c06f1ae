package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/keymutex"
	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/queue"
)

// Converter converts the image of one request and pushes its artifact; it
// returns only after the artifact manifest is pushed. progress reports the
// start of each stage ("resolve", "fetch", "build", "push", ...).
//
// The worker turns the Result's layer and byte counts into metrics, so a
// Converter needs no metrics of its own. Errors are classified through the
// chain: an error with Transient() true is
// retried, one with Permanent() true is dead-lettered at once, anything else
// is retried until the delivery limit (a message is never lost to an
// unclassified error).
type Converter interface {
	Convert(ctx context.Context, req queue.Request, progress func(stage string)) (*queue.Result, error)
}

// ConverterFunc adapts a function to Converter.
type ConverterFunc func(ctx context.Context, req queue.Request, progress func(stage string)) (*queue.Result, error)

// Convert calls f.
func (f ConverterFunc) Convert(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
	return f(ctx, req, progress)
}

type classified struct {
	err       error
	permanent bool
}

func (c *classified) Error() string   { return c.err.Error() }
func (c *classified) Unwrap() error   { return c.err }
func (c *classified) Permanent() bool { return c.permanent }
func (c *classified) Transient() bool { return !c.permanent }

// Permanent marks err as permanent: retrying cannot help (not a Windows
// image, no manifest matching the policy, ...).
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &classified{err: err, permanent: true}
}

// Transient marks err as retryable (registry 5xx, network, ...).
func Transient(err error) error {
	if err == nil {
		return nil
	}
	return &classified{err: err}
}

// IsPermanent reports whether err must not be retried: no error in its chain
// says Transient() true, and one says Permanent() true or is an invalid
// request.
func IsPermanent(err error) bool {
	var t interface{ Transient() bool }
	if errors.As(err, &t) && t.Transient() {
		return false
	}
	var p interface{ Permanent() bool }
	if errors.As(err, &p) && p.Permanent() {
		return true
	}
	return errors.Is(err, queue.ErrInvalidRequest)
}

// Worker is the serve loop joining the queue and a Converter.
type Worker struct {
	q           *queue.Queue
	conv        Converter
	m           *metrics.Metrics
	log         *zap.Logger
	name        string
	concurrency int
	heartbeat   time.Duration
	grace       time.Duration
	retryBase   time.Duration
	retryMax    time.Duration
	fetchWait   time.Duration
	settle      time.Duration
	maxParked   int

	// running is locked per request (stream sequence) while one of its
	// deliveries converts here: see oneAtATime.
	running keymutex.Mutex
}

// Option configures a Worker.
type Option func(*Worker)

// WithConcurrency bounds the conversions run at once (default 2).
func WithConcurrency(n int) Option { return func(w *Worker) { w.concurrency = n } }

// WithMetrics records conversions, stages and in-flight work in m.
func WithMetrics(m *metrics.Metrics) Option { return func(w *Worker) { w.m = m } }

// WithLogger sets the logger (default: none).
func WithLogger(l *zap.Logger) Option { return func(w *Worker) { w.log = l } }

// WithName names this worker in logs (default: the host name).
func WithName(n string) Option { return func(w *Worker) { w.name = n } }

// WithHeartbeat sets the InProgress interval (default AckWait/4; it must stay
// below AckWait/3 so one lost heartbeat does not cause a redelivery).
func WithHeartbeat(d time.Duration) Option { return func(w *Worker) { w.heartbeat = d } }

// WithShutdownGrace sets how long in-flight conversions may finish after
// shutdown starts before they are cancelled and NAKed (default 30s).
func WithShutdownGrace(d time.Duration) Option { return func(w *Worker) { w.grace = d } }

// WithRetryBackoff sets the NAK delay after a transient failure: base
// doubled per attempt, capped at max (default 5s .. 5m).
func WithRetryBackoff(base, max time.Duration) Option {
	return func(w *Worker) { w.retryBase, w.retryMax = base, max }
}

// WithFetchWait sets how long one pull waits for work (default 1s); it bounds
// how fast shutdown stops pulling.
func WithFetchWait(d time.Duration) Option { return func(w *Worker) { w.fetchWait = d } }

// WithSettleTimeout bounds settling one delivery (status, ack or NAK or dead
// letter, result event; default 30s). It starts when the conversion ends, so
// a conversion may take as long as it needs.
func WithSettleTimeout(d time.Duration) Option { return func(w *Worker) { w.settle = d } }

// WithMaxParked bounds the requests parked while they wait for another
// worker's build claim (default 4 per concurrency slot): a parked request
// gives its slot to other work meanwhile, and the worker pulls no new
// request while concurrency + n are open (queue.WithMaxParked).
func WithMaxParked(n int) Option { return func(w *Worker) { w.maxParked = n } }

// New returns a worker consuming q with conv.
func New(q *queue.Queue, conv Converter, opts ...Option) (*Worker, error) {
	if conv == nil {
		return nil, errors.New("worker: conversion is not wired (no Converter)")
	}
	host, _ := os.Hostname()
	w := &Worker{
		q: q, conv: conv, log: zap.NewNop(), name: host, concurrency: 2,
		heartbeat: q.AckWait() / 4, grace: 30 * time.Second,
		retryBase: 5 * time.Second, retryMax: 5 * time.Minute, fetchWait: time.Second,
		settle: 30 * time.Second, maxParked: -1,
	}
	for _, o := range opts {
		o(w)
	}
	if w.concurrency < 1 {
		return nil, fmt.Errorf("worker: concurrency %d: must be at least 1", w.concurrency)
	}
	if w.settle <= 0 {
		return nil, fmt.Errorf("worker: settle timeout %v: must be positive", w.settle)
	}
	if w.heartbeat <= 0 || w.heartbeat >= q.AckWait()/3 {
		return nil, fmt.Errorf("worker: heartbeat %v must be positive and below a third of the ack wait (%v)", w.heartbeat, q.AckWait())
	}
	w.log = w.log.With(zap.String("worker", w.name))
	return w, nil
}

// Run consumes requests until ctx is cancelled, then shuts down gracefully
// (see queue.Consume): in-flight conversions get the grace period, then are
// cancelled and NAKed.
func (w *Worker) Run(ctx context.Context) error {
	w.log.Info("worker started", zap.Int("concurrency", w.concurrency))
	opts := []queue.ConsumeOption{queue.WithConcurrency(w.concurrency), queue.WithShutdownGrace(w.grace), queue.WithFetchWait(w.fetchWait)}
	if w.maxParked >= 0 {
		opts = append(opts, queue.WithMaxParked(w.maxParked))
	}
	err := w.q.Consume(ctx, w.handle, opts...)
	w.log.Info("worker stopped")
	return err
}

// backoff is the NAK delay after the attempt-th delivery failed.
func (w *Worker) backoff(attempt int) time.Duration {
	d := w.retryBase
	for i := 1; i < attempt && d < w.retryMax; i++ {
		d *= 2
	}
	return min(d, w.retryMax)
}

// settleCtx outlives the handler's context (settling must happen even when
// the conversion was cancelled by shutdown) and gets a fresh deadline each
// time it is made: it is made when a step needs it, never at the start of a
// conversion that may take an hour.
func (w *Worker) settleCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), w.settle)
}

func (w *Worker) handle(ctx context.Context, d *queue.Delivery) {
	log := w.log.With(zap.Uint64("seq", d.Seq), zap.Int("attempt", d.Attempt))
	if d.ParseError != nil {
		sctx, cancel := w.settleCtx(ctx)
		defer cancel()
		log.Error("unparseable request; dead-lettered", zap.Error(d.ParseError))
		w.m.ConversionDone(metrics.ResultFailed, metrics.ReasonUnparseable)
		if err := d.Term(sctx, metrics.ReasonUnparseable, d.ParseError); err != nil {
			log.Error("dead-lettering failed; NAKed", zap.Error(err))
		}
		return
	}
	log = log.With(zap.String("image", d.Request.Image), zap.String("key", d.Key()))
	if _, digest, ok := strings.Cut(d.Request.Image, "@"); ok {
		log = log.With(zap.String("digest", digest))
	}
	j := &job{w: w, d: d, log: log,
		status: queue.Status{Image: d.Request.Image, Key: d.Key(), Seq: d.Seq, Attempts: d.Attempt}}
	sctx, cancel := w.settleCtx(ctx)
	j.setStatus(sctx, queue.StateRunning, nil)
	cancel()
	log.Info("conversion started")

	w.m.Inflight(1)
	res, done, err := w.convert(withWaiter(ctx, j), j)
	// Another delivery of this request waiting in this worker goes on once
	// this one is settled (oneAtATime).
	defer done()
	w.m.Inflight(-1)

	// The conversion is over: settling gets its own deadline from now.
	sctx, cancel = w.settleCtx(ctx)
	defer cancel()
	switch {
	case err == nil && res != nil && res.Ignored != "":
		j.ignored(sctx, res)
	case err == nil:
		j.succeeded(sctx, res)
	case ctx.Err() != nil:
		j.interrupted(sctx, err)
	default:
		j.failed(sctx, err)
	}
}

// job is one delivery being settled. Its methods get a context that
// outlives the conversion's (settling must happen after a cancellation).
type job struct {
	w      *Worker
	d      *queue.Delivery
	log    *zap.Logger
	status queue.Status
	waited atomic.Bool // waiting was reported and resumed is due
}

// setStatus stores state under the request's image and any extra images
// (the subject digests), with mutate filling state-specific fields.
func (j *job) setStatus(ctx context.Context, state queue.State, mutate func(*queue.Status), images ...string) {
	st := j.status
	st.State = state
	if mutate != nil {
		mutate(&st)
	}
	if err := j.w.q.UpdateStatuses(ctx, j.d.Request, st, images...); err != nil {
		j.log.Warn("status update failed", zap.String("state", string(state)), zap.Error(err))
	}
}

// succeeded: status, ack, metrics, then the result event, so whoever sees
// the result also sees the rest.
func (j *job) succeeded(ctx context.Context, res *queue.Result) {
	if res == nil {
		res = &queue.Result{}
	}
	res.Request, res.Key, res.Attempts = j.d.Request, j.d.Key(), j.d.Attempt
	j.setStatus(ctx, queue.StateSucceeded, func(st *queue.Status) {
		st.Artifacts, st.Subjects = res.ArtifactDigests, res.SubjectDigests
		st.LayersBuilt, st.LayersCached = res.LayersBuilt, res.LayersCached
	}, res.SubjectDigests...)
	if err := j.d.Ack(ctx); err != nil {
		// The artifact exists: a redelivery finds it and acks quickly.
		j.log.Warn("ack failed; the request will be redelivered", zap.Error(err))
	}
	m := j.w.m
	m.ConversionDone(metrics.ResultSucceeded, metrics.ReasonNone)
	for range res.LayersBuilt {
		m.LayerDone(false)
	}
	for range res.LayersCached {
		m.LayerDone(true)
	}
	m.AddBytes(metrics.DirectionFetched, res.BytesFetched)
	m.AddBytes(metrics.DirectionPushed, res.BytesPushed)
	if err := j.w.q.PublishResult(ctx, res); err != nil {
		j.log.Warn("result event not published (status is up to date)", zap.Error(err))
	}
	j.log.Info("conversion succeeded", zap.Strings("subjects", res.SubjectDigests), zap.Strings("artifacts", res.ArtifactDigests),
		zap.Int("layersBuilt", res.LayersBuilt), zap.Int("layersCached", res.LayersCached))
}

// ignored: the request named no image to convert (cimconv's own artifact or
// referrers index, e.g. the event of its own fallback-tag push). It is
// acknowledged and answered, but it is not a conversion: no success is
// counted and nothing is logged as converted.
func (j *job) ignored(ctx context.Context, res *queue.Result) {
	res.Request, res.Key, res.Attempts = j.d.Request, j.d.Key(), j.d.Attempt
	j.setStatus(ctx, queue.StateSucceeded, func(st *queue.Status) { st.Detail = queue.DetailIgnored + res.Ignored })
	if err := j.d.Ack(ctx); err != nil {
		j.log.Warn("ack failed; the request will be redelivered", zap.Error(err))
	}
	if err := j.w.q.PublishResult(ctx, res); err != nil {
		j.log.Warn("result event not published (status is up to date)", zap.Error(err))
	}
	j.log.Info("request ignored: nothing to convert", zap.String("why", res.Ignored))
}

// interrupted: shutdown cancelled the conversion and another worker takes
// it. On the last delivery a NAK would exhaust it, so it is requeued.
func (j *job) interrupted(ctx context.Context, err error) {
	j.setStatus(ctx, queue.StateQueued, func(st *queue.Status) { st.LastError = "worker shut down during conversion" })
	if j.d.LastAttempt() {
		if rerr := j.d.Requeue(ctx); rerr != nil {
			j.log.Warn("requeue failed; NAKed", zap.Error(rerr))
		}
	} else if nerr := j.d.Nak(0); nerr != nil {
		j.log.Warn("nak failed; the request will be redelivered after the ack wait", zap.Error(nerr))
	}
	j.w.m.ConversionDone(metrics.ResultRetried, metrics.ReasonShutdown)
	j.log.Warn("conversion cancelled by shutdown; handed back", zap.Error(err))
}

// failed: retry transient errors with backoff; dead-letter permanent ones
// and the last delivery.
func (j *job) failed(ctx context.Context, err error) {
	reason := ""
	switch {
	case IsPermanent(err):
		reason = metrics.ReasonPermanent
	case j.d.LastAttempt():
		reason = metrics.ReasonMaxDeliver
	}
	if reason == "" {
		delay := j.w.backoff(j.d.Attempt)
		j.setStatus(ctx, queue.StateFailed, func(st *queue.Status) { st.LastError, st.Reason = err.Error(), metrics.ReasonTransient })
		if nerr := j.d.Nak(delay); nerr != nil {
			j.log.Warn("nak failed; the request will be redelivered after the ack wait", zap.Error(nerr))
		}
		j.w.m.ConversionDone(metrics.ResultRetried, metrics.ReasonTransient)
		j.log.Warn("conversion failed; will retry", zap.Error(err), zap.Duration("retryIn", delay))
		return
	}
	// Another delivery succeeded: a dead letter would be false, and alert
	// for nothing. (The other order, a success after the dead letter, is
	// queue.UpdateStatus's.)
	if j.otherDeliverySucceeded(ctx) {
		if aerr := j.d.Ack(ctx); aerr != nil {
			j.log.Warn("ack failed", zap.Error(aerr))
		}
		j.log.Warn("conversion failed, but another delivery of this request succeeded meanwhile; acknowledged, not dead-lettered", zap.Error(err))
		return
	}
	// Term stores the dead letter and the dead status.
	if terr := j.d.Term(ctx, reason, err); terr != nil {
		j.log.Error("dead-lettering failed; NAKed", zap.Error(terr))
		return
	}
	j.w.m.ConversionDone(metrics.ResultFailed, reason)
	res := &queue.Result{Request: j.d.Request, Key: j.d.Key(), Attempts: j.d.Attempt, Error: err.Error(), Reason: reason}
	if perr := j.w.q.PublishResult(ctx, res); perr != nil {
		j.log.Warn("result event not published (status is up to date)", zap.Error(perr))
	}
	j.log.Error("conversion failed; dead-lettered", zap.String("reason", reason), zap.Error(err))
}

// otherDeliverySucceeded reports whether the request's status says it
// succeeded: another delivery of the same request (same stream sequence),
// redelivered while this one ran (e.g. when a NATS election lost this one's
// heartbeats), converted it and acked.
func (j *job) otherDeliverySucceeded(ctx context.Context) bool {
	return j.w.q.Succeeded(ctx, j.d.Request.Image, j.d.Seq)
}

// convert runs the converter with heartbeats and stage timing. done ends
// this delivery's turn (oneAtATime); the caller calls it after settling.
func (w *Worker) convert(ctx context.Context, j *job) (_ *queue.Result, done func(), _ error) {
	d, log := j.d, j.log
	hbCtx, stopHB := context.WithCancel(ctx)
	var hbWG sync.WaitGroup
	hbWG.Add(1)
	go func() {
		defer hbWG.Done()
		t := time.NewTicker(w.heartbeat)
		defer t.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-t.C:
				if err := d.InProgress(); err != nil {
					log.Warn("heartbeat failed", zap.Error(err))
				}
			}
		}
	}()
	defer func() { stopHB(); hbWG.Wait() }()

	// A converter that reports its own stages (the ConvertAdapter: plan,
	// build and pack per layer, push) gets the metrics; for others the
	// stages are timed from their progress calls.
	_, own := w.conv.(stageReporter)
	if own {
		ctx = withStageObserver(ctx, w.m)
	}
	var mu sync.Mutex
	stage, stageStart := "", time.Time{}
	start := time.Now()
	progress := func(next string) {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		if stage != "" && !own {
			w.m.ObserveStage(stage, now.Sub(stageStart), nil)
		}
		stage, stageStart = next, now
		log.Debug("stage", zap.String("stage", next))
	}
	done, err := w.oneAtATime(ctx, j)
	if err != nil {
		return nil, func() {}, err
	}
	res, err := w.safeConvert(ctx, d.Request, progress)
	mu.Lock()
	if stage != "" {
		if !own {
			w.m.ObserveStage(stage, time.Since(stageStart), err)
		}
		if err != nil {
			err = fmt.Errorf("stage %s: %w", stage, err)
		}
		stage = ""
	}
	mu.Unlock()
	w.m.ObserveStage("total", time.Since(start), err)
	return res, done, err
}

// oneAtATime lets one delivery of a request convert in this worker at a
// time. A request redelivered while this worker still converts it (its
// heartbeats lost, e.g. through a NATS election) waits, parked and
// heartbeating, for the first delivery to end, then converts: quickly, as
// it finds the artifact the first one pushed, or again if that one failed.
// Without this the two raced for the same build claims.
func (w *Worker) oneAtATime(ctx context.Context, j *job) (release func(), err error) {
	key := strconv.FormatUint(j.d.Seq, 10)
	if release, ok := w.running.TryLock(key); ok {
		return release, nil
	}
	j.waitingFor(ctx, "waiting for this worker's other delivery of the request to end")
	if release, err = w.running.LockContext(ctx, key); err != nil {
		return nil, err
	}
	if err := j.resumed(ctx); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

// stageReporter is a Converter that reports every stage's duration itself,
// to the observer in its context (stageObserverFrom).
type stageReporter interface{ reportsStages() }

type stageObserverKey struct{}

func withStageObserver(ctx context.Context, m *metrics.Metrics) context.Context {
	return context.WithValue(ctx, stageObserverKey{}, m)
}

func stageObserverFrom(ctx context.Context) *metrics.Metrics {
	m, _ := ctx.Value(stageObserverKey{}).(*metrics.Metrics)
	return m
}

// safeConvert turns a converter panic into a permanent error: the input that
// caused it would cause it again, and one bad image must not stop the worker.
func (w *Worker) safeConvert(ctx context.Context, req queue.Request, progress func(string)) (res *queue.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, Permanent(fmt.Errorf("converter panicked: %v", r))
		}
	}()
	return w.conv.Convert(ctx, req, progress)
}
