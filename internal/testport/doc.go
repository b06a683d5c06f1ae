// Package testport hands tests loopback TCP ports that stay theirs for the
// whole test, including while the server on one is stopped for a restart.
//
// The usual trick, listening on port 0 and closing the listener, returns a
// port from the kernel's ephemeral range that anything may take again at
// once: the next test's port-0 listener, another package's test binary
// running beside it (go test runs packages in parallel), or the source port
// of any outgoing connection. A test that stops a NATS server and starts it
// again on the same port then finds the port taken, or worse, its clients
// reconnect to another test's server.
//
// Port picks from below the ephemeral range (which the kernel never hands
// out by itself), checks the port can be bound, and holds an exclusive lock
// file on it (flock, so a killed test process releases it) until the test
// ends; every test process using this package skips ports another one
// holds. Where flock is not available it falls back to port 0.
//
// It imports no other cimconv package and is for tests only.
package testport
