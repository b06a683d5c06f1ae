package queuetest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/cimconv/cimconv/internal/testport"
)

// Server is a NATS server with JetStream for one test: embedded in the test
// process or a separate process. Stop and Start keep its port and store, so
// a test can restart it; it is stopped when the test ends.
type Server struct {
	// URL is the nats:// URL clients connect to.
	URL string
	// Dir is the JetStream store directory.
	Dir string
	// Port is the client port (fixed across restarts).
	Port int
	// Version is the server's version (e.g. "2.9.10").
	Version string

	tb  testing.TB
	bin string // external: the nats-server binary; "" for embedded
	emb *server.Server
	// cluster members (embedded only): name, route port, the peers' routes
	name        string
	clusterPort int
	routes      []*url.URL
	cmd         *exec.Cmd
	out         *os.File
}

// Embedded starts an in-process nats-server with JetStream on a free
// loopback port and a fresh store.
func Embedded(tb testing.TB) *Server {
	tb.Helper()
	s := &Server{tb: tb, Dir: tb.TempDir(), Port: testport.Port(tb), Version: server.VERSION}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// Cluster starts n in-process servers routed into one JetStream cluster
// (n >= 3 for replicated streams), each with its own client port and store,
// and waits until JetStream answers on all of them. Stop and Start on a
// member restart it in place; all stop when the test ends.
//
// JetStream answers on every member before the meta leader has seen every
// peer, so creating a replicated stream right away can fail with "no
// suitable peers for placement": callers retry their (idempotent)
// provisioning.
func Cluster(tb testing.TB, n int) []*Server {
	tb.Helper()
	members := make([]*Server, n)
	var routes []*url.URL
	for i := range members {
		members[i] = &Server{tb: tb, Dir: tb.TempDir(), Port: testport.Port(tb), Version: server.VERSION,
			name: "queuetest-" + strconv.Itoa(i), clusterPort: testport.Port(tb)}
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: "127.0.0.1:" + strconv.Itoa(members[i].clusterPort)})
	}
	done := make(chan struct{}, n)
	for _, m := range members {
		m.routes = routes
		tb.Cleanup(m.Stop)
		// JetStream answers only once the cluster has a meta leader, so
		// the members start together.
		go func() { defer func() { done <- struct{}{} }(); m.Start() }()
	}
	for range members {
		<-done
	}
	return members
}

// Name is the server's name (cluster members: queuetest-<i>).
func (s *Server) Name() string {
	if s.name == "" {
		return "queuetest"
	}
	return s.name
}

// External starts bin (a nats-server binary) as a separate process with
// JetStream on a free loopback port and a fresh store. Its output goes to a
// file in the test's temp dir, named in failures.
func External(tb testing.TB, bin string) *Server {
	tb.Helper()
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		tb.Fatalf("%s --version: %v: %s", bin, err, out)
	}
	v := regexp.MustCompile(`v?(\d+\.\d+\.\d+)`).FindStringSubmatch(string(out))
	if v == nil {
		tb.Fatalf("%s --version: no version in %q", bin, out)
	}
	s := &Server{tb: tb, bin: bin, Dir: tb.TempDir(), Port: testport.Port(tb), Version: v[1]}
	s.Start()
	tb.Cleanup(s.Stop)
	return s
}

// System starts the nats-server found on PATH (Debian's package: 2.9) as a
// separate process. Without one the test is skipped, or fails when CI is set
// (.ci/run installs it).
func System(tb testing.TB) *Server {
	tb.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatal("nats-server is not on PATH; .ci/run installs it (apt-get install -y nats-server)")
		}
		tb.Skip("nats-server is not on PATH (apt-get install -y nats-server); skipping the test against a separate server process")
	}
	return External(tb, bin)
}

// Start (re)starts the server on its port and store and waits until
// JetStream answers.
func (s *Server) Start() {
	s.tb.Helper()
	s.URL = "nats://127.0.0.1:" + strconv.Itoa(s.Port)
	if s.bin == "" {
		opts := &server.Options{
			ServerName: "queuetest", Host: "127.0.0.1", Port: s.Port,
			JetStream: true, StoreDir: s.Dir, NoSigs: true, NoLog: true,
		}
		if s.clusterPort != 0 {
			opts.ServerName = s.name
			opts.Cluster = server.ClusterOpts{Name: "queuetest", Host: "127.0.0.1", Port: s.clusterPort}
			opts.Routes = s.routes
		}
		srv, err := server.NewServer(opts)
		if err != nil {
			s.tb.Fatal(err)
		}
		go srv.Start()
		if !srv.ReadyForConnections(10 * time.Second) {
			srv.Shutdown()
			s.tb.Fatalf("embedded nats-server not ready on port %d", s.Port)
		}
		s.emb = srv
	} else {
		logPath := filepath.Join(s.tb.TempDir(), "nats-server.log")
		f, err := os.Create(logPath)
		if err != nil {
			s.tb.Fatal(err)
		}
		cmd := exec.Command(s.bin, "-js", "-sd", s.Dir, "-a", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-n", "queuetest")
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			f.Close()
			s.tb.Fatalf("start %s: %v", s.bin, err)
		}
		s.cmd, s.out = cmd, f
	}
	limit := 15 * time.Second
	if s.clusterPort != 0 {
		limit = 60 * time.Second // a restarted member catches up with the cluster first
	}
	if err := s.waitJetStream(limit); err != nil {
		s.Stop()
		s.tb.Fatalf("nats-server %s on %s: %v (log: %s)", s.Version, s.URL, err, s.logPath())
	}
}

func (s *Server) logPath() string {
	if s.out == nil {
		return "in process"
	}
	return s.out.Name()
}

func (s *Server) waitJetStream(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		nc, err := nats.Connect(s.URL, nats.Timeout(time.Second))
		if err == nil {
			_, err = nc.Request("$JS.API.INFO", nil, time.Second)
			nc.Close()
			if err == nil {
				return nil
			}
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("JetStream not ready within %v: %w", limit, last)
}

// Stop shuts the server down gracefully and waits for it; the store stays.
func (s *Server) Stop() {
	if s.emb != nil {
		s.emb.Shutdown()
		s.emb.WaitForShutdown()
		s.emb = nil
	}
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		s.wait()
	}
}

// Kill ends a separate server process with SIGKILL (an embedded server is
// shut down: it cannot be killed without killing the test).
func (s *Server) Kill() {
	if s.cmd == nil {
		s.Stop()
		return
	}
	_ = s.cmd.Process.Kill()
	s.wait()
}

func (s *Server) wait() {
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
	s.cmd = nil
	if s.out != nil {
		s.out.Close()
		s.out = nil
	}
}

// AtLeast reports whether the server's version is at least want
// ("major.minor.patch").
func (s *Server) AtLeast(want string) bool { return !versionLess(s.Version, want) }

func versionLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := range 3 {
		var x, y int
		if i < len(pa) {
			x, _ = strconv.Atoi(pa[i])
		}
		if i < len(pb) {
			y, _ = strconv.Atoi(pb[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// Connect dials url with fast reconnects (a restarted server is found
// within 50ms) and closes the connection when the test ends.
func Connect(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Context is a context for one test, cancelled after d or when it ends.
func Context(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// ErrTimeout is what WaitFor reports when cond never held.
var ErrTimeout = errors.New("timed out")

// WaitFor polls cond every 20ms until it holds, failing the test after 60s
// (a bound for a stuck test, not a performance assertion).
func WaitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%v waiting for %s", ErrTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
