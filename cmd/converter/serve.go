package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/cimconv/cimconv/internal/service"
	"github.com/cimconv/cimconv/internal/worker"
)

func init() { registeredCommands = append(registeredCommands, newServeCmd) }

// Serve hooks, set by the wiring of the real conversion and the --dev
// environment (from their own files' init). Until a hook is
// set, serve refuses what depends on it with a clear error instead of
// pretending.
var (
	// serveConverter builds the Converter the worker runs.
	serveConverter func(ctx context.Context, cfg service.Config, log *zap.Logger) (worker.Converter, error)
	// serveDev marks that `serve --dev` is wired (loopback registry, sample
	// image: startDevState); nil refuses --dev.
	serveDev service.DevFunc
)

func newServeCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the conversion service: queue worker, webhooks, metrics",
		Long: `serve consumes conversion requests from NATS JetStream and converts them, at most
--concurrency at a time, acknowledging a request only after its artifact is pushed.
It serves /metrics, /healthz, /readyz and registry webhooks under /webhooks/ on --listen.

Without --nats-url it runs an embedded NATS server (JetStream, file store under
--data-dir, 127.0.0.1 only), so one command runs the whole service on one machine.

Every flag is also a YAML key of --config and a CIMCONV_<KEY> environment variable
(e.g. --nats-url, nats-url:, CIMCONV_NATS_URL); precedence: flag > env > file > default.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := service.LoadConfig(cmd.Flags(), os.LookupEnv)
			if err != nil {
				return err
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			return runServe(cmd.Context(), cfg, log)
		},
	}
	service.RegisterFlags(cmd.Flags())
	return cmd
}

func runServe(ctx context.Context, cfg service.Config, log *zap.Logger) error {
	opts := service.Options{Config: cfg, Logger: log, Dev: serveDev}
	if cfg.Dev && serveDev != nil {
		// The dev registry listens before anything else starts: a busy
		// address fails at once, naming its flag, and the webhook allowlist
		// below gets its real address.
		dev, err := startDevState(ctx, &cfg, log)
		if err != nil {
			return fmt.Errorf("serve --dev: %w", err)
		}
		defer dev.close()
		opts.Config = cfg
		opts.Dev = dev.run
	}
	if cfg.Role != service.RoleWebhook {
		// A webhook-only process converts nothing: no builder, no cache.
		if serveConverter == nil {
			return fmt.Errorf("serve: conversion is %w yet", service.ErrNotWired)
		}
		conv, err := serveConverter(ctx, cfg, log)
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		opts.Converter = conv
	}
	if cfg.Role != service.RoleWorker {
		var err error
		if opts.Webhooks, err = service.ConfigWebhooks(cfg, log); err != nil {
			return fmt.Errorf("serve: webhooks: %w", err)
		}
	}
	err := service.Run(ctx, opts)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
