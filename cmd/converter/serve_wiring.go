package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/convert"
	"github.com/cimconv/cimconv/internal/devenv"
	"github.com/cimconv/cimconv/internal/service"
	"github.com/cimconv/cimconv/internal/worker"
)

// devRegistryAddr is where `serve --dev` starts its registry (a free port
// when it is taken).
const devRegistryAddr = "127.0.0.1:5000"

// The serve hooks: the real conversion and the --dev environment.
func init() {
	serveConverter = newServeConverter
	serveDev = runDevEnv
}

func newServeConverter(ctx context.Context, cfg service.Config, log *zap.Logger) (worker.Converter, error) {
	rf := registryFlags{insecure: cfg.InsecureRegistries, dockerConfig: cfg.DockerConfig}
	bf := buildFlags{builder: cfg.Builder, format: cfg.CimFormat, cacheDir: cfg.CacheDir, workDir: cfg.WorkDir}
	if bf.cacheDir == "" {
		bf.cacheDir = filepath.Join(cfg.DataDir, "chains")
	}
	if bf.workDir == "" {
		bf.workDir = filepath.Join(cfg.DataDir, "work")
	}
	reg, err := rf.client(log)
	if err != nil {
		return nil, err
	}
	b, err := bf.selectBuilder(log)
	if err != nil {
		return nil, err
	}
	cache, err := convert.NewCache(filepath.Join(bf.cacheDir, b.Capabilities().Name))
	if err != nil {
		return nil, err
	}
	// Leftover chain directories of a killed process are not reused.
	_ = os.RemoveAll(bf.workDir)
	sign, err := signerOption(cfg.SigningKey, log)
	if err != nil {
		return nil, err
	}
	return worker.NewConvertAdapter(reg, b, cache, worker.WithWorkDir(bf.workDir), worker.WithAdapterLogger(log), worker.WithConvertOptions(sign...)), nil
}

// runDevEnv is `serve --dev`: a loopback registry with a sample image, and
// the commands to try.
func runDevEnv(ctx context.Context, env service.DevEnv) error {
	reg, err := devenv.StartRegistry(devRegistryAddr, "")
	if err != nil {
		// Port 5000 taken (another registry?): any free loopback port.
		if reg, err = devenv.StartRegistry("127.0.0.1:0", ""); err != nil {
			return err
		}
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = reg.Close(sctx)
	}()
	image := reg.Host() + "/sample/windows:ltsc2022"
	digest, err := devenv.PushSample(ctx, image)
	if err != nil {
		return err
	}
	env.Logger.Info("dev registry seeded", zap.String("registry", reg.Host()), zap.String("image", image), zap.String("digest", digest))
	nats := ""
	if env.NATSURL != "nats://127.0.0.1:4222" {
		nats = " --nats-url " + env.NATSURL
	}
	fmt.Fprintf(os.Stderr, `
cimconv dev environment is up:
  NATS (embedded, JetStream)  %s
  HTTP                        http://%s  (/metrics /healthz /readyz /webhooks/)
  registry (referrers API)    %s
  sample Windows image        %s
                              %s

Try, in another terminal:
  go run ./cmd/converter submit %s --wait%s
  go run ./cmd/converter status %s%s
  curl -s http://%s/metrics | grep '^cimconv_'
  go run ./cmd/converter fetch %s --dest /tmp/cims

Ctrl-C stops everything.
`, env.NATSURL, env.HTTPAddr, reg.Host(), image, digest, image, nats, image, nats, env.HTTPAddr, image)
	return nil
}
