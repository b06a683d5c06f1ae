package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fuzzModes are the ways a body reaches the parsers: endpoint plus the
// headers that switch the CloudEvents mode.
var fuzzModes = []struct {
	path   string
	header map[string]string
}{
	{"/webhooks/distribution", nil},
	{"/webhooks/harbor", nil},
	{"/webhooks/harbor", map[string]string{"Content-Type": "application/cloudevents+json"}},
	{"/webhooks/cloudevents?registry=zot.example.com", map[string]string{"Content-Type": "application/cloudevents+json"}},
	{"/webhooks/cloudevents?registry=zot.example.com", map[string]string{"Content-Type": "application/cloudevents-batch+json"}},
	{"/webhooks/cloudevents?registry=zot.example.com", map[string]string{"Ce-Specversion": "1.0", "Ce-Type": "zotregistry.image.updated", "Ce-Id": "1"}},
	{"/webhooks/cloudevents", map[string]string{"Ce-Specversion": "1.0", "Ce-Type": "harbor.artifact.pushed", "Ce-Id": "2"}},
	{"/webhooks/cloudevents", map[string]string{"Ce-Specversion": "1.0", "Ce-Type": "Microsoft.ContainerRegistry.ImagePushed", "Ce-Id": "3"}},
	{"/webhooks/acr", nil},
}

// FuzzHandlers feeds arbitrary bodies to every parser through the full
// handler: no panic, a known status, a one-line JSON answer, and only
// well-formed, allowlisted image references reach the sink.
func FuzzHandlers(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		for i := range fuzzModes {
			f.Add(uint8(i), b)
		}
	}
	f.Add(uint8(0), []byte(`{"events":null}`))
	f.Add(uint8(5), []byte(`{"manifest":{"subject":{}}}`))
	f.Add(uint8(4), []byte(`[{"specversion":"1.0","type":"zotregistry.image.updated","data_base64":"e30="}]`))

	f.Fuzz(func(t *testing.T, mode uint8, body []byte) {
		m := fuzzModes[int(mode)%len(fuzzModes)]
		var submitted []Event
		sink := SinkFunc(func(_ context.Context, e Event) error {
			submitted = append(submitted, e)
			return nil
		})
		h, err := New(sink, WithInsecureNoAuth("*"), WithMaxBodyBytes(64<<10),
			WithAllowedRegistries("registry.example.com:5000", "harbor.example.com", "myregistry.azurecr.io", "zot.example.com"))
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest(http.MethodPost, m.path, bytes.NewReader(body))
		for k, v := range m.header {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		switch rec.Code {
		case 200, 400, 403, 413:
		default:
			t.Fatalf("unexpected status %d: %s", rec.Code, rec.Body.String())
		}
		var resp response
		if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
			t.Fatalf("answer is not JSON: %q", rec.Body.String())
		}
		if strings.ContainsAny(resp.Error, "\r\n") {
			t.Fatalf("error is not one line: %q", resp.Error)
		}
		if rec.Code != 200 && resp.Error == "" {
			t.Fatalf("status %d without a reason", rec.Code)
		}
		if rec.Code == 200 && resp.Accepted != len(submitted) {
			t.Fatalf("answer says %d accepted, sink got %d", resp.Accepted, len(submitted))
		}
		for _, e := range submitted {
			if err := validateEvent(e); err != nil {
				t.Fatalf("submitted an invalid event %+v: %v", e, err)
			}
			if h.refuse(e) != "" {
				t.Fatalf("submitted a non-allowlisted event %+v", e)
			}
			if e.SubjectDigest != "" || e.ArtifactType == DefaultOwnArtifactType {
				t.Fatalf("submitted an artifact %+v", e)
			}
		}
	})
}
