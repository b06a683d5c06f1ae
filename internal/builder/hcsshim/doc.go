// Package hcsshim is the production builder for Windows worker nodes: it
// imports layers with CimFS through github.com/Microsoft/hcsshim. The real
// implementation is in _windows.go files; on other systems New returns an
// error saying the builder needs Windows.
package hcsshim
