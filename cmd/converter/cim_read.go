package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/fsview"
)

func init() {
	cimSubcommands = append(cimSubcommands, newCimLsCmd, newCimCatCmd, newCimInspectCmd)
}

func newCimLsCmd(g *globalFlags) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "ls CIM",
		Short: "List the full view of a CIM (for a forked CIM, the merged view of its chain)",
		Long: `List every path of a CIM. For a forked CIM this is the merged view of its chain.
With --json, stdout holds one JSON object per line:
  {"path":"Files/dir/name.txt","type":"file"|"dir"|"symlink"|"junction"|"reparse","size":N,
   "attributes":N,"sha256":"<hex>","sd":"<base64>","streams":[{"name":..,"size":N,"sha256":..}], ...}
A reparse point is typed by its tag: symlink (0xA000000C), junction (0xA0000003, also mount
points), or reparse with "reparseTag":N for any other tag. A directory whose names are out of
the upcase table's order (which CimFS's lookup by name cannot search) is refused; cim verify
lists every such problem.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			view, err := cimView(args[0])
			if err != nil {
				return err
			}
			if jsonOut {
				enc := json.NewEncoder(cmd.OutOrStdout())
				for _, e := range view {
					if err := enc.Encode(e); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			for _, e := range view {
				fmt.Fprintf(tw, "%s\t%#06x\t%d\t%s\n", e.Type, e.Attributes, e.Size, e.Path)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print one JSON object per path on stdout")
	return cmd
}

// cimView opens a CIM and returns its sorted view.
func cimView(path string) ([]fsview.Entry, error) {
	im, err := cim.Open(path)
	if err != nil {
		return nil, err
	}
	defer im.Close()
	view, err := im.View()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	fsview.Sort(view)
	return view, nil
}

func newCimCatCmd(g *globalFlags) *cobra.Command {
	var stream string
	cmd := &cobra.Command{
		Use:   "cat CIM PATH",
		Short: "Write a file's default stream (or --stream NAME) from a CIM to stdout",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			im, err := cim.Open(args[0])
			if err != nil {
				return err
			}
			defer im.Close()
			var r io.Reader
			if stream != "" {
				r, err = im.OpenStream(args[1], stream)
			} else {
				r, err = im.OpenFile(args[1])
			}
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			_, err = io.Copy(cmd.OutOrStdout(), r)
			return err
		},
	}
	cmd.Flags().StringVar(&stream, "stream", "", "read this alternate data stream instead of the default stream")
	return cmd
}

func newCimInspectCmd(g *globalFlags) *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "inspect CIM",
		Short: "Show a CIM's headers, region sets, region files and counts",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := cim.Inspect(args[0])
			if err != nil {
				return err
			}
			if jsonOut {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(info)
			}
			b, err := json.MarshalIndent(info, "", "  ")
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(b))
			return nil
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON on stdout")
	return cmd
}
