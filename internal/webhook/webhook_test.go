package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const (
	testToken = "s3cret-token"
	digest1   = "sha256:9e4f7d3c5a1b2e8f60d7c4b3a29185e6f0d1c2b3a4958677e8f9a0b1c2d3e4f5"
	digest2   = "sha256:3b1f0a9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a29180f1e2d3c4b5a69788796"
	digest3   = "sha256:4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b"
)

// recordingSink keeps submitted events; fail decides per event whether
// Submit fails.
type recordingSink struct {
	mu     sync.Mutex
	events []Event
	fail   func(Event) error
}

func (s *recordingSink) Submit(_ context.Context, e Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		if err := s.fail(e); err != nil {
			return err
		}
	}
	s.events = append(s.events, e)
	return nil
}

func (s *recordingSink) got() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) inc(source, outcome string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[source+"/"+outcome]++
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.m {
		out[k] = v
	}
	return out
}

func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// handlerCase is one request against a fresh handler.
type handlerCase struct {
	name       string
	path       string
	body       []byte
	header     map[string]string
	opts       []Option
	fail       func(Event) error
	wantStatus int
	wantEvents []Event
	wantResp   response
	wantCount  map[string]int
}

func baseOptions(c *counter) []Option {
	return []Option{
		WithAuth("*", Auth{BearerToken: testToken}),
		WithAllowedRegistries("registry.example.com:5000", "harbor.example.com", "myregistry.azurecr.io", "zot.example.com"),
		WithEventCounter(c.inc),
	}
}

func runCases(t *testing.T, cases []handlerCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &counter{}
			sink := &recordingSink{fail: tc.fail}
			h, err := New(sink, append(baseOptions(c), tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			rec := do(h, tc.path, tc.body, tc.header)
			checkResponse(t, rec, tc.wantStatus, tc.wantResp)
			if got := sink.got(); !reflect.DeepEqual(got, tc.wantEvents) {
				t.Errorf("submitted events:\n got %+v\nwant %+v", got, tc.wantEvents)
			}
			if tc.wantCount != nil {
				if got := c.snapshot(); !reflect.DeepEqual(got, tc.wantCount) {
					t.Errorf("counter = %v, want %v", got, tc.wantCount)
				}
			}
		})
	}
}

