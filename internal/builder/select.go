package builder

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cimconv/cimconv/internal/errdefs"
)

// Builder names accepted by Select (the --builder flag).
const (
	NameAuto     = "auto"
	NameHcsshim  = "hcsshim"
	NamePortable = "portable"
)

// Names lists the valid builder names, in the order help text shows them.
var Names = []string{NameAuto, NameHcsshim, NamePortable}

var (
	// ErrUnavailable is wrapped by a constructor whose builder cannot run on
	// this host (wrong OS, OS build too old, CimFS missing). `auto` falls back
	// to the portable builder on it and on nothing else.
	ErrUnavailable = errors.New("builder not available on this host")
	// ErrUnknownBuilder is returned for a name that is not in Names.
	ErrUnknownBuilder = errdefs.New(errdefs.ErrInvalidArgument, "unknown builder")
)

// Constructor creates a builder. Package builder does not import the
// concrete builders: the caller passes their constructors to Select.
type Constructor func() (Builder, error)

// Select returns the builder called name and a one-line reason for the
// choice, to be logged by the caller. goos is the host OS (runtime.GOOS).
//
//   - "portable" always uses the portable builder.
//   - "hcsshim" needs Windows; its constructor checks CimFS and the OS build.
//   - "auto" (or "") uses hcsshim on a Windows host where its constructor
//     succeeds, and falls back to portable when it is unavailable there
//     (errors wrapping ErrUnavailable); any other hcsshim error is returned.
func Select(name, goos string, portable, hcsshim Constructor) (Builder, string, error) {
	switch name {
	case NamePortable:
		b, err := construct(NamePortable, portable)
		return b, "portable builder requested (experimental: not validated against CimFS.dll)", err
	case NameHcsshim:
		if goos != "windows" {
			return nil, "", fmt.Errorf("the hcsshim builder needs Windows (CimFS); this host runs %s: %w", goos, ErrUnavailable)
		}
		b, err := construct(NameHcsshim, hcsshim)
		if err != nil {
			return nil, "", err
		}
		return b, "hcsshim builder requested; " + describe(b), nil
	case NameAuto, "":
		if goos != "windows" {
			b, err := construct(NamePortable, portable)
			return b, fmt.Sprintf("auto: host OS is %s, not Windows: using the portable builder (experimental)", goos), err
		}
		b, err := construct(NameHcsshim, hcsshim)
		if err == nil {
			return b, "auto: CimFS is available: using the hcsshim builder; " + describe(b), nil
		}
		if !errors.Is(err, ErrUnavailable) {
			return nil, "", err
		}
		pb, perr := construct(NamePortable, portable)
		return pb, fmt.Sprintf("auto: %v: using the portable builder (experimental)", err), perr
	}
	return nil, "", fmt.Errorf("builder %q: %w; valid names are %s", name, ErrUnknownBuilder, strings.Join(Names, ", "))
}

func construct(name string, c Constructor) (Builder, error) {
	if c == nil {
		return nil, fmt.Errorf("the %s builder is not compiled into this binary", name)
	}
	b, err := c()
	if err != nil {
		return nil, fmt.Errorf("%s builder: %w", name, err)
	}
	if b == nil {
		return nil, fmt.Errorf("%s builder: constructor returned no builder", name)
	}
	return b, nil
}

func describe(b Builder) string {
	c := b.Capabilities()
	s := "formats " + strings.Join(c.Formats, ",")
	if c.WindowsBuild != "" {
		s += ", Windows build " + c.WindowsBuild
	}
	return s
}
