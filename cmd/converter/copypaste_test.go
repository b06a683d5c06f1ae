package main

import (
	"os"
	"strings"
	"testing"
)

// converterLines returns the arguments of every `go run ./cmd/converter`
// command line in text (comments after " #" dropped).
func converterLines(text string) [][]string {
	var out [][]string
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		rest, ok := strings.CutPrefix(l, "go run ./cmd/converter ")
		if !ok {
			continue
		}
		if i := strings.Index(rest, " #"); i >= 0 {
			rest = rest[:i]
		}
		out = append(out, strings.Fields(rest))
	}
	return out
}

// The commands a newcomer copies, from the README and from the banner of
// `serve --dev`, parse with the CLI, and every fetch among them makes a
// trust choice (fetch refuses to start without one; the banner and README
// once suggested a fetch that failed so).
func TestCopyPasteCommandsParse(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	sources := map[string]string{
		"README.md":                    string(readme),
		"serve --dev banner":           devBanner("nats://127.0.0.1:4222", "127.0.0.1:8080", "127.0.0.1:5000", "127.0.0.1:5000/sample/windows:ltsc2022", "127.0.0.1:5000/sample/windows@sha256:"+strings.Repeat("a", 64), "/tmp/dev", false),
		"serve --dev banner, signing":  devBanner("nats://127.0.0.1:4223", "127.0.0.1:8080", "127.0.0.1:5000", "127.0.0.1:5000/sample/windows:ltsc2022", "127.0.0.1:5000/sample/windows@sha256:"+strings.Repeat("a", 64), "/tmp/dev", true),
		"dev registry banner (dev.go)": devRegistryBanner("127.0.0.1:5000", "127.0.0.1:5000/sample/windows:ltsc2022", "sha256:"+strings.Repeat("a", 64)),
	}
	for src, text := range sources {
		lines := converterLines(text)
		if len(lines) == 0 {
			t.Errorf("%s: no `go run ./cmd/converter` lines found", src)
		}
		for _, args := range lines {
			root := newRootCmd()
			c, rest, err := root.Find(args)
			if err != nil || c == root {
				t.Errorf("%s: %q: no such command (%v)", src, strings.Join(args, " "), err)
				continue
			}
			if err := c.ParseFlags(rest); err != nil {
				t.Errorf("%s: %q: %v", src, strings.Join(args, " "), err)
				continue
			}
			if c.Name() == "fetch" && !c.Flags().Changed("trust-unsigned") && !c.Flags().Changed("trusted-key") {
				t.Errorf("%s: %q makes no trust choice: fetch refuses to start without --trusted-key or --trust-unsigned", src, strings.Join(args, " "))
			}
		}
	}
}
