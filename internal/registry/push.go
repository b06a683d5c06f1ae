package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"go.uber.org/zap"
)

// maxUploadRestarts bounds the new upload sessions PushBlob opens after the
// registry lost or closed the one it was uploading into.
const maxUploadRestarts = 2

// PushBlob uploads one blob to repo unless it is already there (HEAD). With
// mountFrom on the same registry it first asks for a cross-repository mount;
// a registry that declines (202 with an upload session) or does not know the
// source (404: the next source is asked) gets a normal upload. open is
// called for each upload attempt (retries re-open it), and must return
// exactly desc.Size bytes hashing to desc.Digest (the registry checks).
//
// An upload session the registry no longer knows (404 BLOB_UPLOAD_UNKNOWN on
// its PUT) is not a missing object: a proxy that answered 5xx to a PUT the
// registry had committed makes the retried PUT find the session closed, and a
// replica without shared upload state does not know another's sessions. The
// blob is then looked for (HEAD) and, when absent, uploaded again through a
// new session, up to maxUploadRestarts times; after that the error is
// transient, never ErrNotFound.
func (c *Client) PushBlob(ctx context.Context, repo name.Repository, desc v1.Descriptor, open func() (io.ReadCloser, error), mountFrom ...name.Repository) error {
	ref := repo.Digest(desc.Digest.String()).String()
	var extra []string
	var mounts []name.Repository
	for _, m := range mountFrom {
		if m.RegistryStr() == repo.RegistryStr() && m.RepositoryStr() != repo.RepositoryStr() {
			mounts = append(mounts, m)
			extra = append(extra, m.Scope(transport.PullScope))
		}
	}
	hc, err := c.httpClient(ctx, repo, transport.PushScope, extra...)
	if err != nil {
		return wrapErr("push blob", ref, err)
	}
	repo = c.repoFor(repo)
	exists, err := blobExists(ctx, hc, repo, desc.Digest)
	if err != nil {
		return wrapErr("push blob", ref, err)
	}
	if exists {
		c.log.Debug("blob exists", zap.String("digest", desc.Digest.String()), zap.String("repo", repo.String()))
		return nil
	}
	var location string
	for _, m := range mounts {
		q := url.Values{"mount": {desc.Digest.String()}, "from": {m.RepositoryStr()}}
		loc, mounted, err := startUpload(ctx, hc, repo, q)
		if isStatus(err, http.StatusNotFound) {
			// Some registries answer 404 for a source they do not know
			// (deleted, or not readable with these credentials) instead of
			// opening a session; a 404 of repo itself comes back from the
			// plain POST below.
			c.log.Debug("mount source not found", zap.String("digest", desc.Digest.String()), zap.String("from", m.String()), zap.Error(err))
			continue
		}
		if err != nil {
			return wrapErr("push blob", ref, err)
		}
		if mounted {
			c.log.Debug("blob mounted", zap.String("digest", desc.Digest.String()), zap.String("from", m.String()))
			return nil
		}
		location = loc // the registry opened an upload session instead
		break
	}
	if location == "" {
		location, _, err = startUpload(ctx, hc, repo, nil)
		if err != nil {
			return wrapErr("push blob", ref, err)
		}
	}
	for restarts := 0; ; restarts++ {
		err := putBlob(ctx, hc, ref, location, desc, open)
		if err == nil {
			return nil
		}
		if !uploadSessionLost(err) {
			return wrapErr("push blob", ref, err)
		}
		exists, herr := blobExists(ctx, hc, repo, desc.Digest)
		if herr != nil {
			return wrapErr("push blob", ref, fmt.Errorf("looking for the blob after the upload session was lost (%v): %w", err, herr))
		}
		if exists {
			c.log.Debug("upload session lost but the blob is in", zap.String("digest", desc.Digest.String()), zap.String("repo", repo.String()))
			return nil
		}
		if restarts == maxUploadRestarts {
			return &Error{Op: "push blob", Ref: ref, Transient: true,
				Err: fmt.Errorf("the registry lost %d upload sessions in a row: %w", restarts+1, err)}
		}
		c.log.Debug("upload session lost, starting a new one", zap.String("digest", desc.Digest.String()), zap.String("repo", repo.String()), zap.Error(err))
		if location, _, err = startUpload(ctx, hc, repo, nil); err != nil {
			return wrapErr("push blob", ref, err)
		}
	}
}

