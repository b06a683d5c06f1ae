package builder

import (
	"context"
	"io"
	"os"
)

// ContextReader returns a reader that fails once ctx is done, so a long or
// stalled layer stream stops at the next read instead of at the next entry.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// LinkOrCopy hard-links src to dst, copying when links are not possible
// (another volume, or a filesystem without hard links). dst must not exist;
// a failed copy leaves no dst behind. Builders use it to carry a parent's
// side files (Hives/*_BASE, layout) into a child's side directory.
func LinkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(dst)
		return err
	}
	return out.Close()
}
