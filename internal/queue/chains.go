package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Chains is the shared chain cache (cimconv-chains): chainID -> an opaque
// value (the pushed layer blob descriptor, owned by convert), plus build
// claims so two workers never build one chainID at once.
//
// Keys: "value.<alg>.<hex>" and "claim.<alg>.<hex>".
type Chains struct {
	kv  jetstream.KeyValue
	now func() time.Time
}

// Chains returns the chain cache.
func (q *Queue) Chains() *Chains { return &Chains{kv: q.chains, now: time.Now} }

type claim struct {
	Owner   string    `json:"owner"`
	Expires time.Time `json:"expires"`
}

func chainKey(kind, chainID string) (string, error) {
	alg, h, ok := strings.Cut(chainID, ":")
	if !ok || !isDigest(alg, h) {
		return "", fmt.Errorf("chainID %q: want sha256:<64 hex>", chainID)
	}
	return kind + "." + alg + "." + h, nil
}

// Claim tries to become the builder of chainID for ttl. It wins when nobody
// holds the claim, when the claim expired (its holder died), or when owner
// already holds it (renewal). A loser should Wait for the winner's value.
func (c *Chains) Claim(ctx context.Context, chainID, owner string, ttl time.Duration) (bool, error) {
	key, err := chainKey("claim", chainID)
	if err != nil {
		return false, err
	}
	if owner == "" || ttl <= 0 {
		return false, fmt.Errorf("claim %s: owner and a positive ttl are required", chainID)
	}
	val, _ := json.Marshal(claim{Owner: owner, Expires: c.now().Add(ttl).UTC()})
	for range 5 {
		if _, err := c.kv.Create(ctx, key, val); err == nil {
			return true, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, fmt.Errorf("claim %s: %w", chainID, err)
		}
		e, err := c.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released meanwhile: try again
		}
		if err != nil {
			return false, fmt.Errorf("claim %s: %w", chainID, err)
		}
		var cur claim
		if json.Unmarshal(e.Value(), &cur) == nil && cur.Owner != owner && c.now().Before(cur.Expires) {
			return false, nil
		}
		// Expired, unreadable or ours: take it over atomically.
		if _, err := c.kv.Update(ctx, key, val, e.Revision()); err == nil {
			return true, nil
		}
	}
	return false, nil
}

// Release gives up owner's claim on chainID (after Put, or on failure so a
// waiting worker can claim it at once instead of after the ttl).
func (c *Chains) Release(ctx context.Context, chainID, owner string) error {
	key, err := chainKey("claim", chainID)
	if err != nil {
		return err
	}
	e, err := c.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("release %s: %w", chainID, err)
	}
	var cur claim
	if json.Unmarshal(e.Value(), &cur) == nil && cur.Owner != owner {
		return nil // someone else's now
	}
	if err := c.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("release %s: %w", chainID, err)
	}
	return nil
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

// Wait returns the value of chainID as soon as it exists (at once if it
// already does), or ctx's error. The caller bounds the wait with ctx and, on
// timeout, may Claim again: a dead winner's claim expires.
func (c *Chains) Wait(ctx context.Context, chainID string) ([]byte, error) {
	key, err := chainKey("value", chainID)
	if err != nil {
		return nil, err
	}
	w, err := c.kv.Watch(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("watch chain %s: %w", chainID, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for chain %s: %w", chainID, ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("waiting for chain %s: watcher closed", chainID)
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue // end of initial values, or a delete
			}
			return e.Value(), nil
		}
	}
}

// Acquire is the whole protocol for one chainID: it returns the chain's
// value when it exists or appears (won false), or won true when the caller
// holds the claim and must build, Put and Release. While another worker
// holds a live claim it waits for its value, re-trying the claim every half
// ttl so that a dead winner's claim is taken over once it expires.
func (c *Chains) Acquire(ctx context.Context, chainID, owner string, ttl time.Duration) (value []byte, won bool, err error) {
	recheck := min(max(ttl/2, 50*time.Millisecond), 30*time.Second)
	for {
		if v, err := c.Get(ctx, chainID); err == nil {
			return v, false, nil
		} else if !errors.Is(err, ErrNotFound) {
			return nil, false, err
		}
		won, err := c.Claim(ctx, chainID, owner, ttl)
		if err != nil {
			return nil, false, err
		}
		if won {
			// The value may have landed between Get and Claim.
			if v, err := c.Get(ctx, chainID); err == nil {
				_ = c.Release(ctx, chainID, owner)
				return v, false, nil
			}
			return nil, true, nil
		}
		wctx, cancel := context.WithTimeout(ctx, recheck)
		v, err := c.Wait(wctx, chainID)
		cancel()
		if err == nil {
			return v, false, nil
		}
		if ctx.Err() != nil {
			return nil, false, fmt.Errorf("acquire chain %s: %w", chainID, ctx.Err())
		}
	}
}