// putBlob uploads the whole blob into the upload session at location
// (monolithic PUT).
func putBlob(ctx context.Context, hc *http.Client, ref, location string, desc v1.Descriptor, open func() (io.ReadCloser, error)) error {
	u, err := url.Parse(location)
	if err != nil {
		return fmt.Errorf("upload location %q: %w", location, err)
	}
	q := u.Query()
	q.Set("digest", desc.Digest.String())
	u.RawQuery = q.Encode()
	body, err := open()
	if err != nil {
		return &Error{Op: "push blob", Ref: ref, Err: fmt.Errorf("opening content: %w", err)}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	if err != nil {
		body.Close()
		return err
	}
	req.GetBody = open
	req.ContentLength = desc.Size
	if desc.Size <= 0 {
		req.ContentLength = -1 // unknown: chunked
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := do(hc, req, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func blobExists(ctx context.Context, hc *http.Client, repo name.Repository, d v1.Hash) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, registryURL(repo, "blobs/"+d.String()), nil)
	if err != nil {
		return false, err
	}
	resp, err := do(hc, req, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// startUpload POSTs to the uploads endpoint; mounted is true when the
// registry answered 201 to a mount request.
func startUpload(ctx context.Context, hc *http.Client, repo name.Repository, q url.Values) (location string, mounted bool, err error) {
	u := registryURL(repo, "blobs/uploads/")
	if q != nil {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return "", false, err
	}
	resp, err := do(hc, req, http.StatusCreated, http.StatusAccepted)
	if err != nil {
		return "", false, err
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusCreated {
		return "", true, nil
	}
	loc, err := resp.Location()
	if err != nil {
		return "", false, fmt.Errorf("upload session without Location: %w", err)
	}
	return loc.String(), false, nil
}

// PushArtifact pushes manifest (which must carry `subject` = subject) to
// repo by digest, without a tag. Blobs must already be pushed. When the
// registry does not confirm the subject (no OCI-Subject header) and its
// referrers API is missing, the sha256-<hex> fallback tag index is updated
// (read-modify-write, serialized per subject in this process, conditional
// with If-Match where the registry gives an ETag). With the fallback
// disabled, a registry without the referrers API is detected before the
// push and ErrReferrersUnsupported returned.
func (c *Client) PushArtifact(ctx context.Context, repo name.Repository, manifest []byte, mediaType types.MediaType, subject v1.Descriptor) (v1.Hash, error) {
	h, size, _ := v1.SHA256(bytes.NewReader(manifest))
	ref := repo.Digest(h.String()).String()
	var mf struct {
		ArtifactType string            `json:"artifactType"`
		Subject      *v1.Descriptor    `json:"subject"`
		Annotations  map[string]string `json:"annotations"`
		Config       struct {
			MediaType string `json:"mediaType"`
		} `json:"config"`
	}
	if err := json.Unmarshal(manifest, &mf); err != nil {
		return v1.Hash{}, &Error{Op: "push artifact", Ref: ref, Err: fmt.Errorf("manifest is not JSON: %w", err)}
	}
	if mf.Subject == nil || mf.Subject.Digest != subject.Digest {
		return v1.Hash{}, &Error{Op: "push artifact", Ref: ref, Err: fmt.Errorf("manifest subject does not name %s", subject.Digest)}
	}
	hc, err := c.httpClient(ctx, repo, transport.PushScope)
	if err != nil {
		return v1.Hash{}, wrapErr("push artifact", ref, err)
	}
	repo = c.repoFor(repo)
	subjectRef := repo.Digest(subject.Digest.String())
	if !c.fallback {
		ok, err := referrersAPI(ctx, hc, subjectRef)
		if err != nil {
			return v1.Hash{}, wrapErr("push artifact", ref, err)
		}
		if !ok {
			return v1.Hash{}, &Error{Op: "push artifact", Ref: ref, Err: fmt.Errorf("%w: %s", ErrReferrersUnsupported, repo.RegistryStr())}
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, registryURL(repo, "manifests/"+h.String()), bytes.NewReader(manifest))
	if err != nil {
		return v1.Hash{}, wrapErr("push artifact", ref, err)
	}
	req.Header.Set("Content-Type", string(mediaType))
	resp, err := do(hc, req, http.StatusOK, http.StatusCreated, http.StatusAccepted)
	if err != nil {
		return v1.Hash{}, wrapErr("push artifact", ref, err)
	}
	resp.Body.Close()
	if resp.Header.Get("OCI-Subject") == subject.Digest.String() || !c.fallback {
		return h, nil
	}
	ok, err := referrersAPI(ctx, hc, subjectRef)
	if err != nil {
		return h, wrapErr("push artifact", ref, fmt.Errorf("manifest pushed, checking for the referrers API: %w", err))
	}
	if ok {
		return h, nil
	}
	at := mf.ArtifactType
	if at == "" {
		at = mf.Config.MediaType
	}
	add := v1.Descriptor{MediaType: mediaType, Digest: h, Size: size, ArtifactType: at, Annotations: mf.Annotations}
	if err := c.addFallbackReferrer(ctx, hc, subjectRef, add); err != nil {
		return h, wrapErr("push artifact", ref, fmt.Errorf("manifest pushed, updating fallback tag %s: %w", fallbackTag(subjectRef), err))
	}
	return h, nil
}

// fallbackTag is the referrers tag schema: sha256:<hex> -> sha256-<hex>.
func fallbackTag(subject name.Digest) string {
	d, _ := v1.NewHash(subject.DigestStr())
	return d.Algorithm + "-" + d.Hex
}

// referrersAPI reports whether the registry serves GET /referrers (200 with
// an OCI index). 404 / 400 / 405 or another content type mean "no".
func referrersAPI(ctx context.Context, hc *http.Client, subject name.Digest) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, registryURL(subject.Context(), "referrers/"+subject.DigestStr()), nil)
	if err != nil {
		return false, err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex))
	resp, err := do(hc, req, http.StatusOK, http.StatusNotFound, http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusNotAcceptable)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxManifestSize))
	return resp.StatusCode == http.StatusOK && mediaTypeOf(resp) == string(types.OCIImageIndex), nil
}

func mediaTypeOf(resp *http.Response) string {
	ct := resp.Header.Get("Content-Type")
	for i := 0; i < len(ct); i++ {
		if ct[i] == ';' {
			return ct[:i]
		}
	}
	return ct
}

// maxFallbackConflicts bounds If-Match retries against a busy fallback tag.
const maxFallbackConflicts = 10

// addFallbackReferrer adds one descriptor to the subject's fallback tag
// index. In-process writers for one subject take turns on a mutex; writers
// in other processes are caught by If-Match when the registry returns an
// ETag (distribution v3 ignores If-Match on manifest PUT, so cross-process
// races there can still drop an entry: re-pushing the artifact repairs it).
func (c *Client) addFallbackReferrer(ctx context.Context, hc *http.Client, subject name.Digest, add v1.Descriptor) error {
	key := subject.Context().String() + "@" + subject.DigestStr()
	defer c.subjectLocks.Lock(key)()
	tag := fallbackTag(subject)
	for range maxFallbackConflicts {
		idx, etag, exists, err := getFallbackIndex(ctx, hc, subject)
		if err != nil {
			return err
		}
		for _, d := range idx.Manifests {
			if d.Digest == add.Digest {
				return nil
			}
		}
		idx.Manifests = append(idx.Manifests, add)
		body, err := json.Marshal(idx)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, registryURL(subject.Context(), "manifests/"+tag), bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", string(types.OCIImageIndex))
		switch {
		case etag != "":
			req.Header.Set("If-Match", etag)
		case !exists:
			req.Header.Set("If-None-Match", "*") // creating it: lose to a concurrent creator
		}
		resp, err := do(hc, req, http.StatusOK, http.StatusCreated, http.StatusAccepted, http.StatusPreconditionFailed)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPreconditionFailed {
			c.log.Debug("fallback tag updated", zap.String("tag", tag), zap.String("digest", add.Digest.String()), zap.Int("referrers", len(idx.Manifests)))
			return nil
		}
		c.log.Debug("fallback tag changed underneath, retrying", zap.String("tag", tag))
	}
	return fmt.Errorf("fallback tag %s kept changing (%d conflicts)", tag, maxFallbackConflicts)
}

// getFallbackIndex reads the fallback tag index (empty when absent) and its
// ETag.
func getFallbackIndex(ctx context.Context, hc *http.Client, subject name.Digest) (idx *v1.IndexManifest, etag string, exists bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, registryURL(subject.Context(), "manifests/"+fallbackTag(subject)), nil)
	if err != nil {
		return nil, "", false, err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex))
	resp, err := do(hc, req, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return nil, "", false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}}, "", false, nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, "", false, err
	}
	if len(raw) > maxManifestSize {
		return nil, "", true, fmt.Errorf("fallback tag index larger than %d bytes", maxManifestSize)
	}
	idx, err = v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, "", true, fmt.Errorf("fallback tag %s is not an index: %w", fallbackTag(subject), err)
	}
	if idx.MediaType != types.OCIImageIndex {
		return nil, "", true, fmt.Errorf("fallback tag %s has media type %q, not an OCI index", fallbackTag(subject), idx.MediaType)
	}
	return idx, resp.Header.Get("ETag"), true, nil
}

