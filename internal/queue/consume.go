package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/wait"
)

// Delivery is one delivery of a request to a worker. Exactly one of Ack, Nak
// or Term settles it; a delivery the handler leaves unsettled is NAKed by
// Consume, so a request is never dropped by omission.
type Delivery struct {
	// Request is the parsed request; valid only when ParseError is nil.
	Request Request
	// ParseError is set when the message is not a valid request (poison):
	// the handler should Term it, which dead-letters it.
	ParseError error
	// Attempt is the delivery count (1 for the first delivery).
	Attempt int
	// MaxDeliver is the consumer's limit: on this attempt a failure must be
	// dead-lettered, not NAKed.
	MaxDeliver int
	// Seq is the request's stream sequence.
	Seq uint64

	q   *Queue
	msg jetstream.Msg

	mu      sync.Mutex
	settled bool
	// slot is the delivery's concurrency slot (see Park); nil outside Consume.
	slot *slot
}

// Key is the request's idempotency key.
func (d *Delivery) Key() string { return d.Request.IdempotencyKey() }

// LastAttempt reports whether this is the final delivery.
func (d *Delivery) LastAttempt() bool { return d.Attempt >= d.MaxDeliver }

func (d *Delivery) settle() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.settled {
		return false
	}
	d.settled = true
	return true
}

// Settled reports whether Ack, Nak or Term was called.
func (d *Delivery) Settled() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.settled
}

// Ack acknowledges the delivery and waits for the server to confirm it, so a
// nil error means the request will not be redelivered.
func (d *Delivery) Ack(ctx context.Context) error {
	if !d.settle() {
		return errors.New("delivery already settled")
	}
	if err := d.msg.DoubleAck(ctx); err != nil {
		return fmt.Errorf("ack request #%d: %w", d.Seq, err)
	}
	return nil
}

// Nak asks for redelivery after delay.
func (d *Delivery) Nak(delay time.Duration) error {
	if !d.settle() {
		return errors.New("delivery already settled")
	}
	var err error
	if delay > 0 {
		err = d.msg.NakWithDelay(delay)
	} else {
		err = d.msg.Nak()
	}
	if err != nil {
		return fmt.Errorf("nak request #%d: %w", d.Seq, err)
	}
	return nil
}

// Park gives the delivery's concurrency slot back while the handler waits
// for something other than its own work (another worker's build claim,
// another delivery of the same request), so the worker may take other
// requests meanwhile. It reports false outside Consume and when already
// parked. A parked delivery still heartbeats; Unpark takes a slot again.
//
// Parking always succeeds: a waiter that kept its slot could wait for a
// parked delivery that, having won what it waited for, waits for that slot
// (seen: a parked delivery won a build claim released without a value,
// while the slot's holder needed the same chain). WithMaxParked bounds
// instead how many deliveries the worker has open, running or parked: past
// it, it pulls no new request.
func (d *Delivery) Park() bool {
	s := d.slot
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.held || s.parked {
		return false
	}
	<-s.pool.slots
	s.held, s.parked = false, true
	return true
}

// Unpark waits for a free concurrency slot after Park (at once when the
// delivery is not parked) or for ctx to end.
func (d *Delivery) Unpark(ctx context.Context) error {
	s := d.slot
	if s == nil {
		return nil
	}
	s.mu.Lock()
	parked := s.parked
	s.mu.Unlock()
	if !parked {
		return nil
	}
	select {
	case s.pool.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	s.mu.Lock()
	s.held, s.parked = true, false
	s.mu.Unlock()
	return nil
}

// slotPool bounds the deliveries handled at once (slots) and those open,
// handled or parked (open: concurrency + WithMaxParked).
type slotPool struct {
	slots chan struct{}
	open  chan struct{}
}

// take waits for an open delivery's place and a slot, in that order, or
// for ctx to end (false).
func (p *slotPool) take(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return false
	case p.open <- struct{}{}:
	}
	select {
	case <-ctx.Done():
		<-p.open
		return false
	case p.slots <- struct{}{}:
	}
	return true
}

// give returns what take took.
func (p *slotPool) give() {
	<-p.slots
	<-p.open
}

