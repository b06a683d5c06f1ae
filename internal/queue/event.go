package queue

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/cimconv/cimconv/internal/version"
)

// CloudEvents types of the messages cimconv publishes.
const (
	TypeRequested = "io.cimconv.convert.requested"
	TypeSucceeded = "io.cimconv.convert.succeeded"
	TypeFailed    = "io.cimconv.convert.failed"
)

// SchemaVersion is the version of the Request/Result data schema. A consumer
// refuses requests with a newer schema rather than guess their meaning.
const SchemaVersion = 1

// Defaults applied by Normalize.
const (
	DefaultPlatform = "windows/amd64"
	DefaultBuilder  = "auto"
)

// ErrInvalidRequest is wrapped by every validation error of a Request, so that
// callers (the worker) can classify such requests as permanent failures.
var ErrInvalidRequest = errors.New("invalid request")

// Request asks for the conversion of one image. It travels as the data of an
// io.cimconv.convert.requested CloudEvent.
type Request struct {
	SchemaVersion int `json:"schemaVersion"`
	// Image is a reference, digest-pinned (repo@sha256:...) when the sender
	// knows the digest; a tag is resolved by the worker.
	Image string `json:"image"`
	// Platform is os/arch (default windows/amd64).
	Platform string `json:"platform,omitempty"`
	// OSVersion is the os.version policy, e.g. "10.0.20348" or "10.0.26100.*";
	// empty means every Windows build of the platform.
	OSVersion string `json:"osVersion,omitempty"`
	// Builder is auto, hcsshim or portable (default auto).
	Builder string `json:"builder,omitempty"`
	// Force converts even when an artifact already exists.
	Force bool `json:"force,omitempty"`
	// Tag is the tag a digest-pinned Image was pushed as, when the sender
	// knows it (webhooks): the status is recorded under repo:tag too, so
	// `status repo:tag` finds it. It is not part of the key.
	Tag string `json:"tag,omitempty"`
	// Requester and Source say who asked and through which channel
	// ("cli", "webhook/distribution", ...). They are not part of the key.
	Requester string `json:"requester,omitempty"`
	Source    string `json:"source,omitempty"`
}

// Normalize fills defaults and validates the request. The returned error
// wraps ErrInvalidRequest and names the bad field.
func (r Request) Normalize() (Request, error) {
	if r.SchemaVersion == 0 {
		r.SchemaVersion = SchemaVersion
	}
	if r.SchemaVersion > SchemaVersion {
		return r, fmt.Errorf("%w: schemaVersion %d is newer than this converter understands (%d)", ErrInvalidRequest, r.SchemaVersion, SchemaVersion)
	}
	r.Image = strings.TrimSpace(r.Image)
	if r.Image == "" {
		return r, fmt.Errorf("%w: image is empty", ErrInvalidRequest)
	}
	if _, err := name.ParseReference(r.Image); err != nil {
		return r, fmt.Errorf("%w: image %q: %v", ErrInvalidRequest, r.Image, err)
	}
	// "sha256:0" parses as docker.io/library/sha256:0, but status lookups
	// read a leading digest algorithm as a digest: refuse what would have
	// no status key rather than convert an image nobody can ask about.
	if _, err := StatusKey(r.Image); err != nil {
		return r, err
	}
	if r.Tag != "" {
		if _, err := name.NewTag("example.invalid/x:"+r.Tag, name.StrictValidation); err != nil {
			return r, fmt.Errorf("%w: tag %q: %v", ErrInvalidRequest, r.Tag, err)
		}
	}
	if r.Platform == "" {
		r.Platform = DefaultPlatform
	}
	if os, arch, ok := strings.Cut(r.Platform, "/"); !ok || os == "" || arch == "" {
		return r, fmt.Errorf("%w: platform %q: want os/arch", ErrInvalidRequest, r.Platform)
	}
	if r.Builder == "" {
		r.Builder = DefaultBuilder
	}
	switch r.Builder {
	case "auto", "hcsshim", "portable":
	default:
		return r, fmt.Errorf("%w: builder %q: want auto, hcsshim or portable", ErrInvalidRequest, r.Builder)
	}
	return r, nil
}

