// Package snapshotter is the node side of cimconv inside containerd: a proxy
// snapshotter (containerd's snapshots gRPC API) that behaves like containerd's
// own cimfs snapshotter and adds a fast path. When containerd prepares the
// extraction snapshot of a layer whose labels name the image (the
// containerd.io/snapshot/cri.* labels set by the handler wrapper containerd
// uses for remote snapshotters), the fast path finds the image's cimconv
// artifact, verifies it (trust.Verifier, every digest, and the binding of the
// artifact to this manifest, layer, diffID and chainID), places the layer's
// pre-built CIM files exactly where containerd's cimfs differ would have
// written them, commits the snapshot under its chainID and answers
// AlreadyExists, so containerd skips fetching and importing the layer.
// Anything that goes wrong falls through to containerd's normal path with the
// reason logged and counted.
//
// On Windows the inner snapshotter is containerd's own cimfs snapshotter; on
// other systems a stand-in with the same on-disk layout and mount shape serves
// the tests (it does not create scratch VHDs).
package snapshotter
