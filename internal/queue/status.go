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

// State of a conversion in the cimconv-status bucket.
type State string

const (
	StateQueued    State = "queued"    // submitted, not yet picked up
	StateRunning   State = "running"   // a worker is converting it
	StateFailed    State = "failed"    // the last attempt failed; it will be retried
	StateSucceeded State = "succeeded" // the artifact is pushed
	StateDead      State = "dead"      // given up: see `converter dead list`
)

// Final reports whether no more work will happen for this request.
func (s State) Final() bool { return s == StateSucceeded || s == StateDead }

// Status is the value stored under an image's status key.
type Status struct {
	State State  `json:"state"`
	Image string `json:"image"`
	// Key is the idempotency key of the request this state belongs to; Seq
	// its stream sequence. A state from an older request never overwrites
	// that of a newer one.
	Key          string   `json:"key"`
	Seq          uint64   `json:"seq"`
	Attempts     int      `json:"attempts"`
	Artifacts    []string `json:"artifacts,omitempty"`
	Subjects     []string `json:"subjects,omitempty"`
	LayersBuilt  int      `json:"layersBuilt,omitempty"`
	LayersCached int      `json:"layersCached,omitempty"`
	LastError    string   `json:"lastError,omitempty"`
	// Detail says what a running conversion is doing when it is not its
	// own work, e.g. "waiting for layer 2/3 (held by worker w1)".
	Detail  string    `json:"detail,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Updated time.Time `json:"updated"`
}

// DetailIgnored starts the Detail of a request that named nothing to
// convert (Result.Ignored follows it).
const DetailIgnored = "nothing to convert: "

// AsResult turns a final status into the Result of req.
func (s *Status) AsResult(req Request) *Result {
	r := &Result{
		Request: req, Key: s.Key, SubjectDigests: s.Subjects, ArtifactDigests: s.Artifacts,
		Attempts: s.Attempts, Reason: s.Reason, LayersBuilt: s.LayersBuilt, LayersCached: s.LayersCached,
	}
	if why, ok := strings.CutPrefix(s.Detail, DetailIgnored); ok && s.State == StateSucceeded {
		r.Ignored = why
	}
	if s.State != StateSucceeded {
		r.Error = s.LastError
		if r.Error == "" {
			r.Error = string(s.State)
		}
	}
	return r
}

// Status reads the state of an image reference or digest.
func (q *Queue) Status(ctx context.Context, imageOrDigest string) (*Status, error) {
	key, err := StatusKey(imageOrDigest)
	if err != nil {
		return nil, err
	}
	e, err := q.status.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, fmt.Errorf("status of %s: %w", imageOrDigest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("status of %s: %w", imageOrDigest, err)
	}
	var st Status
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return nil, fmt.Errorf("status of %s: corrupt entry: %w", imageOrDigest, err)
	}
	return &st, nil
}

// rank orders the states of one delivery attempt: queued (submitted) <
// running < failed or handed back (queued again by a worker) < final.
func rank(st Status) int {
	switch st.State {
	case StateQueued:
		if st.Attempts > 0 {
			return 2 // handed back by a worker after its attempt
		}
		return 0
	case StateRunning:
		return 1
	case StateFailed:
		return 2
	}
	return 3
}

// Supersedes reports whether st may replace old under one status key:
// states only move forward. A newer request (higher Seq) always wins. Within
// one request, a final state (succeeded, dead) replaces any state that is not
// final, whatever attempt it comes from; a final state is only replaced by a
// final state of the same or a later attempt, a success never by a dead
// letter, and a dead letter by a success of any attempt (the artifact
// exists). Otherwise a later delivery attempt wins, and within one attempt the
// state must not go back (a late "queued" from submit never hides "running").
func Supersedes(old, st Status) bool {
	if st.Seq != old.Seq {
		return st.Seq > old.Seq
	}
	if old.State.Final() {
		// Only by a final state, and not by an older attempt's (a
		// delivery redelivered while its first worker still ran, e.g.
		// through a NATS election, finishes twice); never a success by a
		// dead letter: the artifact exists.
		switch {
		case old.State == StateSucceeded && st.State == StateDead:
			return false
		case old.State == StateDead && st.State == StateSucceeded:
			return true // an older attempt's late success: the artifact exists
		}
		return st.State.Final() && st.Attempts >= old.Attempts
	}
	if st.State.Final() {
		// A final state settles the request: its ack (or dead letter)
		// ends the message, so a later attempt that failed or still runs
		// gets no retry and must not hide it. Seen in the cluster failover
		// test: attempt 2, redelivered during an election, failed waiting
		// for a build claim while attempt 1 went on, succeeded and acked.
		return true
	}
	if st.Attempts != old.Attempts {
		return st.Attempts > old.Attempts
	}
	return rank(st) >= rank(old)
}

// UpdateStatuses stores st (UpdateStatus) under every name req's status is
// recorded under (Request.StatusImages: the image, and repo:tag for a
// digest-pinned request with a tag) and under extra names (the subject
// digests of a result), and returns the first error.
func (q *Queue) UpdateStatuses(ctx context.Context, req Request, st Status, extra ...string) error {
	var first error
	for _, img := range append(req.StatusImages(), extra...) {
		if err := q.UpdateStatus(ctx, img, st); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// undoDead puts back a dead status this process wrote (dead) for a request
// that is not dead after all, its dead letter not stored: st replaces it
// under every name of the request, only where the stored status is still
// that dead state (compare-and-set on its revision), so a later state of
// the request is never overwritten.
func (q *Queue) undoDead(ctx context.Context, req Request, dead, st Status) error {
	var first error
	for _, img := range req.StatusImages() {
		if err := q.replaceStatus(ctx, img, func(old Status) bool {
			return old.Seq == dead.Seq && old.State == StateDead && old.Attempts == dead.Attempts && old.Reason == dead.Reason
		}, st); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// replaceStatus stores st under imageOrDigest if the stored status matches.
func (q *Queue) replaceStatus(ctx context.Context, imageOrDigest string, match func(Status) bool, st Status) error {
	_, _, err := q.casStatus(ctx, imageOrDigest, st, func(old *Status) bool { return old != nil && match(*old) })
	return err
}

// casStatus stores st under imageOrDigest by a revision-checked
// compare-and-set, safe against concurrent writers: write decides from the
// stored status (nil when there is none or it does not decode) whether st
// replaces it, and a writer that loses the race reads again and decides
// again. It returns whether st was stored and, if so, the status it replaced.
func (q *Queue) casStatus(ctx context.Context, imageOrDigest string, st Status, write func(old *Status) bool) (bool, *Status, error) {
	key, err := StatusKey(imageOrDigest)
	if err != nil {
		return false, nil, err
	}
	if st.Updated.IsZero() {
		st.Updated = time.Now().UTC()
	}
	val, err := json.Marshal(st)
	if err != nil {
		return false, nil, err
	}
	for range 10 {
		e, err := q.status.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if !write(nil) {
				return false, nil, nil
			}
			if _, err = q.status.Create(ctx, key, val); err == nil {
				return true, nil, nil
			}
		case err != nil:
			return false, nil, fmt.Errorf("status of %s: %w", imageOrDigest, err)
		default:
			var old *Status
			if json.Unmarshal(e.Value(), &old) != nil {
				old = nil
			}
			if !write(old) {
				return false, nil, nil
			}
			if _, err = q.status.Update(ctx, key, val, e.Revision()); err == nil {
				return true, old, nil
			}
		}
		if ctx.Err() != nil {
			return false, nil, ctx.Err()
		}
		// Lost a race with another writer: read again.
	}
	return false, nil, fmt.Errorf("status of %s: too many concurrent updates", imageOrDigest)
}

// Succeeded reports whether the status of imageOrDigest says that request
// seq (its stream sequence) succeeded: some delivery of it converted the
// image. An error reading the status is a no.
func (q *Queue) Succeeded(ctx context.Context, imageOrDigest string, seq uint64) bool {
	st, err := q.Status(ctx, imageOrDigest)
	return err == nil && st != nil && st.Seq == seq && st.State == StateSucceeded
}

// UpdateStatus stores st under the status key of imageOrDigest unless the
// stored state supersedes it (see Supersedes). It is a revision-checked
// compare-and-set, safe against concurrent writers: a writer that loses the
// race reads again and decides again. A success replacing a dead state of
// the same request removes that request's dead letter.
func (q *Queue) UpdateStatus(ctx context.Context, imageOrDigest string, st Status) error {
	stored, old, err := q.casStatus(ctx, imageOrDigest, st, func(old *Status) bool { return old == nil || Supersedes(*old, st) })
	if stored && old != nil && old.Seq == st.Seq && old.State == StateDead && st.State == StateSucceeded {
		// An earlier delivery succeeded after a later one was
		// dead-lettered: the artifact exists, the dead letter is false.
		q.dropDeadLetter(ctx, st.Seq)
	}
	return err
}
