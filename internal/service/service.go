package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/queue"
	"github.com/cimconv/cimconv/internal/worker"
)

// ErrNotWired is returned when serve is started without a Converter (or with
// --dev and no dev hook): the service refuses to pretend it converts.
var ErrNotWired = errors.New("not wired into this build")

// SubmitFunc queues a request; dup reports a collapsed duplicate.
type SubmitFunc func(ctx context.Context, req queue.Request) (dup bool, err error)

// WebhooksFunc builds the handler mounted under /webhooks/. It gets the
// submit function and the metrics (for cimconv_events_total).
type WebhooksFunc func(submit SubmitFunc, m *metrics.Metrics) (http.Handler, error)

// DevEnv is what the --dev hook gets once NATS, the worker and HTTP are up.
type DevEnv struct {
	NATSURL  string
	HTTPAddr string
	DataDir  string
	Queue    *queue.Queue
	Logger   *zap.Logger
}

// DevFunc sets up the --dev environment (the loopback registry and sample
// image) and prints what to try. It runs after the service is up; it should
// return promptly and release its resources when ctx ends.
type DevFunc func(ctx context.Context, env DevEnv) error

// Options are what `converter serve` hands the service.
type Options struct {
	Config Config
	// Converter runs conversions; nil makes Start fail with ErrNotWired.
	Converter worker.Converter
	// Webhooks builds the /webhooks/ handler; nil: /webhooks/ answers 404.
	Webhooks WebhooksFunc
	// Dev is the --dev hook; required when Config.Dev is set.
	Dev    DevFunc
	Logger *zap.Logger
	// PendingInterval is how often cimconv_queue_pending is refreshed
	// (default 10s).
	PendingInterval time.Duration
}

// Service is a running `converter serve`.
type Service struct {
	cfg      Config
	log      *zap.Logger
	embedded *queue.EmbeddedServer
	nc       *nats.Conn
	q        *queue.Queue
	metrics  *metrics.Metrics
	ln       net.Listener
	http     *http.Server
	natsURL  string
	stopping atomic.Bool // set when shutdown starts: /readyz turns 503

	done chan struct{}
	err  error
}

