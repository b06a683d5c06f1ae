package webhook

import (
	"context"
	"testing"
)

// BenchmarkHandler measures one authenticated webhook request end to end
// through the handler (auth, parse, filter, validate, allowlist, submit to a
// no-op sink), per format. A zero dedupe window keeps repeated event ids
// from counting as duplicates, so every iteration is accepted.
func BenchmarkHandler(b *testing.B) {
	cases := []struct {
		name, path, fixture string
		header              map[string]string
	}{
		{"distribution", "/webhooks/distribution", "distribution_push.json", nil},
		{"harbor", "/webhooks/harbor", "harbor_push.json", nil},
		{"zot-binary", "/webhooks/cloudevents?registry=zot.example.com", "zot_image_updated_data.json",
			map[string]string{"Ce-Specversion": "1.0", "Ce-Type": "zotregistry.image.updated", "Ce-Id": "x"}},
		{"acr", "/webhooks/acr", "acr_push.json", nil},
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			sink := SinkFunc(func(context.Context, Event) error { return nil })
			h, err := New(sink, append(baseOptions(&counter{}), func(c *config) error { c.dedupeWindow = 0; return nil })...)
			if err != nil {
				b.Fatal(err)
			}
			body := fixture(b, bc.fixture)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if rec := do(h, bc.path, body, bc.header); rec.Code != 200 {
					b.Fatalf("status %d: %s", rec.Code, rec.Body.String())
				}
			}
		})
	}
}
