package portable

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/cimconv/cimconv/internal/cim"
	"github.com/cimconv/cimconv/internal/fsview"
	reghive "github.com/cimconv/cimconv/internal/hive"
	"github.com/cimconv/cimconv/internal/wclayer"
)

// ExpectedView is the view a CIM chain built from layers (base first) must
// show: the layers' merged view plus what base-layer processing adds (the
// Hives directory, Hives/<X>_BASE hard links to the config hives, and the
// layout file), with each hive a later layer carries a delta of replaced by
// the merged hive (internal/hive, as the builder merges them).
func ExpectedView(ctx context.Context, layers []func() (io.ReadCloser, error)) ([]fsview.Entry, error) {
	view, err := wclayer.MergeView(ctx, layers)
	if err != nil {
		return nil, err
	}
	merged, err := expectedMergedHives(ctx, layers)
	if err != nil {
		return nil, err
	}
	view = withBaseProcessing(view)
	if len(merged) == 0 {
		return view, nil
	}
	out := view[:0:0]
	for _, e := range view {
		if m, ok := merged[fsview.FoldPath(e.Path)]; ok {
			e = m
			delete(merged, fsview.FoldPath(e.Path))
		}
		out = append(out, e)
	}
	for _, m := range merged {
		out = append(out, m)
	}
	fsview.Sort(out)
	return out, nil
}

// expectedMergedHives merges, layer by layer, the delta hives onto the base
// layer's config hives and returns the Hives/<X>_BASE entries the chain's
// top must show, by folded path.
func expectedMergedHives(ctx context.Context, layers []func() (io.ReadCloser, error)) (map[string]fsview.Entry, error) {
	current := map[string][]byte{}
	out := map[string]fsview.Entry{}
	for i, open := range layers {
		type delta struct {
			data []byte
			lwt  int64
		}
		deltas := map[string]delta{}
		rc, err := open()
		if err != nil {
			return nil, fmt.Errorf("layer #%d: open: %w", i, err)
		}
		err = func() error {
			defer rc.Close()
			r, err := wclayer.NewReader(rc, wclayer.WithBase(i == 0), wclayer.WithParentLookup(func(string) bool { return true }))
			if err != nil {
				return err
			}
			defer r.Close()
			for {
				e, err := r.Next()
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
				if e.Type != wclayer.TypeFile {
					continue
				}
				if h, ok := baseHive(e.Path); ok && i == 0 {
					if current[h.name], err = io.ReadAll(r); err != nil {
						return err
					}
				} else if h, ok := deltaOf(e.Path); ok && i > 0 {
					b, err := io.ReadAll(r)
					if err != nil {
						return err
					}
					deltas[h.name] = delta{b, e.LastWriteTime}
				}
			}
		}()
		if err != nil {
			return nil, fmt.Errorf("layer #%d: %w", i, err)
		}
		for _, h := range hives {
			d, ok := deltas[h.name]
			if !ok {
				continue
			}
			base, ok := current[h.name]
			if !ok {
				return nil, fmt.Errorf("layer #%d: delta hive %s/%s but no earlier layer has the hive", i, hivesDir, h.delta)
			}
			m, err := reghive.MergeHives(ctx, reghive.Input{Name: h.base, Data: base}, []reghive.Input{{Name: fmt.Sprintf("layer #%d %s", i, h.delta), Data: d.data}})
			if err != nil {
				return nil, err
			}
			current[h.name] = m
			sum := sha256.Sum256(m)
			p := hivesDir + "/" + h.base
			out[fsview.FoldPath(p)] = fsview.Entry{
				Path: p, Type: fsview.TypeFile, Size: int64(len(m)), Attributes: attrNormal,
				SHA256: hex.EncodeToString(sum[:]), LastWriteTime: d.lwt,
			}
		}
	}
	return out, nil
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
		gotSD[fsview.FoldPath(e.Path)] = e.SD
	}
	adj := make([]fsview.Entry, len(want))
	for i, e := range want {
		if e.SD == "" {
			e.SD = gotSD[fsview.FoldPath(e.Path)]
		}
		// A CIM records only some attribute bits (cim.StoredAttributes);
		// NOT_CONTENT_INDEXED, NORMAL and the like are not kept.
		e.Attributes &= cim.StoredAttributes
		adj[i] = e
	}
	return fsview.Compare(adj, got, fsview.CompareOptions{})
}
