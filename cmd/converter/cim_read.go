package main

import (
	"encoding/json"
	"fmt"
	"github.com/cimconv/cimconv/internal/progress"
	"io"
	"strings"
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
				r, err = im.Open(args[1])
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
		Short: "Show a CIM's headers, region sets, region files and counts (--json: as JSON)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := cim.Inspect(args[0])
			if err != nil {
				return err
			}
			if jsonOut {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(info)
			}
			return printCimInfo(cmd.OutOrStdout(), info)
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print the same as one JSON object on stdout")
	return cmd
}

// printCimInfo writes inspect's human-readable form: the image, its chain,
// what it holds, and a table of its region and objectid files.
func printCimInfo(w io.Writer, info *cim.Info) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CIM\t%s\n", info.Path)
	fmt.Fprintf(tw, "format\t%s (file entries of %d bytes, %d file tables)\n", info.Version, info.FileEntrySize, info.FileTables)
	fmt.Fprintf(tw, "region set\t%s (%d regions)\n", info.RegionSet.ID, info.RegionSet.Count)
	if len(info.Parents) == 0 {
		fmt.Fprintf(tw, "parents\tnone (a base CIM)\n")
	}
	for i, p := range info.Parents {
		label := ""
		if i == 0 {
			label = fmt.Sprintf("parents (%d, base first)", len(info.Parents))
		}
		fmt.Fprintf(tw, "%s\t%s (%d regions)\n", label, p.ID, p.Count)
	}
	fmt.Fprintf(tw, "files\t%d (%s of data, %d sparse streams)\n", info.Files, progress.Bytes(info.DataBytes), info.SparseStreams)
	fmt.Fprintf(tw, "directories\t%d\n", info.Directories)
	fmt.Fprintf(tw, "hard links\t%d\n", info.HardLinks)
	fmt.Fprintf(tw, "reparse points\t%d\n", info.ReparsePoints)
	fmt.Fprintf(tw, "alternate streams\t%d\n", info.Streams)
	fmt.Fprintf(tw, "security descriptors\t%d distinct\n", info.SecurityDescriptors)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tTYPE\tSIZE\tOWNER\tFILE")
	files := append(append([]cim.RegionFileInfo(nil), info.Regions...), info.ObjectIDFiles...)
	for _, r := range files {
		owner := "parent"
		if r.Own {
			owner = "own"
		}
		typ := r.Type
		if strings.HasPrefix(r.Name, "objectid") {
			typ = "objectid"
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%s\t%s\n", r.Index, typ, r.Size, owner, r.Name)
	}
	return tw.Flush()
}
