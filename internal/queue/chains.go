package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// Chains is the shared chain cache (cimconv-chains): chainID -> an opaque
// value (the pushed layer blob descriptor, owned by convert), plus build
// claims so two conversions never build one chainID at once.
//
// Keys: "value.<alg>.<hex>" and "claim.<alg>.<hex>".
//
// A claim belongs to one Claim call, not to a worker or a process: it
// carries a random token, and only the holder of the token (by the claim's
// KV revision) renews or releases it. The holder renews it every ttl/3 while
// it lives; a claim whose revision has not changed for its ttl (judged on
// the clock of the worker that wants it, so clocks need not agree) belonged
// to a dead holder and is taken over.
type Chains struct {
	kv  jetstream.KeyValue
	log *zap.Logger
	now func() time.Time

	mu   sync.Mutex
	seen map[string]sighting // claim key -> the last revision seen, and since when
}

type sighting struct {
	rev   uint64
	since time.Time
}

// Chains returns the chain cache (one per queue: it remembers the claims it
// has seen, to judge their age).
func (q *Queue) Chains() *Chains {
	q.chainsOnce.Do(func() {
		q.chainsView = &Chains{kv: q.chains, log: q.log, now: time.Now, seen: map[string]sighting{}}
	})
	return q.chainsView
}

// ClaimHolder is what a claim records about its holder.
type ClaimHolder struct {
	// Worker names the holder in logs and status (host-pid).
	Worker string `json:"worker"`
	// Token identifies the one Claim call that holds it.
	Token string `json:"token"`
	// Expires is the holder's own idea of the expiry (informational: a
	// claim is judged stale by its age on the observer's clock).
	Expires time.Time `json:"expires"`
	// TTL is how long the claim lives without a renewal.
	TTL time.Duration `json:"ttl"`
	// Owner is the field of claims written before tokens existed.
	Owner string `json:"owner,omitempty"`
}

// Name is the holder's worker name for messages.
func (h ClaimHolder) Name() string {
	if h.Worker != "" {
		return h.Worker
	}
	if h.Owner != "" {
		return h.Owner
	}
	return "unknown"
}

// ErrClaimLost is returned by Renew when the claim expired and was taken
// over (or released by someone else).
var ErrClaimLost = errors.New("build claim lost")

