//go:build windows

package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/winvalidate"
)

func init() { cimSubcommands = append(cimSubcommands, newCimValidateCmd) }

func newCimValidateCmd(g *globalFlags) *cobra.Command {
	var (
		layers     []string
		rootDigest string
		jsonOut    bool
	)
	cmd := &cobra.Command{
		Use:   "validate CIM --layers LAYER...",
		Short: "Mount a CIM with CimFS and compare the volume with its layers; exit 2 on differences",
		Long: validateLong + `

The CIM is mounted read-only on a new volume through hcsshim's pkg/cimfs (a
forked CIM finds its parents' region files in its own directory), walked with
backup semantics, compared exactly like ` + "`cim verify`" + ` does, and unmounted.
Run it elevated: SeBackupPrivilege lets the walk read every file and its
security descriptor. Security descriptors are compared by owner, group and
DACL (a layer carries no SACL). A block CIM can be validated only for a base
layer (a block CIM with parents needs a merged mount, which is not
implemented) and only where hcsshim says block CIMs mount (build >= 27766;
verified block CIMs >= 27800): a host that can write but not mount them says
so.
A hcsshim-built chain whose layers carry delta hives shows merged
Hives/*_BASE files, which differ from the layers' view by design.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(layers) == 0 {
				return fmt.Errorf("--layers is required")
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			defer log.Sync()
			// CimFS gets absolute paths only, as hcsshim's callers give it.
			cimPath, err := winvalidate.AbsCIMPath(args[0])
			if err != nil {
				return err
			}
			block, err := winvalidate.IsBlockCIM(cimPath)
			if err != nil {
				return err
			}
			if block && len(layers) > 1 {
				return fmt.Errorf("%s is a block CIM: validating a block CIM with parents needs a merged mount, which is not implemented; validate the base layer alone", cimPath)
			}
			if rootDigest != "" && !block {
				return fmt.Errorf("--root-digest: %s is a forked CIM; only block CIMs are verified", cimPath)
			}
			want, err := portable.ExpectedView(cmd.Context(), fileOpeners(layers))
			if err != nil {
				return err
			}
			got, err := winvalidate.MountedView(cmd.Context(), cimPath, winvalidate.WithRootDigest(rootDigest))
			if err != nil {
				return err
			}
			diffs, err := winvalidate.Compare(want, got)
			if err != nil {
				return err
			}
			if jsonOut {
				if err := json.NewEncoder(os.Stdout).Encode(map[string]any{"cim": cimPath, "mounted": true, "entries": len(got), "differences": diffs}); err != nil {
					return err
				}
			} else {
				for _, d := range diffs {
					fmt.Println(d.String())
				}
			}
			if len(diffs) > 0 {
				return &exitError{code: 2, err: fmt.Errorf("%s: mounted volume has %d differences from its layers", cimPath, len(diffs))}
			}
			if !jsonOut {
				fmt.Printf("%s: mounted with CimFS, %d entries match the layers\n", cimPath, len(got))
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&layers, "layers", nil, "layer files, base first (repeat or comma-separate)")
	cmd.Flags().StringVar(&rootDigest, "root-digest", "", "root digest (hex) of a verified block CIM, as recorded by the builder; default: the digest sealed in the CIM")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON on stdout")
	return cmd
}

// validateLong opens the help of `cim validate` (the same text on every OS).
const validateLong = `Check a CIM against Windows' own CimFS driver: mount it, walk the mounted volume
(paths, types, sizes, content hashes, security descriptors, attributes, EAs, reparse
data, alternate streams, last-write times) and compare it with the merged view of the
layer files it was built from (base first). Exits 2 and lists the differences when they
differ. This is how a portable-built (experimental) CIM is checked against the driver.`
