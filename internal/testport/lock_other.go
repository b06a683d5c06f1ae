//go:build !unix

package testport

// reserve has no cross-process lock here: the kernel's pick, as before.
func reserve() (int, func(), error) { return ephemeral() }
