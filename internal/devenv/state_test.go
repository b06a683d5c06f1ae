package devenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestFreshStateClearsOnlyTheDevDir(t *testing.T) {
	data := t.TempDir()
	old := filepath.Join(data, StateDirName, "nats", "jetstream", "stream.dat")
	kept := filepath.Join(data, "nats", "jetstream", "stream.dat") // a non-dev serve's store
	for _, p := range []string{old, kept} {
		if err := os.MkdirAll(filepath.Dir(p), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dir, err := FreshState(data)
	if err != nil {
		t.Fatal(err)
	}
	if dir != filepath.Join(data, StateDirName) {
		t.Fatalf("dir %s", dir)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Fatalf("the previous dev run's state survived: %v", err)
	}
	if _, err := os.Stat(kept); err != nil {
		t.Fatalf("a non-dev store was touched: %v", err)
	}
	if _, err := FreshState(""); err == nil {
		t.Fatal("empty data dir accepted")
	}
}
