package main

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/hive"
)

func writeHive(t *testing.T, path string, root *hive.Key, opts ...hive.WriteOption) {
	t.Helper()
	b, err := hive.Marshal(root, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestHiveCommands(t *testing.T) {
	dir := t.TempDir()
	base, delta, out := filepath.Join(dir, "SOFTWARE"), filepath.Join(dir, "Software_Delta"), filepath.Join(dir, "merged")
	writeHive(t, base, &hive.Key{Name: "ROOT", Subkeys: []*hive.Key{
		{Name: "Old", Values: []hive.Value{{Name: "v", Type: hive.RegDWORD, Data: []byte{1, 0, 0, 0}}}},
		{Name: "Gone", Subkeys: []*hive.Key{{Name: "Child"}}},
	}})
	writeHive(t, delta, &hive.Key{Name: "ROOT", InheritClass: true, Subkeys: []*hive.Key{
		{Name: "OLD", InheritClass: true, Values: []hive.Value{{Name: "v", Tombstone: true}, {Name: "w", Type: hive.RegBinary, Data: []byte("xyz")}}},
		{Name: "gone", Layer: hive.LayerTombstone},
		{Name: "New", Class: "cls"},
	}}, hive.WithLayered())

	if stdout, err := runCLI(t, "hive", "merge", "--out", out, base, delta); err != nil {
		t.Fatalf("hive merge: %v\n%s", err, stdout)
	}
	if stdout, err := runCLI(t, "hive", "check", out); err != nil || !strings.Contains(stdout, "ok") {
		t.Fatalf("hive check of the merge: %v\n%s", err, stdout)
	}
	stdout, err := runCLI(t, "hive", "dump", "--json", out)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]hive.DumpKey{}
	sc := bufio.NewScanner(strings.NewReader(stdout))
	for sc.Scan() {
		var k hive.DumpKey
		if err := json.Unmarshal(sc.Bytes(), &k); err != nil {
			t.Fatalf("dump --json line is not JSON: %v: %q", err, sc.Text())
		}
		got[k.Path] = k
	}
	if len(got) != 3 || got[`\New`].Class != "cls" || len(got[`\Old`].Values) != 1 || string(got[`\Old`].Values[0].Data) != "xyz" {
		t.Fatalf("merged dump: %+v", got)
	}
	// The delta dumps with its layered flags.
	stdout, err = runCLI(t, "hive", "dump", "--json", delta)
	if err != nil || !strings.Contains(stdout, `"layer":"tombstone"`) || !strings.Contains(stdout, `"tombstone":true`) {
		t.Fatalf("delta dump: %v\n%s", err, stdout)
	}
	if stdout, err := runCLI(t, "hive", "dump", out); err != nil || !strings.Contains(stdout, `\Old`) {
		t.Fatalf("text dump: %v\n%s", err, stdout)
	}

	// A hive that reads but fails the strict check: exit 2, problems listed.
	b, _ := os.ReadFile(out)
	bad := filepath.Join(dir, "bad")
	h, _ := hive.Marshal(&hive.Key{Name: "ROOT", Subkeys: []*hive.Key{{Name: "b"}, {Name: "a"}}})
	if err := os.WriteFile(bad, corruptOrder(t, h), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, err = runCLI(t, "hive", "check", bad)
	if exitCode(err) != 2 || !strings.Contains(stdout, "out of order") {
		t.Fatalf("check of an out-of-order hive: exit %d %v\n%s", exitCode(err), err, stdout)
	}

	// A corrupt delta: the error names it and no output is left behind.
	if err := os.WriteFile(delta, b[:5000], 0o644); err != nil {
		t.Fatal(err)
	}
	out2 := filepath.Join(dir, "merged2")
	_, err = runCLI(t, "hive", "merge", "--out", out2, base, delta)
	if err == nil || !strings.Contains(err.Error(), delta) {
		t.Fatalf("merge with a corrupt delta: %v", err)
	}
	if _, serr := os.Stat(out2); !os.IsNotExist(serr) {
		t.Fatalf("merge failed but left %s", out2)
	}
	if _, err := runCLI(t, "hive", "check", delta); exitCode(err) != 1 || !strings.Contains(err.Error(), "corrupt registry hive") {
		t.Fatalf("check of an unreadable hive: exit %d %v", exitCode(err), err)
	}
}

// corruptOrder swaps the one-letter names of the two subkeys of a hive
// written by hive.Marshal, so its subkey list is out of order.
func corruptOrder(t *testing.T, h []byte) []byte {
	t.Helper()
	var names []int
	for i := 4096; i+78 < len(h); i++ {
		if h[i] == 'n' && h[i+1] == 'k' && h[i+72] == 1 && h[i+73] == 0 && (h[i+76] == 'a' || h[i+76] == 'b') {
			names = append(names, i+76)
		}
	}
	if len(names) != 2 {
		t.Fatalf("found %d one-letter keys", len(names))
	}
	h[names[0]], h[names[1]] = h[names[1]], h[names[0]]
	return h
}
