package portable

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cimconv/cimconv/internal/builder"
	"github.com/cimconv/cimconv/internal/cim"
	reghive "github.com/cimconv/cimconv/internal/hive"
	"github.com/cimconv/cimconv/internal/hive/hivegen"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// cimFile reads a file of a layer's CIM.
func cimFile(t *testing.T, bl *builder.BuiltLayer, path string) []byte {
	t.Helper()
	im, err := cim.Open(filepath.Join(bl.CimDir, bl.CimName))
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	r, err := im.Open(path)
	if err != nil {
		t.Fatalf("%s in %s: %v", path, bl.CimName, err)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keyAt loads a key by path (case-insensitive), nil when absent.
func keyAt(t *testing.T, hiveBytes []byte, path string) *reghive.Key {
	t.Helper()
	root, err := reghive.ReadTree(hiveBytes)
	if err != nil {
		t.Fatal(err)
	}
	k := root
	for _, part := range strings.Split(path, `\`) {
		if k, err = k.Subkey(part); err != nil {
			t.Fatal(err)
		} else if k == nil {
			return nil
		}
	}
	return k
}

func valueOf(k *reghive.Key, name string) []byte {
	for _, v := range k.Values {
		if strings.EqualFold(v.Name, name) {
			return v.Data
		}
	}
	return nil
}

// TestHiveMergeChain builds base + two app layers with offreg-shaped deltas
// and checks the merged hives in the CIMs and beside them against what the
// fixture's deltas say.
func TestHiveMergeChain(t *testing.T) {
	dir := t.TempDir()
	built := buildChain(t, New(), dir, chainBytes(3))
	for i, bl := range built {
		if want := map[bool]string{true: builder.HiveMergePortable, false: ""}[i > 0]; bl.HiveMerge != want {
			t.Errorf("layer %d: HiveMerge %q, want %q", i, bl.HiveMerge, want)
		}
	}
	for i := 1; i < len(built); i++ {
		bl := built[i]
		for _, h := range hives {
			side := filepath.Join(bl.SideDir, hivesDir, h.base)
			sb, err := os.ReadFile(side)
			if err != nil {
				t.Fatalf("layer %d: side file: %v", i, err)
			}
			if cb := cimFile(t, bl, hivesDir+"/"+h.base); !bytes.Equal(sb, cb) {
				t.Fatalf("layer %d: %s in the CIM differs from the side file", i, h.base)
			}
			if err := reghive.Check(sb); err != nil {
				t.Fatalf("layer %d: merged %s: %v", i, h.base, err)
			}
			// A fresh file, not a link to the parent's.
			a, _ := os.Stat(side)
			b, _ := os.Stat(filepath.Join(built[i-1].SideDir, hivesDir, h.base))
			if os.SameFile(a, b) {
				t.Fatalf("layer %d: %s is the parent's file", i, h.base)
			}
		}
		// The delta itself is stored at its tar path.
		if d := cimFile(t, bl, "Hives/System_Delta"); !bytes.HasPrefix(d, []byte("regf")) {
			t.Fatalf("layer %d: Hives/System_Delta missing from the CIM", i)
		}
	}
	top := built[2]
	system := cimFile(t, top, "Hives/SYSTEM_BASE")
	software := cimFile(t, top, "Hives/SOFTWARE_BASE")
	checks := []struct {
		hive    []byte
		path    string
		present bool
		check   func(*reghive.Key) string
	}{
		{system, `ControlSet001\Services\XBOXGIP`, false, nil},        // tombstoned key
		{system, `ControlSet001\Services\W32Time\Config`, false, nil}, // under supersede-tree
		{system, `ControlSet001\Services\W32Time`, true, func(k *reghive.Key) string { // superseded values
			if len(k.Values) != 1 || !bytes.Equal(valueOf(k, "Start"), []byte{4, 0, 0, 0}) {
				return "want only Start=4"
			}
			return ""
		}},
		{system, `ControlSet001\Control\Session Manager\Environment`, true, func(k *reghive.Key) string {
			if valueOf(k, "TEMP") != nil || valueOf(k, "OS") == nil {
				return "TEMP must be tombstoned, OS kept"
			}
			if !strings.Contains(string(valueOf(k, "Path")), "a\x00p\x00p\x002") {
				return "Path must be app 2's"
			}
			return ""
		}},
		{system, `Select`, true, nil}, // untouched base key
		{software, `Microsoft\Windows\CurrentVersion\Uninstall\OldApp`, false, nil},
		{software, `Microsoft\Windows\CurrentVersion\Uninstall\App1`, true, func(k *reghive.Key) string { // survives the next layer
			if k.Class != "AppClass" {
				return "class lost"
			}
			return ""
		}},
		{software, `Microsoft\Windows\CurrentVersion\Uninstall\App2`, true, nil},
		{software, `Microsoft\Tracing\Old`, false, nil},
		{software, `Microsoft\Tracing\New`, true, nil},
		{software, `Microsoft\Windows\CurrentVersion\Run`, true, func(k *reghive.Key) string {
			if valueOf(k, "SecurityHealth") != nil || valueOf(k, "App1") == nil || valueOf(k, "App2") == nil {
				return "want SecurityHealth tombstoned and App1, App2 present"
			}
			return ""
		}},
		{software, `Microsoft\Windows NT\CurrentVersion`, true, func(k *reghive.Key) string {
			if !bytes.Equal(valueOf(k, "UBR"), []byte{0xf1, 0x07, 0, 0} /* 2033 */) {
				return "UBR must be layer 2's (2033)"
			}
			return ""
		}},
	}
	for _, c := range checks {
		k := keyAt(t, c.hive, c.path)
		if (k != nil) != c.present {
			t.Errorf("%s: present %v, want %v", c.path, k != nil, c.present)
			continue
		}
		if k != nil && c.check != nil {
			if msg := c.check(k); msg != "" {
				t.Errorf("%s: %s", c.path, msg)
			}
		}
	}
}

// TestHiveMergeNearestAncestor: a parent without the side file (e.g. from a
// cache that lost it) makes the merge use the grandparent's hive.
func TestHiveMergeNearestAncestor(t *testing.T) {
	dir := t.TempDir()
	layers := chainBytes(2)
	built := buildChain(t, New(), dir, layers)
	plain := fixture.NewLayer().File("Files/plain.txt", []byte("x")).Bytes(fixture.Gzip)
	mid, err := New().BuildLayer(context.Background(), source(plain, "sha256:plain"), built[1], dir)
	if err != nil {
		t.Fatal(err)
	}
	// Hide the middle layer's side files: the merge must look further up.
	stripped := *mid
	stripped.SideFiles = nil
	delta := fixture.DeltaHiveLayer().Bytes(fixture.Gzip)
	top, err := New().BuildLayer(context.Background(), source(delta, "sha256:delta"), &stripped, dir)
	if err != nil {
		t.Fatal(err)
	}
	parentSystem, err := os.ReadFile(filepath.Join(built[1].SideDir, hivesDir, "SYSTEM_BASE"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := reghive.MergeHives(context.Background(), reghive.Input{Name: "base", Data: parentSystem},
		[]reghive.Input{{Name: "delta", Data: fixture.RegistryDelta(hivegen.Delta("SYSTEM", 99))}})
	if err != nil {
		t.Fatal(err)
	}
	if got := cimFile(t, top, "Hives/SYSTEM_BASE"); !bytes.Equal(got, want) {
		t.Fatal("merged SYSTEM is not the grandparent's merged with the delta")
	}
}

func TestHiveMergeRefusals(t *testing.T) {
	delta := fixture.DeltaHiveLayer().Bytes(fixture.Gzip)
	t.Run("no ancestor hive", func(t *testing.T) {
		dir := t.TempDir()
		plain := fixture.NewLayer().File("Files/plain.txt", []byte("x")).Bytes(fixture.Gzip)
		parent := buildChain(t, New(), dir, [][]byte{plain})[0]
		before := dirFiles(t, dir)
		_, err := New().BuildLayer(context.Background(), source(delta, "sha256:delta"), parent, dir)
		if err == nil || !strings.Contains(err.Error(), "no ancestor") || !strings.Contains(err.Error(), "sha256:delta") {
			t.Fatalf("err = %v", err)
		}
		if after := dirFiles(t, dir); len(after) != len(before) {
			t.Fatalf("failed build left files: %d before, %d after", len(before), len(after))
		}
	})
	t.Run("corrupt delta", func(t *testing.T) {
		dir := t.TempDir()
		parent := buildChain(t, New(), dir, [][]byte{fixture.BaseLayer().Bytes(fixture.Gzip)})[0]
		bad := fixture.NewLayer().Dir("Hives").File("Hives/System_Delta", []byte("regf but not a hive")).Bytes(fixture.Gzip)
		before := dirFiles(t, dir)
		_, err := New().BuildLayer(context.Background(), source(bad, "sha256:bad"), parent, dir)
		if !errors.Is(err, reghive.ErrCorrupt) || !strings.Contains(err.Error(), "System_Delta") {
			t.Fatalf("err = %v, want ErrCorrupt naming System_Delta", err)
		}
		if after := dirFiles(t, dir); len(after) != len(before) {
			t.Fatalf("failed build left files: %d before, %d after", len(before), len(after))
		}
	})
}

// TestHiveMergesRunSideBySide: a layer's merges run concurrently (two at a
// time), yet a failure is reported for the first failing hive in hcsshim's
// order (SYSTEM before SOFTWARE) whichever fails first, a panic in one is
// that hive's error, and a failed layer leaves no files.
func TestHiveMergesRunSideBySide(t *testing.T) {
	base := fixture.BaseLayer().Bytes(fixture.Gzip)
	app := fixture.DeltaHiveLayer().Bytes(fixture.Gzip)
	defer func() { mergeFilesFunc = mergeFiles }()

	t.Run("two merges at once", func(t *testing.T) {
		dir := t.TempDir()
		parent := buildChain(t, New(), dir, [][]byte{base})[0]
		var mu sync.Mutex
		running, most := 0, 0
		mergeFilesFunc = func(ctx context.Context, out, base, delta, name string) (int64, error) {
			mu.Lock()
			running++
			most = max(most, running)
			mu.Unlock()
			time.Sleep(50 * time.Millisecond)
			mu.Lock()
			running--
			mu.Unlock()
			return mergeFiles(ctx, out, base, delta, name)
		}
		if _, err := New().BuildLayer(context.Background(), source(app, "sha256:app-a"), parent, dir); err != nil {
			t.Fatal(err)
		}
		if most != mergeParallel {
			t.Fatalf("at most %d merges ran at once, want %d", most, mergeParallel)
		}
	})
	for _, tc := range []struct {
		name string
		fail func(name string) error
		want string
	}{
		{"SOFTWARE fails first, SYSTEM later: SYSTEM is reported", func(name string) error {
			if strings.Contains(name, "Software") {
				return errors.New("software broke")
			}
			if strings.Contains(name, "System") {
				time.Sleep(100 * time.Millisecond)
				return errors.New("system broke")
			}
			return nil
		}, "system broke"},
		{"a panic is the hive's error", func(name string) error {
			if strings.Contains(name, "Software") {
				panic("merge exploded")
			}
			return nil
		}, "panic: merge exploded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mergeFilesFunc = func(ctx context.Context, out, base, delta, name string) (int64, error) {
				if err := tc.fail(name); err != nil {
					return 0, err
				}
				return mergeFiles(ctx, out, base, delta, name)
			}
			dir := t.TempDir()
			parent := buildChain(t, New(), dir, [][]byte{base})[0]
			before := dirFiles(t, dir)
			_, err := New().BuildLayer(context.Background(), source(app, "sha256:app-b"), parent, dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one with %q", err, tc.want)
			}
			if after := dirFiles(t, dir); len(after) != len(before) {
				t.Fatalf("failed build left files: %d before, %d after", len(before), len(after))
			}
		})
	}
}
