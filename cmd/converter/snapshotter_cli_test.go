//go:build linux

package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	snproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"github.com/containerd/errdefs"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cimconv/cimconv/internal/registry/registrytest"
	"github.com/cimconv/cimconv/internal/snapshotter"
	"github.com/cimconv/cimconv/internal/testport"
	"github.com/cimconv/cimconv/internal/trust/trusttest"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// TestSnapshotterCommand runs `converter snapshotter` and talks to it as
// containerd does (its snapshots proxy client over the socket): a layer of
// an image without an artifact falls through with the reason on /metrics; a
// layer warmed by `converter fetch --root` is committed from the cache and
// answered with AlreadyExists.
func TestSnapshotterCommand(t *testing.T) {
	host := registrytest.NewReferrersRegistry(t)
	pushChain(t, host+"/win/sn:v1", 2)
	keyDir := t.TempDir()
	worker := trusttest.NewKey(t, keyDir, "worker")
	other := trusttest.NewKey(t, keyDir, "other")
	if out, err := runCLI(t, "convert", host+"/win/sn:v1", "--builder=portable", "--cache-dir="+t.TempDir(), "--signing-key", worker.PrivPath); err != nil {
		t.Fatalf("convert --signing-key: %v\n%s", err, out)
	}
	// converter verify: trusted with the worker's key, refused with another.
	out, err := runCLI(t, "verify", host+"/win/sn:v1", "--trusted-key", worker.PubPath, "--json")
	var rep struct {
		Trusted bool `json:"trusted"`
		Found   struct {
			Trust struct {
				KeyID string `json:"keyID"`
			} `json:"trust"`
		} `json:"found"`
	}
	if err != nil || json.Unmarshal([]byte(out), &rep) != nil || !rep.Trusted || rep.Found.Trust.KeyID == "" {
		t.Fatalf("verify with the signing key's public half: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "verify", host+"/win/sn:v1", "--trusted-key", other.PubPath, "--json"); err == nil || !strings.Contains(out, `"trusted":false`) {
		t.Fatalf("verify with another key: %v\n%s", err, out)
	}
	dir, err := os.MkdirTemp("", "cimconv-cli-") // unix socket paths are short
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	root, sock, metricsAddr := filepath.Join(dir, "root"), filepath.Join(dir, "sn.sock"), testport.Addr(t)
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte("timeout: 30s\nregistries:\n  "+host+":\n    insecure: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Warm the cache before the snapshotter starts: only with a trust
	// policy, and only with the key that signed.
	out, err = runCLI(t, "fetch", host+"/win/sn:v1", "--root", root, "--json")
	if err == nil || !strings.Contains(err.Error(), "trust") {
		t.Fatalf("fetch --root without a trust policy: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "fetch", host+"/win/sn:v1", "--root", root, "--trusted-key", other.PubPath, "--json"); err == nil {
		t.Fatalf("fetch --root trusting another key: %v\n%s", err, out)
	}
	out, err = runCLI(t, "fetch", host+"/win/sn:v1", "--root", root, "--trusted-key", worker.PubPath, "--json")
	if err != nil {
		t.Fatalf("fetch --root: %v\n%s", err, out)
	}
	var warm snapshotter.WarmResult
	if err := json.Unmarshal([]byte(out), &warm); err != nil || len(warm.Cached) != 2 {
		t.Fatalf("fetch --root result %q: %v", out, err)
	}

	if out, err := runCLI(t, "snapshotter", "--root", root, "--address", sock, "--trusted-key", worker.PubPath, "--trust-unsigned"); err == nil || !strings.Contains(err.Error(), "exclude") {
		t.Fatalf("snapshotter with --trusted-key and --trust-unsigned: %v\n%s", err, out)
	}
	if out, err := runCLI(t, "snapshotter", "--root", root, "--address", sock, "--trusted-key", filepath.Join(keyDir, "missing.pub")); err == nil || !strings.Contains(err.Error(), "missing.pub") {
		t.Fatalf("snapshotter with a missing key file: %v\n%s", err, out)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		cmd := newRootCmd()
		cmd.SetArgs([]string{"snapshotter", "--root", root, "--address", sock, "--listen", metricsAddr, "--config", cfg, "--trusted-key", worker.PubPath, "--log-level=error"})
		done <- cmd.ExecuteContext(ctx)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("snapshotter: %v", err)
		}
	}()
	metrics := func() string {
		resp, err := http.Get("http://" + metricsAddr + "/metrics")
		if err != nil {
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	waitUntil(t, "snapshotter metrics", func() bool { return strings.Contains(metrics(), "go_goroutines") })
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sn := snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "cimconv")

	// An image with no artifact: the normal path's extraction snapshot.
	plain := fixture.NewLayer().File("Files/plain.txt", []byte("plain")).Bytes(fixture.Gzip)
	desc := registrytest.PushImage(t, host+"/win/plain:v1", [][]byte{plain}, ltsc2022)
	zr, err := gzip.NewReader(bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	diffID, _, _ := v1.SHA256(zr)
	pd, _, _ := v1.SHA256(strings.NewReader(string(plain)))
	ms, err := sn.Prepare(ctx, "extract-1 "+diffID.String(), "", snapshots.WithLabels(map[string]string{
		snapshotter.LabelSnapshotRef: diffID.String(), snapshotter.LabelImageRef: host + "/win/plain:v1",
		snapshotter.LabelManifestDigest: desc.Digest.String(), snapshotter.LabelLayerDigest: pd.String(),
	}))
	if err != nil || len(ms) != 1 || ms[0].Type != snapshotter.CimFSMountType {
		t.Fatalf("prepare without an artifact = %+v, %v; want the normal path's CimFS mount", ms, err)
	}
	if m := metrics(); !strings.Contains(m, `cimconv_snapshotter_fallthrough_total{reason="no-artifact"} 1`) {
		t.Fatalf("metrics lack the no-artifact fall-through:\n%s", grepLines(m, "cimconv_"))
	}

	// The warmed image: no cri labels needed, no registry.
	c0 := warm.Cached[0]
	_, err = sn.Prepare(ctx, "extract-2 "+c0, "", snapshots.WithLabels(map[string]string{snapshotter.LabelSnapshotRef: c0}))
	if !errdefs.IsAlreadyExists(err) {
		t.Fatalf("prepare of a cached layer = %v, want AlreadyExists", err)
	}
	info, err := sn.Stat(ctx, c0)
	if err != nil || info.Labels[snapshotter.LabelRegionSet] == "" {
		t.Fatalf("cached layer snapshot %+v, %v", info, err)
	}
	// Its child forks from the placed base: parent provenance holds.
	c1 := warm.Cached[1]
	if _, err = sn.Prepare(ctx, "extract-3 "+c1, c0, snapshots.WithLabels(map[string]string{snapshotter.LabelSnapshotRef: c1})); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("prepare of the cached child = %v, want AlreadyExists", err)
	}
	if m := metrics(); !strings.Contains(m, `cimconv_snapshotter_fastpath_total{source="cache"} 2`) {
		t.Fatalf("metrics lack the cache hit:\n%s", grepLines(m, "cimconv_"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
