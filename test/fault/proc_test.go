//go:build fault && linux

package fault

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is one child process (a worker, a webhook receiver, a nats-server)
// that the test starts, kills with SIGKILL and restarts. All its runs append
// to one log file. An exit the test did not cause is recorded as a crash.
type proc struct {
	t       *testing.T
	name    string
	bin     string
	args    []string
	logPath string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	expected bool // the test killed or stopped it
	runs     int
	crashes  []string
}

func logDir(t *testing.T) string {
	if d := os.Getenv("FAULT_LOGS"); d != "" {
		dir := filepath.Join(d, strings.ReplaceAll(t.Name(), "/", "_"))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	return t.TempDir()
}

func newProc(t *testing.T, logs, name, bin string, args ...string) *proc {
	p := &proc{t: t, name: name, bin: bin, args: args, logPath: filepath.Join(logs, name+".log")}
	t.Cleanup(p.stop)
	return p
}

// start runs the process (again).
func (p *proc) start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		p.t.Fatalf("%s: started twice", p.name)
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	p.runs++
	fmt.Fprintf(f, "=== fault: run %d of %s at %s: %s %s\n", p.runs, p.name, time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// The child dies with the test binary, even when the test is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		p.t.Fatalf("%s: %v", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.expected = cmd, done, false
	go func() {
		err := cmd.Wait()
		f.Close()
		p.mu.Lock()
		if !p.expected {
			p.crashes = append(p.crashes, fmt.Sprintf("%s (run %d) exited on its own: %v", p.name, p.runs, err))
		}
		p.mu.Unlock()
		close(done)
	}()
}

// kill9 sends SIGKILL and waits for the process to be gone.
func (p *proc) kill9() {
	p.signal(syscall.SIGKILL, 0)
}

// stop asks for a graceful stop (SIGTERM), SIGKILL after 10 s.
func (p *proc) stop() {
	p.signal(syscall.SIGTERM, 10*time.Second)
}

func (p *proc) signal(sig syscall.Signal, grace time.Duration) {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd == nil {
		p.mu.Unlock()
		return
	}
	p.expected = true
	p.cmd = nil
	p.mu.Unlock()
	_ = cmd.Process.Signal(sig)
	if grace > 0 {
		select {
		case <-done:
			return
		case <-time.After(grace):
			_ = cmd.Process.Kill()
		}
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		p.t.Errorf("%s: still running 30 s after %v", p.name, sig)
	}
}

func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// check fails the test for exits the test did not cause and for crash
// markers in the log: a Go panic, a fatal runtime error, a race report.
func (p *proc) check() {
	p.t.Helper()
	p.mu.Lock()
	crashes := append([]string(nil), p.crashes...)
	p.mu.Unlock()
	for _, c := range crashes {
		p.t.Errorf("%s\n%s", c, p.tail(40))
	}
	for _, l := range p.grep("panic:", "DATA RACE", "fatal error:") {
		p.t.Errorf("%s log: %s", p.name, l)
	}
}

// grep returns the log lines containing any of the markers.
func (p *proc) grep(markers ...string) []string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		for _, m := range markers {
			if strings.Contains(sc.Text(), m) {
				out = append(out, sc.Text())
				break
			}
		}
	}
	return out
}

func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitFor polls cond every 100 ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitHTTP waits for url to answer 200.
func waitHTTP(url string, d time.Duration) bool {
	c := &http.Client{Timeout: 2 * time.Second}
	return waitFor(d, func() bool {
		resp, err := c.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}
