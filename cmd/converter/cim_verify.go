package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/fsview"
)

func init() { cimSubcommands = append(cimSubcommands, newCimVerifyCmd) }

func newCimVerifyCmd(g *globalFlags) *cobra.Command {
	var (
		layers  []string
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "verify CIM --layers LAYER...",
		Short: "Compare a CIM's view with the merged view of its layers; exit 2 on differences",
		Long: `Compare the view of a CIM (paths, types, sizes, content hashes, security descriptors,
attributes, EAs, reparse data, alternate streams, last-write times) with the merged view
of the layer files it was built from (base first), including the base-layer processing
CimFS's layer import adds (Hives/*_BASE links, the layout file). Exits 2 and lists the
differences when they differ. It first checks the CIM's own invariants (fsck: link and
stream tables in the upcase table's order, which CimFS's binary search relies on,
consistent EA fields, parent links, reachability, objectid files) and lists each problem
as "fsck: ..." (also exit 2).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(layers) == 0 {
				return fmt.Errorf("--layers is required")
			}
			want, err := portable.ExpectedView(cmd.Context(), fileOpeners(layers))
			if err != nil {
				return err
			}
			// fsck first: it reports what the view refuses (names out of the
			// upcase table's order, inconsistent EA fields) one by one.
			probs, err := cim.Fsck(args[0])
			if err != nil {
				return err
			}
			got, viewErr := cimView(args[0])
			if viewErr != nil && len(probs) == 0 {
				return viewErr
			}
			var diffs []fsview.Difference
			if viewErr == nil {
				diffs = portable.CompareViews(want, got)
			}
			if jsonOut {
				out := map[string]any{"cim": args[0], "entries": len(got), "problems": probs, "differences": diffs}
				if viewErr != nil {
					out["error"] = viewErr.Error()
				}
				if err := json.NewEncoder(cmd.OutOrStdout()).Encode(out); err != nil {
					return err
				}
			} else {
				for _, p := range probs {
					fmt.Fprintln(cmd.OutOrStdout(), "fsck:", p.String())
				}
				for _, d := range diffs {
					fmt.Fprintln(cmd.OutOrStdout(), d.String())
				}
			}
			switch {
			case viewErr != nil:
				return &exitError{code: 2, err: fmt.Errorf("%s: %d fsck problems; %w", args[0], len(probs), viewErr)}
			case len(probs) > 0 || len(diffs) > 0:
				return &exitError{code: 2, err: fmt.Errorf("%s: %d fsck problems, %d differences from its layers", args[0], len(probs), len(diffs))}
			}
			if !jsonOut {
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %d entries match the layers\n", args[0], len(got))
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&layers, "layers", nil, "layer files, base first (repeat or comma-separate)")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON on stdout")
	return cmd
}
