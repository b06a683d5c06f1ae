package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/cimconv/cimconv/internal/errdefs"
)

// Sentinel errors callers test with errors.Is; each is of an errdefs kind
// (errdefs.IsX), which is what callers classify by.
var (
	// ErrNotWindows: the reference resolves to an image (or index) with no
	// Windows manifest.
	ErrNotWindows = errdefs.New(errdefs.ErrInvalidArgument, "not a Windows image")
	// ErrNoMatch: an index has Windows manifests but none matches the
	// requested platform and os.version policy.
	ErrNoMatch = errdefs.New(errdefs.ErrNotFound, "no manifest matches the platform and os.version policy")
	// ErrForeignLayerRefused: a non-distributable layer's urls are not on
	// the allowlist (WithForeignLayerHosts).
	ErrForeignLayerRefused = errdefs.New(errdefs.ErrPermanent, "foreign layer url not on the allowlist")
	// ErrDigestMismatch: the bytes served do not hash to the digest (or do
	// not have the size) they were requested by.
	ErrDigestMismatch = errdefs.New(errdefs.ErrPermanent, "digest mismatch")
	// ErrNotFound: the registry answered 404 / *_UNKNOWN for the object. It
	// is errdefs.ErrNotFound: one meaning of "not found" in cimconv.
	ErrNotFound = errdefs.ErrNotFound
	// ErrReferrersUnsupported: the registry has no referrers API and the
	// sha256-<hex> fallback tag is disabled (WithReferrersFallback(false)).
	ErrReferrersUnsupported = errdefs.New(errdefs.ErrPermanent, "registry has no OCI referrers API and the referrers fallback tag is disabled")
	// ErrInsecureRefused: a plain-HTTP request to a host that is neither
	// loopback nor listed with WithInsecure.
	ErrInsecureRefused = errdefs.New(errdefs.ErrInvalidArgument, "plain HTTP refused (host not marked insecure)")
)

// Error is every error returned by Client methods: the operation, the
// reference it was about, and whether retrying the whole operation later may
// succeed (network trouble, 429, 5xx: Transient, and the error is then of
// kind errdefs.ErrUnavailable) or not (404, 401, digest mismatch, bad input).
type Error struct {
	Op        string // "resolve", "open layer", "push blob", ...
	Ref       string // the reference, repository or URL concerned
	Transient bool
	Err       error
}

func (e *Error) Error() string {
	kind := ""
	if e.Transient {
		kind = " (transient)"
	}
	if e.Ref == "" {
		return fmt.Sprintf("registry %s%s: %v", e.Op, kind, e.Err)
	}
	return fmt.Sprintf("registry %s %s%s: %v", e.Op, e.Ref, kind, e.Err)
}

// Unwrap gives the cause and, when Transient, errdefs.ErrUnavailable.
func (e *Error) Unwrap() []error {
	if e.Transient {
		return []error{e.Err, errdefs.ErrUnavailable}
	}
	return []error{e.Err}
}

// wrapErr builds an *Error for op/ref, classifying err. A nil err stays nil;
// an err that already is an *Error is returned unchanged.
func wrapErr(op, ref string, err error) error {
	if err == nil {
		return nil
	}
	var re *Error
	if errors.As(err, &re) {
		return err
	}
	var terr *transport.Error
	if errors.As(err, &terr) && isNotFound(terr) && !errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return &Error{Op: op, Ref: ref, Transient: classifyTransient(err), Err: err}
}

// isNotFound: the registry says the object asked for is not there. An
// upload session it does not know (BLOB_UPLOAD_UNKNOWN) is not such an
// object: the blob can still be pushed through a new session.
func isNotFound(terr *transport.Error) bool {
	if hasCode(terr, transport.BlobUploadUnknownErrorCode) {
		return false
	}
	if terr.StatusCode == http.StatusNotFound {
		return true
	}
	for _, d := range terr.Errors {
		switch d.Code {
		case transport.ManifestUnknownErrorCode, transport.BlobUnknownErrorCode, transport.NameUnknownErrorCode:
			return true
		}
	}
	return false
}

// uploadSessionLost reports whether err is the registry answering an upload
// session's PUT (or PATCH) with 404 or BLOB_UPLOAD_UNKNOWN: the session was
// closed (committed, expired) or lives on another replica.
func uploadSessionLost(err error) bool {
	var terr *transport.Error
	if !errors.As(err, &terr) {
		return false
	}
	return terr.StatusCode == http.StatusNotFound || hasCode(terr, transport.BlobUploadUnknownErrorCode)
}

// isStatus reports whether err is a registry API answer with HTTP status code.
func isStatus(err error, code int) bool {
	var terr *transport.Error
	return errors.As(err, &terr) && terr.StatusCode == code
}

func hasCode(terr *transport.Error, code transport.ErrorCode) bool {
	for _, d := range terr.Errors {
		if d.Code == code {
			return true
		}
	}
	return false
}

// classifyTransient decides retryability without looking at strings.
func classifyTransient(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, context.Canceled):
		return false // the caller gave up; retrying is their call
	case errors.Is(err, ErrDigestMismatch), errors.Is(err, ErrNotFound),
		errors.Is(err, ErrForeignLayerRefused), errors.Is(err, ErrNotWindows),
		errors.Is(err, ErrNoMatch), errors.Is(err, ErrReferrersUnsupported),
		errors.Is(err, ErrInsecureRefused):
		return false
	case errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EPIPE):
		return true
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return terr.Temporary()
	}
	var st *statusError
	if errors.As(err, &st) {
		return retryableStatus(st.code)
	}
	if errdefs.IsUnavailable(err) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe)
}

// statusError is an unexpected HTTP status outside a registry API response
// (foreign layer URLs).
type statusError struct {
	url  string
	code int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("GET %s: unexpected status %d %s", e.url, e.code, http.StatusText(e.code))
}

// retryableStatus: 408, 429 and 5xx except 501 (not implemented is permanent).
func retryableStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}
