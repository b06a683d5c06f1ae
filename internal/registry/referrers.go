package registry

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// maxReferrersPages bounds Link pagination of the referrers API.
const maxReferrersPages = 100

// Referrers lists the manifests whose subject is subject, from the
// referrers API (following Link pagination) or, where it is missing, the
// fallback tag (unless disabled: then ErrReferrersUnsupported).
// artifactType "" lists all; otherwise only that type is returned (filtered
// here too, since registries may ignore the query). Descriptors carry the
// artifacts' annotations. Choosing among them (newest compatible) is the
// caller's job.
func (c *Client) Referrers(ctx context.Context, subject name.Digest, artifactType string) ([]v1.Descriptor, error) {
	hc, err := c.httpClient(ctx, subject.Context(), transport.PullScope)
	if err != nil {
		return nil, wrapErr("referrers", subject.String(), err)
	}
	subject = c.repoFor(subject.Context()).Digest(subject.DigestStr())
	next := registryURL(subject.Context(), "referrers/"+subject.DigestStr())
	if artifactType != "" {
		next += "?" + url.Values{"artifactType": {artifactType}}.Encode()
	}
	var all []v1.Descriptor
	for page := 0; next != ""; page++ {
		if page >= maxReferrersPages {
			return nil, &Error{Op: "referrers", Ref: subject.String(), Err: fmt.Errorf("more than %d pages of referrers", maxReferrersPages)}
		}
		idx, link, supported, err := c.referrersPage(ctx, hc, next)
		if err != nil {
			return nil, wrapErr("referrers", subject.String(), err)
		}
		if !supported {
			if page > 0 {
				return nil, &Error{Op: "referrers", Ref: subject.String(), Err: fmt.Errorf("referrers page %s is not an OCI index", next)}
			}
			if !c.fallback {
				return nil, &Error{Op: "referrers", Ref: subject.String(), Err: fmt.Errorf("%w: %s", ErrReferrersUnsupported, subject.RegistryStr())}
			}
			fb, _, _, err := getFallbackIndex(ctx, hc, subject)
			if err != nil {
				return nil, wrapErr("referrers", subject.String(), fmt.Errorf("fallback tag %s: %w", fallbackTag(subject), err))
			}
			all = fb.Manifests
			break
		}
		all = append(all, idx.Manifests...)
		next = link
	}
	out := []v1.Descriptor{}
	for _, d := range all {
		if artifactType == "" || d.ArtifactType == artifactType {
			out = append(out, d)
		}
	}
	return out, nil
}

// referrersPage GETs one page; supported is false when the registry has no
// referrers API (404/400/405/406 or a non-index answer).
func (c *Client) referrersPage(ctx context.Context, hc *http.Client, u string) (idx *v1.IndexManifest, next string, supported bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, "", false, err
	}
	req.Header.Set("Accept", string(types.OCIImageIndex))
	resp, err := do(hc, req, http.StatusOK, http.StatusNotFound, http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusNotAcceptable)
	if err != nil {
		return nil, "", false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || mediaTypeOf(resp) != string(types.OCIImageIndex) {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxManifestSize))
		return nil, "", false, nil
	}
	idx, err = v1.ParseIndexManifest(io.LimitReader(resp.Body, maxManifestSize))
	if err != nil {
		return nil, "", true, fmt.Errorf("referrers response: %w", err)
	}
	next, err = nextLink(req.URL, resp.Header.Get("Link"))
	return idx, next, true, err
}