func do(h http.Handler, path string, body []byte, header map[string]string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if _, ok := header["Authorization"]; !ok {
		req.Header.Set("Authorization", "Bearer "+testToken)
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func checkResponse(t *testing.T, rec *httptest.ResponseRecorder, wantStatus int, want response) {
	t.Helper()
	if rec.Code != wantStatus {
		t.Errorf("status = %d, want %d (body %s)", rec.Code, wantStatus, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	var got response
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("response body %q is not JSON: %v", rec.Body.String(), err)
	}
	if strings.Contains(got.Error, "\n") {
		t.Errorf("error is not one line: %q", got.Error)
	}
	// The error text is checked by substring; the counts exactly.
	wantErr := want.Error
	want.Error, got.Error = "", strings.ToLower(got.Error)
	gotErr := got.Error
	got.Error = ""
	if got != want {
		t.Errorf("response = %+v, want %+v", got, want)
	}
	if wantErr == "" && gotErr != "" && wantStatus == http.StatusOK {
		t.Errorf("unexpected error %q", gotErr)
	}
	if wantErr != "" && !strings.Contains(gotErr, strings.ToLower(wantErr)) {
		t.Errorf("error %q does not mention %q", gotErr, wantErr)
	}
}

func TestDistribution(t *testing.T) {
	const p = "/webhooks/distribution"
	multiFailAPI := func(e Event) error {
		if e.Repository == "apps/api" {
			return errors.New("nats: timeout")
		}
		return nil
	}
	runCases(t, []handlerCase{
		{
			name: "manifest push", path: p, body: fixture(t, "distribution_push.json"),
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{
				Source: "distribution", Registry: "registry.example.com:5000", Repository: "windows/servercore",
				Digest: digest1, Tag: "ltsc2022", MediaType: "application/vnd.oci.image.manifest.v1+json",
				ID: "5e1c9f3a-8d2b-4b7e-9a61-0c3f2e7d4b18",
			}},
			wantCount: map[string]int{"distribution/accepted": 1},
		},
		{
			name: "pull ignored", path: p, body: fixture(t, "distribution_pull.json"),
			wantStatus: 200, wantResp: response{Ignored: 1},
			wantCount: map[string]int{"distribution/ignored": 1},
		},
		{
			name: "delete ignored", path: p, body: fixture(t, "distribution_delete.json"),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "blob push ignored", path: p, body: fixture(t, "distribution_blob_push.json"),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "own artifact dropped by config media type", path: p, body: fixture(t, "distribution_own_artifact.json"),
			wantStatus: 200, wantResp: response{Ignored: 1},
			wantCount: map[string]int{"distribution/ignored": 1},
		},
		{
			name: "own artifact type is configurable", path: p,
			body:       bytes.ReplaceAll(fixture(t, "distribution_own_artifact.json"), []byte("sha256-9e4f7d3c5a1b2e8f60d7c4b3a29185e6f0d1c2b3a4958677e8f9a0b1c2d3e4f5"), []byte("v1")),
			opts:       []Option{WithOwnArtifactType("application/vnd.example.other+json")},
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{
				Source: "distribution", Registry: "registry.example.com:5000", Repository: "windows/servercore",
				Digest: digest2, Tag: "v1",
				MediaType: "application/vnd.oci.image.manifest.v1+json", ID: "6d5c4b3a-2918-4f7e-8d6c-5b4a39281706",
			}},
		},
		{
			// The index cimconv pushes to the referrers fallback tag (issue 9
			// #7): an image index media type, but never work.
			name: "referrers fallback-tag index ignored", path: p,
			body:       []byte(`{"events":[{"id":"f1","action":"push","target":{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"` + digest1 + `","repository":"a/b","tag":"sha256-` + strings.Repeat("ab", 32) + `","url":"https://registry.example.com:5000/v2/a/b/manifests/` + digest1 + `"}}]}`),
			wantStatus: 200, wantResp: response{Ignored: 1},
			wantCount: map[string]int{"distribution/ignored": 1},
		},
		{
			name: "several events: blob ignored, two manifests accepted", path: p, body: fixture(t, "distribution_multi.json"),
			wantStatus: 200, wantResp: response{Accepted: 2, Ignored: 1},
			wantEvents: []Event{
				{Source: "distribution", Registry: "registry.example.com:5000", Repository: "apps/web", Digest: digest1, Tag: "1.4.2-windows", MediaType: "application/vnd.docker.distribution.manifest.v2+json", ID: "11111111-aaaa-4bbb-8ccc-000000000002"},
				{Source: "distribution", Registry: "registry.example.com:5000", Repository: "apps/api", Digest: digest3, Tag: "2.0.0", MediaType: "application/vnd.oci.image.index.v1+json", ID: "11111111-aaaa-4bbb-8ccc-000000000003"},
			},
		},
		{
			name: "partial sink failure is 503 and reports what passed", path: p, body: fixture(t, "distribution_multi.json"),
			fail:       multiFailAPI,
			wantStatus: 503, wantResp: response{Accepted: 1, Ignored: 1, Failed: 1, Error: "nats: timeout"},
			wantEvents: []Event{
				{Source: "distribution", Registry: "registry.example.com:5000", Repository: "apps/web", Digest: digest1, Tag: "1.4.2-windows", MediaType: "application/vnd.docker.distribution.manifest.v2+json", ID: "11111111-aaaa-4bbb-8ccc-000000000002"},
			},
			wantCount: map[string]int{"distribution/accepted": 1, "distribution/ignored": 1, "distribution/error": 1},
		},
		{
			name: "prefix allowlist refuses other repositories in one envelope", path: p, body: fixture(t, "distribution_multi.json"),
			opts:       []Option{func(c *config) error { c.allow = nil; return nil }, WithAllowedRegistries("registry.example.com:5000/apps/web")},
			wantStatus: 200, wantResp: response{Accepted: 1, Ignored: 1, Refused: 1},
			wantEvents: []Event{
				{Source: "distribution", Registry: "registry.example.com:5000", Repository: "apps/web", Digest: digest1, Tag: "1.4.2-windows", MediaType: "application/vnd.docker.distribution.manifest.v2+json", ID: "11111111-aaaa-4bbb-8ccc-000000000002"},
			},
		},
		{
			name: "not allowlisted is 403", path: p, body: fixture(t, "distribution_push.json"),
			opts:       []Option{func(c *config) error { c.allow = nil; return nil }, WithAllowedRegistries("other.example.com", "registry.example.com:5000/apps")},
			wantStatus: 403, wantResp: response{Refused: 1, Error: "registry.example.com:5000/windows/servercore is not on the registry allowlist"},
			wantCount: map[string]int{"distribution/refused": 1},
		},
		{
			name: "no allowlist refuses everything", path: p, body: fixture(t, "distribution_push.json"),
			opts:       []Option{func(c *config) error { c.allow = nil; return nil }},
			wantStatus: 403, wantResp: response{Refused: 1, Error: "no registries are configured"},
		},
		{
			name: "sink failure is 503", path: p, body: fixture(t, "distribution_push.json"),
			fail:       func(Event) error { return errors.New("stream CIMCONV unavailable") },
			wantStatus: 503, wantResp: response{Failed: 1, Error: "stream CIMCONV unavailable"},
			wantCount: map[string]int{"distribution/error": 1},
		},
		{
			name: "sink duplicate is not a failure", path: p, body: fixture(t, "distribution_push.json"),
			fail:       func(Event) error { return fmt.Errorf("publish: %w", ErrDuplicate) },
			wantStatus: 200, wantResp: response{Duplicates: 1},
			wantCount: map[string]int{"distribution/duplicate": 1},
		},
		{
			name: "schema1 manifest ignored", path: p,
			body:       []byte(`{"events":[{"id":"s1","action":"push","target":{"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","digest":"` + digest1 + `","repository":"a/b","url":"https://registry.example.com:5000/v2/a/b/manifests/` + digest1 + `"}}]}`),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "OCI artifact manifest ignored", path: p,
			body:       []byte(`{"events":[{"id":"a1","action":"push","target":{"mediaType":"application/vnd.oci.artifact.manifest.v1+json","digest":"` + digest1 + `","repository":"a/b","url":"https://registry.example.com:5000/v2/a/b/manifests/` + digest1 + `"}}]}`),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "unknown manifest media type is left to the worker", path: p,
			body:       []byte(`{"events":[{"id":"u1","action":"push","target":{"mediaType":"application/vnd.example.manifest+json","digest":"` + digest1 + `","repository":"a/b","url":"https://registry.example.com:5000/v2/a/b/manifests/` + digest1 + `"}}]}`),
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{Source: "distribution", Registry: "registry.example.com:5000", Repository: "a/b", Digest: digest1, MediaType: "application/vnd.example.manifest+json", ID: "u1"}},
		},
		{
			name: "own artifactType on the target", path: p,
			body:       []byte(`{"events":[{"id":"t1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.cimconv.cim.v1+json","digest":"` + digest1 + `","repository":"a/b","url":"https://registry.example.com:5000/v2/a/b/manifests/` + digest1 + `"}}]}`),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "registry from request.host when there is no url", path: p,
			body:       []byte(`{"events":[{"id":"h1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digest1 + `","repository":"a/b"},"request":{"host":"Registry.Example.com:5000"}}]}`),
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{Source: "distribution", Registry: "registry.example.com:5000", Repository: "a/b", Digest: digest1, MediaType: "application/vnd.oci.image.manifest.v1+json", ID: "h1"}},
		},
		{
			name: "malformed JSON", path: p, body: []byte(`{"events": [ {"action": "push",`),
			wantStatus: 400, wantResp: response{Error: "distribution envelope: malformed JSON"},
			wantCount: map[string]int{"distribution/invalid": 1},
		},
		{
			name: "no events array", path: p, body: []byte(`{"event": []}`),
			wantStatus: 400, wantResp: response{Error: `no "events" array`},
		},
		{
			name: "wrong field type", path: p, body: []byte(`{"events": [{"action": 7}]}`),
			wantStatus: 400, wantResp: response{Error: "wrong JSON type"},
		},
		{
			name: "invalid repository in a push", path: p,
			body:       []byte(`{"events":[{"id":"x","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"` + digest1 + `","repository":"Windows/ServerCore","url":"https://registry.example.com:5000/v2/Windows/ServerCore/manifests/` + digest1 + `"}}]}`),
			wantStatus: 400, wantResp: response{Invalid: 1, Error: `invalid repository "Windows/ServerCore"`},
		},
		{
			name: "invalid digest in a push", path: p,
			body:       []byte(`{"events":[{"id":"x","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:xyz","repository":"a/b","url":"https://registry.example.com:5000/v2/a/b/manifests/sha256:xyz"}}]}`),
			wantStatus: 400, wantResp: response{Invalid: 1, Error: `invalid digest "sha256:xyz"`},
		},
	})
}

