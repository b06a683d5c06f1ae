package testport

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
)

// The range ports are picked from: [low, ephemeralLow()). The kernel hands
// out ports from ip_local_port_range (Linux's default 32768-60999; macOS's
// and Windows' 49152-65535), never below it.
const (
	low          = 20000
	defaultUpper = 32768
)

// Port returns a loopback TCP port reserved for tb until it ends.
func Port(tb testing.TB) int {
	tb.Helper()
	p, release, err := reserve()
	if err != nil {
		tb.Fatalf("testport: %v", err)
	}
	tb.Cleanup(release)
	return p
}

// Addr is Port as "127.0.0.1:port".
func Addr(tb testing.TB) string {
	tb.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(Port(tb)))
}

// upper is the first port of the kernel's ephemeral range, read from Linux's
// /proc where there is one.
func upper() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultUpper
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return defaultUpper
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n > defaultUpper {
		return defaultUpper
	}
	return n
}

// bindable reports whether 127.0.0.1:port can be listened on now.
func bindable(port int) bool {
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// ephemeral is the fallback: a port the kernel picked, free a moment ago.
func ephemeral() (int, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, fmt.Errorf("listen on a loopback port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, func() {}, nil
}
