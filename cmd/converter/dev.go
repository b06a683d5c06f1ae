package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/devenv"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

func init() { registeredCommands = append(registeredCommands, newDevCmd) }

func newDevCmd(*globalFlags) *cobra.Command {
	return newGroupCmd("dev", "Development helpers: generated sample layers and a local registry", "",
		newDevLayersCmd(), newDevRegistryCmd(), newDevLargeLayerCmd())
}

func newDevLayersCmd() *cobra.Command {
	var compression string
	cmd := &cobra.Command{
		Use:   "layers DIR",
		Short: "Write a generated 3-layer Windows sample chain (base first) into DIR",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := parseCompression(compression)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(args[0], 0o755); err != nil {
				return err
			}
			files, err := fixture.WriteSampleChain(args[0], c)
			if err != nil {
				return err
			}
			for _, f := range files {
				fmt.Fprintln(cmd.OutOrStdout(), f)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&compression, "compression", "gzip", "none, gzip or zstd")
	return cmd
}

func parseCompression(s string) (fixture.Compression, error) {
	switch s {
	case "none", "":
		return fixture.Uncompressed, nil
	case "gzip":
		return fixture.Gzip, nil
	case "zstd":
		return fixture.Zstd, nil
	}
	return 0, fmt.Errorf("--compression %q: want none, gzip or zstd", s)
}

func newDevRegistryCmd() *cobra.Command {
	var (
		addr    string
		dir     string
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Run a loopback OCI registry (referrers API on) seeded with a generated Windows sample image",
		Long: `Run go-containerregistry's registry on a loopback address, with the OCI 1.1
referrers API, and push a generated 3-layer Windows image to <addr>/sample/windows:ltsc2022.
It runs until interrupted. For development and demos only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			reg, err := devenv.StartRegistry(addr, dir)
			if err != nil {
				return fmt.Errorf("--addr %s: %w (choose another address, or 127.0.0.1:0 for a free port)", addr, err)
			}
			defer func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				reg.Close(ctx)
			}()
			ref := reg.Host() + "/sample/windows:ltsc2022"
			digest, err := devenv.PushSample(cmd.Context(), ref)
			if err != nil {
				return err
			}
			if jsonOut {
				json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]string{"registry": reg.Host(), "image": ref, "digest": digest})
			} else {
				fmt.Fprint(cmd.OutOrStdout(), devRegistryBanner(reg.Host(), ref, digest))
			}
			<-cmd.Context().Done()
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:5000", "listen address (loopback)")
	cmd.Flags().StringVar(&dir, "dir", "", "keep blobs in this directory (default: memory)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the registry and image as JSON on stdout")
	return cmd
}

func newDevLargeLayerCmd() *cobra.Command {
	var (
		files int
		size  int64
		flat  bool
		seed  int64
	)
	cmd := &cobra.Command{
		Use:   "large-layer OUT",
		Short: "Write a big deterministic uncompressed layer tar for benchmarks (OUT may be - for stdout)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var w io.Writer = os.Stdout
			if args[0] != "-" {
				f, err := os.Create(args[0])
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			if flat {
				return devenv.FlatLayer(w, files)
			}
			return fixture.Large(w, files, size, seed)
		},
	}
	cmd.Flags().IntVar(&files, "files", 20000, "number of files")
	cmd.Flags().Int64Var(&size, "size", 512<<20, "total file bytes (ignored with --flat)")
	cmd.Flags().BoolVar(&flat, "flat", false, "all files small and in one directory")
	cmd.Flags().Int64Var(&seed, "seed", 1, "generator seed")
	return cmd
}

// devRegistryBanner is what `dev registry` prints when it is up
// (TestCopyPasteCommandsParse runs its commands through the CLI's parser).
func devRegistryBanner(host, ref, digest string) string {
	return fmt.Sprintf("registry listening on %s\nsample image: %s\n              %s\n\ntry:\n  go run ./cmd/converter convert %s\n  go run ./cmd/converter fetch %s --dest /tmp/cims --trust-unsigned   # dev artifacts are unsigned\n\n(Ctrl-C to stop)\n",
		host, ref, digest, ref, ref)
}
