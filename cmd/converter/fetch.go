package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/fetch"
)

func init() { registeredCommands = append(registeredCommands, newFetchCmd) }

func newFetchCmd(g *globalFlags) *cobra.Command {
	var (
		rf       registryFlags
		tf       trustFlags
		dest     string
		root     string
		osBuild  string
		platform string
		jsonOut  bool
	)
	cmd := &cobra.Command{
		Use:   "fetch IMAGE --dest DIR | --root SNAPSHOTTER_ROOT",
		Short: "Node side: fetch an image's pre-built CIM chain and lay it out in DIR",
		Long: `Find IMAGE's cimconv artifact through the referrers API (or the fallback tag), verify
the candidates compatible with --os-build newest first and take the first one signed by a
trusted key (--trusted-key, repeatable) and bound to this image, verify every digest, and lay
the chain out:

  DIR/cim-layers/   every layer's .cim, region_* and objectid_* files
  DIR/layers/<chainID hex>/   each layer's side files (Hives/*_BASE, layout)

The chain is checked to open with the CIM reader before it is placed. Unsigned, untrusted
or unbound artifacts are refused with the reason; --trust-unsigned (development only) skips
the signature check.

With --root, the chain goes into the layer cache of "converter snapshotter --root"
instead, after the checks the snapshotter's fast path makes (the same trust policy), so
a later pull places every layer without the registry.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dest == "" && root == "" {
				return fmt.Errorf("--dest or --root is required")
			}
			log, p, reg, ver, err := nodeSide(g, &rf, &tf, platform)
			if err != nil {
				return err
			}
			if root != "" {
				if err := warm(cmd, reg, ver, args[0], root, osBuild, *p, jsonOut); err != nil || dest == "" {
					return err
				}
			}
			res, err := fetch.New(reg, log).Fetch(cmd.Context(), args[0], fetch.Options{Dest: dest, NodeBuild: osBuild, Platform: *p, Verifier: ver})
			if err != nil {
				return err
			}
			if jsonOut {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "artifact %s for %s (builder %s)\n", res.Artifact, res.Subject, res.Builder)
			if res.Trust != nil && res.Trust.Signed {
				fmt.Fprintf(cmd.OutOrStdout(), "signed by trusted key %s\n", res.Trust.KeyID)
			} else {
				fmt.Fprintln(cmd.OutOrStdout(), "UNSIGNED: signature not checked (--trust-unsigned)")
			}
			for _, l := range res.Layers {
				fmt.Fprintf(cmd.OutOrStdout(), "  %s\t%s\n", l.Cim, l.SideDir)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "top CIM %s opens: %d entries\n", res.Cim, res.Entries)
			return nil
		},
	}
	rf.register(cmd.Flags())
	tf.register(cmd.Flags())
	cmd.Flags().StringVar(&dest, "dest", "", "directory to lay the CIM chain out in")
	cmd.Flags().StringVar(&root, "root", "", `warm the layer cache of "converter snapshotter --root" instead`)
	cmd.Flags().StringVar(&osBuild, "os-build", "", "the node's Windows build (e.g. 20348 or 10.0.20348.2340); default: any")
	cmd.Flags().StringVar(&platform, "platform", "windows/amd64", "os/architecture")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the result as JSON on stdout")
	return cmd
}