// Claim is a held build claim. It renews itself every ttl/3 until Release,
// so it dies with its holder's process.
type Claim struct {
	c       *Chains
	chainID string
	key     string
	holder  ClaimHolder

	mu   sync.Mutex
	rev  uint64
	lost error

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

func chainKey(kind, chainID string) (string, error) {
	alg, h, ok := strings.Cut(chainID, ":")
	if !ok || !isDigest(alg, h) {
		return "", fmt.Errorf("chainID %q: want sha256:<64 hex>", chainID)
	}
	return kind + "." + alg + "." + h, nil
}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Claim tries to become the builder of chainID. It wins (a Claim, renewing
// itself) when nobody holds the claim or the holder's claim is stale (see
// Chains); otherwise it returns the live holder. A second Claim by the same
// worker is not a renewal: it loses to the first.
func (c *Chains) Claim(ctx context.Context, chainID, worker string, ttl time.Duration) (*Claim, *ClaimHolder, error) {
	key, err := chainKey("claim", chainID)
	if err != nil {
		return nil, nil, err
	}
	if worker == "" || ttl <= 0 {
		return nil, nil, fmt.Errorf("claim %s: a worker name and a positive ttl are required", chainID)
	}
	h := ClaimHolder{Worker: worker, Token: newToken(), TTL: ttl}
	for range 5 {
		h.Expires = c.now().Add(ttl).UTC()
		val, _ := json.Marshal(h)
		rev, err := c.kv.Create(ctx, key, val)
		if err == nil {
			return c.held(chainID, key, h, rev), nil, nil
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return nil, nil, fmt.Errorf("claim %s: %w", chainID, err)
		}
		e, err := c.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile: try again
		}
		if err != nil {
			return nil, nil, fmt.Errorf("claim %s: %w", chainID, err)
		}
		cur, stale := c.judge(key, e, ttl)
		if cur.Token == h.Token {
			// Ours: an earlier try's write landed although its answer was
			// lost in an outage (see ridingKV).
			return c.held(chainID, key, h, e.Revision()), nil, nil
		}
		if !stale {
			return nil, &cur, nil
		}
		// Stale or unreadable: take it over atomically.
		if rev, err := c.kv.Update(ctx, key, val, e.Revision()); err == nil {
			c.log.Warn("took over a stale build claim (its holder stopped renewing it)",
				zap.String("chainID", chainID), zap.String("holder", cur.Name()))
			return c.held(chainID, key, h, rev), nil, nil
		}
	}
	return nil, nil, fmt.Errorf("claim %s: too many concurrent claimants", chainID)
}

// judge decodes the claim in e and says whether it is stale: its revision
// unchanged for its ttl on this clock, or its expiry more than a ttl past
// (so a long-dead claim is not waited for again; a clock skew below the ttl
// is tolerated).
func (c *Chains) judge(key string, e jetstream.KeyValueEntry, defTTL time.Duration) (ClaimHolder, bool) {
	var cur ClaimHolder
	if json.Unmarshal(e.Value(), &cur) != nil {
		return cur, true
	}
	ttl := cur.TTL
	if ttl <= 0 {
		ttl = defTTL
	}
	now := c.now()
	c.mu.Lock()
	s, ok := c.seen[key]
	if !ok || s.rev != e.Revision() {
		s = sighting{rev: e.Revision(), since: now}
		c.seen[key] = s
	}
	c.mu.Unlock()
	if now.Sub(s.since) >= ttl {
		return cur, true
	}
	return cur, !cur.Expires.IsZero() && now.After(cur.Expires.Add(ttl))
}

func (c *Chains) held(chainID, key string, h ClaimHolder, rev uint64) *Claim {
	c.mu.Lock()
	delete(c.seen, key)
	c.mu.Unlock()
	cl := &Claim{c: c, chainID: chainID, key: key, holder: h, rev: rev, stop: make(chan struct{}), done: make(chan struct{})}
	go cl.keepAlive()
	return cl
}

// Holder is who holds cl (this worker, with cl's token).
func (cl *Claim) Holder() ClaimHolder { return cl.holder }

// keepAlive renews the claim every ttl/3 until Release or until it is lost.
func (cl *Claim) keepAlive() {
	defer close(cl.done)
	defer func() {
		if r := recover(); r != nil {
			cl.c.log.Error("build claim renewal panicked; the claim will expire", zap.String("chainID", cl.chainID), zap.Any("panic", r))
		}
	}()
	t := time.NewTicker(max(cl.holder.TTL/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-cl.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), max(cl.holder.TTL/3, time.Second))
		err := cl.Renew(ctx)
		cancel()
		if errors.Is(err, ErrClaimLost) {
			cl.c.log.Warn("build claim lost (expired and taken over); another worker may build this layer too",
				zap.String("chainID", cl.chainID))
			return
		}
		if err != nil {
			cl.c.log.Warn("build claim renewal failed; retrying", zap.String("chainID", cl.chainID), zap.Error(err))
		}
	}
}

// Renew extends the claim now. It fails with ErrClaimLost when the claim's
// revision is no longer the one this holder wrote.
func (cl *Claim) Renew(ctx context.Context) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.lost != nil {
		return cl.lost
	}
	h := cl.holder
	h.Expires = cl.c.now().Add(h.TTL).UTC()
	val, _ := json.Marshal(h)
	rev, err := cl.c.kv.Update(ctx, cl.key, val, cl.rev)
	if err != nil && revisionConflict(err) {
		// A retried renewal whose first write landed (its answer lost in
		// an outage) conflicts with itself: the claim is still ours if it
		// carries our token.
		if e, gerr := cl.c.kv.Get(ctx, cl.key); gerr == nil {
			var cur ClaimHolder
			if json.Unmarshal(e.Value(), &cur) == nil && cur.Token == h.Token {
				rev, err = e.Revision(), nil
			}
		}
	}
	if err != nil {
		if revisionConflict(err) || errors.Is(err, jetstream.ErrKeyNotFound) {
			cl.lost = fmt.Errorf("claim %s: %w", cl.chainID, ErrClaimLost)
			return cl.lost
		}
		return fmt.Errorf("renew claim %s: %w", cl.chainID, err)
	}
	cl.rev = rev
	return nil
}

// Held reports whether the claim is still this holder's (as far as the last
// renewal knows).
func (cl *Claim) Held() bool {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return cl.lost == nil
}

// Release stops the renewals and deletes the claim if it is still this
// holder's (after Put, or on failure so that a waiter builds at once).
func (cl *Claim) Release(ctx context.Context) error {
	cl.once.Do(func() { close(cl.stop) })
	<-cl.done
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if cl.lost != nil {
		return nil // someone else's now
	}
	cl.lost = fmt.Errorf("claim %s: released", cl.chainID)
	err := cl.c.kv.Delete(ctx, cl.key, jetstream.LastRevision(cl.rev))
	if err != nil && !revisionConflict(err) && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("release %s: %w", cl.chainID, err)
	}
	return nil
}

