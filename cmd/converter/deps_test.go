package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoTestPackagesLinked: the converter binary links no test-support
// package (registrytest, fetchtest, trusttest ...). The dev commands use
// internal/wclayer/fixture, a regular package.
func TestNoTestPackagesLinked(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	var deps int
	for _, p := range strings.Fields(string(out)) {
		if !strings.HasPrefix(p, "github.com/cimconv/cimconv/") {
			continue
		}
		deps++
		if last := p[strings.LastIndex(p, "/")+1:]; strings.HasSuffix(last, "test") {
			t.Errorf("the converter binary links the test package %s", p)
		}
	}
	if deps < 5 {
		t.Fatalf("go list found only %d module packages:\n%s", deps, out)
	}
}
