// Package exe names executables the way the target operating system finds
// them. On Windows, os/exec resolves a bare name only with one of the PATHEXT
// extensions, so a test that builds a binary to ".../converter" and runs it
// works on Linux and fails on Windows; building to exe.Path(dir, "converter")
// gives ".../converter.exe" there.
//
// It is used by tests and tools that build or run binaries; it imports no
// other cimconv package.
package exe
