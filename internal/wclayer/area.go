package wclayer

import (
	"strings"

	"github.com/cimconv/cimconv/internal/upcase"
)

// The areas of a Windows layer. Files/ is the container's C:\, Hives/ holds
// the registry delta hives of non-base layers, UtilityVM/ the Hyper-V
// utility VM's files (base layers).
const (
	AreaFiles     = "Files"
	AreaHives     = "Hives"
	AreaUtilityVM = "UtilityVM"
)

// Area returns the area (AreaFiles, AreaHives or AreaUtilityVM) that path
// belongs to, compared case-insensitively (upcase.Equal, as everywhere), or
// "" when it is outside them.
func Area(path string) string {
	top, _, _ := strings.Cut(path, "/")
	for _, a := range [...]string{AreaFiles, AreaHives, AreaUtilityVM} {
		if upcase.Equal(top, a) {
			return a
		}
	}
	return ""
}

// Hive names one registry hive of a Windows image: the file under
// Files/Windows/System32/config, the Hives/ link a base layer's CIM gets, and
// the delta file a non-base layer carries.
type Hive struct {
	Config string // e.g. "SOFTWARE" (Files/Windows/System32/config/SOFTWARE)
	Base   string // e.g. "SOFTWARE_BASE" (Hives/SOFTWARE_BASE)
	Delta  string // e.g. "Software_Delta" (Hives/Software_Delta), as Windows exports spell it
}

// Hives are the five hives hcsshim processes, in its order.
var Hives = []Hive{
	{"SYSTEM", "SYSTEM_BASE", "System_Delta"},
	{"SOFTWARE", "SOFTWARE_BASE", "Software_Delta"},
	{"SAM", "SAM_BASE", "Sam_Delta"},
	{"SECURITY", "SECURITY_BASE", "Security_Delta"},
	{"DEFAULT", "DEFAULTUSER_BASE", "DefaultUser_Delta"},
}

// RegFilesPath is where a base layer keeps its hives.
const RegFilesPath = "Files/Windows/System32/config"

// IsDeltaHive reports whether path is a delta hive, Hives/<X>_Delta, of a
// non-base layer (case-insensitive).
func IsDeltaHive(path string) bool {
	dir, name, ok := strings.Cut(path, "/")
	if !ok || !upcase.Equal(dir, AreaHives) || strings.Contains(name, "/") {
		return false
	}
	const suffix = "_delta"
	return len(name) > len(suffix) && upcase.Equal(name[len(name)-len(suffix):], suffix)
}
