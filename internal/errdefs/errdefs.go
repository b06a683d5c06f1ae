package errdefs

import (
	"context"
	"errors"
)

// The kinds. Compare with errors.Is (or the IsX helpers), never with ==.
var (
	// ErrInvalidArgument: the input is wrong (not a Windows image, a layer
	// that breaks the format, a malformed request). Retrying cannot help.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNotFound: the object asked for does not exist (registry 404, no
	// status, no dead letter). For a conversion, retrying cannot help.
	ErrNotFound = errors.New("not found")
	// ErrConflict: the operation collides with the current state (already
	// exists, claimed by someone else, changed meanwhile).
	ErrConflict = errors.New("conflict")
	// ErrUnavailable: a dependency failed in a way that may pass (network,
	// 5xx, 429, timeouts). Retry later.
	ErrUnavailable = errors.New("unavailable")
	// ErrPermanent: fails the same way on every retry although the request
	// itself is well formed: data that does not match its digest or diffID,
	// a truncated blob, a feature the registry lacks, a policy refusal.
	ErrPermanent = errors.New("permanent")
)

// kinded marks err with a kind. Its message is err's; it unwraps to both.
type kinded struct {
	err  error
	kind error
}

func (k *kinded) Error() string   { return k.err.Error() }
func (k *kinded) Unwrap() []error { return []error{k.err, k.kind} }

func mark(err, kind error) error {
	if err == nil {
		return nil
	}
	return &kinded{err: err, kind: kind}
}

// New returns a new error with message msg, of kind kind (one of the ErrX
// above): for sentinels, e.g. var ErrNotWindows = errdefs.New(errdefs.ErrInvalidArgument, "not a Windows image").
func New(kind error, msg string) error { return mark(errors.New(msg), kind) }

// InvalidArgument marks err as ErrInvalidArgument (nil stays nil).
func InvalidArgument(err error) error { return mark(err, ErrInvalidArgument) }

// NotFound marks err as ErrNotFound (nil stays nil).
func NotFound(err error) error { return mark(err, ErrNotFound) }

// Conflict marks err as ErrConflict (nil stays nil).
func Conflict(err error) error { return mark(err, ErrConflict) }

// Unavailable marks err as ErrUnavailable (nil stays nil).
func Unavailable(err error) error { return mark(err, ErrUnavailable) }

// Permanent marks err as ErrPermanent (nil stays nil).
func Permanent(err error) error { return mark(err, ErrPermanent) }

// IsInvalidArgument reports whether err is of kind ErrInvalidArgument.
func IsInvalidArgument(err error) bool { return errors.Is(err, ErrInvalidArgument) }

// IsNotFound reports whether err is of kind ErrNotFound.
func IsNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// IsConflict reports whether err is of kind ErrConflict.
func IsConflict(err error) bool { return errors.Is(err, ErrConflict) }

// IsUnavailable reports whether err is of kind ErrUnavailable.
func IsUnavailable(err error) bool { return errors.Is(err, ErrUnavailable) }

// IsPermanent reports whether err is of kind ErrPermanent.
func IsPermanent(err error) bool { return errors.Is(err, ErrPermanent) }

// Retry is what retrying an operation that failed with an error would do.
type Retry int

const (
	// RetryUnknown: nothing says; callers retry a bounded number of times.
	RetryUnknown Retry = iota
	// RetryMayHelp: the error is of kind ErrUnavailable.
	RetryMayHelp
	// RetryCannotHelp: the error is of kind ErrInvalidArgument, ErrNotFound
	// or ErrPermanent (and not ErrUnavailable).
	RetryCannotHelp
	// RetryCancelled: the operation was cancelled or ran out of time
	// (context.Canceled / DeadlineExceeded); retrying is the caller's call.
	RetryCancelled
)

// Classify is the one place that maps kinds onto a retry decision. A
// cancellation wins over every kind (the kinds of an operation that was cut
// short say nothing about the next try); ErrUnavailable wins over the
// permanent kinds (a transient cause is worth another try).
func Classify(err error) Retry {
	switch {
	case err == nil:
		return RetryUnknown
	case isCancelled(err):
		return RetryCancelled
	case IsUnavailable(err):
		return RetryMayHelp
	case IsInvalidArgument(err), IsNotFound(err), IsPermanent(err):
		return RetryCannotHelp
	}
	return RetryUnknown
}

func isCancelled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
