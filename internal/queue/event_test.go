package queue

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	in := Request{Image: pinned, OSVersion: "10.0.20348", Force: true, Requester: "ci", Source: "cli"}
	b, err := EncodeRequest(in)
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(b, &ev); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"specversion": "1.0", "type": TypeRequested, "datacontenttype": "application/json", "subject": pinned, "source": "cli"} {
		if ev[k] != want {
			t.Errorf("CloudEvent %s = %v, want %q", k, ev[k], want)
		}
	}
	if id, _ := ev["id"].(string); len(id) != 32 {
		t.Errorf("event id %q", id)
	}
	out, err := DecodeRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := in.Normalize()
	if out != want {
		t.Errorf("round trip: got %+v, want %+v", out, want)
	}
	if out.Platform != DefaultPlatform || out.Builder != DefaultBuilder || out.SchemaVersion != SchemaVersion {
		t.Errorf("defaults not applied: %+v", out)
	}
}

func TestDecodeRequestErrors(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"not json", `{`, "not a CloudEvent"},
		{"wrong spec", `{"specversion":"0.3","type":"io.cimconv.convert.requested","data":{}}`, "specversion"},
		{"wrong type", `{"specversion":"1.0","type":"io.cimconv.convert.succeeded","data":{}}`, "event type"},
		{"no data", `{"specversion":"1.0","type":"io.cimconv.convert.requested"}`, "no data"},
		{"empty image", `{"specversion":"1.0","type":"io.cimconv.convert.requested","data":{"image":" "}}`, "image is empty"},
		{"bad image", `{"specversion":"1.0","type":"io.cimconv.convert.requested","data":{"image":"a b"}}`, "image \"a b\""},
		{"image that reads as a malformed digest", `{"specversion":"1.0","type":"io.cimconv.convert.requested","data":{"image":"sha256:0"}}`, "malformed sha256 digest"},
		{"bad platform", `{"specversion":"1.0","type":"io.cimconv.convert.requested","data":{"image":"x/y","platform":"windows"}}`, "platform"},
		{"bad builder", `{"specversion":"1.0","type":"io.cimconv.convert.requested","data":{"image":"x/y","builder":"magic"}}`, "builder"},
		{"future schema", `{"specversion":"1.0","type":"io.cimconv.convert.requested","data":{"image":"x/y","schemaVersion":99}}`, "schemaVersion 99"},
		{"data is a string", `{"specversion":"1.0","type":"io.cimconv.convert.requested","data":"x/y"}`, "data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRequest([]byte(tt.body))
			if !errors.Is(err, ErrInvalidRequest) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want ErrInvalidRequest mentioning %q", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestIdempotencyKey(t *testing.T) {
	base := Request{Image: pinned}
	same := []Request{
		{Image: pinned, Platform: DefaultPlatform, Builder: DefaultBuilder, Requester: "x", Source: "y"},
		{Image: strings.Replace(pinned, "app@", "app:latest@", 1)},
	}
	different := []Request{
		{Image: pinned, Force: true},
		{Image: pinned, OSVersion: "10.0.20348"},
		{Image: pinned, Builder: "portable"},
		{Image: pinned, Platform: "windows/arm64"},
		{Image: "registry.example/win/app:latest"},
	}
	k := base.IdempotencyKey()
	if len(k) != 64 {
		t.Fatalf("key %q", k)
	}
	for _, r := range same {
		if r.IdempotencyKey() != k {
			t.Errorf("%+v: key differs from %+v", r, base)
		}
	}
	seen := map[string]bool{k: true}
	for _, r := range different {
		if seen[r.IdempotencyKey()] {
			t.Errorf("%+v: key collides", r)
		}
		seen[r.IdempotencyKey()] = true
	}
	// Docker Hub short names and their long form are one image.
	if (Request{Image: "library/nanoserver:ltsc2022"}).IdempotencyKey() != (Request{Image: "index.docker.io/library/nanoserver:ltsc2022"}).IdempotencyKey() {
		t.Error("short and long Docker Hub names give different keys")
	}
}

func TestStatusKey(t *testing.T) {
	hex := strings.Repeat("ab", 32)
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"sha256:" + hex, "digest.sha256." + hex, false},
		{"reg.example/a/b@sha256:" + hex, "digest.sha256." + hex, false},
		{"reg.example/a/b:v1@sha256:" + hex, "digest.sha256." + hex, false},
		{"sha256:abc", "", true}, // too short to be a digest, not a reference either
		{"", "", true},
		{"Bad Ref", "", true},
	}
	for _, tt := range tests {
		got, err := StatusKey(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("StatusKey(%q) = %q, %v; want %q (err %v)", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	a, _ := StatusKey("reg.example/a/b:v1")
	b, _ := StatusKey("reg.example/a/b:v2")
	if a == b || !strings.HasPrefix(a, "ref.") {
		t.Errorf("tag keys %q %q", a, b)
	}
}

func TestResultEventType(t *testing.T) {
	for _, res := range []*Result{{Request: Request{Image: "x/y"}}, {Request: Request{Image: "x/y"}, Error: "boom", Reason: "permanent"}} {
		b, err := EncodeResult(res)
		if err != nil {
			t.Fatal(err)
		}
		var ev struct{ Type string }
		_ = json.Unmarshal(b, &ev)
		want := TypeSucceeded
		if res.Error != "" {
			want = TypeFailed
		}
		if ev.Type != want {
			t.Errorf("type %s, want %s", ev.Type, want)
		}
		back, err := DecodeResult(b)
		if err != nil || back.Error != res.Error || back.Succeeded() != res.Succeeded() {
			t.Errorf("round trip %+v -> %+v, %v", res, back, err)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	good, _ := EncodeRequest(Request{Image: pinned})
	f.Add(good)
	f.Add([]byte(`{"specversion":"1.0","type":"io.cimconv.convert.requested","data":{"image":"a/b:c","platform":"windows/amd64"}}`))
	f.Add([]byte(`{"specversion":"1.0","type":"io.cimconv.convert.requested","data":null}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"specversion":"1.0","type":"io.cimconv.convert.requested","data":{"image":"sha256:0"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error not wrapping ErrInvalidRequest: %v", err)
			}
			return
		}
		// Whatever decodes must re-encode and decode to the same request
		// with a stable key.
		again, err := EncodeRequest(req)
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeRequest(again)
		if err != nil || back != req || back.IdempotencyKey() != req.IdempotencyKey() {
			t.Fatalf("unstable: %+v -> %+v (%v)", req, back, err)
		}
		if _, err := StatusKey(req.Image); err != nil {
			t.Fatalf("valid image %q has no status key: %v", req.Image, err)
		}
	})
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://user:secret@h:4222", "nats://REDACTED@h:4222"},
		{"nats://tok@a:1,nats://b:2", "nats://REDACTED@a:1,nats://b:2"},
	}
	for _, tt := range tests {
		if got := redact(tt.in); got != tt.want || strings.Contains(got, "secret") {
			t.Errorf("redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestServerVersionOrder(t *testing.T) {
	tests := []struct {
		a, b string
		less bool
	}{
		{"2.8.4", MinServerVersion, true},
		{"2.9.10", MinServerVersion, false},
		{"2.9.0", "2.9.0", false},
		{"2.10.0", "2.9.10", false},
		{"2.9.10", "2.10.0", true},
		{"v2.15.3", "2.9.0", false},
		{"2.11.0-beta.2", "2.11.0", false},
		{"1.4.1", "2.9.0", true},
	}
	for _, tt := range tests {
		if got := versionLess(tt.a, tt.b); got != tt.less {
			t.Errorf("versionLess(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.less)
		}
	}
}
