package builder

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

type fakeBuilder struct{ caps Capabilities }

func (f *fakeBuilder) BuildLayer(context.Context, LayerSource, *BuiltLayer, string) (*BuiltLayer, error) {
	return nil, errors.New("fake")
}
func (f *fakeBuilder) Capabilities() Capabilities { return f.caps }

func TestSelect(t *testing.T) {
	portable := &fakeBuilder{caps: Capabilities{Name: NamePortable, Formats: []string{FormatForked}}}
	hcs := &fakeBuilder{caps: Capabilities{Name: NameHcsshim, Formats: []string{FormatForked, FormatBlock}, WindowsBuild: "10.0.20348.2031"}}
	ok := func(b Builder) Constructor { return func() (Builder, error) { return b, nil } }
	fail := func(err error) Constructor { return func() (Builder, error) { return nil, err } }
	unavailable := fmt.Errorf("Windows build 20348.1000 lacks CimFS: %w", ErrUnavailable)
	broken := errors.New("work dir not writable")

	tests := []struct {
		name, builder, goos string
		portable, hcsshim   Constructor
		want                Builder
		whyHas              string
		errIs               error
		errHas              string
	}{
		{name: "portable on linux", builder: "portable", goos: "linux", portable: ok(portable), hcsshim: ok(hcs), want: portable, whyHas: "experimental"},
		{name: "portable on windows", builder: "portable", goos: "windows", portable: ok(portable), hcsshim: ok(hcs), want: portable},
		{name: "hcsshim on linux", builder: "hcsshim", goos: "linux", portable: ok(portable), hcsshim: ok(hcs), errIs: ErrUnavailable, errHas: "the hcsshim builder needs Windows (CimFS)"},
		{name: "hcsshim on capable windows", builder: "hcsshim", goos: "windows", portable: ok(portable), hcsshim: ok(hcs), want: hcs, whyHas: "10.0.20348.2031"},
		{name: "hcsshim on old windows", builder: "hcsshim", goos: "windows", portable: ok(portable), hcsshim: fail(unavailable), errIs: ErrUnavailable, errHas: "20348.1000"},
		{name: "auto on linux", builder: "auto", goos: "linux", portable: ok(portable), hcsshim: ok(hcs), want: portable, whyHas: "not Windows"},
		{name: "empty is auto", builder: "", goos: "darwin", portable: ok(portable), hcsshim: ok(hcs), want: portable, whyHas: "darwin"},
		{name: "auto on capable windows", builder: "auto", goos: "windows", portable: ok(portable), hcsshim: ok(hcs), want: hcs, whyHas: "CimFS is available"},
		{name: "auto falls back when unavailable", builder: "auto", goos: "windows", portable: ok(portable), hcsshim: fail(unavailable), want: portable, whyHas: "20348.1000"},
		{name: "auto does not hide other errors", builder: "auto", goos: "windows", portable: ok(portable), hcsshim: fail(broken), errIs: broken},
		{name: "auto without hcsshim compiled in", builder: "auto", goos: "windows", portable: ok(portable), hcsshim: nil, errHas: "not compiled"},
		{name: "portable constructor fails", builder: "portable", goos: "linux", portable: fail(broken), hcsshim: ok(hcs), errIs: broken},
		{name: "unknown", builder: "cimwriter", goos: "linux", portable: ok(portable), hcsshim: ok(hcs), errIs: ErrUnknownBuilder, errHas: "auto, hcsshim, portable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, why, err := Select(tt.builder, tt.goos, tt.portable, tt.hcsshim)
			if tt.errIs != nil || tt.errHas != "" {
				if err == nil {
					t.Fatalf("Select: got builder %v, want error", b)
				}
				if tt.errIs != nil && !errors.Is(err, tt.errIs) {
					t.Errorf("error %q does not wrap %v", err, tt.errIs)
				}
				if !strings.Contains(err.Error(), tt.errHas) {
					t.Errorf("error %q does not mention %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("Select: %v", err)
			}
			if b != tt.want {
				t.Errorf("got %s builder, want %s", b.Capabilities().Name, tt.want.Capabilities().Name)
			}
			if !strings.Contains(why, tt.whyHas) {
				t.Errorf("why %q does not mention %q", why, tt.whyHas)
			}
		})
	}
}
