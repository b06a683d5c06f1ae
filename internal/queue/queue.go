package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/errdefs"
	"github.com/cimconv/cimconv/internal/wait"
)

// Names of the JetStream objects cimconv provisions.
const (
	StreamName     = "CIMCONV"
	ConsumerName   = "workers"
	SubjectRequest = "cimconv.requests"
	SubjectResults = "cimconv.results" // + ".<idempotency key>"
	SubjectDead    = "cimconv.dead"
	StatusBucket   = "cimconv-status"
	ChainsBucket   = "cimconv-chains"
)

// Sentinel errors callers decide on.
var (
	// ErrNotFound: no status, dead letter or chain value under that name.
	// It is errdefs.ErrNotFound, the one not-found kind of every package.
	ErrNotFound = errdefs.ErrNotFound
	// ErrStreamMismatch: an existing CIMCONV stream has settings that cannot
	// be updated in place (e.g. memory storage).
	ErrStreamMismatch = errors.New("existing stream is incompatible")
	// ErrServerTooOld: the NATS server is older than MinServerVersion.
	ErrServerTooOld = errors.New("NATS server too old")
)

// MinServerVersion is the oldest nats-server cimconv supports (Debian 12's
// package is 2.9.10; the service is tested against it and against the
// version in go.mod). Open refuses older servers.
const MinServerVersion = "2.9.0"

type config struct {
	ackWait         time.Duration
	maxDeliver      int
	backOff         []time.Duration
	duplicateWindow time.Duration
	maxAge          time.Duration
	replicas        int
	provision       bool
	logger          *zap.Logger
	outage          time.Duration
}

// Option configures Open.
type Option func(*config)

// WithAckWait sets how long a delivery may go without Ack or InProgress before
// it is redelivered (default 60s). Workers heartbeat well within it.
func WithAckWait(d time.Duration) Option { return func(c *config) { c.ackWait = d } }

// WithMaxDeliver sets the number of deliveries after which a request is
// dead-lettered (default 5).
func WithMaxDeliver(n int) Option { return func(c *config) { c.maxDeliver = n } }

// WithBackOff sets the consumer's redelivery delays for deliveries whose ack
// wait expired (a worker died); len(d) must not exceed MaxDeliver.
func WithBackOff(d ...time.Duration) Option { return func(c *config) { c.backOff = d } }

// WithDuplicateWindow sets how long Nats-Msg-Id deduplication remembers a key
// (default 10m): duplicate webhooks within it collapse into one request.
func WithDuplicateWindow(d time.Duration) Option {
	return func(c *config) { c.duplicateWindow = d }
}

// WithMaxAge bounds how long messages stay in the stream (default 14 days).
func WithMaxAge(d time.Duration) Option { return func(c *config) { c.maxAge = d } }

// WithReplicas sets the stream and bucket replica count (clustered NATS).
func WithReplicas(n int) Option { return func(c *config) { c.replicas = n } }

// WithProvision(false) binds to existing objects instead of creating or
// updating them: for clients (submit, status) without stream permissions.
func WithProvision(p bool) Option { return func(c *config) { c.provision = p } }

// WithLogger sets the logger (default: no logs).
func WithLogger(l *zap.Logger) Option { return func(c *config) { c.logger = l } }

// Queue is cimconv's view of JetStream: the CIMCONV stream, the shared
// workers consumer and the two KV buckets.
type Queue struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
	cons   jetstream.Consumer
	status jetstream.KeyValue
	chains jetstream.KeyValue
	cfg    config
	log    *zap.Logger

	chainsOnce sync.Once
	chainsView *Chains

	// afterDeadStatus, when set (tests), runs between the dead status and
	// the dead letter's publication.
	afterDeadStatus func()
}

// Open provisions (idempotently) or binds the stream, consumer and buckets on
// nc. Provisioning an existing stream updates it to cimconv's settings; a
// setting JetStream cannot change in place yields ErrStreamMismatch.
func Open(ctx context.Context, nc *nats.Conn, opts ...Option) (*Queue, error) {
	cfg := config{
		ackWait:         60 * time.Second,
		maxDeliver:      5,
		duplicateWindow: 10 * time.Minute,
		maxAge:          14 * 24 * time.Hour,
		replicas:        1,
		provision:       true,
		logger:          zap.NewNop(),
		outage:          DefaultOutageTolerance,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxDeliver < 1 {
		return nil, fmt.Errorf("queue: max deliver %d: must be at least 1", cfg.maxDeliver)
	}
	if len(cfg.backOff) > cfg.maxDeliver {
		return nil, fmt.Errorf("queue: %d backoff steps exceed max deliver %d", len(cfg.backOff), cfg.maxDeliver)
	}
	if cfg.ackWait <= 0 {
		return nil, fmt.Errorf("queue: ack wait %v: must be positive", cfg.ackWait)
	}
	if err := CheckServerVersion(nc); err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("queue: jetstream: %w", err)
	}
	q := &Queue{nc: nc, js: js, cfg: cfg, log: cfg.logger}
	if cfg.provision {
		err = q.provision(ctx)
	} else {
		err = q.bind(ctx)
	}
	if err != nil {
		return nil, err
	}
	// Bucket reads and writes ride through leader elections and reconnects.
	r := q.rider()
	q.status = &ridingKV{KeyValue: q.status, r: r}
	q.chains = &ridingKV{KeyValue: q.chains, r: r}
	return q, nil
}