// StatusImages are the names the request's status is recorded under: the
// image and, for a digest-pinned image with a Tag, repo:tag.
func (r Request) StatusImages() []string {
	out := []string{r.Image}
	if r.Tag == "" {
		return out
	}
	if d, err := name.NewDigest(r.Image); err == nil {
		out = append(out, d.Context().Name()+":"+r.Tag)
	}
	return out
}

// canonicalImage is the image as it enters the key: the digest when pinned
// (a tag next to a digest does not change what is converted), else the fully
// qualified reference.
func canonicalImage(image string) string {
	ref, err := name.ParseReference(image)
	if err != nil {
		return image
	}
	if d, ok := ref.(name.Digest); ok {
		return d.Context().Name() + "@" + d.DigestStr()
	}
	return ref.Name()
}

// IdempotencyKey identifies what the request would produce: the image
// (digest-pinned when known), the options that change the output, and the
// converter and artifact format versions. It is the Nats-Msg-Id, so duplicate
// webhooks for one push collapse, and it names the result subject.
func (r Request) IdempotencyKey() string {
	n, _ := r.Normalize() // an invalid request still gets a stable key
	k := struct {
		Image     string `json:"image"`
		Platform  string `json:"platform"`
		OSVersion string `json:"osVersion"`
		Builder   string `json:"builder"`
		Force     bool   `json:"force"`
		Format    string `json:"format"`
		Version   string `json:"version"`
	}{canonicalImage(n.Image), n.Platform, n.OSVersion, n.Builder, n.Force, version.FormatVersion, version.Version}
	b, _ := json.Marshal(k)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Result is the outcome of a request, published on cimconv.results.<key> as
// an io.cimconv.convert.succeeded or .failed CloudEvent.
type Result struct {
	Request Request `json:"request"`
	Key     string  `json:"key"`
	// SubjectDigests are the platform manifests converted; ArtifactDigests
	// the artifact manifests pushed for them (same order).
	SubjectDigests  []string `json:"subjectDigests,omitempty"`
	ArtifactDigests []string `json:"artifactDigests,omitempty"`
	LayersBuilt     int      `json:"layersBuilt"`
	LayersCached    int      `json:"layersCached"`
	// BytesFetched and BytesPushed are registry traffic (for metrics).
	BytesFetched int64  `json:"bytesFetched,omitempty"`
	BytesPushed  int64  `json:"bytesPushed,omitempty"`
	Error        string `json:"error,omitempty"`
	Reason       string `json:"reason,omitempty"`
	Attempts     int    `json:"attempts"`
	// Ignored says why nothing was converted although nothing failed: the
	// request named no image (cimconv's own artifact or referrers index,
	// e.g. the event of its own fallback-tag push). Not a conversion.
	Ignored string `json:"ignored,omitempty"`
}

// Succeeded reports whether the conversion succeeded.
func (r *Result) Succeeded() bool { return r.Error == "" }

// cloudEvent is a CloudEvents 1.0 envelope in structured JSON mode.
type cloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            time.Time       `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	DataSchema      string          `json:"dataschema,omitempty"`
	Data            json.RawMessage `json:"data"`
}

const dataSchemaPrefix = "https://cimconv.io/schemas/"

func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func encodeEvent(typ, source, subject string, data any) ([]byte, error) {
	d, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode %s data: %w", typ, err)
	}
	if source == "" {
		source = "cimconv"
	}
	return json.Marshal(cloudEvent{
		SpecVersion:     "1.0",
		ID:              newEventID(),
		Source:          source,
		Type:            typ,
		Subject:         subject,
		Time:            time.Now().UTC(),
		DataContentType: "application/json",
		DataSchema:      fmt.Sprintf("%s%s/v%d", dataSchemaPrefix, typ, SchemaVersion),
		Data:            d,
	})
}

// EncodeRequest renders req as a structured CloudEvent.
func EncodeRequest(req Request) ([]byte, error) {
	return encodeEvent(TypeRequested, req.Source, req.Image, req)
}

// DecodeRequest parses a structured CloudEvent of type
// io.cimconv.convert.requested and validates its data. Errors wrap
// ErrInvalidRequest and say what is wrong.
func DecodeRequest(b []byte) (Request, error) {
	var ev cloudEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return Request{}, fmt.Errorf("%w: not a CloudEvent JSON object: %v", ErrInvalidRequest, err)
	}
	if ev.SpecVersion != "1.0" {
		return Request{}, fmt.Errorf("%w: specversion %q, want 1.0", ErrInvalidRequest, ev.SpecVersion)
	}
	if ev.Type != TypeRequested {
		return Request{}, fmt.Errorf("%w: event type %q, want %s", ErrInvalidRequest, ev.Type, TypeRequested)
	}
	if len(ev.Data) == 0 {
		return Request{}, fmt.Errorf("%w: event has no data", ErrInvalidRequest)
	}
	var req Request
	if err := json.Unmarshal(ev.Data, &req); err != nil {
		return Request{}, fmt.Errorf("%w: data: %v", ErrInvalidRequest, err)
	}
	return req.Normalize()
}

// EncodeResult renders res as a succeeded or failed CloudEvent.
func EncodeResult(res *Result) ([]byte, error) {
	typ := TypeSucceeded
	if !res.Succeeded() {
		typ = TypeFailed
	}
	return encodeEvent(typ, "cimconv/worker", res.Request.Image, res)
}

// DecodeResult parses a result CloudEvent.
func DecodeResult(b []byte) (*Result, error) {
	var ev cloudEvent
	if err := json.Unmarshal(b, &ev); err != nil {
		return nil, fmt.Errorf("result event: %w", err)
	}
	if ev.Type != TypeSucceeded && ev.Type != TypeFailed {
		return nil, fmt.Errorf("result event: type %q, want %s or %s", ev.Type, TypeSucceeded, TypeFailed)
	}
	var res Result
	if err := json.Unmarshal(ev.Data, &res); err != nil {
		return nil, fmt.Errorf("result event data: %w", err)
	}
	if ev.Type == TypeFailed && res.Error == "" {
		res.Error = "failed (no error text)"
	}
	return &res, nil
}

// StatusKey is the cimconv-status key of an image reference or digest: the
// digest when the reference is pinned (so `status sha256:...` and
// `status repo@sha256:...` agree), else a hash of the normalized reference.
func StatusKey(imageOrDigest string) (string, error) {
	s := strings.TrimSpace(imageOrDigest)
	if s == "" {
		return "", fmt.Errorf("%w: empty image or digest", ErrInvalidRequest)
	}
	if i := strings.LastIndex(s, "@"); i >= 0 {
		s = s[i+1:]
	}
	if alg, hexPart, ok := strings.Cut(s, ":"); ok && (alg == "sha256" || alg == "sha512") {
		if !isDigest(alg, hexPart) {
			return "", fmt.Errorf("%w: %q: malformed %s digest", ErrInvalidRequest, imageOrDigest, alg)
		}
		return "digest." + alg + "." + hexPart, nil
	}
	ref, err := name.ParseReference(imageOrDigest)
	if err != nil {
		return "", fmt.Errorf("%w: %q is neither a digest nor an image reference: %v", ErrInvalidRequest, imageOrDigest, err)
	}
	sum := sha256.Sum256([]byte(ref.Name()))
	return "ref." + hex.EncodeToString(sum[:16]), nil
}

func isDigest(alg, h string) bool {
	want := map[string]int{"sha256": 64, "sha512": 128}[alg]
	if want == 0 || len(h) != want {
		return false
	}
	for _, c := range h {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
