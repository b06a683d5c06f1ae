package devenv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// StateDirName is the directory under the service's data dir that holds all
// of `serve --dev`'s state (the embedded NATS store, chain cache, work files).
const StateDirName = "dev"

// FreshState empties and returns dataDir/dev, the data dir of a `serve
// --dev` run. The dev registry keeps its images in memory, so it starts
// empty at every start; the queue's state (statuses, the duplicate window,
// dead letters) and the chain cache start empty with it. Otherwise a
// restarted service would answer "converted -> artifact X" from its
// duplicate window for an artifact the new registry does not hold.
// A `serve` without --dev keeps using dataDir itself and is never touched.
func FreshState(dataDir string) (string, error) {
	if dataDir == "" {
		return "", errors.New("dev state: empty data dir")
	}
	dir := filepath.Join(dataDir, StateDirName)
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("dev state: clear %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("dev state: %w", err)
	}
	return dir, nil
}