func (q *Queue) rider() rider { return rider{bound: q.cfg.outage, log: q.log} }

func (q *Queue) streamConfig() jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        StreamName,
		Description: "cimconv conversion requests, results and dead letters",
		Subjects:    []string{SubjectRequest, SubjectResults + ".>", SubjectDead},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		MaxAge:      q.cfg.maxAge,
		Duplicates:  q.cfg.duplicateWindow,
		Replicas:    q.cfg.replicas,
		Discard:     jetstream.DiscardOld,
	}
}

func (q *Queue) consumerConfig() jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "conversion workers (shared)",
		FilterSubject: SubjectRequest,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       q.cfg.ackWait,
		MaxDeliver:    q.cfg.maxDeliver,
		BackOff:       q.cfg.backOff,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		// A worker asks for one request per free slot; a few hundred
		// outstanding pulls cover any pool size.
		MaxWaiting: 512,
	}
}

func (q *Queue) provision(ctx context.Context) error {
	want := q.streamConfig()
	if s, err := q.js.Stream(ctx, StreamName); err == nil {
		have := s.CachedInfo().Config
		if have.Storage != want.Storage {
			return fmt.Errorf("queue: stream %s uses %s storage, cimconv needs %s (delete or migrate it): %w",
				StreamName, have.Storage, want.Storage, ErrStreamMismatch)
		}
		if have.Retention != want.Retention {
			return fmt.Errorf("queue: stream %s has retention %s, cimconv needs %s (delete or migrate it): %w",
				StreamName, have.Retention, want.Retention, ErrStreamMismatch)
		}
	} else if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("queue: look up stream %s: %w", StreamName, err)
	}
	s, err := q.js.CreateOrUpdateStream(ctx, want)
	if err != nil {
		return fmt.Errorf("queue: provision stream %s: %w", StreamName, err)
	}
	q.stream = s
	c, err := q.js.CreateOrUpdateConsumer(ctx, StreamName, q.consumerConfig())
	if err != nil {
		return fmt.Errorf("queue: provision consumer %s: %w", ConsumerName, err)
	}
	q.cons = c
	q.status, err = q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      StatusBucket,
		Description: "conversion state per image (key: digest or reference hash)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    q.cfg.replicas,
	})
	if err != nil {
		return fmt.Errorf("queue: provision bucket %s: %w", StatusBucket, err)
	}
	q.chains, err = q.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      ChainsBucket,
		Description: "built layer per chainID, and build claims",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    q.cfg.replicas,
	})
	if err != nil {
		return fmt.Errorf("queue: provision bucket %s: %w", ChainsBucket, err)
	}
	return nil
}

func (q *Queue) bind(ctx context.Context) error {
	var err error
	if q.stream, err = q.js.Stream(ctx, StreamName); err != nil {
		return fmt.Errorf("queue: stream %s (is a cimconv worker running?): %w", StreamName, err)
	}
	if q.cons, err = q.js.Consumer(ctx, StreamName, ConsumerName); err != nil {
		return fmt.Errorf("queue: consumer %s: %w", ConsumerName, err)
	}
	if q.status, err = q.js.KeyValue(ctx, StatusBucket); err != nil {
		return fmt.Errorf("queue: bucket %s: %w", StatusBucket, err)
	}
	if q.chains, err = q.js.KeyValue(ctx, ChainsBucket); err != nil {
		return fmt.Errorf("queue: bucket %s: %w", ChainsBucket, err)
	}
	return nil
}

// AckWait is the consumer's ack wait: workers heartbeat well within it.
func (q *Queue) AckWait() time.Duration { return q.cfg.ackWait }

// CheckServerVersion refuses a connection to a server older than
// MinServerVersion, naming the server and the version.
func CheckServerVersion(nc *nats.Conn) error {
	v := nc.ConnectedServerVersion()
	if v == "" {
		return fmt.Errorf("queue: the NATS server at %s did not report its version: %w", nc.ConnectedUrlRedacted(), ErrServerTooOld)
	}
	if versionLess(v, MinServerVersion) {
		return fmt.Errorf("queue: the NATS server at %s is version %s; cimconv needs %s or newer (JetStream KV and the consumer API it uses): %w",
			nc.ConnectedUrlRedacted(), v, MinServerVersion, ErrServerTooOld)
	}
	return nil
}

