// Package webhook turns registry notifications (CNCF distribution, Harbor,
// CloudEvents/zot, Azure Container Registry) into conversion requests, after
// authenticating them and filtering by the operator's registry allowlist.
package webhook
