package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/cimconv/cimconv/internal/hive"
)

func init() { registeredCommands = append(registeredCommands, newHiveCmd) }

func newHiveCmd(*globalFlags) *cobra.Command {
	return newGroupCmd("hive", "Dump, check and merge Windows registry hive files", hiveLong,
		newHiveDumpCmd(), newHiveMergeCmd(), newHiveCheckCmd())
}

const hiveLong = `Work with Windows registry hive files (regf) in pure Go.

merge applies container delta hives (layered keys: tombstones, supersede-local,
supersede-tree, inherit class) onto a base hive, as the portable builder does for
each app layer. The merge follows the public format description; it has never
been compared with offreg's ORMergeHives output on Windows (docs/hive-format.md).`

func newHiveDumpCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "dump [--json] HIVE",
		Short: "Print every key of a hive (with --json: one JSON object per key)",
		Long: `Print every key of HIVE in pre-order, subkeys in Windows order.

With --json, stdout carries only JSON: one object per line and key, with its path
("\" for the root), class, lastWrite, flags (nk flags, layer semantics, inherit
class) and values (name, type, data as base64, tombstone).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := hive.OpenFile(args[0])
			if err != nil {
				return err
			}
			root, err := h.Root()
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			if asJSON {
				err = hive.DumpJSON(cmd.Context(), w, root)
			} else {
				err = dumpText(cmd.Context(), w, root)
			}
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON object per key on stdout")
	return cmd
}

func dumpText(ctx context.Context, w io.Writer, root *hive.Key) error {
	return hive.Walk(ctx, root, func(path string, k *hive.Key) error {
		d := hive.Dump(path, k)
		fmt.Fprintf(w, "%s  [%s", d.Path, d.LastWrite.Format("2006-01-02T15:04:05.0000000Z"))
		if d.Class != "" {
			fmt.Fprintf(w, " class=%q", d.Class)
		}
		if d.Flags.Layer != hive.LayerNone.String() {
			fmt.Fprintf(w, " %s", d.Flags.Layer)
		}
		if d.Flags.InheritClass {
			fmt.Fprint(w, " inherit-class")
		}
		fmt.Fprintln(w, "]")
		for _, v := range d.Values {
			name := v.Name
			if name == "" {
				name = "(default)"
			}
			tomb := ""
			if v.Tombstone {
				tomb = " tombstone"
			}
			fmt.Fprintf(w, "    %q type %d, %d bytes%s\n", name, v.Type, len(v.Data), tomb)
		}
		return nil
	})
}

func newHiveMergeCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "merge --out OUT BASE DELTA...",
		Short: "Merge delta hives onto a base hive into a new flat hive",
		Long: `Merge each DELTA, in order, onto BASE and write the merged, flat hive to OUT.
OUT is written whole or not at all. The same inputs always give the same bytes.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("--out is required")
			}
			var releases []func() error
			defer func() {
				for _, r := range releases {
					_ = r()
				}
			}()
			read := func(p string) (hive.Input, error) {
				b, release, err := hive.MapFile(p)
				if err == nil {
					releases = append(releases, release)
				}
				return hive.Input{Name: p, Data: b}, err
			}
			base, err := read(args[0])
			if err != nil {
				return err
			}
			var deltas []hive.Input
			for _, p := range args[1:] {
				d, err := read(p)
				if err != nil {
					return err
				}
				deltas = append(deltas, d)
			}
			return writeFileAtomic(out, func(f *os.File) error {
				_, err := hive.MergeHivesTo(cmd.Context(), f, base, deltas)
				return err
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the merged hive to")
	return cmd
}

// writeFileAtomic has write fill a temporary file beside path and renames
// it into place, so a failure leaves no partial output.
func writeFileAtomic(path string, write func(*os.File) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	err = write(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
}

func newHiveCheckCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "check HIVE",
		Short: "Check a hive strictly (exit 2 and a list of problems when it fails)",
		Long: `Read every key of HIVE and check it strictly: header checksum, clean (no
pending log data), every cell inside its bin, subkey lists in Windows order without
duplicates, lh/lf hints, counts, security-descriptor reference counts and ring, and
no allocated cell that nothing refers to. Exits 0 when it passes, 2 with one
problem per line on stdout when it does not, 1 when HIVE cannot be read at all.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			err = hive.Check(b)
			var ce *hive.CheckError
			if errors.As(err, &ce) {
				for _, p := range ce.Problems {
					fmt.Fprintln(cmd.OutOrStdout(), p.String())
				}
				return &exitError{code: 2, err: fmt.Errorf("%s: %d problem(s) found", args[0], len(ce.Problems))}
			}
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", args[0])
			return nil
		},
	}
}