// revisionConflict: a revision-checked write found another revision.
func revisionConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Put stores the value of chainID.
func (c *Chains) Put(ctx context.Context, chainID string, value []byte) error {
	key, err := chainKey("value", chainID)
	if err != nil {
		return err
	}
	if _, err := c.kv.Put(ctx, key, value); err != nil {
		return fmt.Errorf("store chain %s: %w", chainID, err)
	}
	return nil
}

// Get returns the value of chainID or an error wrapping ErrNotFound.
func (c *Chains) Get(ctx context.Context, chainID string) ([]byte, error) {
	key, err := chainKey("value", chainID)
	if err != nil {
		return nil, err
	}
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("chain %s: %w", chainID, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("chain %s: %w", chainID, err)
	}
	return e.Value(), nil
}

// AcquireOption configures Acquire.
type AcquireOption func(*acquireConfig)

type acquireConfig struct {
	onWait func(ClaimHolder)
}

// OnWait calls f whenever Acquire starts waiting on a holder (again when the
// holder changes), so the caller can say whom it waits for.
func OnWait(f func(holder ClaimHolder)) AcquireOption {
	return func(c *acquireConfig) { c.onWait = f }
}

// Acquire is the whole protocol for one chainID: it returns the chain's
// value when it exists or appears, or a Claim when the caller must build,
// Put and Release. While another holder's claim is live it waits for the
// value, watching the claim too: a release is seen at once, and a dead
// holder's claim is taken over once stale (within about its ttl).
func (c *Chains) Acquire(ctx context.Context, chainID, worker string, ttl time.Duration, opts ...AcquireOption) (value []byte, claim *Claim, err error) {
	var cfg acquireConfig
	for _, o := range opts {
		o(&cfg)
	}
	vkey, err := chainKey("value", chainID)
	if err != nil {
		return nil, nil, err
	}
	_, rest, _ := strings.Cut(vkey, ".")
	var (
		w        jetstream.KeyWatcher
		lastSeen string // token of the holder last reported to onWait
	)
	defer func() {
		if w != nil {
			_ = w.Stop()
		}
		if claim == nil {
			// The wait is over: the sighting judge kept of the holder's
			// claim goes (a won claim's went in held), or a long-lived
			// worker keeps one per chain it ever waited for.
			if ckey, err := chainKey("claim", chainID); err == nil {
				c.mu.Lock()
				delete(c.seen, ckey)
				c.mu.Unlock()
			}
		}
	}()
	for {
		if v, err := c.Get(ctx, chainID); err == nil {
			return v, nil, nil
		} else if !errors.Is(err, ErrNotFound) {
			return nil, nil, err
		}
		cl, holder, err := c.Claim(ctx, chainID, worker, ttl)
		if err != nil {
			return nil, nil, err
		}
		if cl != nil {
			// The value may have landed between Get and Claim.
			if v, err := c.Get(ctx, chainID); err == nil {
				_ = cl.Release(ctx)
				return v, nil, nil
			}
			return nil, cl, nil
		}
		if cfg.onWait != nil && holder.Token+holder.Owner != lastSeen {
			lastSeen = holder.Token + holder.Owner
			cfg.onWait(*holder)
		}
		if w == nil {
			// One watcher on both keys: the value appearing, the claim
			// released or renewed.
			if w, err = c.kv.Watch(ctx, "*."+rest, jetstream.UpdatesOnly()); err != nil {
				return nil, nil, fmt.Errorf("waiting for chain %s (held by %s): %w", chainID, holder.Name(), err)
			}
		}
		htl := holder.TTL
		if htl <= 0 {
			htl = ttl
		}
		recheck := time.NewTimer(min(max(htl/4, 20*time.Millisecond), 5*time.Second))
	wait:
		for {
			select {
			case <-ctx.Done():
				recheck.Stop()
				return nil, nil, fmt.Errorf("waiting for chain %s (held by %s): %w", chainID, holder.Name(), ctx.Err())
			case e, ok := <-w.Updates():
				if !ok {
					recheck.Stop()
					return nil, nil, fmt.Errorf("waiting for chain %s: watcher closed", chainID)
				}
				if e == nil {
					continue
				}
				if e.Key() == vkey && e.Operation() == jetstream.KeyValuePut {
					recheck.Stop()
					return e.Value(), nil, nil
				}
				if e.Operation() != jetstream.KeyValuePut {
					break wait // the claim was released: try at once
				}
				// A renewal: the holder lives; keep waiting.
			case <-recheck.C:
				break wait
			}
		}
		recheck.Stop()
	}
}