func TestHarbor(t *testing.T) {
	const p = "/webhooks/harbor"
	push := Event{Source: "harbor", Registry: "harbor.example.com", Repository: "windows/servercore", Digest: digest1, Tag: "ltsc2022"}
	pushCE := push
	pushCE.ID = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"
	runCases(t, []handlerCase{
		{
			name: "push", path: p, body: fixture(t, "harbor_push.json"),
			wantStatus: 200, wantResp: response{Accepted: 1}, wantEvents: []Event{push},
			wantCount: map[string]int{"harbor/accepted": 1},
		},
		{
			name: "push by digest has no tag", path: p, body: fixture(t, "harbor_push_by_digest.json"),
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{Source: "harbor", Registry: "harbor.example.com", Repository: "windows/servercore", Digest: digest3}},
		},
		{
			name: "push in CloudEvents format", path: p, body: fixture(t, "harbor_cloudevents_push.json"),
			header:     map[string]string{"Content-Type": "application/cloudevents+json"},
			wantStatus: 200, wantResp: response{Accepted: 1}, wantEvents: []Event{pushCE},
		},
		{
			name: "two resources in one push", path: p,
			body:       []byte(`{"type":"PUSH_ARTIFACT","event_data":{"resources":[{"digest":"` + digest1 + `","tag":"a","resource_url":"harbor.example.com/p/r:a"},{"digest":"` + digest3 + `","tag":"b","resource_url":"harbor.example.com/p/r:b"}],"repository":{"name":"r","namespace":"p"}}}`),
			wantStatus: 200, wantResp: response{Accepted: 2},
			wantEvents: []Event{
				{Source: "harbor", Registry: "harbor.example.com", Repository: "p/r", Digest: digest1, Tag: "a"},
				{Source: "harbor", Registry: "harbor.example.com", Repository: "p/r", Digest: digest3, Tag: "b"},
			},
		},
		{
			name: "resource_url with a scheme", path: p,
			body:       bytes.Replace(fixture(t, "harbor_push.json"), []byte(`"harbor.example.com/`), []byte(`"https://harbor.example.com/`), 1),
			wantStatus: 200, wantResp: response{Accepted: 1}, wantEvents: []Event{push},
		},
		{
			name: "pull ignored", path: p, body: fixture(t, "harbor_pull.json"),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "delete ignored", path: p, body: fixture(t, "harbor_delete.json"),
			wantStatus: 200, wantResp: response{Ignored: 1}, wantCount: map[string]int{"harbor/ignored": 1},
		},
		{
			name: "not allowlisted", path: p, body: fixture(t, "harbor_push.json"),
			opts:       []Option{func(c *config) error { c.allow = nil; return nil }, WithAllowedRegistries("harbor.example.com/linux")},
			wantStatus: 403, wantResp: response{Refused: 1, Error: "not on the registry allowlist"},
		},
		{
			name: "sink failure", path: p, body: fixture(t, "harbor_push.json"),
			fail:       func(Event) error { return errors.New("no responders") },
			wantStatus: 503, wantResp: response{Failed: 1, Error: "no responders"},
		},
		{
			name: "malformed", path: p, body: []byte(`{"type":"PUSH_ARTIFACT","event_data":{"resources":[}}`),
			wantStatus: 400, wantResp: response{Error: "harbor payload: malformed JSON"},
		},
		{
			name: "missing type", path: p, body: []byte(`{"event_data":{}}`),
			wantStatus: 400, wantResp: response{Error: `harbor payload: no "type"`},
		},
		{
			name: "resource_url without host gives no registry", path: p,
			body:       []byte(`{"type":"PUSH_ARTIFACT","event_data":{"resources":[{"digest":"` + digest1 + `","tag":"x","resource_url":""}],"repository":{"repo_full_name":"a/b"}}}`),
			wantStatus: 400, wantResp: response{Invalid: 1, Error: "names no registry"},
		},
	})
}

func TestCloudEvents(t *testing.T) {
	const p = "/webhooks/cloudevents?registry=zot.example.com"
	binary := func(typ string) map[string]string {
		return map[string]string{
			"Ce-Specversion": "1.0", "Ce-Type": typ, "Ce-Id": "4f3e2d1c-0b9a-4877-8665-544332211000",
			"Ce-Source": "zotregistry.dev", "Content-Type": "application/json",
		}
	}
	zotPush := Event{
		Source: "cloudevents", Registry: "zot.example.com", Repository: "windows/servercore", Digest: digest1,
		Tag: "ltsc2022", MediaType: "application/vnd.oci.image.manifest.v1+json", ID: "4f3e2d1c-0b9a-4877-8665-544332211000",
	}
	zotStructured := zotPush
	zotStructured.ID = "0d6c5b4a-3928-4f17-a6e5-d4c3b2a19087"
	runCases(t, []handlerCase{
		{
			name: "zot push, binary mode", path: p, body: fixture(t, "zot_image_updated_data.json"),
			header:     binary("zotregistry.image.updated"),
			wantStatus: 200, wantResp: response{Accepted: 1}, wantEvents: []Event{zotPush},
			wantCount: map[string]int{"cloudevents/accepted": 1},
		},
		{
			name: "zot push, structured mode", path: p, body: fixture(t, "zot_image_updated_structured.json"),
			header:     map[string]string{"Content-Type": "application/cloudevents+json; charset=utf-8"},
			wantStatus: 200, wantResp: response{Accepted: 1}, wantEvents: []Event{zotStructured},
		},
		{
			name: "zot push, batch mode", path: p,
			body:       []byte("[" + string(fixture(t, "zot_image_updated_structured.json")) + "]"),
			header:     map[string]string{"Content-Type": "application/cloudevents-batch+json"},
			wantStatus: 200, wantResp: response{Accepted: 1}, wantEvents: []Event{zotStructured},
		},
		{
			name: "zot push with a custom type prefix", path: p, body: fixture(t, "zot_image_updated_data.json"),
			header:     binary("acme.registry.image.updated"),
			wantStatus: 200, wantResp: response{Accepted: 1}, wantEvents: []Event{zotPush},
		},
		{
			name: "zot delete ignored", path: p, body: fixture(t, "zot_image_deleted_data.json"),
			header:     binary("zotregistry.image.deleted"),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "zot own artifact dropped", path: p, body: fixture(t, "zot_own_artifact_data.json"),
			header:     binary("zotregistry.image.updated"),
			wantStatus: 200, wantResp: response{Ignored: 1}, wantCount: map[string]int{"cloudevents/ignored": 1},
		},
		{
			name: "zot manifest with our config media type but no artifactType", path: p,
			body:       []byte(`{"name":"a/b","reference":"x","digest":"` + digest1 + `","mediaType":"application/vnd.oci.image.manifest.v1+json","manifest":"{\"config\":{\"mediaType\":\"application/vnd.cimconv.cim.v1+json\"}}"}`),
			header:     binary("zotregistry.image.updated"),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "zot manifest that does not parse is left to the worker", path: p,
			body:       []byte(`{"name":"a/b","reference":"x","digest":"` + digest1 + `","mediaType":"application/vnd.oci.image.manifest.v1+json","manifest":"{not json"}`),
			header:     binary("zotregistry.image.updated"),
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{Source: "cloudevents", Registry: "zot.example.com", Repository: "a/b", Digest: digest1, Tag: "x", MediaType: "application/vnd.oci.image.manifest.v1+json", ID: "4f3e2d1c-0b9a-4877-8665-544332211000"}},
		},
		{
			name: "zot artifact with subject dropped (not by its tag)", path: p, body: fixture(t, "zot_signature_data.json"),
			header:     binary("zotregistry.image.updated"),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "own cimconv events ignored", path: p, body: []byte(`{"image":"x"}`),
			header:     binary("io.cimconv.convert.requested"),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "event grid ImagePushed", path: "/webhooks/cloudevents", body: fixture(t, "eventgrid_cloudevents_pushed.json"),
			header:     map[string]string{"Content-Type": "application/cloudevents+json"},
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{
				Source: "cloudevents", Registry: "myregistry.azurecr.io", Repository: "windows/servercore", Digest: digest1, Tag: "ltsc2022",
				MediaType: "application/vnd.docker.distribution.manifest.v2+json", ID: "31c51664-e5bd-416a-a5df-e5206bc47ed0",
			}},
		},
		{
			name: "harbor CloudEvents on the generic endpoint", path: "/webhooks/cloudevents", body: fixture(t, "harbor_cloudevents_push.json"),
			header:     map[string]string{"Content-Type": "application/cloudevents+json"},
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{Source: "cloudevents", Registry: "harbor.example.com", Repository: "windows/servercore", Digest: digest1, Tag: "ltsc2022", ID: "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"}},
		},
		{
			name: "zot without ?registry= is invalid", path: "/webhooks/cloudevents", body: fixture(t, "zot_image_updated_data.json"),
			header:     binary("zotregistry.image.updated"),
			wantStatus: 400, wantResp: response{Invalid: 1, Error: "?registry=host"},
		},
		{
			name: "registry from query not allowlisted", path: "/webhooks/cloudevents?registry=evil.example.net", body: fixture(t, "zot_image_updated_data.json"),
			header:     binary("zotregistry.image.updated"),
			wantStatus: 403, wantResp: response{Refused: 1, Error: "evil.example.net"},
		},
		{
			name: "sink failure", path: p, body: fixture(t, "zot_image_updated_data.json"),
			header:     binary("zotregistry.image.updated"),
			fail:       func(Event) error { return errors.New("jetstream: stream not found") },
			wantStatus: 503, wantResp: response{Failed: 1, Error: "stream not found"},
		},
		{
			name: "malformed structured", path: p, body: []byte(`{"specversion":"1.0","type":`),
			header:     map[string]string{"Content-Type": "application/cloudevents+json"},
			wantStatus: 400, wantResp: response{Error: "cloudevent: malformed JSON"},
		},
		{
			name: "malformed binary data", path: p, body: []byte(`{"name":`),
			header:     binary("zotregistry.image.updated"),
			wantStatus: 400, wantResp: response{Error: "cloudevent zotregistry.image.updated data: malformed JSON"},
		},
		{
			name: "missing specversion", path: p, body: []byte(`{"type":"zotregistry.image.updated","data":{}}`),
			header:     map[string]string{"Content-Type": "application/cloudevents+json"},
			wantStatus: 400, wantResp: response{Error: `no "specversion"`},
		},
		{
			name: "unsupported specversion", path: p, body: []byte(`{"specversion":"0.3","type":"zotregistry.image.updated","data":{}}`),
			header:     map[string]string{"Content-Type": "application/cloudevents+json"},
			wantStatus: 400, wantResp: response{Error: `unsupported specversion "0.3"`},
		},
	})
}

