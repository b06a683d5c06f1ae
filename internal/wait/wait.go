package wait

import (
	"context"
	"time"
)

// Sleep waits d or until ctx is done, whichever comes first. It returns nil
// when d has passed and ctx.Err() otherwise; a d of zero or less does not
// wait and returns ctx.Err().
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
