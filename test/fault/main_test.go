//go:build fault && linux

package fault

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Binaries TestMain prepares.
var (
	converterBin string
	// natsBins maps a server flavour ("current", "2.9") to its binary; a
	// missing flavour has its reason in natsMissing.
	natsBins    = map[string]string{}
	natsMissing = map[string]string{}
	// serveFlags are the flags `converter serve` accepts (knob detection).
	serveFlags = map[string]bool{}
	raceBuild  bool
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cimconv-fault-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "fault:", err)
		return 1
	}
	defer os.RemoveAll(dir)

	raceBuild = os.Getenv("FAULT_RACE") != "0"
	start := time.Now()
	if converterBin = os.Getenv("FAULT_CONVERTER"); converterBin != "" {
		// A converter built elsewhere (e.g. an older commit, to show a
		// scenario failing before a fix).
		fmt.Printf("FAULT-BUILD converter: using FAULT_CONVERTER=%s\n", converterBin)
	} else {
		converterBin = filepath.Join(dir, "converter")
		args := []string{"build", "-o", converterBin}
		if raceBuild {
			args = append(args, "-race")
		}
		args = append(args, "github.com/cimconv/cimconv/cmd/converter")
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "fault: go %s: %v\n%s", strings.Join(args, " "), err, out)
			return 1
		}
		fmt.Printf("FAULT-BUILD converter (race %v) in %v\n", raceBuild, time.Since(start).Round(time.Second))
	}
	help, err := exec.Command(converterBin, "serve", "--help").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "fault: converter serve --help: %v\n%s", err, help)
		return 1
	}
	for _, f := range regexp.MustCompile(`--([a-z0-9-]+)`).FindAllStringSubmatch(string(help), -1) {
		serveFlags[f[1]] = true
	}

	// nats-server at go.mod's version: the module is in the build list
	// (the embedded server), so this needs nothing beyond the module cache.
	cur := filepath.Join(dir, "nats-server")
	start = time.Now()
	if out, err := exec.Command("go", "build", "-o", cur, "github.com/nats-io/nats-server/v2").CombinedOutput(); err != nil {
		natsMissing["current"] = fmt.Sprintf("go build github.com/nats-io/nats-server/v2: %v: %s", err, out)
	} else {
		natsBins["current"] = cur
		fmt.Printf("FAULT-BUILD nats-server (go.mod's version) in %v\n", time.Since(start).Round(time.Second))
	}
	old := os.Getenv("FAULT_NATS_OLD")
	if old == "" {
		if p, err := exec.LookPath("nats-server"); err == nil {
			old = p
		} else if _, err := os.Stat("/usr/sbin/nats-server"); err == nil {
			old = "/usr/sbin/nats-server"
		}
	}
	if old == "" {
		natsMissing["2.9"] = "Debian's nats-server 2.9 is not installed (apt-get install -y nats-server; .ci/run does)"
	} else if out, err := exec.Command(old, "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), "v2.9.") {
		natsMissing["2.9"] = fmt.Sprintf("%s --version = %q (%v), want v2.9.x", old, strings.TrimSpace(string(out)), err)
	} else {
		natsBins["2.9"] = old
	}
	return m.Run()
}

// needNATS returns the binary of a server flavour, or skips the test (fails
// it under CI) when it is missing.
func needNATS(t *testing.T, flavour string) string {
	t.Helper()
	if b, ok := natsBins[flavour]; ok {
		return b
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("nats-server %s missing in CI: %s", flavour, natsMissing[flavour])
	}
	t.Skipf("nats-server %s missing: %s", flavour, natsMissing[flavour])
	return ""
}
