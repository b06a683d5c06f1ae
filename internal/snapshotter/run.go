package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/metrics"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/trust"
	"github.com/cimconv/cimconv/internal/trust/keys"
	"github.com/cimconv/cimconv/internal/trust/sigstore"
	"github.com/cimconv/cimconv/internal/version"
)

// RunOptions are what `converter snapshotter` adds to the Config.
type RunOptions struct {
	// Verifier checks artifact signatures. Nil with TrustUnsigned off: the
	// fast path is off.
	Verifier trust.Verifier
	// Ready, when set, is called with the snapshots and metrics addresses
	// once both listen.
	Ready func(address, metricsAddr string)
}

// Run serves the snapshotter described by c until ctx ends.
func Run(ctx context.Context, c *Config, log *zap.Logger, o RunOptions) error {
	if c.Root == "" || c.Address == "" {
		return errors.New("snapshotter: --root and --address are required")
	}
	if err := c.Validate(); err != nil {
		return err
	}
	v := o.Verifier
	if c.TrustUnsigned {
		if v != nil {
			return errors.New("snapshotter: --trust-unsigned and a signature verifier are exclusive")
		}
		v = trust.AllowUnsigned()
		log.Warn("--trust-unsigned: UNSIGNED ARTIFACTS ARE TRUSTED. Anyone who can push to an image's repository can attach an artifact and so plant any filesystem into every container started from that image on this node. Development only.")
	}
	regOpts := []registry.Option{
		registry.WithLogger(log),
		registry.WithUserAgent("cimconv-snapshotter/" + version.Version),
		// The fast path has its own timeout; a layer must not wait out long
		// retry backoffs before falling through.
		registry.WithRetry(registry.RetryPolicy{MaxAttempts: 3, InitialDelay: 200 * time.Millisecond, MaxDelay: 2 * time.Second}),
	}
	if c.Credentials.DockerConfig != "" {
		regOpts = append(regOpts, registry.WithKeychain(anonymous{}), registry.WithDockerConfig(c.Credentials.DockerConfig))
	} else {
		regOpts = append(regOpts, registry.WithKeychain(anonymous{}))
	}
	if h := c.InsecureHosts(); len(h) > 0 {
		regOpts = append(regOpts, registry.WithInsecure(h...))
	}
	reg, err := registry.New(regOpts...)
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	if len(c.TrustedKeys) > 0 {
		if v != nil {
			return errors.New("snapshotter: trusted keys and another verifier (or --trust-unsigned) exclude each other")
		}
		pubs, err := keys.LoadPublicKeys(c.TrustedKeys...)
		if err != nil {
			return fmt.Errorf("snapshotter: %w", err)
		}
		if v, err = sigstore.NewVerifier(reg, pubs, sigstore.WithLogger(log)); err != nil {
			return fmt.Errorf("snapshotter: %w", err)
		}
		log.Info("artifact signatures are verified", zap.Int("trustedKeys", len(pubs)))
	}
	if v == nil {
		log.Warn("no trusted keys (--trusted-key) and no --trust-unsigned: the fast path is off, every layer is imported by containerd")
	}
	promReg := prometheus.NewRegistry()
	promReg.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	m := metrics.NewSnapshotter(promReg)

	inner, err := NewCimFS(c.Root)
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	opts := []Option{WithRegistry(reg), WithLogger(log), WithMetrics(m), WithMirrors(c.Mirrors()), WithNodeBuild(c.NodeBuild)}
	if v != nil {
		opts = append(opts, WithVerifier(v))
	}
	if c.Timeout > 0 {
		opts = append(opts, WithTimeout(time.Duration(c.Timeout)))
	}
	sn, err := New(inner, c.Root, opts...)
	if err != nil {
		inner.Close()
		return fmt.Errorf("snapshotter: %w", err)
	}
	defer sn.Close()

	l, err := Listen(c.Address)
	if err != nil {
		return err
	}
	metricsAddr := ""
	if c.Listen != "" {
		ml, err := net.Listen("tcp", c.Listen)
		if err != nil {
			l.Close()
			return fmt.Errorf("--listen %s: %w", c.Listen, err)
		}
		metricsAddr = ml.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(promReg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", zap.Error(err))
			}
		}()
		defer hs.Close()
	}
	log.Info("snapshotter serving", zap.String("root", c.Root), zap.String("address", c.Address), zap.String("metrics", metricsAddr),
		zap.Bool("fastPath", v != nil), zap.Duration("timeout", sn.timeout), zap.String("nodeBuild", c.NodeBuild))
	if o.Ready != nil {
		o.Ready(l.Addr().String(), metricsAddr)
	}
	return Serve(ctx, l, sn)
}
