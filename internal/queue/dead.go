package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// DeadLetter is a request the workers gave up on, stored on cimconv.dead.
type DeadLetter struct {
	// Seq is the stream sequence of the dead letter itself (the handle for
	// Replay); it is not part of the stored JSON.
	Seq uint64 `json:"-"`
	// RequestSeq is the stream sequence of the original request.
	RequestSeq uint64 `json:"requestSeq"`
	// Request is the parsed request; nil when the message did not parse.
	Request *Request `json:"request,omitempty"`
	// Raw is the original message body, replayed as is.
	Raw      []byte    `json:"raw"`
	Reason   string    `json:"reason"`
	Error    string    `json:"error,omitempty"`
	Attempts int       `json:"attempts"`
	Time     time.Time `json:"time"`
}

// deadLetter publishes d on cimconv.dead. The message id derives from the
// request's sequence so that two workers (or a worker and the max-deliveries
// advisory) dead-lettering the same delivery store it once.
func (q *Queue) deadLetter(ctx context.Context, d DeadLetter) error {
	if d.Time.IsZero() {
		d.Time = time.Now().UTC()
	}
	// Status first: whoever sees the dead letter also sees the dead state.
	// (A waiter on the status may look for the dead letter a moment before
	// it is stored: such callers poll.)
	if d.Request != nil {
		_ = q.UpdateStatuses(ctx, *d.Request, d.status())
	}
	if q.afterDeadStatus != nil {
		q.afterDeadStatus()
	}
	if err := q.publishJSON(ctx, SubjectDead, "dead-"+strconv.FormatUint(d.RequestSeq, 10), d); err != nil {
		return fmt.Errorf("queue: dead-letter request #%d: %w", d.RequestSeq, err)
	}
	// Another delivery of the request may have succeeded between the dead
	// status and the dead letter: its UpdateStatus replaced the dead state
	// and looked for a dead letter to remove before this one was stored.
	// Look again now that it is; whichever of the two looks last finds it.
	if d.Request != nil && q.Succeeded(ctx, d.Request.Image, d.RequestSeq) {
		q.dropDeadLetter(ctx, d.RequestSeq)
	}
	return nil
}

// status is the dead state deadLetter records for d's request.
func (d DeadLetter) status() Status {
	return Status{
		State: StateDead, Image: d.Request.Image, Key: d.Request.IdempotencyKey(), Seq: d.RequestSeq,
		Attempts: d.Attempts, LastError: d.Error, Reason: d.Reason,
	}
}

// Dead lists the dead letters, oldest first.
func (q *Queue) Dead(ctx context.Context) ([]DeadLetter, error) {
	var out []DeadLetter
	seq := uint64(1)
	for {
		m, err := q.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(SubjectDead))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("queue: list dead letters: %w", err)
		}
		d, err := decodeDead(m)
		if err != nil {
			return out, err
		}
		out = append(out, d)
		seq = m.Sequence + 1
	}
}

func decodeDead(m *jetstream.RawStreamMsg) (DeadLetter, error) {
	var d DeadLetter
	if err := json.Unmarshal(m.Data, &d); err != nil {
		return d, fmt.Errorf("queue: dead letter #%d is corrupt: %w", m.Sequence, err)
	}
	d.Seq = m.Sequence
	return d, nil
}

// Replay re-queues the dead letter with stream sequence seq (its original
// bytes, even if they did not parse) and removes it from the dead letters.
func (q *Queue) Replay(ctx context.Context, seq uint64) error {
	m, err := q.stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("dead letter #%d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("dead letter #%d: %w", seq, err)
	}
	if m.Subject != SubjectDead {
		return fmt.Errorf("message #%d is on %s, not a dead letter: %w", seq, m.Subject, ErrNotFound)
	}
	d, err := decodeDead(m)
	if err != nil {
		return err
	}
	// A replay of one dead letter is itself idempotent.
	ack, stored, err := q.publish(ctx, SubjectRequest, d.Raw, jetstream.WithMsgID("replay-"+strconv.FormatUint(seq, 10)))
	if err != nil {
		return fmt.Errorf("replay dead letter #%d: %w", seq, err)
	}
	if d.Request != nil && stored {
		_ = q.UpdateStatuses(ctx, *d.Request, Status{State: StateQueued, Image: d.Request.Image, Key: d.Request.IdempotencyKey(), Seq: ack.Sequence})
	}
	if err := q.stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("replayed dead letter #%d but could not remove it: %w", seq, err)
	}
	return nil
}

// dropDeadLetter removes the dead letter of the request with stream
// sequence requestSeq, if there is one (see UpdateStatus). It lists the dead
// letters to find it; a failure is logged: the status already says
// succeeded.
func (q *Queue) dropDeadLetter(ctx context.Context, requestSeq uint64) {
	dead, err := q.Dead(ctx)
	if err == nil {
		i := slices.IndexFunc(dead, func(d DeadLetter) bool { return d.RequestSeq == requestSeq })
		if i < 0 {
			return
		}
		err = q.stream.DeleteMsg(ctx, dead[i].Seq)
		if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
			q.log.Info("request succeeded after a later delivery was dead-lettered; dead letter removed",
				zap.Uint64("requestSeq", requestSeq), zap.Uint64("deadLetter", dead[i].Seq))
			return
		}
	}
	q.log.Warn("request succeeded after a later delivery was dead-lettered; removing its dead letter failed",
		zap.Uint64("requestSeq", requestSeq), zap.Error(err))
}

// ReplayAll re-queues every dead letter and returns how many.
func (q *Queue) ReplayAll(ctx context.Context) (int, error) {
	dead, err := q.Dead(ctx)
	if err != nil {
		return 0, err
	}
	for i, d := range dead {
		if err := q.Replay(ctx, d.Seq); err != nil {
			return i, err
		}
	}
	return len(dead), nil
}
