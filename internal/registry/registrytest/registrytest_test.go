package registrytest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Distribution's real notifications reach the configured endpoint, with
// the configured headers, for a manifest push.
func TestNotifications(t *testing.T) {
	type event struct {
		Action string `json:"action"`
		Target struct {
			MediaType  string `json:"mediaType"`
			Digest     string `json:"digest"`
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"target"`
	}
	got := make(chan event, 100)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer hook-secret" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var env struct {
			Events []event `json:"events"`
		}
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &env); err == nil {
			for _, e := range env.Events {
				got <- e
			}
		}
	}))
	t.Cleanup(sink.Close)
	host := NewDistribution(t, WithNotifications(sink.URL, http.Header{"Authorization": {"Bearer hook-secret"}}))
	d := PushImage(t, host+"/win/app:v1", [][]byte{Tar(t, "Files/a", "a")}, v1.Platform{OSVersion: "10.0.20348.1"})
	deadline := time.After(30 * time.Second) // a hang guard, not a speed assertion
	for {
		select {
		case e := <-got:
			if e.Action == "push" && e.Target.Digest == d.Digest.String() && e.Target.Repository == "win/app" && e.Target.Tag == "v1" {
				return
			}
		case <-deadline:
			t.Fatal("no push notification for the manifest arrived")
		}
	}
}

// PushIndex adds a linux image and an attestation manifest to the given
// Windows manifests.
func TestPushIndex(t *testing.T) {
	host := NewReferrersRegistry(t)
	w := PushImage(t, host+"/a/b:w", [][]byte{Gzip(t, Tar(t, "Files/x", "x"))}, v1.Platform{OSVersion: "10.0.26100.1"})
	idx := PushIndex(t, host+"/a/b:multi", w)
	resp, err := http.Get("http://" + host + "/v2/a/b/manifests/" + idx.Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	m, err := v1.ParseIndexManifest(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 3 {
		t.Fatalf("index has %d entries, want 3", len(m.Manifests))
	}
	if m.Manifests[0].Digest != w.Digest || m.Manifests[0].Platform.OSVersion != "10.0.26100.1" {
		t.Fatalf("first entry %+v, want the Windows image", m.Manifests[0])
	}
	if p := m.Manifests[1].Platform; p == nil || p.OS != "linux" {
		t.Fatalf("second entry platform %+v, want linux", p)
	}
	a := m.Manifests[2]
	if a.Platform == nil || a.Platform.OS != "unknown" || a.Annotations["vnd.docker.reference.type"] != "attestation-manifest" ||
		a.Annotations["vnd.docker.reference.digest"] != w.Digest.String() {
		t.Fatalf("third entry %+v, want an attestation for the Windows image", a)
	}
}
