// Command hivebuild measures what the portable hive merge adds to the build
// of an app layer; run it as `go run ./bench/hivebuild`. Issue 11's target,
// as re-scoped on 2026-12-07 (docs/hive-format.md, "Cost"): at most 10% for
// app layers whose build takes 3 s or more. A merge is a fixed cost per layer
// (a rewrite of the parent hive), so on smaller layers its share is larger,
// and below about 0.6 s even the floor printed here exceeds 10%.
//
// It generates, in memory and deterministically, a base layer whose SOFTWARE
// hive is SOFTWARE-sized (hivegen.Large, default 100 MiB; the other four
// hives small) and an app layer of -app-files files / -app-mb MiB that
// carries Hives/Software_Delta (default 5 MiB) and the four other small
// deltas. The base is built once (setup, not timed). Then, alternating for
// -rounds rounds in the same process, the app layer is built on that base:
//
//	keep:  --keep-delta-hives (everything but the merge: the same tar read,
//	       hashed and written, deltas stored unmerged)
//	merge: --hive-merge=portable (the same, plus the five merges)
//
// and it prints both times, (merge-keep)/keep per round and the median.
//
// Each round also times the floor of any output shaped like hcsshim's: the
// merged SOFTWARE hive's bytes written twice (the side file the next layer
// merges onto, and the file in the CIM), without computing anything. No
// merge, however fast, adds less than that.
//
// The app layer is an uncompressed tar of incompressible files by default,
// the cheapest layer to build and so the largest share for the merge.
// -compress gzip -compressible 0.5 is closer to what registries serve: a
// gzip blob whose files compress about 2:1, like Windows binaries.
//
//	go run ./bench/hivebuild -base-mb 100 -delta-mb 5 -app-files 2000 -app-mb 128
//	go run ./bench/hivebuild -compress gzip -compressible 0.5
//
// -system-mb N also gives the base a SYSTEM hive of N MiB (and the app
// layer a 1 MiB System_Delta), to see the merges of a layer run side by side.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/hive"
	"github.com/cimconv/cimconv/internal/hive/hivegen"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

func main() {
	baseMB := flag.Int("base-mb", 100, "size of the base SOFTWARE hive in MiB")
	deltaMB := flag.Int("delta-mb", 5, "size of the app layer's Software_Delta in MiB")
	appFiles := flag.Int("app-files", 2000, "files in the app layer")
	appMB := flag.Int("app-mb", 128, "file data in the app layer in MiB")
	rounds := flag.Int("rounds", 3, "rounds (keep and merge alternate in each)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the timed rounds to this file")
	compress := flag.String("compress", "none", "app layer blob: none, gzip or zstd")
	compressible := flag.Float64("compressible", 0, "fraction of each app file that is repetitive (0: incompressible, 0.5: about 2:1)")
	systemMB := flag.Int("system-mb", 0, "size of the base SYSTEM hive in MiB, with a 1 MiB System_Delta (0: a small one)")
	flag.Parse()
	c, ok := map[string]fixture.Compression{"none": fixture.Uncompressed, "gzip": fixture.Gzip, "zstd": fixture.Zstd}[*compress]
	if !ok || *compressible < 0 || *compressible > 1 {
		fmt.Fprintln(os.Stderr, "hivebuild: want -compress none|gzip|zstd and 0 <= -compressible <= 1")
		os.Exit(2)
	}
	if err := run(*baseMB, *deltaMB, *systemMB, *appFiles, *appMB, *rounds, *cpuProfile, c, *compressible); err != nil {
		fmt.Fprintln(os.Stderr, "hivebuild:", err)
		os.Exit(1)
	}
}

