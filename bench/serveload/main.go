// Command serveload measures the real service path (issue 4): it starts a
// loopback registry, pushes N tiny distinct Windows images, starts the
// service in-process (embedded NATS JetStream, worker, HTTP) with the real
// conversion (convert + the portable builder), submits all N requests at
// once and waits for every result event. It prints conversions/s, p50/p99
// end-to-end latency (submit to result event, queueing included) and where
// the worker slots' time went: the converter's stages and the rest (queue,
// service).
//
//	go run ./bench/serveload -n 500 -concurrency 2
//
// It uses the service's own adapter (worker.NewConvertAdapter), timed from
// outside.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/devenv"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/service"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
	"github.com/cimconv/cimconv/internal/worker"
)

func main() {
	n := flag.Int("n", 500, "number of images and requests")
	conc := flag.Int("concurrency", 2, "worker concurrency")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *n, *conc); err != nil {
		fmt.Fprintln(os.Stderr, "serveload:", err)
		os.Exit(1)
	}
}

// stageTimes sums the converter's stage durations over all requests.
type stageTimes struct {
	mu      sync.Mutex
	stages  map[string]time.Duration
	convert time.Duration // inside Converter.Convert, summed
}

func (s *stageTimes) Stage(stage string, d time.Duration, _ error) {
	s.mu.Lock()
	s.stages[stage] += d
	s.mu.Unlock()
}
func (s *stageTimes) Layer(bool)          {}
func (s *stageTimes) Bytes(string, int64) {}

func run(ctx context.Context, n, conc int) error {
	if n < 1 || conc < 1 {
		return fmt.Errorf("-n %d -concurrency %d: both must be at least 1", n, conc)
	}
	tmp, err := os.MkdirTemp("", "cimconv-serveload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	reg, err := devenv.StartRegistry("127.0.0.1:0", "")
	if err != nil {
		return err
	}
	defer reg.Close(context.Background()) //nolint:errcheck // best effort at exit

	// N distinct one-layer images: a tiny base layer each.
	t0 := time.Now()
	p := v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: devenv.SampleOSVersion}
	reqs := make([]queue.Request, n)
	for i := range n {
		l := fixture.NewLayer().Dir("Files").
			File(fmt.Sprintf("Files/f%d.txt", i), []byte(fmt.Sprintf("image %d\r\n", i)))
		img, err := devenv.WindowsImage([][]byte{l.Bytes(fixture.Gzip)}, p)
		if err != nil {
			return err
		}
		ref, err := name.ParseReference(fmt.Sprintf("%s/load/windows:i%d", reg.Host(), i), name.Insecure)
		if err != nil {
			return err
		}
		if err := remote.Write(ref, img, remote.WithContext(ctx)); err != nil {
			return fmt.Errorf("push %s: %w", ref, err)
		}
		d, err := img.Digest()
		if err != nil {
			return err
		}
		reqs[i] = queue.Request{Image: ref.Context().Digest(d.String()).String(), Platform: "windows/amd64", Builder: "portable", Source: "serveload"}
	}
	fmt.Printf("pushed %d images in %v\n", n, time.Since(t0).Round(time.Millisecond))

	cache, err := convert.NewCache(filepath.Join(tmp, "chains", "portable"))
	if err != nil {
		return err
	}
	times := &stageTimes{stages: map[string]time.Duration{}}
	rc, err := registry.New()
	if err != nil {
		return err
	}
	real := worker.NewConvertAdapter(rc, portable.New(), cache,
		worker.WithWorkDir(filepath.Join(tmp, "work")), worker.WithObserver(times))
	conv := worker.ConverterFunc(func(ctx context.Context, req queue.Request, progress func(string)) (*queue.Result, error) {
		start := time.Now()
		defer func() {
			times.mu.Lock()
			times.convert += time.Since(start)
			times.mu.Unlock()
		}()
		return real.Convert(ctx, req, progress)
	})

	cfg := service.DefaultConfig()
	cfg.DataDir = filepath.Join(tmp, "data")
	cfg.EmbeddedNATSPort = 0
	cfg.Listen = "127.0.0.1:0"
	cfg.Concurrency = conc
	cfg.RetryBackoff = time.Second
	sctx, stop := context.WithCancel(ctx)
	svc, err := service.Start(sctx, service.Options{Config: cfg, Converter: conv})
	if err != nil {
		stop()
		return err
	}
	defer func() { stop(); _ = svc.Wait() }()
	q := svc.Queue()

	m, err := worker.SubmitAll(ctx, q, reqs)
	if err != nil {
		return err
	}
	failed, built, firstErr := 0, 0, ""
	for _, res := range m.Results {
		built += res.LayersBuilt
		if !res.Succeeded() {
			failed++
			if firstErr == "" {
				firstErr = res.Error
			}
		}
	}
	wall := m.Wall
	pct := m.Percentile

	times.mu.Lock()
	defer times.mu.Unlock()
	slot := float64(wall) * float64(conc)
	share := func(d time.Duration) float64 { return 100 * float64(d) / slot }
	var stages []string
	for s := range times.stages {
		stages = append(stages, s)
	}
	sort.Strings(stages)
	var parts []string
	for _, s := range stages {
		parts = append(parts, fmt.Sprintf("%s %.1f%%", s, share(times.stages[s])))
	}
	build := times.stages[convert.StageBuild]
	fmt.Printf("worker slot time (wall x %d): converter %.1f%% [%s], outside the converter (queue, service) %.1f%%\n",
		conc, share(times.convert), strings.Join(parts, ", "), 100-share(times.convert))
	if failed > 0 {
		fmt.Printf("first failure: %s\n", firstErr)
	}
	fmt.Printf("serve-load: n=%d concurrency=%d failed=%d layers-built=%d wall=%v conversions/s=%.1f p50=%v p99=%v outside-converter=%.1f%% (target < 10%%) outside-build-stage=%.1f%%\n",
		n, conc, failed, built, wall.Round(time.Millisecond), float64(n)/wall.Seconds(),
		pct(0.50).Round(time.Millisecond), pct(0.99).Round(time.Millisecond),
		100-share(times.convert), 100-share(build))
	return nil
}
