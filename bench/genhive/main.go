// Command genhive writes a large SOFTWARE-shaped base hive and a delta hive
// over it (hivegen.Large) for bench/hive.sh.
//
//	go run ./bench/genhive -mb 100 -delta-mb 5 -out /tmp/hives
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cimconv/cimconv/internal/hive"
	"github.com/cimconv/cimconv/internal/hive/hivegen"
)

func main() {
	mb := flag.Int("mb", 100, "approximate size of the base hive in MiB")
	deltaMB := flag.Int("delta-mb", 5, "approximate size of the delta hive in MiB")
	seed := flag.Int64("seed", 1, "seed of the deterministic content")
	out := flag.String("out", "", "directory to write SOFTWARE and Software_Delta to; required")
	flag.Parse()
	if err := run(*out, *mb, *deltaMB, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "genhive:", err)
		os.Exit(1)
	}
}

func run(out string, mb, deltaMB int, seed int64) error {
	if out == "" {
		return fmt.Errorf("-out is required")
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	base, delta := hivegen.Large(mb, deltaMB, seed)
	for _, f := range []struct {
		name string
		root *hive.Key
		opts []hive.WriteOption
	}{{"SOFTWARE", base, nil}, {"Software_Delta", delta, []hive.WriteOption{hive.WithLayered()}}} {
		b, err := hive.Marshal(f.root, f.opts...)
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		if err := os.WriteFile(filepath.Join(out, f.name), b, 0o644); err != nil {
			return err
		}
		fmt.Printf("%s: %.1f MiB\n", f.name, float64(len(b))/(1<<20))
	}
	return nil
}
