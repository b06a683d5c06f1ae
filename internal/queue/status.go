package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	Key          string    `json:"key"`
	Seq          uint64    `json:"seq"`
	Attempts     int       `json:"attempts"`
	Artifacts    []string  `json:"artifacts,omitempty"`
	Subjects     []string  `json:"subjects,omitempty"`
	LayersBuilt  int       `json:"layersBuilt,omitempty"`
	LayersCached int       `json:"layersCached,omitempty"`
	LastError    string    `json:"lastError,omitempty"`
	Reason       string    `json:"reason,omitempty"`
	Updated      time.Time `json:"updated"`
}

// AsResult turns a final status into the Result of req.
func (s *Status) AsResult(req Request) *Result {
	r := &Result{
		Request: req, Key: s.Key, SubjectDigests: s.Subjects, ArtifactDigests: s.Artifacts,
		Attempts: s.Attempts, Reason: s.Reason, LayersBuilt: s.LayersBuilt, LayersCached: s.LayersCached,
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

// UpdateStatus stores st under the status key of imageOrDigest unless the
// stored state belongs to a newer request (higher Seq), or to the same
// request and is already final while st is not: a late "queued" never hides
// a result. It is safe against concurrent writers (compare-and-set).
func (q *Queue) UpdateStatus(ctx context.Context, imageOrDigest string, st Status) error {
	key, err := StatusKey(imageOrDigest)
	if err != nil {
		return err
	}
	if st.Updated.IsZero() {
		st.Updated = time.Now().UTC()
	}
	val, err := json.Marshal(st)
	if err != nil {
		return err
	}
	for range 10 {
		e, err := q.status.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err = q.status.Create(ctx, key, val); err == nil {
				return nil
			}
		case err != nil:
			return fmt.Errorf("status of %s: %w", imageOrDigest, err)
		default:
			var old Status
			if json.Unmarshal(e.Value(), &old) == nil {
				if old.Seq > st.Seq || (old.Seq == st.Seq && old.Key == st.Key && old.State.Final() && !st.State.Final()) {
					return nil
				}
			}
			if _, err = q.status.Update(ctx, key, val, e.Revision()); err == nil {
				return nil
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Lost a race with another writer: read again.
	}
	return fmt.Errorf("status of %s: too many concurrent updates", imageOrDigest)
}
