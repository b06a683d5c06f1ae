// Package containerdtest runs a real containerd daemon for tests (its own
// root, state and socket in a temporary directory, proxy snapshotters in its
// config) and pulls images with containerd's own unpacker, the way
// containerd's client and CRI do, with the remote-snapshotter label handler
// and an applier chosen by the test (containerd's Windows cimfs differ cannot
// run on Linux).
package containerdtest