func TestACR(t *testing.T) {
	const p = "/webhooks/acr"
	runCases(t, []handlerCase{
		{
			name: "push", path: p, body: fixture(t, "acr_push.json"),
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{
				Source: "acr", Registry: "myregistry.azurecr.io", Repository: "windows/servercore", Digest: digest1, Tag: "ltsc2022",
				MediaType: "application/vnd.docker.distribution.manifest.v2+json", ID: "cb8c3971-9adc-488b-8f2e-43cbb4974ff5",
			}},
			wantCount: map[string]int{"acr/accepted": 1},
		},
		{
			name: "event grid CloudEvent on the acr endpoint", path: p, body: fixture(t, "eventgrid_cloudevents_pushed.json"),
			header:     map[string]string{"Content-Type": "application/cloudevents+json"},
			wantStatus: 200, wantResp: response{Accepted: 1},
			wantEvents: []Event{{
				Source: "acr", Registry: "myregistry.azurecr.io", Repository: "windows/servercore", Digest: digest1, Tag: "ltsc2022",
				MediaType: "application/vnd.docker.distribution.manifest.v2+json", ID: "31c51664-e5bd-416a-a5df-e5206bc47ed0",
			}},
		},
		{
			name: "delete ignored", path: p, body: fixture(t, "acr_delete.json"),
			wantStatus: 200, wantResp: response{Ignored: 1},
		},
		{
			name: "helm chart push ignored", path: p, body: fixture(t, "acr_chart_push.json"),
			wantStatus: 200, wantResp: response{Ignored: 1}, wantCount: map[string]int{"acr/ignored": 1},
		},
		{
			name: "not allowlisted", path: p, body: fixture(t, "acr_push.json"),
			opts:       []Option{func(c *config) error { c.allow = nil; return nil }, WithAllowedRegistries("other.azurecr.io")},
			wantStatus: 403, wantResp: response{Refused: 1, Error: "myregistry.azurecr.io/windows/servercore"},
		},
		{
			name: "sink failure", path: p, body: fixture(t, "acr_push.json"),
			fail:       func(Event) error { return context.DeadlineExceeded },
			wantStatus: 503, wantResp: response{Failed: 1, Error: "deadline exceeded"},
		},
		{
			name: "malformed", path: p, body: []byte(`not json`),
			wantStatus: 400, wantResp: response{Error: "acr payload: body is not a JSON object"},
		},
		{
			name: "no action", path: p, body: []byte(`{"target":{}}`),
			wantStatus: 400, wantResp: response{Error: `acr payload: no "action"`},
		},
		{
			name: "registry host that would read as a Docker Hub namespace", path: p,
			body:       []byte(`{"id":"1","action":"push","target":{"digest":"` + digest1 + `","repository":"a/b"},"request":{"host":"myregistry"}}`),
			wantStatus: 400, wantResp: response{Invalid: 1, Error: "docker hub namespace"},
		},
	})
}

func TestOversizedBody(t *testing.T) {
	for _, ep := range endpoints {
		t.Run(ep, func(t *testing.T) {
			c := &counter{}
			sink := &recordingSink{}
			h, err := New(sink, append(baseOptions(c), WithMaxBodyBytes(512))...)
			if err != nil {
				t.Fatal(err)
			}
			body := fixture(t, "distribution_push.json") // > 512 bytes
			rec := do(h, "/webhooks/"+ep, body, nil)
			checkResponse(t, rec, http.StatusRequestEntityTooLarge, response{Error: "exceeds 512 bytes"})
			if len(sink.got()) != 0 {
				t.Error("oversized body was submitted")
			}
			if got := c.snapshot(); got[ep+"/invalid"] != 1 {
				t.Errorf("counter = %v", got)
			}
		})
	}
}