// Start brings the service up: NATS (embedded or remote), the queue, the
// worker, the HTTP server and, with --dev, the dev hook. It returns once
// everything listens; the service stops when ctx ends (see Wait).
func Start(ctx context.Context, opts Options) (*Service, error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Converter == nil && cfg.Role != RoleWebhook {
		return nil, fmt.Errorf("serve: conversion is %w", ErrNotWired)
	}
	if cfg.Dev && opts.Dev == nil {
		return nil, fmt.Errorf("serve --dev: the development environment is %w", ErrNotWired)
	}
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	s := &Service{cfg: cfg, log: log, done: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()

	s.natsURL = cfg.NATSURL
	if s.natsURL == "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("data-dir %s: %w", cfg.DataDir, err)
		}
		e, err := queue.StartEmbedded(ctx, filepath.Join(cfg.DataDir, "nats"),
			queue.WithPort(cfg.EmbeddedNATSPort), queue.WithServerLogger(log))
		if err != nil {
			return nil, fmt.Errorf("--embedded-nats-port %d: %w (choose another port, or 0 for a free one)", cfg.EmbeddedNATSPort, err)
		}
		s.embedded = e
		s.natsURL = e.ClientURL()
		log.Info("embedded NATS server started", zap.String("url", s.natsURL), zap.String("dataDir", cfg.DataDir))
	}
	host, _ := os.Hostname()
	nc, err := queue.Connect(ctx, s.natsURL,
		queue.WithName("cimconv-serve-"+host), queue.WithCredsFile(cfg.NATSCreds),
		queue.WithTLS(cfg.NATSTLSCA, cfg.NATSTLSCert, cfg.NATSTLSKey), queue.WithConnLogger(log))
	if err != nil {
		return nil, err
	}
	s.nc = nc
	if s.q, err = queue.Open(ctx, nc, queue.WithAckWait(cfg.AckWait), queue.WithMaxDeliver(cfg.MaxDeliver),
		queue.WithDuplicateWindow(cfg.DuplicateWindow), queue.WithReplicas(cfg.NATSReplicas), queue.WithLogger(log)); err != nil {
		return nil, err
	}

	// A converter that shares work through the queue (the chain cache) is
	// given it once it is open.
	if b, ok := opts.Converter.(interface{ BindQueue(*queue.Queue) }); ok {
		b.BindQueue(s.q)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.metrics = metrics.New(reg)

	var w *worker.Worker
	if cfg.Role != RoleWebhook {
		if w, err = worker.New(s.q, opts.Converter, worker.WithConcurrency(cfg.Concurrency), worker.WithMetrics(s.metrics),
			worker.WithLogger(log), worker.WithShutdownGrace(cfg.ShutdownGrace), worker.WithRetryBackoff(cfg.RetryBackoff, 5*time.Minute),
			worker.WithSettleTimeout(cfg.SettleTimeout), worker.WithName(worker.WorkerName())); err != nil {
			return nil, err
		}
	}

	// A process that converts is ready only when it can pull requests.
	ready := s.q.Ready
	if w != nil {
		ready = s.q.ReadyToConsume
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		rctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if s.stopping.Load() {
			http.Error(w, "not ready: shutting down", http.StatusServiceUnavailable)
			return
		}
		if err := ready(rctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	if opts.Webhooks != nil && cfg.Role != RoleWorker {
		h, err := opts.Webhooks(s.q.Submit, s.metrics)
		if err != nil {
			return nil, fmt.Errorf("webhooks: %w", err)
		}
		mux.Handle("/webhooks/", h)
	}
	if s.ln, err = net.Listen("tcp", cfg.Listen); err != nil {
		return nil, fmt.Errorf("--listen %s: %w (choose another address, or 127.0.0.1:0 for a free port)", cfg.Listen, err)
	}
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fields := []zap.Field{zap.String("http", "http://"+s.ln.Addr().String()), zap.String("role", cfg.Role)}
	if w != nil {
		fields = append(fields, zap.Int("concurrency", cfg.Concurrency))
	}
	log.Info("serving", fields...)

	var wg sync.WaitGroup
	errs := make(chan error, 2)
	runCtx, stop := context.WithCancel(ctx)
	wg.Add(3)
	go func() {
		defer wg.Done()
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("http: %w", err)
			stop()
		}
	}()
	workerDone := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(workerDone)
		if w == nil {
			<-runCtx.Done() // role webhook: no conversions here
			return
		}
		if err := w.Run(runCtx); err != nil {
			errs <- err
			stop()
		}
	}()
	go func() {
		defer wg.Done()
		s.pendingLoop(runCtx, opts.PendingInterval)
	}()
	if cfg.Dev {
		if err := opts.Dev(runCtx, DevEnv{NATSURL: s.natsURL, HTTPAddr: s.ln.Addr().String(), DataDir: cfg.DataDir, Queue: s.q, Logger: log}); err != nil {
			stop()
			<-workerDone
			_ = s.http.Close()
			wg.Wait()
			return nil, fmt.Errorf("serve --dev: %w", err)
		}
	}
	ok = true
	go func() {
		<-runCtx.Done()
		s.stopping.Store(true)
		<-workerDone // in-flight work finished or NAKed: now stop serving
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.http.Shutdown(sctx)
		cancel()
		wg.Wait()
		stop()
		select {
		case s.err = <-errs:
		default:
		}
		s.close()
		close(s.done)
	}()
	return s, nil
}

func (s *Service) pendingLoop(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 10 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if n, err := s.q.Pending(ctx); err == nil {
			s.metrics.SetQueuePending(n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// close drains the connection and stops the embedded server.
func (s *Service) close() {
	if s.nc != nil {
		if err := s.nc.Drain(); err != nil {
			s.nc.Close()
		}
		for i := 0; i < 50 && !s.nc.IsClosed(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if s.embedded != nil {
		s.embedded.Shutdown()
	}
}

// Addr is the HTTP listen address (useful with port 0).
func (s *Service) Addr() string { return s.ln.Addr().String() }

// NATSURL is the URL of the NATS server in use.
func (s *Service) NATSURL() string { return s.natsURL }

// Queue is the service's queue (for tests and the dev hook).
func (s *Service) Queue() *queue.Queue { return s.q }

// Metrics are the service's collectors.
func (s *Service) Metrics() *metrics.Metrics { return s.metrics }

// Wait blocks until the service has stopped after ctx ended and returns the
// first error that stopped it, if any.
func (s *Service) Wait() error {
	<-s.done
	return s.err
}

// Run starts the service and waits for it to stop.
func Run(ctx context.Context, opts Options) error {
	s, err := Start(ctx, opts)
	if err != nil {
		return err
	}
	return s.Wait()
}
