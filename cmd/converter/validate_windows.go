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
	var f validateFlags
	cmd := &cobra.Command{
		Use:   validateUse,
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
			if len(f.layers) == 0 {
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
			if block && len(f.layers) > 1 {
				return fmt.Errorf("%s is a block CIM: validating a block CIM with parents needs a merged mount, which is not implemented; validate the base layer alone", cimPath)
			}
			if f.rootDigest != "" && !block {
				return fmt.Errorf("--root-digest: %s is a forked CIM; only block CIMs are verified", cimPath)
			}
			want, err := portable.ExpectedView(cmd.Context(), fileOpeners(f.layers))
			if err != nil {
				return err
			}
			got, err := winvalidate.MountedView(cmd.Context(), cimPath, winvalidate.WithRootDigest(f.rootDigest))
			if err != nil {
				return err
			}
			diffs, err := winvalidate.Compare(want, got)
			if err != nil {
				return err
			}
			if f.jsonOut {
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
			if !f.jsonOut {
				fmt.Printf("%s: mounted with CimFS, %d entries match the layers\n", cimPath, len(got))
			}
			return nil
		},
	}
	f.register(cmd.Flags())
	return cmd
}
