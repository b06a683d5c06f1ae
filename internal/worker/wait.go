package worker

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/queue"
)

type waiterKey struct{}

// withWaiter lets the conversion of j report waits on other workers.
func withWaiter(ctx context.Context, j *job) context.Context {
	return context.WithValue(ctx, waiterKey{}, j)
}

func waiterFrom(ctx context.Context) *job {
	j, _ := ctx.Value(waiterKey{}).(*job)
	return j
}

// waiting records that the conversion waits for layer n of of, which holder
// is building: in the status, in the log, and by parking the delivery so its
// slot serves other requests meanwhile.
func (j *job) waiting(ctx context.Context, n, of int, holder string) {
	what := "waiting for a layer"
	if n > 0 {
		what = fmt.Sprintf("waiting for layer %d/%d", n, of)
	}
	j.waitingFor(ctx, fmt.Sprintf("%s (held by worker %s)", what, holder), zap.Int("layer", n), zap.Int("layers", of), zap.String("holder", holder))
}

// waitingFor records a wait described by detail (see waiting).
func (j *job) waitingFor(ctx context.Context, detail string, fields ...zap.Field) {
	sctx, cancel := j.w.settleCtx(ctx)
	defer cancel()
	j.setStatus(sctx, queue.StateRunning, func(st *queue.Status) { st.Detail = detail })
	j.waited.Store(true)
	parked := j.d.Park()
	j.log.Info(detail, append(fields, zap.Bool("slotReleased", parked))...)
}

// resumed takes a slot again after a wait (it waits for one when every slot
// is busy) and clears the status detail.
func (j *job) resumed(ctx context.Context) error {
	if !j.waited.Swap(false) {
		return nil
	}
	if err := j.d.Unpark(ctx); err != nil {
		return err
	}
	sctx, cancel := j.w.settleCtx(ctx)
	defer cancel()
	j.setStatus(sctx, queue.StateRunning, nil)
	return nil
}
