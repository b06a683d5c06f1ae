package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/progress"
	"github.com/cimconv/cimconv/internal/readcount"
)

func init() { cimSubcommands = append(cimSubcommands, newCimBuildCmd) }

// cimBuildLayer is one line of `cim build --json`.
type cimBuildLayer struct {
	Layer          string   `json:"layer"`
	Cim            string   `json:"cim"`
	ChainID        string   `json:"chainID"`
	DiffID         string   `json:"diffID"`
	CimFiles       []string `json:"cimFiles"`
	SideDir        string   `json:"sideDir,omitempty"`
	SideFiles      []string `json:"sideFiles,omitempty"`
	Builder        string   `json:"builder"`
	Experimental   bool     `json:"experimental"`
	UnmergedDeltas bool     `json:"unmergedDeltas,omitempty"`
}

func newCimBuildCmd(g *globalFlags) *cobra.Command {
	var (
		out        string
		jsonOut    bool
		keepDeltas bool
		hiveMerge  string
	)
	cmd := &cobra.Command{
		Use:   "build --out DIR LAYER...",
		Short: "Build the CIM chain of local layer files (base first) with the portable builder (experimental)",
		Long: `Build the CIM chain of local Windows layer files, base layer first. Layers may be
.tar, .tar.gz or .tar.zst (detected from the bytes). Every layer's .cim and region
files land in DIR; per-layer side files (Hives/*_BASE, layout) in DIR/layers/<chainID>.

The portable builder is EXPERIMENTAL: its CIMs are not yet validated against CimFS.dll.
A non-base layer's delta registry hives (Hives/*_Delta) are merged onto the parent's
Hives/*_BASE in pure Go (--hive-merge=portable, the default; never compared with
Windows' offreg), or refused (--hive-merge=refuse); --keep-delta-hives keeps them
unmerged for inspection only.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out is required")
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			hm, err := hiveMergeOption(hiveMerge)
			if err != nil {
				return err
			}
			opts := []portable.Option{portable.WithLogger(log), hm}
			if keepDeltas {
				opts = append(opts, portable.WithUnmergedDeltaHives())
			}
			b := portable.New(opts...)
			pr := progress.New(os.Stderr, !jsonOut)
			defer pr.Close()
			layers, err := buildLocalChain(cmd.Context(), b, out, args, pr)
			if err != nil {
				return err
			}
			if jsonOut {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{"layers": layers})
			}
			for _, l := range layers {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\t%s\n", l.Cim, l.ChainID, l.Layer)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "directory to write the CIM chain into")
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON on stdout")
	cmd.Flags().BoolVar(&keepDeltas, "keep-delta-hives", false, "keep delta hives unmerged (inspection only; marked in the output)")
	registerHiveMerge(cmd.Flags(), &hiveMerge)
	return cmd
}

// buildLocalChain builds layers in order into out. On failure it removes
// everything it created, so a failed build leaves no CIM behind.
func buildLocalChain(ctx context.Context, b builder.Builder, out string, files []string, pr *progress.Printer) (_ []cimBuildLayer, retErr error) {
	for _, f := range files {
		if st, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("layer %s: %w", f, err)
		} else if st.IsDir() {
			return nil, fmt.Errorf("layer %s: is a directory, want a layer tar file", f)
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var built []*builder.BuiltLayer
	defer func() {
		if retErr == nil {
			return
		}
		for _, l := range built {
			for _, f := range l.CimFiles {
				os.Remove(filepath.Join(l.CimDir, f))
			}
			if l.SideDir != "" {
				os.RemoveAll(l.SideDir)
			}
		}
	}()
	var parent *builder.BuiltLayer
	var res []cimBuildLayer
	var done int64 // bytes of the layers built so far
	for i, f := range files {
		path := f
		src := builder.LayerSource{
			Digest: filepath.Base(path),
			Size:   -1,
			Open: func(ctx context.Context) (io.ReadCloser, error) {
				fh, err := os.Open(path)
				if err != nil {
					return nil, err
				}
				st, err := fh.Stat()
				if err != nil {
					fh.Close()
					return nil, err
				}
				// No buffer here: the layer reader buffers (a bufio in front of
				// its own would copy every byte once more).
				// Progress every MiB: the reads run on the hashing goroutine,
				// the build's critical path.
				return readcount.New(fh, 1<<20, func(n, _ int64) {
					pr.Update("layer %d/%d %s: %s / %s (%s in all)", i+1, len(files), filepath.Base(path), progress.Bytes(n), progress.Bytes(st.Size()), progress.Bytes(done+n))
				}), nil
			},
		}
		bl, err := b.BuildLayer(ctx, src, parent, out)
		if err != nil {
			return nil, err
		}
		built = append(built, bl)
		if st, err := os.Stat(path); err == nil {
			done += st.Size()
		}
		pr.Println("layer %d/%d %s -> %s (%s built in all)", i+1, len(files), filepath.Base(path), bl.CimName, progress.Bytes(done))
		res = append(res, cimBuildLayer{
			Layer: path, Cim: filepath.Join(out, bl.CimName), ChainID: bl.ChainID, DiffID: bl.DiffID,
			CimFiles: bl.CimFiles, SideDir: bl.SideDir, SideFiles: bl.SideFiles,
			Builder: bl.Builder, Experimental: bl.Experimental, UnmergedDeltas: bl.UnmergedDeltas,
		})
		parent = bl
	}
	return res, nil
}
