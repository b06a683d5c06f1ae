// Package winvalidate checks a CIM against the real CimFS driver on
// Windows: it mounts the CIM read-only through hcsshim's pkg/cimfs, walks the
// mounted volume with backup semantics (BackupRead gives the security
// descriptor, EAs, reparse data and alternate streams in the same encodings
// a Windows layer tar carries) and produces the volume's fsview, to be
// compared with the layers' expected view.
//
// The walk that turns backup streams into fsview entries is platform-neutral
// and tested on Linux with a fake volume; mounting and reading a volume are
// in _windows.go files and return ErrNeedsWindows elsewhere.
//
// It reads CIMs and volumes only; it never writes CIMs and knows nothing of
// registries or queues.
package winvalidate