// slot is one delivery's share of the pool: its place among the open
// deliveries always, and a slot unless parked.
type slot struct {
	pool   *slotPool
	mu     sync.Mutex
	held   bool // holds one of pool.slots
	parked bool // gave its slot back (Park)
}

func (s *slot) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.held {
		<-s.pool.slots
		s.held = false
	}
	s.parked = false
	<-s.pool.open
}

// InProgress resets the ack timer: the worker is still on it.
func (d *Delivery) InProgress() error {
	if d.Settled() {
		return nil
	}
	return d.msg.InProgress()
}

// Term gives up on the request: it is published to cimconv.dead with reason
// and cause, then terminated. If the dead letter cannot be stored the
// delivery is NAKed instead and the error returned: a request is never
// dropped without a trace.
func (d *Delivery) Term(ctx context.Context, reason string, cause error) error {
	if !d.settle() {
		return errors.New("delivery already settled")
	}
	dl := DeadLetter{RequestSeq: d.Seq, Raw: d.msg.Data(), Reason: reason, Attempts: d.Attempt}
	if cause != nil {
		dl.Error = cause.Error()
	}
	if d.ParseError == nil {
		r := d.Request
		dl.Request = &r
	}
	if err := d.q.deadLetter(ctx, dl); err != nil {
		// The request lives on (NAKed, delivered again): the dead status
		// deadLetter wrote first must not stay, final as it is, nor the
		// dead letter if its publication landed though unconfirmed. With
		// a context of its own: ctx may be what ran out. On the last
		// attempt the NAK exhausts the request, and the max-deliveries
		// advisory dead-letters it again.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		if dl.Request != nil {
			failed := dl.status()
			failed.State = StateFailed
			failed.LastError = fmt.Sprintf("%s (dead-lettering failed: %v; delivered again)", dl.Error, err)
			if uerr := d.q.undoDead(uctx, *dl.Request, dl.status(), failed); uerr != nil {
				d.q.log.Warn("could not take back the dead status of a request handed back", zap.Uint64("seq", d.Seq), zap.Error(uerr))
			}
		}
		d.q.dropDeadLetter(uctx, d.Seq)
		_ = d.msg.Nak()
		return err
	}
	// Plain Term, not TermWithReason: nats-server 2.9 ignores the latter
	// and redelivers (the reason is in the dead letter).
	if err := d.msg.Term(); err != nil {
		return fmt.Errorf("term request #%d (dead letter stored): %w", d.Seq, err)
	}
	return nil
}

// Requeue publishes the request again as a new message (a fresh delivery
// count) and terminates this delivery. It is for work interrupted by a
// shutdown on its last delivery, which a NAK would exhaust. If publishing
// fails the delivery is NAKed and the error returned.
func (d *Delivery) Requeue(ctx context.Context) error {
	if !d.settle() {
		return errors.New("delivery already settled")
	}
	ack, stored, err := d.q.publish(ctx, SubjectRequest, d.msg.Data(), jetstream.WithMsgID("requeue-"+strconv.FormatUint(d.Seq, 10)))
	if err != nil {
		_ = d.msg.Nak()
		return fmt.Errorf("requeue request #%d: %w", d.Seq, err)
	}
	if d.ParseError == nil && stored {
		_ = d.q.UpdateStatuses(ctx, d.Request, Status{State: StateQueued, Image: d.Request.Image, Key: d.Key(), Seq: ack.Sequence,
			LastError: "requeued: interrupted by a worker shutdown on its last delivery"})
	}
	if err := d.msg.Term(); err != nil {
		return fmt.Errorf("term request #%d (requeued as #%d): %w", d.Seq, ack.Sequence, err)
	}
	return nil
}

type consumeConfig struct {
	concurrency int
	maxParked   int
	grace       time.Duration
	fetchWait   time.Duration
}

// ConsumeOption configures Consume.
type ConsumeOption func(*consumeConfig)

