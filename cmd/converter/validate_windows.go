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
		layers  []string
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "validate CIM --layers LAYER...",
		Short: "Mount a CIM with CimFS and compare the volume with its layers; exit 2 on differences",
		Long: validateLong + `

The CIM is mounted read-only on a new volume through hcsshim's pkg/cimfs (a
forked CIM finds its parents' region files in its own directory), walked with
backup semantics, compared exactly like ` + "`cim verify`" + ` does, and unmounted.
Run it elevated: SeBackupPrivilege lets the walk read every file and its
security descriptor. A block CIM can be validated only for a base layer (a
block CIM with parents needs a merged mount, which is not implemented).
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
			block, err := winvalidate.IsBlockCIM(args[0])
			if err != nil {
				return err
			}
			if block && len(layers) > 1 {
				return fmt.Errorf("%s is a block CIM: validating a block CIM with parents needs a merged mount, which is not implemented; validate the base layer alone", args[0])
			}
			want, err := portable.ExpectedView(cmd.Context(), fileOpeners(layers))
			if err != nil {
				return err
			}
			got, err := winvalidate.MountedView(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			diffs := portable.CompareViews(want, got)
			if jsonOut {
				if err := json.NewEncoder(os.Stdout).Encode(map[string]any{"cim": args[0], "mounted": true, "entries": len(got), "differences": diffs}); err != nil {
					return err
				}
			} else {
				for _, d := range diffs {
					fmt.Println(d.String())
				}
			}
			if len(diffs) > 0 {
				return &exitError{code: 2, err: fmt.Errorf("%s: mounted volume has %d differences from its layers", args[0], len(diffs))}
			}
			if !jsonOut {
				fmt.Printf("%s: mounted with CimFS, %d entries match the layers\n", args[0], len(got))
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&layers, "layers", nil, "layer files, base first (repeat or comma-separate)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON on stdout")
	return cmd
}

// validateLong opens the help of `cim validate` (the same text on every OS).
const validateLong = `Check a CIM against Windows' own CimFS driver: mount it, walk the mounted volume
(paths, types, sizes, content hashes, security descriptors, attributes, EAs, reparse
data, alternate streams, last-write times) and compare it with the merged view of the
layer files it was built from (base first). Exits 2 and lists the differences when they
differ. This is how a portable-built (experimental) CIM is checked against the driver.`