// ListTags lists repo's tags, following Link pagination.
func (c *Client) ListTags(ctx context.Context, repo name.Repository) ([]string, error) {
	hc, err := c.httpClient(ctx, repo, transport.PullScope)
	if err != nil {
		return nil, wrapErr("list tags", repo.String(), err)
	}
	repo = c.repoFor(repo)
	next := registryURL(repo, "tags/list?n="+strconv.Itoa(1000))
	tags := []string{}
	for pages := 0; next != ""; pages++ {
		if pages > 10000 {
			return nil, &Error{Op: "list tags", Ref: repo.String(), Err: fmt.Errorf("more than %d pages of tags", pages)}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, wrapErr("list tags", repo.String(), err)
		}
		resp, err := do(hc, req, http.StatusOK)
		if err != nil {
			return nil, wrapErr("list tags", repo.String(), err)
		}
		var page struct {
			Tags []string `json:"tags"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, maxManifestSize)).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return nil, wrapErr("list tags", repo.String(), fmt.Errorf("tags response: %w", err))
		}
		tags = append(tags, page.Tags...)
		next, err = nextLink(req.URL, resp.Header.Get("Link"))
		if err != nil {
			return nil, wrapErr("list tags", repo.String(), err)
		}
	}
	return tags, nil
}

// nextLink parses `Link: </v2/...?last=x&n=y>; rel="next"` relative to base.
func nextLink(base *url.URL, link string) (string, error) {
	if link == "" {
		return "", nil
	}
	start, end := -1, -1
	for i := 0; i < len(link); i++ {
		if link[i] == '<' && start < 0 {
			start = i + 1
		}
		if link[i] == '>' && start >= 0 {
			end = i
			break
		}
	}
	if start < 0 || end < 0 {
		return "", fmt.Errorf("malformed Link header %q", link)
	}
	u, err := base.Parse(link[start:end])
	if err != nil {
		return "", fmt.Errorf("malformed Link header %q: %w", link, err)
	}
	return u.String(), nil
}
