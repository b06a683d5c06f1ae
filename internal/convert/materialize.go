package convert

import (
	"fmt"
	"os"

	"github.com/cimconv/cimconv/internal/artifact"
	"github.com/cimconv/cimconv/internal/builder"
)

// materialize makes sure the CIM files of jobs (a parent chain) are in
// chainDir, unpacking cached blobs where the layer was not built in this run,
// and returns the BuiltLayer of the last one.
func (c *Converter) materialize(jobs []*layerJob, chainDir string) (*builder.BuiltLayer, error) {
	var parent *builder.BuiltLayer
	for _, j := range jobs {
		if j.built != nil {
			parent = j.built
			continue
		}
		<-j.packed
		if j.packErr != nil {
			return nil, j.packErr
		}
		side := builder.SideDir(chainDir, j.src.ChainID)
		f, err := os.Open(c.cache.BlobPath(j.src.ChainID))
		if err != nil {
			return nil, fmt.Errorf("chain cache %s: %w", j.src.ChainID, err)
		}
		_, err = artifact.Unpack(f, chainDir, side, &j.entry.Layer)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("chain cache %s: %w", j.src.ChainID, err)
		}
		j.built = builtLayer(j.src, j.entry.PackedLayer, chainDir, side, parent)
		parent = j.built
	}
	return parent, nil
}
