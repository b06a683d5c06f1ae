package main

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// ltsc2022 is the platform the CLI tests push their Windows images for.
var ltsc2022 = v1.Platform{OS: "windows", Architecture: "amd64", OSVersion: "10.0.20348.2031"}

// pushChain pushes the fixture's first n layers, gzipped, as the Windows
// image ref and returns them with the image's descriptor.
func pushChain(t *testing.T, ref string, n int) ([][]byte, v1.Descriptor) {
	t.Helper()
	var layers [][]byte
	for _, l := range fixture.Chain(n) {
		layers = append(layers, l.Bytes(fixture.Gzip))
	}
	return layers, registrytest.PushImage(t, ref, layers, ltsc2022)
}

func TestConvertFetchBackfillCommands(t *testing.T) {
	host := registrytest.NewDistribution(t)
	layers, _ := pushChain(t, host+"/win/cli:v1", 2)
	registrytest.PushImage(t, host+"/win/cli:v2", layers[:1], ltsc2022)
	registrytest.PushImage(t, host+"/win/cli:linux", [][]byte{registrytest.Tar(t, "etc/x", "y")}, v1.Platform{OS: "linux", Architecture: "amd64"})
	cache := "--cache-dir=" + t.TempDir()

	out, err := runCLI(t, "convert", host+"/win/cli:v1", "--json", "--builder=portable", cache)
	if err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	var res struct {
		Images []struct {
			Subject  string `json:"subject"`
			Artifact string `json:"artifact"`
			Existing bool   `json:"existing"`
			Layers   []struct {
				ChainID string `json:"chainID"`
				Built   bool   `json:"built"`
			} `json:"layers"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("convert --json is not JSON only: %v\n%s", err, out)
	}
	if len(res.Images) != 1 || len(res.Images[0].Layers) != 2 || !res.Images[0].Layers[1].Built || res.Images[0].Artifact == "" {
		t.Fatalf("convert result %+v", res)
	}

	out, err = runCLI(t, "fetch", host+"/win/cli:v1", "--dest", t.TempDir(), "--json", "--trust-unsigned")
	if err != nil || !strings.Contains(out, res.Images[0].Artifact) {
		t.Fatalf("fetch: %v\n%s", err, out)
	}

	// backfill: v1 exists, v2 is converted (its base reused), linux skipped.
	out, err = runCLI(t, "backfill", host+"/win/cli", "--json", "--builder=portable", cache)
	if err != nil {
		t.Fatalf("backfill: %v\n%s", err, out)
	}
	status := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var line struct{ Tag, Status string }
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("backfill line %q: %v", sc.Text(), err)
		}
		status[line.Tag] = line.Status
	}
	want := map[string]string{"v1": "existing", "v2": "converted", "linux": "skipped"}
	for tag, s := range want {
		if status[tag] != s {
			t.Errorf("backfill %s: %q, want %q (all: %v)", tag, status[tag], s, status)
		}
	}
	// --tags filters.
	out, err = runCLI(t, "backfill", host+"/win/cli", "--json", "--tags=v*", "--builder=portable", cache)
	if err != nil || strings.Contains(out, `"linux"`) {
		t.Fatalf("backfill --tags=v*: %v\n%s", err, out)
	}

	// A failure is one line and a non-zero exit.
	_, err = runCLI(t, "convert", host+"/win/cli:linux", "--builder=portable", cache)
	if err == nil || exitCode(err) == 0 || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "not a Windows image") {
		t.Fatalf("convert linux image: %v", err)
	}
}
