package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/devenv"
	"github.com/cimconv/cimconv/internal/registry"
	"github.com/cimconv/cimconv/internal/service"
	"github.com/cimconv/cimconv/internal/worker"
)

// The serve hooks: the real conversion and the --dev environment.
func init() {
	serveConverter = newServeConverter
	serveDev = func(context.Context, service.DevEnv) error { return nil } // replaced by startDevState
}

func newServeConverter(ctx context.Context, cfg service.Config, log *zap.Logger) (worker.Converter, error) {
	rf := registryFlags{insecure: cfg.InsecureRegistries, dockerConfig: cfg.DockerConfig}
	bf := buildFlags{builder: cfg.Builder, format: cfg.CimFormat, hiveMerge: cfg.HiveMerge, cacheDir: cfg.CacheDir, workDir: cfg.WorkDir}
	if bf.cacheDir == "" {
		bf.cacheDir = filepath.Join(cfg.DataDir, "chains")
	}
	if bf.workDir == "" {
		bf.workDir = filepath.Join(cfg.DataDir, "work")
	}
	policy, err := worker.NewRegistryPolicy(cfg.AllowedRegistries,
		worker.AllowLocal(cfg.AllowLocalRegistries || cfg.Dev), worker.AllowHosts(cfg.InsecureRegistries...))
	if err != nil {
		return nil, err
	}
	// The policy also guards every connection the client makes: redirects,
	// token realms, upload locations, DNS answers at dial time.
	reg, err := rf.client(log, registry.WithDialGuard(policy.DialGuard()))
	if err != nil {
		return nil, err
	}
	b, cache, err := bf.builderAndCache(log)
	if err != nil {
		return nil, err
	}
	// Leftover chain directories of a killed process are not reused.
	_ = os.RemoveAll(bf.workDir)
	if len(cfg.AllowedRegistries) == 0 {
		log.Info("no allowed-registries: requests may name any registry except loopback and link-local ones",
			zap.Bool("localAllowed", cfg.AllowLocalRegistries || cfg.Dev))
	}
	sign, err := signerOption(cfg.SigningKey, log)
	if err != nil {
		return nil, err
	}
	return worker.NewConvertAdapter(reg, b, cache, worker.WithWorkDir(bf.workDir), worker.WithAdapterLogger(log),
		worker.WithClaimTTL(cfg.ClaimTTL), worker.WithRegistryPolicy(policy), worker.WithConvertOptions(sign...)), nil
}

// devState is the `serve --dev` environment: a fresh state directory and
// the loopback registry, started before the service.
type devState struct {
	reg      *devenv.Registry
	stateDir string
	signed   bool // a signing key is configured: fetch needs its public half
}

// startDevState empties the dev state (data-dir/dev, which becomes
// cfg.DataDir) and starts the dev registry on cfg.DevRegistry. With no
// webhook authentication configured, the dev registry may notify without
// credentials.
func startDevState(ctx context.Context, cfg *service.Config, log *zap.Logger) (*devState, error) {
	if cfg.NATSURL != "" {
		// Validate says the same; say it before clearing anything.
		return nil, cfg.Validate()
	}
	dir, err := devenv.FreshState(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	reg, err := devenv.StartRegistry(cfg.DevRegistry, "")
	if err != nil {
		return nil, fmt.Errorf("--dev-registry %s: %w (choose another address, or 127.0.0.1:0 for a free port)", cfg.DevRegistry, err)
	}
	cfg.DataDir = dir
	if cfg.WebhookTokenFile == "" && cfg.WebhookHMACSecretFile == "" && !cfg.WebhookInsecureNoAuth && len(cfg.WebhookAllowedRegistries) == 0 {
		cfg.WebhookInsecureNoAuth = true
		cfg.WebhookAllowedRegistries = []string{reg.Host()}
	}
	log.Debug("dev state cleared", zap.String("dir", dir))
	return &devState{reg: reg, stateDir: dir, signed: cfg.SigningKey != ""}, nil
}

func (d *devState) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = d.reg.Close(ctx)
}

// run is the service's dev hook: it seeds the registry with the sample image
// and prints what runs and the commands to try.
func (d *devState) run(ctx context.Context, env service.DevEnv) error {
	image := d.reg.Host() + "/sample/windows:ltsc2022"
	digest, err := devenv.PushSample(ctx, image)
	if err != nil {
		return err
	}
	env.Logger.Info("dev registry seeded", zap.String("registry", d.reg.Host()), zap.String("image", image), zap.String("digest", digest))
	fmt.Fprint(os.Stderr, devBanner(env.NATSURL, env.HTTPAddr, d.reg.Host(), image, digest, d.stateDir, d.signed))
	return nil
}

// devBanner is what `serve --dev` prints when it is up: what runs where, and
// commands to try (TestCopyPasteCommandsParse runs them through the CLI's
// parser).
func devBanner(natsURL, httpAddr, regHost, image, digest, stateDir string, signed bool) string {
	nats := ""
	if natsURL != "nats://127.0.0.1:4222" {
		nats = " --nats-url " + natsURL
	}
	// fetch refuses to guess whom to trust.
	trust := "--trust-unsigned   # dev artifacts are unsigned"
	if signed {
		trust = "--trusted-key PUBLIC_KEY.pem   # the public half of --signing-key"
	}
	return fmt.Sprintf(`
cimconv dev environment is up:
  NATS (embedded, JetStream)  %s   (--embedded-nats-port)
  HTTP                        http://%s  (/metrics /healthz /readyz /webhooks/; --listen)
  registry (referrers API)    %s   (--dev-registry; images in memory)
  sample Windows image        %s
                              %s
  state                       fresh: %s was emptied at start, with the registry
                              (queue, statuses, dead letters, chain cache)

Try, in another terminal:
  go run ./cmd/converter submit %s --wait%s
  go run ./cmd/converter status %s%s
  curl -s http://%s/metrics | grep '^cimconv_'
  go run ./cmd/converter fetch %s --dest /tmp/cims %s

Ctrl-C stops everything.
`, natsURL, httpAddr, regHost, image, digest, stateDir, image, nats, image, nats, httpAddr, image, trust)
}
