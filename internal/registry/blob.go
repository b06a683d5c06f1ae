package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// OpenLayer streams layer l of t as stored (compressed bytes, no temp file).
// The digest and size are checked as the stream is read: Read returns an
// error wrapping ErrDigestMismatch at EOF (or as soon as more than Size
// bytes arrive), and Close returns it again. Foreign layers are fetched from
// their urls only when the URL's host is allowlisted; otherwise
// ErrForeignLayerRefused names the URLs.
func (c *Client) OpenLayer(ctx context.Context, t Target, l Layer) (io.ReadCloser, error) {
	ref := t.Ref.Context().Digest(l.Digest.String()).String()
	if l.Digest.Algorithm != "sha256" {
		return nil, &Error{Op: "open layer", Ref: ref, Err: fmt.Errorf("unsupported digest algorithm %q", l.Digest.Algorithm)}
	}
	if !l.Foreign {
		rc, err := c.FetchBlob(ctx, t.Ref.Context(), v1.Descriptor{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType})
		if err != nil {
			return nil, wrapErr("open layer", ref, err)
		}
		return rc, nil
	}
	var allowed []string
	for _, u := range l.URLs {
		if c.foreignURLAllowed(u) {
			allowed = append(allowed, u)
		}
	}
	if len(allowed) == 0 {
		return nil, &Error{Op: "open layer", Ref: ref, Err: fmt.Errorf("%w: %s (allowed hosts: %s)", ErrForeignLayerRefused, listOrNone(l.URLs), strings.Join(c.foreignHosts, ", "))}
	}
	var errs []error
	for _, u := range allowed {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp, err := c.plainClient.Do(req)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			errs = append(errs, &statusError{url: redactURL(req.URL), code: resp.StatusCode})
			continue
		}
		return c.verifying(c.resuming(ctx, resp.Body, l.Size, c.plainClient, u), l.Digest, l.Size, u), nil
	}
	return nil, wrapErr("open layer", ref, errors.Join(errs...))
}

// foreignURLAllowed: https (or plain http where this client allows it, e.g.
// loopback in tests) to a host on the allowlist; "*.x" matches subdomains of x.
func (c *Client) foreignURLAllowed(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return false
	}
	if u.Scheme != "https" && (u.Scheme != "http" || !c.plainHTTPAllowed(u.Host)) {
		return false
	}
	host := strings.ToLower(u.Hostname())
	for _, h := range c.foreignHosts {
		h = strings.ToLower(h)
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == h || strings.EqualFold(u.Host, h) {
			return true
		}
	}
	return false
}

// FetchBlob streams a blob from repo, verifying d's digest and size at EOF
// (see OpenLayer). A d.Size of 0 or less skips the size check.
func (c *Client) FetchBlob(ctx context.Context, repo name.Repository, d v1.Descriptor) (io.ReadCloser, error) {
	ref := repo.Digest(d.Digest.String()).String()
	if d.Digest.Algorithm != "sha256" {
		return nil, &Error{Op: "fetch blob", Ref: ref, Err: fmt.Errorf("unsupported digest algorithm %q", d.Digest.Algorithm)}
	}
	hc, err := c.httpClient(ctx, repo, transport.PullScope)
	if err != nil {
		return nil, wrapErr("fetch blob", ref, err)
	}
	rc, err := c.getBlob(ctx, hc, repo, d)
	if err != nil {
		return nil, wrapErr("fetch blob", ref, err)
	}
	return rc, nil
}

func (c *Client) getBlob(ctx context.Context, hc *http.Client, repo name.Repository, d v1.Descriptor) (io.ReadCloser, error) {
	repo = c.repoFor(repo)
	u := registryURL(repo, "blobs/"+d.Digest.String())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := do(hc, req, http.StatusOK)
	if err != nil {
		return nil, err
	}
	return c.verifying(c.resuming(ctx, resp.Body, d.Size, hc, u), d.Digest, d.Size, repo.Digest(d.Digest.String()).String()), nil
}

// ReadBlob reads a small blob (a config) of at most limit bytes fully,
// verified against its digest and size.
func (c *Client) ReadBlob(ctx context.Context, repo name.Repository, d v1.Descriptor, limit int64) ([]byte, error) {
	ref := repo.Digest(d.Digest.String()).String()
	hc, err := c.httpClient(ctx, repo, transport.PullScope)
	if err != nil {
		return nil, wrapErr("read blob", ref, err)
	}
	b, err := c.readBlob(ctx, hc, repo, d, limit)
	if err != nil {
		return nil, wrapErr("read blob", ref, err)
	}
	return b, nil
}

