package trust_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/cimconv/cimconv/internal/trust"
)

func TestAllowUnsigned(t *testing.T) {
	subject, err := name.NewDigest("registry.example.com/app@sha256:" + hex64('a'))
	if err != nil {
		t.Fatal(err)
	}
	v := trust.AllowUnsigned()
	res, err := v.Verify(context.Background(), trust.Request{Subject: subject, Artifact: v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: hex64('b')}}})
	if err != nil || res.Signed || len(res.Checks) == 0 {
		t.Fatalf("Verify = %+v, %v; want an unsigned result that says it did not check", res, err)
	}
	if _, err := v.Verify(context.Background(), trust.Request{Subject: subject}); !errors.Is(err, trust.ErrUntrusted) {
		t.Fatalf("Verify without an artifact digest = %v; want ErrUntrusted", err)
	}
}

func hex64(c byte) string {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return string(b)
}

// opaque is a Verifier that cannot judge a recorded verdict.
type opaque struct{}

func (opaque) Verify(context.Context, trust.Request) (*trust.Result, error) { return nil, nil }

func TestCheckRecorded(t *testing.T) {
	signed := &trust.Result{Signed: true, KeyID: "sha256:" + hex64('k')}
	cases := []struct {
		name string
		v    trust.Verifier
		res  *trust.Result
		ok   bool
	}{
		{"unsigned policy, unsigned verdict", trust.AllowUnsigned(), &trust.Result{}, true},
		{"unsigned policy, signed verdict", trust.AllowUnsigned(), signed, true},
		{"no verdict recorded", trust.AllowUnsigned(), nil, false},
		{"verifier that cannot judge", opaque{}, signed, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := trust.CheckRecorded(tc.v, tc.res)
			if tc.ok && err != nil || !tc.ok && !errors.Is(err, trust.ErrUntrusted) {
				t.Fatalf("CheckRecorded = %v; want ok=%v (else ErrUntrusted)", err, tc.ok)
			}
		})
	}
}
