package version

// Version is the converter release, set at link time with
// -ldflags "-X github.com/cimconv/cimconv/internal/version.Version=v1.2.3".
var Version = "v0.1.0-dev"

// FormatVersion is the version of the artifact layout (config schema, blob
// layout, annotations). Bump it when nodes must not mix old and new artifacts.
const FormatVersion = "1"
