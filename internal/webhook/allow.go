package webhook

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/cimconv/cimconv/internal/allowlist"
)

// allowEntry is one allowlist line (package allowlist).
type allowEntry = allowlist.Entry

func parseAllowEntry(s string) (allowEntry, error) {
	e, err := allowlist.Parse(s)
	if err != nil {
		return e, fmt.Errorf("webhook %w", err)
	}
	return e, nil
}

// refuse returns why an event is refused by the allowlist, or "".
func (h *Handler) refuse(e Event) string {
	if len(h.cfg.allow) == 0 {
		return fmt.Sprintf("registry %s is not allowed: no registries are configured", e.Registry)
	}
	for _, a := range h.cfg.allow {
		if a.Allows(e.Registry, e.Repository) {
			return ""
		}
	}
	return fmt.Sprintf("repository %s/%s is not on the registry allowlist", e.Registry, e.Repository)
}

// validateEvent checks that an event names a well-formed image reference:
// the worker will contact that registry, so nothing odd may pass.
func validateEvent(e Event) error {
	if e.Registry == "" {
		return fmt.Errorf("event %q names no registry (add ?registry=host to the webhook URL for senders that omit it)", e.ID)
	}
	if e.Repository == "" {
		return fmt.Errorf("event %q names no repository", e.ID)
	}
	if e.Digest == "" && e.Tag == "" {
		return fmt.Errorf("event for %s/%s has neither digest nor tag", e.Registry, e.Repository)
	}
	if err := checkHost(e.Registry); err != nil {
		return fmt.Errorf("event for %s: %w", e.Repository, err)
	}
	if _, err := name.NewRepository(e.Registry+"/"+e.Repository, name.StrictValidation); err != nil {
		return fmt.Errorf("event names an invalid repository %q", e.Repository)
	}
	if e.Digest != "" {
		if _, err := name.NewDigest(e.Registry+"/"+e.Repository+"@"+e.Digest, name.StrictValidation); err != nil {
			return fmt.Errorf("event names an invalid digest %q", e.Digest)
		}
	}
	if e.Tag != "" {
		if _, err := name.NewTag(e.Registry+"/"+e.Repository+":"+e.Tag, name.StrictValidation); err != nil {
			return fmt.Errorf("event names an invalid tag %q", e.Tag)
		}
	}
	return nil
}

func checkHost(host string) error { return allowlist.CheckHost(host) }
