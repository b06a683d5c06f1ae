package trust

import (
	"context"
	"fmt"
)

// SearchWindow is how many candidates First checks at once. A check is a
// few registry round trips, so behind planted junk the window divides the
// wait by up to its size; the order of the answer does not depend on it.
const SearchWindow = 8

// First looks for the first of n ranked candidates that check accepts. It
// runs check for up to window candidates at once (each with a context that
// is cancelled once the answer is known) but decides in rank order: it
// returns the lowest index whose check returned nil, after calling refused,
// in order, for each lower index whose error isRefusal accepts. A check
// error that is not a refusal ends the search with that error (the lower
// indexes were all refused). It returns -1 and nil when every candidate was
// refused. Every check has returned when First does; a check that panics
// counts as failing with an error that is not a refusal.
func First(ctx context.Context, n, window int, check func(ctx context.Context, i int) error, isRefusal func(error) bool, refused func(i int, err error)) (int, error) {
	if window < 1 {
		window = 1
	}
	for start := 0; start < n; start += window {
		end := min(start+window, n)
		wctx, cancel := context.WithCancel(ctx)
		errs := make([]error, end-start)
		done := make([]chan struct{}, end-start)
		for i := start; i < end; i++ {
			done[i-start] = make(chan struct{})
			go func() {
				defer close(done[i-start])
				defer func() {
					if r := recover(); r != nil {
						errs[i-start] = fmt.Errorf("checking candidate %d panicked: %v", i, r)
					}
				}()
				errs[i-start] = check(wctx, i)
			}()
		}
		found, failed := -1, error(nil)
		for i := start; i < end && found < 0 && failed == nil; i++ {
			<-done[i-start]
			switch err := errs[i-start]; {
			case err == nil:
				found = i
			case isRefusal(err):
				refused(i, err)
			default:
				failed = err
			}
		}
		cancel()
		for _, d := range done {
			<-d
		}
		if found >= 0 || failed != nil {
			return found, failed
		}
	}
	return -1, nil
}
