// Package errdefs is cimconv's one error vocabulary: a few kinds of failure
// (invalid input, not found, conflict, unavailable, permanent) that every
// package marks its errors with, so that callers decide once, from the kind,
// what to do (retry, dead-letter, answer 404) instead of knowing the
// sentinels of every package below them.
//
// An error has a kind when errors.Is(err, ErrX) holds; IsX says so. Marking
// keeps the message and the whole cause chain (errors.Is and errors.As still
// find the cause). A package declares its sentinels already marked
// (errdefs.New) or marks what it returns (errdefs.InvalidArgument(err), ...).
//
// It imports nothing of cimconv and must stay a leaf.
package errdefs
