package exe

import (
	"path/filepath"
	"runtime"
	"strings"
)

// Suffix is the executable suffix of goos: ".exe" for windows, "" otherwise
// (what `go env GOEXE` prints for that GOOS).
func Suffix(goos string) string {
	if goos == "windows" {
		return ".exe"
	}
	return ""
}

// Name gives base the executable suffix of goos unless it already ends in it
// (case-insensitively, as Windows compares names).
func Name(goos, base string) string {
	s := Suffix(goos)
	if s == "" || strings.HasSuffix(strings.ToLower(base), s) {
		return base
	}
	return base + s
}

// Path is dir joined with base named for the running OS: the file `go build
// -o` should write and os/exec can then run.
func Path(dir, base string) string {
	return filepath.Join(dir, Name(runtime.GOOS, base))
}
