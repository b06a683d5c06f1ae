package exe

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	tests := []struct {
		goos, base, want string
	}{
		{"windows", "converter", "converter.exe"},
		{"windows", "converter.exe", "converter.exe"},
		{"windows", "HELM.EXE", "HELM.EXE"},
		{"windows", "nats-server", "nats-server.exe"},
		{"windows", "dir/helm", "dir/helm.exe"},
		{"linux", "converter", "converter"},
		{"linux", "converter.exe", "converter.exe"},
		{"darwin", "helm", "helm"},
	}
	for _, tt := range tests {
		if got := Name(tt.goos, tt.base); got != tt.want {
			t.Errorf("Name(%q, %q) = %q, want %q", tt.goos, tt.base, got, tt.want)
		}
	}
	if Suffix("windows") != ".exe" || Suffix("linux") != "" {
		t.Errorf("Suffix: windows %q, linux %q", Suffix("windows"), Suffix("linux"))
	}
}

// Suffix agrees with the toolchain's own GOEXE for both systems.
func TestSuffixMatchesGoEnv(t *testing.T) {
	for _, goos := range []string{"windows", "linux"} {
		cmd := exec.Command("go", "env", "GOEXE")
		cmd.Env = append(os.Environ(), "GOOS="+goos)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go env GOEXE (GOOS=%s): %v", goos, err)
		}
		if got := strings.TrimSpace(string(out)); got != Suffix(goos) {
			t.Errorf("GOOS=%s: go env GOEXE = %q, Suffix = %q", goos, got, Suffix(goos))
		}
	}
}

func TestPathIsForThisOS(t *testing.T) {
	got := Path(filepath.Join("a", "b"), "converter")
	want := filepath.Join("a", "b", "converter")
	if runtime.GOOS == "windows" {
		want += ".exe"
	}
	if got != want {
		t.Errorf("Path = %q, want %q", got, want)
	}
}
