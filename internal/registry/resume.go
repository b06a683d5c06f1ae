package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// resumingBody continues a blob download after the connection breaks
// mid-stream: it asks for the rest with a Range request (or, when the server
// ignores Range, re-reads and discards what was already delivered). Layers
// of Windows base images are gigabytes; restarting them from zero on every
// reset would rarely finish on a flaky link.
type resumingBody struct {
	ctx     context.Context
	body    io.ReadCloser
	n       int64 // bytes delivered so far
	size    int64 // expected total, <= 0 when unknown
	resumes int
	max     int // resumes allowed
	// get GETs the blob again with the given Range header ("" for all of it).
	get   func(ctx context.Context, rangeHeader string) (*http.Response, error)
	sleep func(ctx context.Context, attempt int) error
}

func (r *resumingBody) Read(p []byte) (int, error) {
	for {
		n, err := r.body.Read(p)
		r.n += int64(n)
		if err == nil || errors.Is(err, io.EOF) || n > 0 {
			if err != nil && !errors.Is(err, io.EOF) && n > 0 {
				// Deliver the bytes now; the error recurs on the next Read.
				return n, nil
			}
			return n, err
		}
		if r.resumes >= r.max || r.ctx.Err() != nil || !classifyTransient(err) {
			return 0, err
		}
		r.resumes++
		if serr := r.sleep(r.ctx, r.resumes); serr != nil {
			return 0, err
		}
		if rerr := r.reopen(); rerr != nil {
			return 0, fmt.Errorf("%w (resuming at byte %d: %w)", err, r.n, rerr)
		}
	}
}

func (r *resumingBody) reopen() error {
	r.body.Close()
	// A closed range where the size is known: some registries (ggcr's
	// pkg/registry) only understand "bytes=START-END".
	rng := fmt.Sprintf("bytes=%d-", r.n)
	if r.size > r.n {
		rng = fmt.Sprintf("bytes=%d-%d", r.n, r.size-1)
	}
	resp, err := r.get(r.ctx, rng)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable {
		resp.Body.Close()
		if resp, err = r.get(r.ctx, ""); err != nil {
			return err
		}
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		if start, ok := contentRangeStart(resp.Header.Get("Content-Range")); !ok || start != r.n {
			resp.Body.Close()
			return fmt.Errorf("server resumed at %q, want byte %d", resp.Header.Get("Content-Range"), r.n)
		}
	case http.StatusOK:
		if _, err := io.CopyN(io.Discard, resp.Body, r.n); err != nil {
			resp.Body.Close()
			return err
		}
	default:
		resp.Body.Close()
		return &statusError{url: redactURL(resp.Request.URL), code: resp.StatusCode}
	}
	r.body = resp.Body
	return nil
}

func (r *resumingBody) Close() error { return r.body.Close() }

// contentRangeStart parses "bytes START-END/SIZE".
func contentRangeStart(v string) (int64, bool) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, false
	}
	startStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(startStr, 10, 64)
	return n, err == nil && n >= 0
}