// WithConcurrency bounds the deliveries handled at once (default 2: CimFS on
// Windows Server 2022 has crashed hosts under many concurrent imports). A
// worker only pulls a request when a slot is free, so nothing waits in a
// client-side buffer while its ack timer runs.
func WithConcurrency(n int) ConsumeOption { return func(c *consumeConfig) { c.concurrency = n } }

// WithMaxParked bounds the deliveries parked at once (see Delivery.Park;
// default 4 per concurrency slot): the worker pulls a request only while it
// has fewer than concurrency + n deliveries open, handled or parked.
func WithMaxParked(n int) ConsumeOption { return func(c *consumeConfig) { c.maxParked = n } }

// WithShutdownGrace sets how long in-flight handlers may run after ctx is
// cancelled before their own context is cancelled (default 30s).
func WithShutdownGrace(d time.Duration) ConsumeOption { return func(c *consumeConfig) { c.grace = d } }

// WithFetchWait sets how long one pull waits for a request (default 1s; an idle worker sends one pull a second, and shutdown waits at most this long for the pull in flight).
func WithFetchWait(d time.Duration) ConsumeOption { return func(c *consumeConfig) { c.fetchWait = d } }

// Handler handles one delivery. ctx is cancelled when the shutdown grace
// period ends.
type Handler func(ctx context.Context, d *Delivery)

// Consume pulls requests from the shared consumer and runs handler on each,
// at most concurrency at a time, until ctx is cancelled. Then it stops
// pulling, gives in-flight handlers the grace period, cancels them, waits for
// them and NAKs whatever they left unsettled. It also dead-letters requests
// whose deliveries ran out without a worker settling them (a worker died on
// the last attempt), from the server's max-deliveries advisory.
func (q *Queue) Consume(ctx context.Context, handler Handler, opts ...ConsumeOption) error {
	cfg := consumeConfig{concurrency: 2, grace: 30 * time.Second, fetchWait: time.Second, maxParked: -1}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.concurrency < 1 {
		return fmt.Errorf("queue: concurrency %d: must be at least 1", cfg.concurrency)
	}
	if cfg.maxParked < 0 {
		cfg.maxParked = 4 * cfg.concurrency
	}
	advisory, err := q.nc.Subscribe(fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", StreamName, ConsumerName), func(m *nats.Msg) {
		q.onMaxDeliveries(ctx, m.Data)
	})
	if err != nil {
		return fmt.Errorf("queue: subscribe to max-deliveries advisories: %w", err)
	}
	defer func() { _ = advisory.Unsubscribe() }()

	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	var wg sync.WaitGroup
	pool := &slotPool{slots: make(chan struct{}, cfg.concurrency), open: make(chan struct{}, cfg.concurrency+cfg.maxParked)}
	run := func(m jetstream.Msg) {
		d := q.newDelivery(m)
		d.slot = &slot{pool: pool, held: true}
		defer func() { d.slot.release(); wg.Done() }()
		defer func() {
			if r := recover(); r != nil {
				q.log.Error("handler panicked; request NAKed", zap.Uint64("seq", d.Seq), zap.Any("panic", r))
			}
			if !d.Settled() {
				_ = d.Nak(0)
			}
		}()
		handler(hctx, d)
	}

	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		if !pool.take(ctx) {
			continue
		}
		batch, err := q.cons.Fetch(1, jetstream.FetchMaxWait(cfg.fetchWait))
		if err != nil {
			pool.give()
			if ctx.Err() == nil {
				q.log.Warn("pull failed; retrying", zap.Error(err), zap.Duration("in", backoff))
				q.restoreConsumer(ctx)
				_ = wait.Sleep(ctx, backoff)
				backoff = min(backoff*2, 5*time.Second)
			}
			continue
		}
		handed := false // the slot passes to the handler goroutine
	recv:
		for {
			select {
			case m, ok := <-batch.Messages():
				if !ok {
					break recv
				}
				if ctx.Err() != nil {
					q.handBack(m) // shutting down
					continue
				}
				handed = true
				wg.Add(1)
				go run(m)
			case <-ctx.Done():
				// Keep draining: a request may still arrive for this pull
				// and must be NAKed, not left to its ack timer.
				for m := range batch.Messages() {
					q.handBack(m)
				}
				break recv
			}
		}
		if !handed {
			pool.give()
			if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
				q.log.Warn("pull ended with an error; retrying", zap.Error(err), zap.Duration("in", backoff))
				q.restoreConsumer(ctx)
				_ = wait.Sleep(ctx, backoff)
				backoff = min(backoff*2, 5*time.Second)
				continue
			}
		}
		backoff = 100 * time.Millisecond
	}

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.grace):
		q.log.Warn("shutdown grace period over; cancelling in-flight conversions", zap.Duration("grace", cfg.grace))
		cancelHandlers()
		<-done
	}
	return nil
}

