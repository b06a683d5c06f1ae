package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/snapshotter"
)

func init() { registeredCommands = append(registeredCommands, newSnapshotterCmd) }

func newSnapshotterCmd(g *globalFlags) *cobra.Command {
	var (
		cfgPath string
		flags   snapshotter.Config
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "snapshotter --root DIR --address ADDR",
		Short: "Node side: containerd proxy snapshotter that uses pre-built CIMs instead of importing layers",
		Long: `Serve containerd's snapshots API on ADDR (a unix socket; a named pipe on Windows),
as a drop-in for containerd's cimfs snapshotter with a fast path: when containerd
prepares a layer of an image that has a cimconv artifact, the layer's pre-built CIM is
downloaded, verified and committed, and containerd skips fetching and importing it.
Anything that goes wrong hands the layer back to containerd's normal import.

containerd config:
  [proxy_plugins.cimconv]
    type = "snapshot"
    address = "ADDR"

Artifacts are used only when signed by a trusted key (--trusted-key, repeatable: the
workers' public signing keys). Without one the fast path runs only with --trust-unsigned
(development: anyone who can push to an image's repository could plant a filesystem).
See docs/node.md.
On Windows the process runs as a service when started by the service control manager.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := &snapshotter.Config{}
			if cfgPath != "" {
				c, err := snapshotter.LoadConfig(cfgPath)
				if err != nil {
					return err
				}
				cfg = c
			}
			fs := cmd.Flags()
			if fs.Changed("root") || cfg.Root == "" {
				cfg.Root = flags.Root
			}
			if fs.Changed("address") || cfg.Address == "" {
				cfg.Address = flags.Address
			}
			if fs.Changed("listen") {
				cfg.Listen = flags.Listen
			}
			if fs.Changed("os-build") {
				cfg.NodeBuild = flags.NodeBuild
			}
			if fs.Changed("trusted-key") {
				cfg.TrustedKeys = flags.TrustedKeys
			}
			if fs.Changed("trust-unsigned") {
				cfg.TrustUnsigned = flags.TrustUnsigned
			}
			if fs.Changed("timeout") {
				cfg.Timeout = snapshotter.Duration(timeout)
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			run := func(ctx context.Context) error { return snapshotter.Run(ctx, cfg, log, snapshotter.RunOptions{}) }
			if ok, err := snapshotter.RunAsService("cimconv-snapshotter", run); ok || err != nil {
				if err != nil {
					return fmt.Errorf("windows service: %w", err)
				}
				return nil
			}
			return run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgPath, "config", "", "YAML configuration file (credentials, mirrors, insecure registries; see docs/node.md)")
	f.StringVar(&flags.Root, "root", "", "state directory (the cimfs snapshotter layout and the layer cache)")
	f.StringVar(&flags.Address, "address", "", `snapshots API address: a unix socket path, or a named pipe (\\.\pipe\cimconv-snapshotter) on Windows`)
	f.StringVar(&flags.Listen, "listen", "", "metrics address (/metrics, /healthz), e.g. 127.0.0.1:9820; empty: none")
	f.StringVar(&flags.NodeBuild, "os-build", "", "the node's Windows build (10.0.20348.2340); artifacts built on newer builds are not used")
	f.StringArrayVar(&flags.TrustedKeys, "trusted-key", nil, "PEM public key whose artifact signatures are trusted; repeat for several (key rotation)")
	f.BoolVar(&flags.TrustUnsigned, "trust-unsigned", false, "DEVELOPMENT ONLY: use unsigned artifacts (anyone with push rights could plant a filesystem)")
	f.DurationVar(&timeout, "timeout", snapshotter.DefaultTimeout, "fast-path time limit per layer (artifact lookup and download); past it the layer is imported as usual")
	return cmd
}
