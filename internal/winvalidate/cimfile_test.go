package winvalidate

import (
	"os"
	"path/filepath"
	"testing"
)

func TestIsBlockCIM(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		content []byte
		block   bool
		wantErr bool
	}{
		{"forked", append([]byte("cimfile0"), make([]byte, 24)...), false, false},
		{"block", make([]byte, 4096), true, false},
		{"too short", []byte("cim"), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, tt.name)
			if err := os.WriteFile(p, tt.content, 0o644); err != nil {
				t.Fatal(err)
			}
			block, err := IsBlockCIM(p)
			if (err != nil) != tt.wantErr || block != tt.block {
				t.Errorf("IsBlockCIM = %v, %v; want %v, error %v", block, err, tt.block, tt.wantErr)
			}
		})
	}
	if _, err := IsBlockCIM(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file accepted")
	}
}
