package registrytest

import (
	"net/http"
	"strings"
	"sync"
)

// Garble is a fault status: answer 200 with a small manifest that is not the
// one asked for, so a client checking digests sees a mismatch.
const Garble = -1

// Faults answers chosen requests of a test registry wrongly: install it with
// WithMiddleware(f.Middleware); a request whose path ends with a suffix given
// to Set gets that suffix's fault instead of the registry's answer. The zero
// value injects nothing.
type Faults struct{ m sync.Map }

// Set makes requests whose path ends with suffix (e.g. "/manifests/sha256:…")
// answer status (an HTTP status, or Garble) until Clear.
func (f *Faults) Set(suffix string, status int) { f.m.Store(suffix, status) }

// Clear stops the fault Set for suffix.
func (f *Faults) Clear(suffix string) { f.m.Delete(suffix) }

// Middleware injects the faults into next.
func (f *Faults) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := 0
		f.m.Range(func(k, v any) bool {
			if strings.HasSuffix(r.URL.Path, k.(string)) {
				status = v.(int)
				return false
			}
			return true
		})
		switch status {
		case 0:
			next.ServeHTTP(w, r)
		case Garble:
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Write([]byte(`{"schemaVersion":2,"layers":[]}`))
		default:
			http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"fault injected by the test"}]}`, status)
		}
	})
}
