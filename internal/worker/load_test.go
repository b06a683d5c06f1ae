package worker

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/queue"
)

// sleeper stands in for a builder: it spends work per request.
func sleeper(work time.Duration) Converter {
	return ConverterFunc(func(ctx context.Context, req queue.Request, p func(string)) (*queue.Result, error) {
		p("build")
		time.Sleep(work)
		return &queue.Result{LayersBuilt: 1}, nil
	})
}

func loadRequests(n int) []queue.Request {
	reqs := make([]queue.Request, n)
	for i := range reqs {
		reqs[i] = queue.Request{Image: fmt.Sprintf("registry.example/load:%d", i)}
	}
	return reqs
}

func TestRunLoadReport(t *testing.T) {
	e := newEnv(t, queue.WithAckWait(30*time.Second))
	ctx := ctxT(t)
	work := 5 * time.Millisecond
	rep, err := RunLoad(ctx, e.q, sleeper(work), loadRequests(20), WithConcurrency(2), WithFetchWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
	if rep.N != 20 || rep.Failed != 0 || rep.Concurrency != 2 {
		t.Errorf("report %+v", rep)
	}
	if rep.Busy < 20*work || rep.P50 > rep.P99 || rep.P99 > rep.Wall || rep.OverheadShare <= 0 || rep.OverheadShare >= 1 {
		t.Errorf("inconsistent report %v", rep)
	}
	if _, err := RunLoad(ctx, e.q, sleeper(0), []queue.Request{{Image: "a/b:1"}, {Image: "a/b:1"}}); err == nil {
		t.Error("duplicate keys accepted: the load would wait forever")
	}
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil {
		return v
	}
	return def
}

// BenchmarkQueueLoad pushes CIMCONV_LOAD_N requests (default 500) through a
// real embedded NATS and one worker (CIMCONV_LOAD_CONCURRENCY, default 2)
// whose converter sleeps CIMCONV_LOAD_WORK (default 10ms) per request. Run
// it with -benchtime=1x (bench/queue-load.sh does).
func BenchmarkQueueLoad(b *testing.B) {
	n := envInt("CIMCONV_LOAD_N", 500)
	conc := envInt("CIMCONV_LOAD_CONCURRENCY", 2)
	work, err := time.ParseDuration(os.Getenv("CIMCONV_LOAD_WORK"))
	if err != nil {
		work = 10 * time.Millisecond
	}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		dir := b.TempDir()
		srv, err := queue.StartEmbedded(context.Background(), dir, queue.WithPort(0))
		if err != nil {
			b.Fatal(err)
		}
		nc, err := queue.Connect(context.Background(), srv.ClientURL())
		if err != nil {
			b.Fatal(err)
		}
		q, err := queue.Open(context.Background(), nc, queue.WithAckWait(time.Minute))
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		rep, err := RunLoad(context.Background(), q, sleeper(work), loadRequests(n),
			WithConcurrency(conc), WithLogger(zap.NewNop()))
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		fmt.Printf("queue-load: work=%v %s\n", work, rep)
		b.ReportMetric(rep.PerSecond, "conv/s")
		b.ReportMetric(float64(rep.P50.Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(rep.P99.Microseconds())/1000, "p99-ms")
		b.ReportMetric(100*rep.OverheadShare, "overhead-%")
		b.ReportMetric(float64(rep.OverheadPerRequest.Microseconds())/1000, "overhead-ms/req")
		nc.Close()
		srv.Shutdown()
	}
}
