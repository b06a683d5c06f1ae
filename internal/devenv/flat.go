package devenv

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io"
	"time"
)

// FlatLayer streams an uncompressed Windows-style layer with files small
// files in one directory (Files/flat), for the many-entries-in-one-directory
// benchmark. Names are deliberately not in sorted order.
func FlatLayer(w io.Writer, files int) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	mt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mt, Format: tar.FormatPAX,
			PAXRecords: map[string]string{"MSWINDOWS.fileattr": "16"}})
	}
	if err := dir("Files"); err != nil {
		return err
	}
	if err := dir("Files/flat"); err != nil {
		return err
	}
	for i := 0; i < files; i++ {
		// A multiplicative permutation spreads names so input order is not sorted.
		n := (uint64(i)*2654435761 + 12345) % 1_000_000_007
		content := fmt.Sprintf("file %d\r\n", i)
		h := &tar.Header{Name: fmt.Sprintf("Files/flat/f%010d-%d.txt", n, i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content)),
			ModTime: mt, Format: tar.FormatPAX, PAXRecords: map[string]string{"MSWINDOWS.fileattr": "32"}}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := io.WriteString(tw, content); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}