func TestBearerAuth(t *testing.T) {
	body := fixture(t, "acr_push.json")
	basic := func(user, pass string) string {
		req := httptest.NewRequest("GET", "/", nil)
		req.SetBasicAuth(user, pass)
		return req.Header.Get("Authorization")
	}
	cases := []struct {
		name   string
		header string
		want   int
		reason string
	}{
		{"bearer", "Bearer " + testToken, 200, ""},
		{"bearer scheme case-insensitive", "bearer " + testToken, 200, ""},
		{"bare token (Harbor auth header)", testToken, 200, ""},
		{"basic password (zot credentials)", basic("zot", testToken), 200, ""},
		{"missing", "", 401, "missing authorization header"},
		{"wrong token", "Bearer nope", 401, "wrong token"},
		{"token prefix", "Bearer " + testToken[:5], 401, "wrong token"},
		{"token with suffix", "Bearer " + testToken + "x", 401, "wrong token"},
		{"basic wrong password", basic("zot", "nope"), 401, "wrong token"},
		{"basic malformed", "Basic !!!", 401, "malformed basic"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &counter{}
			sink := &recordingSink{}
			h, err := New(sink, baseOptions(c)...)
			if err != nil {
				t.Fatal(err)
			}
			rec := do(h, "/webhooks/acr", body, map[string]string{"Authorization": tc.header})
			if rec.Code != tc.want {
				t.Fatalf("status = %d, want %d (%s)", rec.Code, tc.want, rec.Body.String())
			}
			if tc.want == 401 {
				checkResponse(t, rec, 401, response{Error: tc.reason})
				if n := len(sink.got()); n != 0 {
					t.Errorf("%d events submitted without auth", n)
				}
				if got := c.snapshot(); !reflect.DeepEqual(got, map[string]int{"acr/unauthorized": 1}) {
					t.Errorf("counter = %v", got)
				}
				if rec.Header().Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate header")
				}
			}
		})
	}
}