// restoreConsumer re-creates the shared request consumer, after a pull
// failed, when the server says it is gone (`nats consumer rm`): every pull
// would fail until a restart otherwise (a pull to a missing consumer has no
// responders). It takes the config provisioning gives it, so the consumer is
// the one a restarted worker would create, and several workers doing it at
// once agree: creating a durable consumer with the config it already has
// changes nothing. q.cons names the consumer and pulls from the new one.
func (q *Queue) restoreConsumer(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := q.cons.Info(ctx); !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return // there, or the server cannot tell now: the pull retries
	}
	log := q.log.With(zap.String("stream", StreamName), zap.String("consumer", ConsumerName))
	if !q.cfg.provision {
		log.Error("request consumer is gone; not re-created: this process binds to the queue without provisioning it")
		return
	}
	if _, err := q.js.CreateOrUpdateConsumer(ctx, StreamName, q.consumerConfig()); err != nil {
		log.Error("request consumer is gone and could not be re-created; retrying", zap.Error(err))
		return
	}
	log.Warn("request consumer was gone; re-created it (its delivery state is lost: it delivers the requests still in the stream again)")
}

// handBack returns a request pulled while shutting down, unhandled: NAKed
// for another worker, or, on its last delivery, which a NAK would use up
// (the request dead-lettered without a worker trying it), requeued as a
// fresh message, as an interrupted handler's is (Requeue).
func (q *Queue) handBack(m jetstream.Msg) {
	d := q.newDelivery(m)
	if !d.LastAttempt() {
		_ = m.Nak()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Requeue(ctx); err != nil {
		q.log.Warn("requeueing a request pulled on its last delivery while shutting down failed; NAKed", zap.Uint64("seq", d.Seq), zap.Error(err))
	}
}

func (q *Queue) newDelivery(m jetstream.Msg) *Delivery {
	d := &Delivery{q: q, msg: m, MaxDeliver: q.cfg.maxDeliver}
	if md, err := m.Metadata(); err == nil {
		d.Attempt = int(md.NumDelivered)
		d.Seq = md.Sequence.Stream
	} else {
		d.Attempt = 1
	}
	d.Request, d.ParseError = DecodeRequest(m.Data())
	return d
}

func (q *Queue) onMaxDeliveries(ctx context.Context, data []byte) {
	var adv struct {
		StreamSeq  uint64 `json:"stream_seq"`
		Deliveries int    `json:"deliveries"`
	}
	if err := json.Unmarshal(data, &adv); err != nil || adv.StreamSeq == 0 {
		q.log.Warn("unreadable max-deliveries advisory", zap.ByteString("advisory", data))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	m, err := q.stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		q.log.Error("request exhausted its deliveries but could not be read for dead-lettering",
			zap.Uint64("seq", adv.StreamSeq), zap.Error(err))
		return
	}
	dl := DeadLetter{RequestSeq: adv.StreamSeq, Raw: m.Data, Reason: "max_deliver", Attempts: adv.Deliveries,
		Error: fmt.Sprintf("no worker settled it in %d deliveries", adv.Deliveries)}
	if req, err := DecodeRequest(m.Data); err == nil {
		dl.Request = &req
	}
	if err := q.deadLetter(ctx, dl); err != nil {
		q.log.Error("dead-lettering an exhausted request failed", zap.Uint64("seq", adv.StreamSeq), zap.Error(err))
		return
	}
	q.log.Warn("request exhausted its deliveries; dead-lettered", zap.Uint64("seq", adv.StreamSeq))
}
