// Command hivebuild measures what the portable hive merge adds to the build
// of an app layer (issue 11: at most 10%); run it as `go run ./bench/hivebuild`.
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
//	go run ./bench/hivebuild -base-mb 100 -delta-mb 5 -app-files 2000 -app-mb 128
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
	flag.Parse()
	if err := run(*baseMB, *deltaMB, *appFiles, *appMB, *rounds, *cpuProfile); err != nil {
		fmt.Fprintln(os.Stderr, "hivebuild:", err)
		os.Exit(1)
	}
}

func run(baseMB, deltaMB, appFiles, appMB, rounds int, cpuProfile string) error {
	if rounds < 1 || appFiles < 1 {
		return fmt.Errorf("want -rounds >= 1 and -app-files >= 1")
	}
	soft, softDelta := hivegen.Large(baseMB, deltaMB, 1)
	base := fixture.NewLayer()
	for _, name := range []string{"DEFAULT", "SAM", "SECURITY", "SOFTWARE", "SYSTEM"} {
		root := hivegen.Base(name)
		if name == "SOFTWARE" {
			root = soft
		}
		base.File("Files/Windows/System32/config/"+name, fixture.RegistryHive(root), fixture.WithSD(fixture.SDSystemOnly))
	}
	base.File("Files/Windows/System32/cmd.exe", fixture.PE("cmd.exe", 64<<10))
	baseTar := base.Bytes(fixture.Uncompressed)

	app := fixture.NewLayer()
	per := appMB << 20 / appFiles
	for i := range appFiles {
		p := fmt.Sprintf("Files/Program Files/App/d%03d/f%05d.bin", i/100, i)
		app.File(p, fixture.PE(p, per)) // incompressible, like real binaries
	}
	app.Dir("Hives")
	for _, d := range fixture.DeltaHives {
		root := hivegen.Delta(d.Hive, 1)
		if d.Hive == "SOFTWARE" {
			root = softDelta
		}
		app.File("Hives/"+d.File, fixture.RegistryDelta(root), fixture.WithSD(fixture.SDSystemOnly))
	}
	appTar := app.Bytes(fixture.Uncompressed)
	fmt.Printf("base layer %.1f MiB (SOFTWARE %d MiB), app layer %.1f MiB (%d files, Software_Delta %d MiB)\n",
		mib(len(baseTar)), baseMB, mib(len(appTar)), appFiles, deltaMB)

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
	var shares []float64
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
			if l.SideDir != "" {
				os.RemoveAll(l.SideDir)
			}
		}
		share := float64(took["merge"]-took["keep"]) / float64(took["keep"])
		shares = append(shares, share)
		fmt.Printf(" round %d: app layer keep-deltas %6.2fs  merge %6.2fs  merge adds %+.1f%%\n",
			r+1, took["keep"].Seconds(), took["merge"].Seconds(), 100*share)
	}
	slices.Sort(shares)
	fmt.Printf("hive merge adds to the app layer build: median %+.1f%% (min %+.1f%%, max %+.1f%%, %d rounds; target <= 10%%)\n",
		100*shares[len(shares)/2], 100*shares[0], 100*shares[len(shares)-1], rounds)
	return nil
}

func mib(n int) float64 { return float64(n) / (1 << 20) }