// readBlob reads a small blob (config) fully, verified.
func (c *Client) readBlob(ctx context.Context, hc *http.Client, repo name.Repository, d v1.Descriptor, limit int64) ([]byte, error) {
	if d.Size > limit {
		return nil, fmt.Errorf("blob %s is %d bytes, more than the %d allowed", d.Digest, d.Size, limit)
	}
	rc, err := c.getBlob(ctx, hc, repo, d)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, io.LimitReader(rc, limit+1)); err != nil {
		return nil, err
	}
	return buf.Bytes(), rc.Close()
}

// resuming reads body, the answer to a GET of u through hc; when the
// connection breaks mid-blob, it GETs the rest of u with a Range header.
func (c *Client) resuming(ctx context.Context, body io.ReadCloser, size int64, hc *http.Client, u string) io.ReadCloser {
	get := func(ctx context.Context, rangeHeader string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		if rangeHeader != "" {
			req.Header.Set("Range", rangeHeader)
		}
		return hc.Do(req)
	}
	return &resumingBody{
		ctx: ctx, body: body, size: size, get: get, max: c.retry.MaxAttempts - 1,
		sleep: func(ctx context.Context, attempt int) error { return c.sleep(ctx, c.retry.backoff(attempt)) },
	}
}

func (c *Client) verifying(body io.ReadCloser, want v1.Hash, size int64, what string) *verifyingReader {
	return &verifyingReader{body: body, h: sha256.New(), want: want, size: size, what: what, count: c.byteCounter}
}

// verifyingReader hashes and counts what passes through and turns a digest
// or size mismatch into an error at EOF (or as soon as the size is exceeded).
type verifyingReader struct {
	body  io.ReadCloser
	h     hash.Hash
	want  v1.Hash
	size  int64 // <= 0: unknown
	n     int64
	what  string
	count func(int64)
	err   error // sticky verification error
	// verified: the digest has been compared (at Size bytes or at EOF).
	verified bool
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	n, err := v.body.Read(p)
	if n > 0 {
		v.h.Write(p[:n])
		v.n += int64(n)
		if v.count != nil {
			v.count(int64(n))
		}
		if v.size > 0 && v.n > v.size {
			v.err = &Error{Op: "verify", Ref: v.what, Err: fmt.Errorf("%w: more than the expected %d bytes", ErrDigestMismatch, v.size)}
			return n, v.err
		}
		// Check as soon as the expected size has arrived: readers such as
		// archive/tar stop at the end-of-archive marker and may never ask
		// for the EOF.
		if v.size > 0 && v.n == v.size && !v.verified {
			if verr := v.verify(); verr != nil {
				return n, verr
			}
		}
	}
	if errors.Is(err, io.EOF) {
		if v.size > 0 && v.n != v.size {
			v.err = &Error{Op: "verify", Ref: v.what, Err: fmt.Errorf("%w: got %d bytes, want %d", ErrDigestMismatch, v.n, v.size)}
			return n, v.err
		}
		if !v.verified {
			if verr := v.verify(); verr != nil {
				return n, verr
			}
		}
	} else if err != nil {
		err = wrapErr("read", v.what, err)
	}
	return n, err
}

func (v *verifyingReader) verify() error {
	v.verified = true
	if got := "sha256:" + hex.EncodeToString(v.h.Sum(nil)); got != v.want.String() {
		v.err = &Error{Op: "verify", Ref: v.what, Err: fmt.Errorf("%w: content hashes to %s", ErrDigestMismatch, got)}
	}
	return v.err
}

// maxCloseDrain: Close reads at most this many unread trailing bytes (tar
// padding after the end-of-archive marker) to finish the digest check; a
// caller that stopped earlier aborted, and Close does not download the rest.
const maxCloseDrain = 1 << 20

// Close finishes the check when only a little is left unread, closes the
// body, and reports any verification failure.
func (v *verifyingReader) Close() error {
	if v.err == nil && !v.verified && v.size > 0 && v.size-v.n <= maxCloseDrain {
		buf := make([]byte, 32<<10)
		for {
			_, err := v.Read(buf)
			if err == nil {
				continue
			}
			if v.err == nil && !errors.Is(err, io.EOF) {
				v.body.Close()
				return err // could not finish the check
			}
			break
		}
	}
	cerr := v.body.Close()
	if v.err != nil {
		return v.err
	}
	return cerr
}
