package portable

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"strings"

	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/fsview"
	"github.com/cimconv/cimconv/internal/wclayer"
)

// ExpectedView is the view a CIM chain built from layers (base first) must
// show: the layers' merged view plus what base-layer processing adds (the
// Hives directory, Hives/<X>_BASE hard links to the config hives, and the
// layout file).
func ExpectedView(ctx context.Context, layers []func() (io.ReadCloser, error)) ([]fsview.Entry, error) {
	view, err := wclayer.MergeView(ctx, layers)
	if err != nil {
		return nil, err
	}
	return withBaseProcessing(view), nil
}

func withBaseProcessing(view []fsview.Entry) []fsview.Entry {
	byPath := make(map[string]fsview.Entry, len(view))
	for _, e := range view {
		byPath[fsview.FoldPath(e.Path)] = e
	}
	var added []fsview.Entry
	for _, h := range hives {
		src, ok := byPath[fsview.FoldPath(configDir+"/"+h.name)]
		if !ok || src.Type != fsview.TypeFile {
			continue
		}
		link := src
		link.Path = hivesDir + "/" + h.base
		added = append(added, link)
	}
	if len(added) == 0 {
		return view
	}
	if _, ok := byPath[fsview.FoldPath(hivesDir)]; !ok {
		added = append(added, fsview.Entry{Path: hivesDir, Type: fsview.TypeDir, Attributes: attrDir})
	}
	sum := sha256.Sum256([]byte(layoutText))
	added = append(added, fsview.Entry{
		Path: layoutName, Type: fsview.TypeFile, Size: int64(len(layoutText)),
		Attributes: attrNormal, SHA256: hex.EncodeToString(sum[:]),
	})
	out := append(append([]fsview.Entry{}, view...), added...)
	fsview.Sort(out)
	return out
}

// CompareViews compares an expected view with a CIM's. A path the layers
// gave no security descriptor gets the writer's default one in the CIM (CimFS
// needs one on every file), so an empty expected SD matches any; attributes
// are compared as far as a CIM can store them.
func CompareViews(want, got []fsview.Entry) []fsview.Difference {
	gotSD := make(map[string]string, len(got))
	for _, e := range got {
		gotSD[strings.ToUpper(e.Path)] = e.SD
	}
	adj := make([]fsview.Entry, len(want))
	for i, e := range want {
		if e.SD == "" {
			e.SD = gotSD[strings.ToUpper(e.Path)]
		}
		// A CIM records only some attribute bits (cim.StoredAttributes);
		// NOT_CONTENT_INDEXED, NORMAL and the like are not kept.
		e.Attributes &= cim.StoredAttributes
		adj[i] = e
	}
	return fsview.Compare(adj, got, fsview.CompareOptions{})
}