// versionLess compares "major.minor.patch[-suffix]" versions numerically.
func versionLess(a, b string) bool {
	pa, pb := versionParts(a), versionParts(b)
	for i := range pa {
		if pa[i] != pb[i] {
			return pa[i] < pb[i]
		}
	}
	return false
}

func versionParts(v string) [3]int {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+ "); i >= 0 {
		v = v[:i]
	}
	var out [3]int
	for i, p := range strings.SplitN(v, ".", 3) {
		out[i], _ = strconv.Atoi(p)
	}
	return out
}

// Ready reports whether the connection is up and the stream exists.
func (q *Queue) Ready(ctx context.Context) error {
	if !q.nc.IsConnected() {
		return fmt.Errorf("nats: not connected (%s)", q.nc.Status())
	}
	if _, err := q.js.Stream(ctx, StreamName); err != nil {
		return fmt.Errorf("nats: stream %s: %w", StreamName, err)
	}
	return nil
}

// ReadyToConsume is Ready for a process that consumes requests: the shared
// request consumer must exist too, or its pulls fail and it converts
// nothing (Consume re-creates a consumer found gone; until then, or when it
// cannot, the process is not ready).
func (q *Queue) ReadyToConsume(ctx context.Context) error {
	if err := q.Ready(ctx); err != nil {
		return err
	}
	if _, err := q.cons.Info(ctx); err != nil {
		return fmt.Errorf("nats: consumer %s of stream %s: %w", ConsumerName, StreamName, err)
	}
	return nil
}

// Submit publishes req on cimconv.requests with its idempotency key as
// Nats-Msg-Id. dup is true when the key was already seen within the
// duplicate window: nothing new is queued. (A retry that finds its own first
// try, whose answer was lost, is not a duplicate: see publish.)
func (q *Queue) Submit(ctx context.Context, req Request) (dup bool, err error) {
	_, dup, err = q.submit(ctx, req, "")
	return dup, err
}

func (q *Queue) submit(ctx context.Context, req Request, msgID string) (uint64, bool, error) {
	req, err := req.Normalize()
	if err != nil {
		return 0, false, err
	}
	body, err := EncodeRequest(req)
	if err != nil {
		return 0, false, err
	}
	key := req.IdempotencyKey()
	if msgID == "" {
		msgID = key
	}
	ack, stored, err := q.publish(ctx, SubjectRequest, body, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(StreamName))
	if err != nil {
		return 0, false, fmt.Errorf("queue: submit %s: %w", req.Image, err)
	}
	if !stored {
		return ack.Sequence, true, nil
	}
	err = q.UpdateStatuses(ctx, req, Status{State: StateQueued, Image: req.Image, Key: key, Seq: ack.Sequence})
	return ack.Sequence, false, err
}

// PublishResult publishes res on cimconv.results.<key>.
func (q *Queue) PublishResult(ctx context.Context, res *Result) error {
	if res.Key == "" {
		res.Key = res.Request.IdempotencyKey()
	}
	body, err := EncodeResult(res)
	if err != nil {
		return err
	}
	if _, err := q.js.Publish(ctx, SubjectResults+"."+res.Key, body); err != nil {
		return fmt.Errorf("queue: publish result for %s: %w", res.Request.Image, err)
	}
	return nil
}

// ResultWatch receives the result of one idempotency key. Create it before
// submitting so a fast result cannot be missed.
type ResultWatch struct {
	q    *Queue
	key  string
	cons jetstream.Consumer
	from uint64 // the first stream sequence cons delivers
}

// WatchResult starts watching cimconv.results.<key> for results published
// from now on. The start is pinned to the stream's current last sequence (the
// ordered consumer itself is only created on the first fetch).
func (q *Queue) WatchResult(ctx context.Context, key string) (*ResultWatch, error) {
	info, err := q.stream.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("queue: watch result %s: %w", key, err)
	}
	from := info.State.LastSeq + 1
	c, err := q.js.OrderedConsumer(ctx, StreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{SubjectResults + "." + key},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    from,
	})
	if err != nil {
		return nil, fmt.Errorf("queue: watch result %s: %w", key, err)
	}
	return &ResultWatch{q: q, key: key, cons: c, from: from}, nil
}

