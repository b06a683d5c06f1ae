package errdefs_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/cimconv/cimconv/internal/errdefs"
)

type causeErr struct{ msg string }

func (e *causeErr) Error() string { return e.msg }

func TestMarkKeepsMessageAndChain(t *testing.T) {
	cause := &causeErr{"disk on fire"}
	wrapped := fmt.Errorf("open x: %w", fs.ErrNotExist)
	marks := []struct {
		name string
		mark func(error) error
		is   func(error) bool
	}{
		{"invalid argument", errdefs.InvalidArgument, errdefs.IsInvalidArgument},
		{"not found", errdefs.NotFound, errdefs.IsNotFound},
		{"conflict", errdefs.Conflict, errdefs.IsConflict},
		{"unavailable", errdefs.Unavailable, errdefs.IsUnavailable},
		{"permanent", errdefs.Permanent, errdefs.IsPermanent},
	}
	for _, m := range marks {
		t.Run(m.name, func(t *testing.T) {
			if m.mark(nil) != nil {
				t.Fatal("marking nil gave an error")
			}
			err := fmt.Errorf("layer 2: %w", m.mark(cause))
			if !m.is(err) {
				t.Errorf("%v is not of its kind", err)
			}
			if err.Error() != "layer 2: disk on fire" {
				t.Errorf("message %q changed", err)
			}
			var ce *causeErr
			if !errors.As(err, &ce) || ce != cause {
				t.Error("errors.As lost the cause")
			}
			if w := m.mark(wrapped); !errors.Is(w, fs.ErrNotExist) {
				t.Error("errors.Is lost the cause")
			}
			for _, other := range marks {
				if other.name != m.name && other.is(err) {
					t.Errorf("also of kind %s", other.name)
				}
			}
		})
	}
}

func TestNewSentinel(t *testing.T) {
	errX := errdefs.New(errdefs.ErrNotFound, "no such thing")
	err := fmt.Errorf("lookup: %w", errX)
	if !errors.Is(err, errX) || !errdefs.IsNotFound(err) || errdefs.IsPermanent(err) {
		t.Errorf("sentinel %v: Is itself %v, not found %v", err, errors.Is(err, errX), errdefs.IsNotFound(err))
	}
	if errors.Is(err, errdefs.New(errdefs.ErrNotFound, "no such thing")) {
		t.Error("two sentinels with one message are the same error")
	}
	if errX.Error() != "no such thing" {
		t.Errorf("message %q", errX)
	}
}

func TestClassify(t *testing.T) {
	base := errors.New("x")
	tests := []struct {
		name string
		err  error
		want errdefs.Retry
	}{
		{"nil", nil, errdefs.RetryUnknown},
		{"no kind", base, errdefs.RetryUnknown},
		{"conflict alone", errdefs.Conflict(base), errdefs.RetryUnknown},
		{"unavailable", errdefs.Unavailable(base), errdefs.RetryMayHelp},
		{"invalid argument", errdefs.InvalidArgument(base), errdefs.RetryCannotHelp},
		{"not found", fmt.Errorf("a: %w", errdefs.NotFound(base)), errdefs.RetryCannotHelp},
		{"permanent", errdefs.Permanent(base), errdefs.RetryCannotHelp},
		{"unavailable wins over permanent", errdefs.Permanent(errdefs.Unavailable(base)), errdefs.RetryMayHelp},
		{"both in a join", errors.Join(errdefs.InvalidArgument(base), errdefs.Unavailable(base)), errdefs.RetryMayHelp},
		{"cancelled wins", errdefs.Permanent(fmt.Errorf("build: %w", context.Canceled)), errdefs.RetryCancelled},
		{"deadline", errdefs.Unavailable(context.DeadlineExceeded), errdefs.RetryCancelled},
	}
	for _, tt := range tests {
		if got := errdefs.Classify(tt.err); got != tt.want {
			t.Errorf("%s: Classify = %v, want %v", tt.name, got, tt.want)
		}
	}
}
