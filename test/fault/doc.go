// Package fault is cimconv's end-to-end fault suite (issue 9): the real
// converter binary and real nats-server binaries run as separate processes,
// against a bandwidth-throttled registry on 127.0.0.1 served by the test
// process, and the suite kills them with SIGKILL while conversions run.
//
// It holds tests only, behind the build tag "fault" (it takes minutes, too
// slow for `go test ./...`):
//
//	go test -tags fault -v -count=1 ./test/fault/
//
// TestMain builds ./cmd/converter (with -race unless FAULT_RACE=0) and the
// nats-server of go.mod's version (FAULT_CONVERTER=PATH uses a converter
// built elsewhere instead, e.g. from an older commit) from the module cache; the oldest
// supported server, Debian's nats-server 2.9, is taken from PATH or
// /usr/sbin (FAULT_NATS_OLD overrides). Without CI set, a missing tool
// skips the tests that need it; with CI set it fails them.
//
// Every scenario prints one summary line starting with "FAULT-SUMMARY" to
// stdout and the test log; .ci/run runs the suite and keeps those lines.
// Process logs stay in the test's temporary directory, or under FAULT_LOGS
// when that is set (kept after the run).
package fault
