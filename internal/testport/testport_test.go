//go:build unix

package testport

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// locked reports whether another open file holds port's lock.
func locked(t *testing.T, port int) bool {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "cimconv-testports", strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		return false
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatal(err)
	}
	return true
}

func TestPortsAreBelowTheEphemeralRangeAndDistinct(t *testing.T) {
	seen := map[int]bool{}
	for range 200 {
		p := Port(t)
		if p < low || p >= upper() {
			t.Fatalf("port %d outside [%d, %d)", p, low, upper())
		}
		if seen[p] {
			t.Fatalf("port %d handed out twice while held", p)
		}
		seen[p] = true
		if !locked(t, p) {
			t.Fatalf("port %d is not locked while the test holds it", p)
		}
	}
	ln, err := net.Listen("tcp", Addr(t))
	if err != nil {
		t.Fatalf("Addr is not bindable: %v", err)
	}
	ln.Close()
}

func TestPortIsReleasedWhenTheTestEnds(t *testing.T) {
	var p int
	t.Run("holder", func(t *testing.T) { p = Port(t) })
	if locked(t, p) {
		t.Fatalf("port %d still locked after its test ended", p)
	}
}

// A port busy outside these tests (a listener that took no lock) is skipped.
// On a slice of the range, so tests running beside this one still find ports.
func TestBusyPortIsSkipped(t *testing.T) {
	lo, hi := upper()-40, upper()
	var busy []net.Listener
	defer func() {
		for _, ln := range busy {
			ln.Close()
		}
	}()
	for p := lo; p < hi; p++ {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err == nil {
			busy = append(busy, ln)
		}
	}
	if len(busy) == 0 {
		t.Skipf("every port of %d-%d is held by other tests", lo, hi-1)
	}
	// Every port of the range is busy or held by someone else: none is left.
	if _, _, err := reserveIn(lo, hi); err == nil {
		t.Fatal("reserve handed out a port while every port of the range was busy")
	}
	busy[0].Close()
	free := busy[0].Addr().(*net.TCPAddr).Port
	busy = busy[1:]
	p, release, err := reserveIn(lo, hi)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if p != free {
		t.Fatalf("reserveIn = %d, want %d, the only port freed", p, free)
	}
}

// Another test process holds its ports until it exits, even by SIGKILL.
func TestLockHeldAcrossProcessesUntilKill(t *testing.T) {
	if os.Getenv("TESTPORT_CHILD") != "" {
		os.Stdout.WriteString(strconv.Itoa(Port(t)) + "\n")
		select {} // held until killed
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHeldAcrossProcessesUntilKill$")
	cmd.Env = append(os.Environ(), "TESTPORT_CHILD=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("child: %v", err)
	}
	p, err := strconv.Atoi(line[:len(line)-1])
	if err != nil {
		cmd.Process.Kill()
		t.Fatalf("child printed %q", line)
	}
	if !locked(t, p) {
		cmd.Process.Kill()
		t.Fatalf("port %d held by the child process is not locked", p)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if locked(t, p) {
		t.Fatalf("port %d still locked after the child was killed", p)
	}
}
