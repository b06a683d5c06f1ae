package hive

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// fixtureDir is the shared folder of real hives (see its README); tests
// that need it skip visibly when it is absent, and fail under CI.
func fixtureDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "hives")
	if _, err := os.Stat(filepath.Join(dir, "README.md")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("real hive fixtures missing at %s (CI needs shared/ beside the checkout): %v", dir, err)
		}
		t.Skipf("real hive fixtures not found at %s: %v", dir, err)
	}
	return dir
}

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(fixtureDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rootOf opens a hive's bytes and returns its root key, unloaded.
func rootOf(t testing.TB, b []byte) *Key {
	t.Helper()
	root, err := openRoot(Input{Name: "test hive", Data: b})
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// dumpOf returns the JSON-lines dump of a hive's bytes.
func dumpOf(t testing.TB, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := DumpJSON(context.Background(), &buf, rootOf(t, b)); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// dumpTree returns the dump of an in-memory tree.
func dumpTree(t testing.TB, root *Key) []DumpKey {
	t.Helper()
	var out []DumpKey
	err := Walk(context.Background(), root, func(p string, k *Key) error {
		d := Dump(p, k)
		// Round-trip through JSON so nil and empty compare equal.
		b, _ := json.Marshal(d)
		var back DumpKey
		if err := json.Unmarshal(b, &back); err != nil {
			return err
		}
		out = append(out, back)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