func TestEndpointWithoutCredentials(t *testing.T) {
	sink := &recordingSink{}
	// Auth only for acr: the other endpoints have none and refuse.
	h, err := New(sink, WithAuth("acr", Auth{BearerToken: testToken}), WithAllowedRegistries("harbor.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	rec := do(h, "/webhooks/harbor", fixture(t, "harbor_push.json"), nil)
	checkResponse(t, rec, 401, response{Error: "no credentials configured"})

	h, err = New(sink, WithInsecureNoAuth("harbor"), WithAllowedRegistries("harbor.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	rec = do(h, "/webhooks/harbor", fixture(t, "harbor_push.json"), map[string]string{"Authorization": ""})
	checkResponse(t, rec, 200, response{Accepted: 1})
	rec = do(h, "/webhooks/acr", fixture(t, "acr_push.json"), map[string]string{"Authorization": ""})
	checkResponse(t, rec, 401, response{Error: "no credentials configured"})
}

// signedHandler returns a handler with HMAC auth on every endpoint and a
// clock the test controls.
func signedHandler(t *testing.T, secret []byte, now *time.Time, extra ...Option) (*Handler, *recordingSink, *counter) {
	t.Helper()
	c := &counter{}
	sink := &recordingSink{}
	opts := append([]Option{
		WithAuth("*", Auth{HMACSecret: secret, ReplayWindow: 5 * time.Minute}),
		WithAllowedRegistries("myregistry.azurecr.io"),
		WithEventCounter(c.inc),
		func(c *config) error { c.now = func() time.Time { return *now }; return nil },
	}, extra...)
	h, err := New(sink, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return h, sink, c
}

// sign computes the signature the way a sender must: hex HMAC-SHA256 of
// timestamp "." body. It is written independently of the handler's code
// path on purpose (crypto/hmac directly).
func sign(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts + "." + string(body)))
	return hex.EncodeToString(m.Sum(nil))
}

func TestHMACAuth(t *testing.T) {
	secret := []byte("hmac-secret-for-tests")
	body := fixture(t, "acr_push.json")
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	ts := fmt.Sprint(t0.Unix())
	good := sign(secret, ts, body)

	type req struct {
		at     time.Duration // clock offset from t0 when the request arrives
		ts     string
		sig    string
		body   []byte
		want   int
		reason string
		repeat bool // answered from an earlier delivery: nothing queued
	}
	cases := []struct {
		name string
		reqs []req
	}{
		{"valid hex", []req{{ts: ts, sig: good, want: 200}}},
		{"valid sha256= prefix, upper case", []req{{ts: ts, sig: "sha256=" + strings.ToUpper(good), want: 200}}},
		{"forged signature", []req{{ts: ts, sig: sign([]byte("other"), ts, body), want: 401, reason: "signature mismatch"}}},
		{"body tampered", []req{{ts: ts, sig: good, body: bytes.Replace(body, []byte("servercore"), []byte("nanoserver"), 1), want: 401, reason: "signature mismatch"}}},
		{"timestamp tampered", []req{{ts: fmt.Sprint(t0.Unix() + 1), sig: good, want: 401, reason: "signature mismatch"}}},
		{"replayed within window: answered from the first delivery", []req{{ts: ts, sig: good, want: 200}, {at: time.Minute, ts: ts, sig: good, want: 200, repeat: true}}},
		{"expired", []req{{at: 6 * time.Minute, ts: ts, sig: good, want: 401, reason: "old"}}},
		{"replay after the window is refused as stale", []req{{ts: ts, sig: good, want: 200}, {at: 10 * time.Minute, ts: ts, sig: good, want: 401, reason: "old"}}},
		{"future", []req{{at: -6 * time.Minute, ts: ts, sig: good, want: 401, reason: "in the future"}}},
		{"missing signature", []req{{ts: ts, sig: "", want: 401, reason: "missing signature header"}}},
		{"missing timestamp", []req{{ts: "", sig: good, want: 401, reason: "missing timestamp header"}}},
		{"timestamp not a number", []req{{ts: "yesterday", sig: good, want: 401, reason: "not unix seconds"}}},
		{"signature not hex", []req{{ts: ts, sig: "zz", want: 401, reason: "not a hex"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := t0
			h, sink, c := signedHandler(t, secret, &now)
			wantSubmitted, unauth := 0, 0
			for i, r := range tc.reqs {
				now = t0.Add(r.at)
				b := body
				if r.body != nil {
					b = r.body
				}
				hdr := map[string]string{
					"Authorization":        "",
					DefaultSignatureHeader: r.sig,
					DefaultTimestampHeader: r.ts,
				}
				rec := do(h, "/webhooks/acr", b, hdr)
				if rec.Code != r.want {
					t.Fatalf("request %d: status = %d, want %d (%s)", i, rec.Code, r.want, rec.Body.String())
				}
				switch {
				case r.want == 401:
					checkResponse(t, rec, 401, response{Error: r.reason})
					unauth++
				case r.repeat:
					checkResponse(t, rec, 200, response{Duplicates: 1})
				default:
					checkResponse(t, rec, 200, response{Accepted: 1})
					wantSubmitted++
				}
			}
			if got := len(sink.got()); got != wantSubmitted {
				t.Errorf("submitted %d events, want %d", got, wantSubmitted)
			}
			if got := c.snapshot()["acr/unauthorized"]; got != unauth {
				t.Errorf("unauthorized count = %d, want %d", got, unauth)
			}
		})
	}
}

// A request whose events could not be queued (503) must be retryable with
// the same signature; the events accepted the first time are not queued
// twice.
func TestSignedRetryAfterSinkFailure(t *testing.T) {
	secret := []byte("k")
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	h, sink, c := signedHandler(t, secret, &now, func(c *config) error {
		c.allow = nil
		return WithAllowedRegistries("registry.example.com:5000")(c)
	})
	failing := true
	sink.fail = func(e Event) error {
		if failing && e.Repository == "apps/api" {
			return errors.New("nats down")
		}
		return nil
	}
	body := fixture(t, "distribution_multi.json")
	ts := fmt.Sprint(now.Unix())
	hdr := map[string]string{"Authorization": "", DefaultSignatureHeader: sign(secret, ts, body), DefaultTimestampHeader: ts}

	rec := do(h, "/webhooks/distribution", body, hdr)
	checkResponse(t, rec, 503, response{Accepted: 1, Ignored: 1, Failed: 1, Error: "nats down"})
	if rec.Header().Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}

	failing = false
	rec = do(h, "/webhooks/distribution", body, hdr)
	checkResponse(t, rec, 200, response{Accepted: 1, Ignored: 1, Duplicates: 1})

	var repos []string
	for _, e := range sink.got() {
		repos = append(repos, e.Repository)
	}
	if want := []string{"apps/web", "apps/api"}; !reflect.DeepEqual(repos, want) {
		t.Errorf("queued %v, want %v", repos, want)
	}
	// Once answered 200, the same signed request is answered from that
	// answer (its events are duplicates) and queues nothing; sent to
	// another endpoint it is a replay.
	rec = do(h, "/webhooks/distribution", body, hdr)
	checkResponse(t, rec, 200, response{Ignored: 1, Duplicates: 2})
	rec = do(h, "/webhooks/harbor", body, hdr)
	checkResponse(t, rec, 401, response{Error: "replay"})
	if n := len(sink.got()); n != 2 {
		t.Errorf("queued %d events after the repeats, want 2", n)
	}
	want := map[string]int{
		"distribution/accepted": 2, "distribution/ignored": 3, "distribution/error": 1,
		"distribution/duplicate": 3, "harbor/unauthorized": 1,
	}
	if got := c.snapshot(); !reflect.DeepEqual(got, want) {
		t.Errorf("counter = %v, want %v", got, want)
	}
}

func TestBearerAndHMACBothRequired(t *testing.T) {
	secret := []byte("k")
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	h, sink, _ := signedHandler(t, secret, &now, WithAuth("acr", Auth{BearerToken: testToken, HMACSecret: secret}))
	body := fixture(t, "acr_push.json")
	ts := fmt.Sprint(now.Unix())
	sig := sign(secret, ts, body)

	rec := do(h, "/webhooks/acr", body, map[string]string{"Authorization": "", DefaultSignatureHeader: sig, DefaultTimestampHeader: ts})
	checkResponse(t, rec, 401, response{Error: "missing authorization"})
	rec = do(h, "/webhooks/acr", body, map[string]string{"Authorization": "Bearer " + testToken})
	checkResponse(t, rec, 401, response{Error: "missing signature"})
	rec = do(h, "/webhooks/acr", body, map[string]string{"Authorization": "Bearer " + testToken, DefaultSignatureHeader: sig, DefaultTimestampHeader: ts})
	checkResponse(t, rec, 200, response{Accepted: 1})
	if n := len(sink.got()); n != 1 {
		t.Errorf("submitted %d, want 1", n)
	}
}

func TestCustomSignatureHeaders(t *testing.T) {
	secret := []byte("k")
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	h, _, _ := signedHandler(t, secret, &now, WithAuth("acr", Auth{HMACSecret: secret, SignatureHeader: "X-Hub-Signature-256", TimestampHeader: "X-Request-Timestamp"}))
	body := fixture(t, "acr_push.json")
	ts := fmt.Sprint(now.Unix())
	rec := do(h, "/webhooks/acr", body, map[string]string{"Authorization": "", "X-Hub-Signature-256": "sha256=" + sign(secret, ts, body), "X-Request-Timestamp": ts})
	checkResponse(t, rec, 200, response{Accepted: 1})
}

func TestDuplicateEnvelope(t *testing.T) {
	c := &counter{}
	sink := &recordingSink{}
	h, err := New(sink, baseOptions(c)...)
	if err != nil {
		t.Fatal(err)
	}
	body := fixture(t, "distribution_push.json")
	checkResponse(t, do(h, "/webhooks/distribution", body, nil), 200, response{Accepted: 1})
	checkResponse(t, do(h, "/webhooks/distribution", body, nil), 200, response{Duplicates: 1})
	if n := len(sink.got()); n != 1 {
		t.Errorf("submitted %d, want 1", n)
	}
	if got := c.snapshot(); !reflect.DeepEqual(got, map[string]int{"distribution/accepted": 1, "distribution/duplicate": 1}) {
		t.Errorf("counter = %v", got)
	}
}

// A registry times out a slow delivery and retries at once (distribution's
// default is 1 s). The retry must not be answered "duplicate" while the
// first delivery is still being queued: when that one then fails, nobody
// would queue the event (seen in the fault suite's cluster failover, where
// queueing waits out a NATS election).
func TestRetryWhileEarlierDeliveryIsPending(t *testing.T) {
	c := &counter{}
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	sink := &recordingSink{fail: func(Event) error {
		if calls.Add(1) == 1 {
			close(entered)
			<-release // the first delivery is slow, then fails
			return errors.New("nats: no response from stream")
		}
		return nil
	}}
	h, err := New(sink, baseOptions(c)...)
	if err != nil {
		t.Fatal(err)
	}
	body := fixture(t, "distribution_push.json")
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- do(h, "/webhooks/distribution", body, nil) }()
	<-entered
	second := make(chan *httptest.ResponseRecorder)
	go func() { second <- do(h, "/webhooks/distribution", body, nil) }()
	select {
	case rec := <-second:
		t.Fatalf("the retry was answered while the first delivery was pending: %d %s", rec.Code, rec.Body.String())
	case <-time.After(100 * time.Millisecond):
	}
	// recordingSink holds its lock while fail runs: release outside it.
	close(release)
	if rec := <-first; rec.Code != 503 {
		t.Errorf("first delivery: %d %s, want 503", rec.Code, rec.Body.String())
	}
	checkResponse(t, <-second, 200, response{Accepted: 1})
	if n := len(sink.got()); n != 1 {
		t.Errorf("queued %d events, want 1", n)
	}
}

// A sink that panics fails that delivery (503) and forgets the event's
// reservation: the registry's retry queues it. Before, the reservation stayed
// pending and every later delivery of the event waited for it until its
// request's context ended.
func TestSinkPanicFailsTheDeliveryOnly(t *testing.T) {
	c := &counter{}
	var calls atomic.Int32
	sink := &recordingSink{fail: func(Event) error {
		if calls.Add(1) == 1 {
			panic("sink bug")
		}
		return nil
	}}
	h, err := New(sink, baseOptions(c)...)
	if err != nil {
		t.Fatal(err)
	}
	body := fixture(t, "distribution_push.json")
	if rec := do(h, "/webhooks/distribution", body, nil); rec.Code != 503 {
		t.Errorf("delivery whose sink panicked: %d %s, want 503", rec.Code, rec.Body.String())
	}
	retry := make(chan *httptest.ResponseRecorder, 1)
	go func() { retry <- do(h, "/webhooks/distribution", body, nil) }()
	select {
	case rec := <-retry:
		checkResponse(t, rec, 200, response{Accepted: 1})
	case <-time.After(10 * time.Second):
		t.Fatal("the retry still waits for the delivery whose sink panicked")
	}
	if n := len(sink.got()); n != 1 {
		t.Errorf("queued %d events, want 1", n)
	}
}

// The signed variant: a sender that signs resends a delivery it gave up on
// verbatim (same body, timestamp and signature). The retry must not be
// refused as a replay while the first delivery is still being queued: it
// waits, is a duplicate when the first queued the event, and goes through
// when the first failed. Before, the signature reserved by the first
// delivery refused the retry at once (401), and the first then failed: the
// event was lost.
func TestSignedRetryWhileEarlierDeliveryIsPending(t *testing.T) {
	cases := []struct {
		name      string
		firstErr  error
		wantFirst int
		wantRetry response
	}{
		{"first delivery fails: the retry queues the event", errors.New("nats: no response from stream"), 503, response{Accepted: 1}},
		{"first delivery queues: the retry is a duplicate", nil, 200, response{Duplicates: 1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			secret := []byte("k")
			now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
			h, sink, c := signedHandler(t, secret, &now)
			entered, release := make(chan struct{}), make(chan struct{})
			var calls atomic.Int32
			sink.fail = func(Event) error {
				if calls.Add(1) == 1 {
					close(entered)
					<-release // the first delivery is slow (a NATS election)
					return tc.firstErr
				}
				return nil
			}
			body := fixture(t, "acr_push.json")
			ts := fmt.Sprint(now.Unix())
			hdr := map[string]string{"Authorization": "", DefaultSignatureHeader: sign(secret, ts, body), DefaultTimestampHeader: ts}

			first := make(chan *httptest.ResponseRecorder)
			go func() { first <- do(h, "/webhooks/acr", body, hdr) }()
			<-entered
			second := make(chan *httptest.ResponseRecorder)
			go func() { second <- do(h, "/webhooks/acr", body, hdr) }()
			select {
			case rec := <-second:
				close(release)
				<-first
				t.Fatalf("the retry was answered while the first delivery was pending: %d %s", rec.Code, rec.Body.String())
			case <-time.After(100 * time.Millisecond):
			}
			// recordingSink holds its lock while fail runs: release outside it.
			close(release)
			if rec := <-first; rec.Code != tc.wantFirst {
				t.Errorf("first delivery: %d %s, want %d", rec.Code, rec.Body.String(), tc.wantFirst)
			}
			checkResponse(t, <-second, 200, tc.wantRetry)
			if n := len(sink.got()); n != 1 {
				t.Errorf("queued %d events, want 1", n)
			}
			if n := c.snapshot()["acr/unauthorized"]; n != 0 {
				t.Errorf("%d requests refused as unauthorized, want none", n)
			}
		})
	}
}

func TestRouting(t *testing.T) {
	h, err := New(&recordingSink{}, WithInsecureNoAuth("*"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		method, path string
		header       map[string]string
		want         int
		wantHeader   [2]string
	}{
		{"POST", "/webhooks/quay", nil, 404, [2]string{}},
		{"POST", "/webhooks/", nil, 404, [2]string{}},
		{"POST", "/webhooksacr", nil, 404, [2]string{}},
		{"POST", "/other/acr", nil, 404, [2]string{}},
		{"GET", "/webhooks/distribution", nil, 405, [2]string{"Allow", "POST"}},
		{"OPTIONS", "/webhooks/cloudevents", map[string]string{"WebHook-Request-Origin": "eventgrid.azure.net"}, 200, [2]string{"WebHook-Allowed-Origin", "eventgrid.azure.net"}},
		{"OPTIONS", "/webhooks/acr", map[string]string{"WebHook-Request-Origin": "eventgrid.azure.net"}, 405, [2]string{"Allow", "POST"}},
		{"POST", "/acr", nil, 200, [2]string{}}, // mounted with StripPrefix
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, tc.path, strings.NewReader(`{"action":"ping"}`))
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Errorf("status = %d, want %d (%s)", rec.Code, tc.want, rec.Body.String())
			}
			if tc.wantHeader[0] != "" && rec.Header().Get(tc.wantHeader[0]) != tc.wantHeader[1] {
				t.Errorf("%s = %q, want %q", tc.wantHeader[0], rec.Header().Get(tc.wantHeader[0]), tc.wantHeader[1])
			}
		})
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	cases := []struct {
		name string
		sink Sink
		opts []Option
		want string
	}{
		{"nil sink", nil, nil, "nil sink"},
		{"unknown endpoint", &recordingSink{}, []Option{WithAuth("quay", Auth{BearerToken: "x"})}, `unknown endpoint "quay"`},
		{"empty auth", &recordingSink{}, []Option{WithAuth("acr", Auth{})}, "neither a bearer token nor an HMAC secret"},
		{"negative window", &recordingSink{}, []Option{WithAuth("acr", Auth{BearerToken: "x", ReplayWindow: -time.Second})}, "negative replay window"},
		{"allowlist URL", &recordingSink{}, []Option{WithAllowedRegistries("https://registry.example.com")}, "not a URL"},
		{"allowlist empty", &recordingSink{}, []Option{WithAllowedRegistries(" ")}, "empty"},
		{"allowlist dotless host", &recordingSink{}, []Option{WithAllowedRegistries("myregistry/apps")}, "docker hub namespace"},
		{"allowlist bad prefix", &recordingSink{}, []Option{WithAllowedRegistries("r.example.com/Apps")}, "invalid repository prefix"},
		{"zero body limit", &recordingSink{}, []Option{WithMaxBodyBytes(0)}, "not positive"},
		{"empty own type", &recordingSink{}, []Option{WithOwnArtifactType("")}, "empty"},
		{"nil logger", &recordingSink{}, []Option{WithLogger(nil)}, "nil"},
		{"nil counter", &recordingSink{}, []Option{WithEventCounter(nil)}, "nil"},
		{"no-auth unknown endpoint", &recordingSink{}, []Option{WithInsecureNoAuth("gcr")}, `unknown endpoint "gcr"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.sink, tc.opts...)
			if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tc.want)) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestEventRef(t *testing.T) {
	cases := []struct {
		e    Event
		want string
	}{
		{Event{Registry: "r.example.com:5000", Repository: "a/b", Digest: digest1, Tag: "t"}, "r.example.com:5000/a/b@" + digest1},
		{Event{Registry: "r.example.com", Repository: "a", Tag: "ltsc2022"}, "r.example.com/a:ltsc2022"},
	}
	for _, tc := range cases {
		if got := tc.e.Ref(); got != tc.want {
			t.Errorf("Ref() = %q, want %q", got, tc.want)
		}
	}
}

func TestAllowEntry(t *testing.T) {
	cases := []struct {
		entry, registry, repo string
		want                  bool
	}{
		{"r.example.com", "r.example.com", "any/repo", true},
		{"R.Example.com", "r.example.com", "x", true},
		{"r.example.com", "r.example.com:443", "x", false},
		{"r.example.com/apps", "r.example.com", "apps", true},
		{"r.example.com/apps", "r.example.com", "apps/web", true},
		{"r.example.com/apps", "r.example.com", "apps2/web", false},
		{"r.example.com/apps/", "r.example.com", "apps/web", true},
		{"r.example.com/apps", "s.example.com", "apps/web", false},
	}
	for _, tc := range cases {
		e, err := parseAllowEntry(tc.entry)
		if err != nil {
			t.Fatalf("%s: %v", tc.entry, err)
		}
		if got := e.Allows(tc.registry, tc.repo); got != tc.want {
			t.Errorf("%q allows(%s, %s) = %v, want %v", tc.entry, tc.registry, tc.repo, got, tc.want)
		}
	}
}

// Secrets, and whatever a caller presents as credentials, never reach the
// logs, whatever the outcome.
func TestSecretsNotLogged(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	secret := []byte("hmac-secret-never-logged")
	now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	sink := &recordingSink{}
	h, err := New(sink,
		WithAuth("distribution", Auth{BearerToken: testToken}),
		WithAuth("acr", Auth{HMACSecret: secret}),
		WithAllowedRegistries("registry.example.com:5000", "myregistry.azurecr.io"),
		WithLogger(zap.New(core)),
		func(c *config) error { c.now = func() time.Time { return now }; return nil },
	)
	if err != nil {
		t.Fatal(err)
	}
	const presented = "Bearer presented-wrong-credential"
	body := fixture(t, "acr_push.json")
	ts := fmt.Sprint(now.Unix())
	do(h, "/webhooks/distribution", fixture(t, "distribution_push.json"), nil)
	do(h, "/webhooks/distribution", fixture(t, "distribution_push.json"), map[string]string{"Authorization": presented})
	do(h, "/webhooks/acr", body, map[string]string{"Authorization": "", DefaultSignatureHeader: sign(secret, ts, body), DefaultTimestampHeader: ts})
	do(h, "/webhooks/acr", body, map[string]string{"Authorization": "", DefaultSignatureHeader: sign([]byte("x"), ts, body), DefaultTimestampHeader: ts})
	if len(logs.All()) < 4 {
		t.Fatalf("only %d log entries: the check below would prove nothing", len(logs.All()))
	}
	for _, e := range logs.All() {
		text := e.Message + fmt.Sprint(e.ContextMap())
		for _, s := range []string{testToken, string(secret), "presented-wrong-credential"} {
			if strings.Contains(text, s) {
				t.Errorf("log entry %q contains a credential: %s", e.Message, text)
			}
		}
	}
}

func TestExpirySet(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type op struct {
		key  string
		at   time.Duration
		ttl  time.Duration
		want bool // reserved (not a duplicate)
	}
	cases := []struct {
		name    string
		max     int
		ops     []op
		forget  string // reserved after the ops and forgotten (settled as not kept), then reserved again
		wantLen int
	}{
		{"live key refused", 0, []op{{"a", 0, time.Minute, true}, {"a", 30 * time.Second, time.Minute, false}}, "", 1},
		{"expired key re-added", 0, []op{{"a", 0, time.Minute, true}, {"a", time.Minute, time.Minute, true}}, "", 1},
		{"expired entries pruned", 0, []op{{"a", 0, time.Second, true}, {"b", 0, time.Second, true}, {"c", time.Hour, time.Second, true}}, "", 1},
		{"bound evicts oldest", 2, []op{{"a", 0, time.Hour, true}, {"b", 0, time.Hour, true}, {"c", 0, time.Hour, true}, {"a", 0, time.Hour, true}}, "", 2},
		{"forgotten key can be reserved again", 0, nil, "a", 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newExpirySet[int](tc.max)
			now := t0
			clock := func() time.Time { return now }
			reserve := func(key string, ttl time.Duration) (int, bool) {
				t.Helper()
				prior, dup, err := s.reserve(context.Background(), key, clock, func(t time.Time) time.Time { return t.Add(ttl) })
				if err != nil {
					t.Fatal(err)
				}
				return prior, dup
			}
			settled := map[string]int{}
			for i, o := range tc.ops {
				now = t0.Add(o.at)
				prior, dup := reserve(o.key, o.ttl)
				if !dup != o.want {
					t.Fatalf("op %d reserve(%s): reserved = %v, want %v", i, o.key, !dup, o.want)
				}
				if dup {
					if prior != settled[o.key] {
						t.Errorf("op %d reserve(%s): value %d, want %d (settled by the earlier delivery)", i, o.key, prior, settled[o.key])
					}
					continue
				}
				settled[o.key] = i + 1 // 0 is "none"
				s.settle(o.key, true, i+1)
			}
			if k := tc.forget; k != "" {
				if _, dup := reserve(k, time.Hour); dup {
					t.Fatalf("reserve(%s) refused", k)
				}
				s.settle(k, false, 1)
				if _, dup := reserve(k, time.Hour); dup {
					t.Fatalf("re-reserving forgotten key %s refused", k)
				}
				s.settle(k, true, 1)
			}
			if got := s.len(); got != tc.wantLen {
				t.Errorf("len = %d, want %d", got, tc.wantLen)
			}
		})
	}
}

// Concurrent deliveries of one envelope queue its event once; concurrent
// uses of one signature pass once.
func TestConcurrentDeliveries(t *testing.T) {
	const n = 8
	run := func(t *testing.T, h *Handler, header map[string]string, path string, body []byte) map[int]int {
		codes := make(chan int, n)
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				codes <- do(h, path, body, header).Code
			}()
		}
		wg.Wait()
		close(codes)
		got := map[int]int{}
		for c := range codes {
			got[c]++
		}
		return got
	}
	t.Run("same event id", func(t *testing.T) {
		c := &counter{}
		sink := &recordingSink{}
		h, err := New(sink, baseOptions(c)...)
		if err != nil {
			t.Fatal(err)
		}
		codes := run(t, h, nil, "/webhooks/distribution", fixture(t, "distribution_push.json"))
		if codes[200] != n {
			t.Errorf("status codes %v, want %d x 200", codes, n)
		}
		if got := len(sink.got()); got != 1 {
			t.Errorf("queued %d times, want 1", got)
		}
		if got := c.snapshot(); got["distribution/duplicate"] != n-1 {
			t.Errorf("counter = %v", got)
		}
	})
	t.Run("same signature", func(t *testing.T) {
		secret := []byte("k")
		now := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
		h, sink, _ := signedHandler(t, secret, &now)
		body := fixture(t, "acr_push.json")
		ts := fmt.Sprint(now.Unix())
		hdr := map[string]string{"Authorization": "", DefaultSignatureHeader: sign(secret, ts, body), DefaultTimestampHeader: ts}
		codes := run(t, h, hdr, "/webhooks/acr", body)
		if codes[200] != n {
			t.Errorf("status codes %v, want %d x 200 (one accepted, the others answered from it)", codes, n)
		}
		if got := len(sink.got()); got != 1 {
			t.Errorf("queued %d times, want 1", got)
		}
	})
}
