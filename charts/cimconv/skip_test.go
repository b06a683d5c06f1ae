package chart_test

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
)

// skips records the tests skipped for a missing tool, so that the run ends
// with a summary instead of a bare "ok" (go test ./... shows a passing
// package's output only with -v).
var skips struct {
	mu     sync.Mutex
	byTool map[string][]string // tool -> test names
	why    map[string]string   // tool -> how to get it
}

// skipWithout skips t because tool is missing (a failure when CI=true: CI
// installs every tool the tests need) and records it for the summary.
func skipWithout(t *testing.T, tool, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	skips.mu.Lock()
	if skips.byTool == nil {
		skips.byTool, skips.why = map[string][]string{}, map[string]string{}
	}
	skips.byTool[tool] = append(skips.byTool[tool], t.Name())
	skips.why[tool] = msg
	skips.mu.Unlock()
	t.Skip(msg)
}

// skipSummary is the summary of skipWithout's skips ("" when none).
func skipSummary() string {
	skips.mu.Lock()
	defer skips.mu.Unlock()
	var tools []string
	for tool := range skips.byTool {
		tools = append(tools, tool)
	}
	sort.Strings(tools)
	var b strings.Builder
	for _, tool := range tools {
		names := skips.byTool[tool]
		fmt.Fprintf(&b, "charts/cimconv: SKIPPED %d test(s) without %s: %s\n  (%s)\n", len(names), tool, strings.Join(names, ", "), skips.why[tool])
	}
	return b.String()
}

// reportSkips prints the summary on stdout (shown by go test -v and on
// failure) and on the controlling terminal, if there is one, so that a plain
// `go test ./...` run by hand shows it under the package's "ok" line.
func reportSkips() {
	s := skipSummary()
	if s == "" {
		return
	}
	fmt.Print(s)
	if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
		_, _ = io.WriteString(tty, s)
		tty.Close()
	}
}

func TestSkipSummaryNamesToolAndTests(t *testing.T) {
	skips.mu.Lock()
	saved, savedWhy := skips.byTool, skips.why
	skips.byTool = map[string][]string{"helm": {"TestA", "TestB"}}
	skips.why = map[string]string{"helm": "install it with .ci/extra"}
	skips.mu.Unlock()
	got := skipSummary()
	skips.mu.Lock()
	skips.byTool, skips.why = saved, savedWhy
	skips.mu.Unlock()
	if want := "charts/cimconv: SKIPPED 2 test(s) without helm: TestA, TestB\n  (install it with .ci/extra)\n"; got != want {
		t.Fatalf("summary %q, want %q", got, want)
	}
}
