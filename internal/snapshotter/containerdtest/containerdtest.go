//go:build linux

package containerdtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
)

// Binary finds the containerd binary: $CIMCONV_CONTAINERD, or containerd on
// PATH (.ci/run installs 2.x built from the Go module proxy). Without one the
// test is skipped, or fails under CI.
func Binary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("CIMCONV_CONTAINERD"); p != "" {
		return p
	}
	p, err := exec.LookPath("containerd")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("containerd not installed (.ci/run installs it): %v", err)
		}
		t.Skipf("containerd not installed (go install github.com/containerd/containerd/v2/cmd/containerd@v2.4.2, or apt-get install containerd): %v", err)
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("containerd needs root")
		}
		t.Skip("containerd needs root")
	}
	return p
}

// Daemon is a running containerd.
type Daemon struct {
	t       testing.TB
	bin     string
	dir     string
	Address string
	cmd     *exec.Cmd
	done    chan error
	Client  *containerd.Client
}

// Start starts containerd in dir with the given proxy snapshotters (name ->
// socket path) and connects a client. It is stopped when the test ends.
func Start(t testing.TB, dir string, proxies map[string]string) *Daemon {
	t.Helper()
	d := &Daemon{t: t, bin: Binary(t), dir: dir, Address: filepath.Join(dir, "containerd.sock")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version = 2\nroot = %q\nstate = %q\n", filepath.Join(dir, "root"), filepath.Join(dir, "state"))
	// CRI needs CNI and more; this daemon only stores content and snapshots.
	b.WriteString(`disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.podsandbox.controller.v1.podsandbox"]` + "\n")
	fmt.Fprintf(&b, "[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n", d.Address, d.Address+".ttrpc")
	b.WriteString("[proxy_plugins]\n")
	for name, addr := range proxies {
		fmt.Fprintf(&b, "  [proxy_plugins.%s]\n    type = \"snapshot\"\n    address = %q\n", name, addr)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	d.start()
	t.Cleanup(d.Stop)
	return d
}

func (d *Daemon) start() {
	d.t.Helper()
	logf, err := os.OpenFile(filepath.Join(d.dir, "containerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		d.t.Fatal(err)
	}
	d.cmd = exec.Command(d.bin, "--config", filepath.Join(d.dir, "config.toml"))
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("starting containerd: %v", err)
	}
	d.done = make(chan error, 1)
	go func() { d.done <- d.cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if c, err := containerd.New(d.Address, containerd.WithTimeout(2*time.Second)); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			ok, _ := c.IsServing(ctx)
			cancel()
			if ok {
				d.Client = c
				return
			}
			c.Close()
		}
		select {
		case err := <-d.done:
			d.t.Fatalf("containerd exited: %v\n%s", err, d.Log())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("containerd did not serve %s within 60s\n%s", d.Address, d.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Log returns the daemon's log (its last 8 KiB).
func (d *Daemon) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "containerd.log"))
	if len(b) > 8<<10 {
		b = b[len(b)-8<<10:]
	}
	return string(b)
}

// Stop stops containerd (SIGTERM, then SIGKILL after 20s).
func (d *Daemon) Stop() {
	if d.cmd == nil {
		return
	}
	if d.Client != nil {
		d.Client.Close()
		d.Client = nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	d.cmd = nil
}

// Restart stops and starts containerd with the same config and state.
func (d *Daemon) Restart() {
	d.t.Helper()
	d.Stop()
	d.start()
}
