package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// The `converter cim` JSON output is a contract scripts depend on.
func TestCimCommandsContract(t *testing.T) {
	layers, err := fixture.WriteSampleChain(t.TempDir(), fixture.Gzip)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	stdout, err := runCLI(t, append([]string{"cim", "build", "--json", "--out", out}, layers...)...)
	if err != nil {
		t.Fatalf("cim build: %v\n%s", err, stdout)
	}
	var built struct {
		Layers []struct {
			Cim          string `json:"cim"`
			ChainID      string `json:"chainID"`
			DiffID       string `json:"diffID"`
			Experimental bool   `json:"experimental"`
		} `json:"layers"`
	}
	if err := json.Unmarshal([]byte(stdout), &built); err != nil {
		t.Fatalf("cim build --json is not JSON only: %v\n%s", err, stdout)
	}
	if len(built.Layers) != len(layers) {
		t.Fatalf("%d layers in output, want %d", len(built.Layers), len(layers))
	}
	digest := regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	for i, l := range built.Layers {
		if _, err := os.Stat(l.Cim); err != nil || filepath.Dir(l.Cim) != out || !strings.HasSuffix(l.Cim, ".cim") {
			t.Errorf("layer %d: cim %q: %v", i, l.Cim, err)
		}
		if !digest.MatchString(l.ChainID) || !digest.MatchString(l.DiffID) || !l.Experimental {
			t.Errorf("layer %d: %+v", i, l)
		}
	}
	if built.Layers[0].ChainID != built.Layers[0].DiffID {
		t.Errorf("base layer chainID %s != its diffID %s", built.Layers[0].ChainID, built.Layers[0].DiffID)
	}
	top := built.Layers[len(built.Layers)-1].Cim

	// cim ls --json: one object per line, typed, with Windows attributes.
	stdout, err = runCLI(t, "cim", "ls", "--json", top)
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var e struct {
			Path       string `json:"path"`
			Type       string `json:"type"`
			Size       int64  `json:"size"`
			Attributes uint32 `json:"attributes"`
			SHA256     string `json:"sha256"`
			SD         string `json:"sd"`
			Reparse    string `json:"reparse"`
			ReparseTag uint32 `json:"reparseTag"`
			Streams    []struct {
				Name   string `json:"name"`
				Size   int64  `json:"size"`
				SHA256 string `json:"sha256"`
			} `json:"streams"`
		}
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("ls line %q: %v", sc.Text(), err)
		}
		types[e.Type]++
		if e.Path == "Hives/SYSTEM_BASE" {
			types["merged hive"]++
		}
		switch e.Type {
		case "dir":
			if e.Attributes&0x10 == 0 {
				t.Errorf("%s: dir without 0x10", e.Path)
			}
		case "symlink", "junction":
			// Typed by reparse tag: the fixture's junction (a tar symlink
			// with MSWINDOWS.mountpoint) is IO_REPARSE_TAG_MOUNT_POINT.
			if e.Attributes&0x400 == 0 || e.Reparse == "" || e.ReparseTag != 0 {
				t.Errorf("%s: %s: attributes %#x, reparseTag %#x, reparse %q", e.Path, e.Type, e.Attributes, e.ReparseTag, e.Reparse)
			}
			if (e.Type == "junction") != (e.Path == "Files/Users/Default User") {
				t.Errorf("%s: type %s", e.Path, e.Type)
			}
		case "file":
			if len(e.SHA256) != 64 {
				t.Errorf("%s: sha256 %q", e.Path, e.SHA256)
			}
		default:
			t.Errorf("%s: type %q", e.Path, e.Type)
		}
		if strings.HasPrefix(e.Path, "/") || strings.Contains(e.Path, `\`) || e.SD == "" {
			t.Errorf("entry %+v", e)
		}
	}
	if types["file"] == 0 || types["dir"] == 0 || types["symlink"] == 0 || types["junction"] != 1 || types["merged hive"] != 1 {
		t.Fatalf("ls saw %v, want files, dirs, symlinks, the junction and Hives/SYSTEM_BASE", types)
	}

	// The top layer's merged SYSTEM hive: a strict-clean hive without the
	// key the app layers' deltas tombstone.
	stdout, err = runCLI(t, "cim", "cat", top, "Hives/SYSTEM_BASE")
	if err != nil {
		t.Fatal(err)
	}
	merged := filepath.Join(t.TempDir(), "SYSTEM_BASE")
	if err := os.WriteFile(merged, []byte(stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, "hive", "check", merged); err != nil {
		t.Fatalf("hive check of the merged SYSTEM: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "hive", "dump", "--json", merged); err != nil || strings.Contains(out, "XBOXGIP") || !strings.Contains(out, `"path":"\\ControlSet001\\Services\\W32Time"`) {
		t.Fatalf("merged SYSTEM dump: %v\n%.2000s", err, out)
	}

	// cim cat prints a file's bytes; cim inspect prints JSON.
	stdout, err = runCLI(t, "cim", "cat", top, "layout")
	if err != nil || stdout != "vhd-with-hives\n" {
		t.Fatalf("cim cat layout = %q, %v", stdout, err)
	}
	stdout, err = runCLI(t, "cim", "inspect", "--json", top)
	if err != nil || !json.Valid([]byte(stdout)) {
		t.Fatalf("cim inspect --json: %v\n%s", err, stdout)
	}
	var info struct {
		RegionSet struct{ ID string } `json:"regionSet"`
		Parents   []struct{ ID string }
	}
	if err := json.Unmarshal([]byte(stdout), &info); err != nil || len(info.Parents) != len(layers)-1 {
		t.Fatalf("cim inspect --json: %+v, %v", info, err)
	}
	// Without --json: text for people, naming the region set and every
	// parent, base first.
	stdout, err = runCLI(t, "cim", "inspect", top)
	if err != nil || json.Valid([]byte(stdout)) {
		t.Fatalf("cim inspect: %v\n%s", err, stdout)
	}
	wantLines := []string{"region set " + info.RegionSet.ID, "parents (2, base first) " + info.Parents[0].ID, "reparse points"}
	for _, w := range wantLines {
		if !strings.Contains(strings.Join(strings.Fields(stdout), " "), strings.Join(strings.Fields(w), " ")) {
			t.Errorf("cim inspect output lacks %q:\n%s", w, stdout)
		}
	}
	if i, j := strings.Index(stdout, info.Parents[0].ID), strings.Index(stdout, info.Parents[1].ID); i < 0 || j < i {
		t.Errorf("cim inspect: parents not listed base first:\n%s", stdout)
	}

	// cim verify: the chain matches its layers; against the wrong layers it
	// exits 2 and lists differences.
	if stdout, err = runCLI(t, "cim", "verify", top, "--layers", strings.Join(layers, ",")); err != nil {
		t.Fatalf("verify: %v\n%s", err, stdout)
	}
	stdout, err = runCLI(t, "cim", "verify", top, "--layers", strings.Join(layers[:2], ","))
	if err == nil || exitCode(err) != 2 || !strings.Contains(stdout, "Files/") {
		t.Fatalf("verify against the wrong layers: exit %d, %v\n%s", exitCode(err), err, stdout)
	}
}

func TestCimBuildFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	layers, err := fixture.WriteSampleChain(dir, fixture.Gzip)
	if err != nil {
		t.Fatal(err)
	}
	delta := filepath.Join(dir, "delta.tar")
	if err := os.WriteFile(delta, fixture.DeltaHiveLayer().Bytes(fixture.Uncompressed), 0o644); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	_, err = runCLI(t, "cim", "build", "--hive-merge=refuse", "--out", out, layers[0], layers[1], delta)
	if err == nil || !strings.Contains(err.Error(), "delta registry hives") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("err = %v, want one line about delta hives", err)
	}
	var left []string
	filepath.Walk(out, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) != 0 {
		t.Fatalf("failed build left %v", left)
	}
}