// Wait blocks until the result of req arrives or ctx ends. seq is the
// stream sequence of the request (for a duplicate, that of the earlier
// request it collapsed into): a result on the key's subject stored after it
// is the answer, whether published since the watch started or before (a
// duplicate of a finished request: looked up by subject, so it answers
// whatever the image's status says now). A final status of the key from that
// request or a later one answers too (the worker publishes the result after
// the status, and may fail to).
func (w *ResultWatch) Wait(ctx context.Context, req Request, seq uint64) (*Result, error) {
	// Results stored before the watch started are not delivered by cons.
	looked := seq >= w.from
	for {
		if !looked {
			res, err := w.resultAfter(ctx, seq)
			if err == nil {
				looked = true
			}
			if res != nil {
				return res, nil
			}
		}
		if st, err := w.q.Status(ctx, req.Image); err == nil && st.Key == w.key && st.Seq >= seq && st.State.Final() {
			return st.AsResult(req), nil
		}
		msgs, err := w.cons.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("waiting for the result of %s: %w", req.Image, ctx.Err())
			}
			if err := wait.Sleep(ctx, 500*time.Millisecond); err != nil {
				return nil, fmt.Errorf("waiting for the result of %s: %w", req.Image, err)
			}
			continue
		}
		for m := range msgs.Messages() {
			return DecodeResult(m.Data())
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("waiting for the result of %s: %w", req.Image, ctx.Err())
		}
	}
}

// resultAfter returns the last result published for the watched key when it
// was stored after stream sequence seq, or nil (no such result, or none that
// parses). The stream keeps it: a request is only a duplicate within the
// duplicate window, which JetStream keeps no longer than the stream's max
// age, and its result is stored after it.
func (w *ResultWatch) resultAfter(ctx context.Context, seq uint64) (*Result, error) {
	m, err := w.q.stream.GetLastMsgForSubject(ctx, SubjectResults+"."+w.key)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("queue: last result of %s: %w", w.key, err)
	}
	if m.Sequence <= seq {
		return nil, nil // an older request's
	}
	res, err := DecodeResult(m.Data)
	if err != nil {
		return nil, nil // not ours to judge: keep waiting for one that parses
	}
	return res, nil
}

// Each calls f for every result on the watched subject, in stream order,
// until f returns false or ctx ends. Use WatchResult(ctx, "*") to see the
// results of every request (load tests, dashboards).
func (w *ResultWatch) Each(ctx context.Context, f func(*Result) bool) error {
	it, err := w.cons.Messages()
	if err != nil {
		return fmt.Errorf("queue: read results: %w", err)
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("queue: read results: %w", err)
		}
		res, err := DecodeResult(m.Data())
		if err != nil {
			continue // not ours to judge: skip what does not parse
		}
		if !f(res) {
			return nil
		}
	}
}

// SubmitAndWait submits req and waits for its result (the CI hook).
func (q *Queue) SubmitAndWait(ctx context.Context, req Request) (*Result, bool, error) {
	req, err := req.Normalize()
	if err != nil {
		return nil, false, err
	}
	w, err := q.WatchResult(ctx, req.IdempotencyKey())
	if err != nil {
		return nil, false, err
	}
	// A duplicate's sequence is the earlier request's (JetStream answers a
	// collapsed publish with the sequence of the message it collapsed into).
	seq, dup, err := q.submit(ctx, req, "")
	if err != nil {
		return nil, false, err
	}
	res, err := w.Wait(ctx, req, seq)
	return res, dup, err
}

// Pending is the consumer lag: requests not yet delivered plus those
// delivered and not yet acknowledged.
func (q *Queue) Pending(ctx context.Context) (uint64, error) {
	info, err := q.cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("queue: consumer info: %w", err)
	}
	return info.NumPending + uint64(info.NumAckPending), nil
}

// publishJSON publishes v as JSON under msgID, riding through an outage (the id
// deduplicates a retry whose answer was lost, so it is required).
func (q *Queue) publishJSON(ctx context.Context, subject, msgID string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, _, err = q.publish(ctx, subject, b, jetstream.WithMsgID(msgID))
	return err
}

// publish publishes a message that carries a message id (so a retry after a
// lost answer is deduplicated), riding through an outage. stored says this
// call put the message on the stream: a fresh message, or a duplicate
// answered to a retry, since the earlier try whose answer was lost most
// likely stored it (a genuine duplicate arriving just then is taken as
// ours: its queued status is written again, which the status order keeps
// from overwriting later states).
func (q *Queue) publish(ctx context.Context, subject string, data []byte, opts ...jetstream.PublishOpt) (ack *jetstream.PubAck, stored bool, err error) {
	tries := 0
	err = q.rider().do(ctx, "publish "+subject, func(ctx context.Context) error {
		tries++
		ack, err = q.js.Publish(ctx, subject, data, opts...)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	return ack, !ack.Duplicate || tries > 1, nil
}