func run(baseMB, deltaMB, systemMB, appFiles, appMB, rounds int, cpuProfile string, c fixture.Compression, compressible float64) error {
	if rounds < 1 || appFiles < 1 {
		return fmt.Errorf("want -rounds >= 1 and -app-files >= 1")
	}
	soft, softDelta := hivegen.Large(baseMB, deltaMB, 1)
	var sys, sysDelta *hive.Key
	if systemMB > 0 {
		sys, sysDelta = hivegen.Large(systemMB, 1, 2)
	}
	base := fixture.NewLayer()
	for _, name := range []string{"DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"} {
		root := hivegen.Base(name)
		switch {
		case name == "SOFTWARE":
			root = soft
		case name == "SYSTEM" && sys != nil:
			root = sys
		}
		base.File("Files/Windows/System32/config/"+name, fixture.RegistryHive(root), fixture.WithSD(fixture.SDSystemOnly))
	}
	base.File("Files/Windows/System32/cmd.exe", fixture.PE("cmd.exe", 64<<10))
	baseTar := base.Bytes(fixture.Uncompressed)

	app := fixture.NewLayer()
	per := appMB << 20 / appFiles
	for i := range appFiles {
		p := fmt.Sprintf("Files/Program Files/App/d%03d/f%05d.bin", i/100, i)
		app.File(p, appFile(p, per, compressible))
	}
	app.Dir("Hives")
	for _, d := range fixture.DeltaHives {
		root := hivegen.Delta(d.Hive, 1)
		switch {
		case d.Hive == "SOFTWARE":
			root = softDelta
		case d.Hive == "SYSTEM" && sysDelta != nil:
			root = sysDelta
		}
		app.File("Hives/"+d.File, fixture.RegistryDelta(root), fixture.WithSD(fixture.SDSystemOnly))
	}
	appTar := app.Bytes(c)
	fmt.Printf("base layer %.1f MiB (SOFTWARE %d MiB), app layer %.1f MiB blob%s (%d files, %d MiB, Software_Delta %d MiB)\n",
		mib(len(baseTar)), baseMB, mib(len(appTar)), c.Ext(), appFiles, appMB, deltaMB)

	ctx := context.Background()
	work, err := os.MkdirTemp("", "hivebuild-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	src := func(name string, b []byte) builder.LayerSource {
		return builder.LayerSource{Digest: name, Size: int64(len(b)), Open: func(context.Context) (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(b)), nil
		}}
	}
	// One base per mode, so both children read the same parent files.
	parents := map[string]*builder.BuiltLayer{}
	builders := map[string]*portable.Builder{
		"keep":  portable.New(portable.WithUnmergedDeltaHives()),
		"merge": portable.New(portable.WithHiveMerge(portable.HiveMergePortable)),
	}
	modes := []string{"keep", "merge"}
	for _, m := range modes {
		dir := filepath.Join(work, m)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		p, err := builders[m].BuildLayer(ctx, src("base", baseTar), nil, dir)
		if err != nil {
			return fmt.Errorf("base (%s): %w", m, err)
		}
		parents[m] = p
	}
	if cpuProfile != "" { // the rounds only; focus on the merge with pprof -focus mergeHives
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var shares, floors, keeps []float64
	var merged []byte // the merged SOFTWARE hive, for the floor
	for r := range rounds {
		took := map[string]time.Duration{}
		for _, m := range modes {
			dir := filepath.Join(work, m)
			start := time.Now()
			l, err := builders[m].BuildLayer(ctx, src(fmt.Sprintf("app-%d", r), appTar), parents[m], dir)
			took[m] = time.Since(start)
			if err != nil {
				return fmt.Errorf("app layer (%s): %w", m, err)
			}
			if (m == "merge") == l.UnmergedDeltas {
				return fmt.Errorf("app layer (%s): unmerged deltas = %v, not what the mode asks", m, l.UnmergedDeltas)
			}
			for _, f := range l.CimFiles { // the next round builds it again
				os.Remove(filepath.Join(dir, f))
			}
			if m == "merge" && merged == nil {
				if merged, err = os.ReadFile(filepath.Join(l.SideDir, "Hives", "SOFTWARE_BASE")); err != nil {
					return fmt.Errorf("the merged SOFTWARE hive: %w", err)
				}
			}
			if l.SideDir != "" {
				os.RemoveAll(l.SideDir)
			}
		}
		floor, err := writeTwice(work, merged)
		if err != nil {
			return err
		}
		share := float64(took["merge"]-took["keep"]) / float64(took["keep"])
		shares = append(shares, share)
		keeps = append(keeps, took["keep"].Seconds())
		floors = append(floors, floor.Seconds()/took["keep"].Seconds())
		fmt.Printf(" round %d: app layer keep-deltas %6.2fs  merge %6.2fs  merge adds %+.1f%%  (floor: writing the merged hive twice %5.3fs, %+.1f%%)\n",
			r+1, took["keep"].Seconds(), took["merge"].Seconds(), 100*share, floor.Seconds(), 100*floors[r])
	}
	slices.Sort(shares)
	slices.Sort(floors)
	slices.Sort(keeps)
	fmt.Printf("hive merge adds to the app layer build: median %+.1f%% (min %+.1f%%, max %+.1f%%, %d rounds)\n",
		100*shares[len(shares)/2], 100*shares[0], 100*shares[len(shares)-1], rounds)
	build := keeps[len(keeps)/2]
	if build >= targetFrom.Seconds() {
		verdict := "met"
		if shares[len(shares)/2] > 0.10 {
			verdict = "NOT met"
		}
		fmt.Printf("target <= 10%% for app layers whose build takes >= %v: applies (build without the merge %.2f s, median): %s\n", targetFrom, build, verdict)
	} else {
		fmt.Printf("target <= 10%% for app layers whose build takes >= %v: does not apply (build without the merge %.2f s, median; the merge is a fixed cost per layer)\n", targetFrom, build)
	}
	fmt.Printf("floor of an hcsshim-shaped output (the merged %.1f MiB hive written twice, nothing computed): median %+.1f%%\n",
		mib(len(merged)), 100*floors[len(floors)/2])
	return nil
}

// targetFrom is the app layer build time from which issue 11's 10% target
// applies (re-scoped 2026-12-07).
const targetFrom = 3 * time.Second

// appFile returns a file of an app layer: a PE header, then blocks of which
// the share compressible repeat a short pattern and the rest are random.
func appFile(p string, size int, compressible float64) []byte {
	b := fixture.PE(p, size)
	if compressible == 0 {
		return b
	}
	const block = 4096
	pattern := []byte(p + " resource string table entry ")
	for off := 0x100; off < len(b); off += block {
		if float64(off/block*61%100) < 100*compressible { // spread over the file

			end := min(len(b), off+block)
			for i := off; i < end; i += len(pattern) {
				copy(b[i:end], pattern)
			}
		}
	}
	return b
}

// writeTwice writes b to two new files in dir and removes them: the least
// any build that keeps a merged hive as a side file and in its CIM pays.
func writeTwice(dir string, b []byte) (time.Duration, error) {
	start := time.Now()
	for i := range 2 {
		f := filepath.Join(dir, fmt.Sprintf("floor-%d", i))
		if err := os.WriteFile(f, b, 0o644); err != nil {
			return 0, err
		}
	}
	took := time.Since(start)
	for i := range 2 {
		os.Remove(filepath.Join(dir, fmt.Sprintf("floor-%d", i)))
	}
	return took, nil
}

func mib(n int) float64 { return float64(n) / (1 << 20) }
