package hive

import (
	"context"
	"encoding/json"
	"io"
	"time"
)

// DumpKey is one key as `converter hive dump --json` prints it: one JSON
// object per key, in pre-order with subkeys in Windows order.
type DumpKey struct {
	Path      string      `json:"path"` // `\` for the root, `\A\B` below it
	Class     string      `json:"class"`
	LastWrite time.Time   `json:"lastWrite"`
	Flags     DumpFlags   `json:"flags"`
	Values    []DumpValue `json:"values"`
}

// DumpFlags are a key's flags: the nk flags (without the name encoding) and
// the layered-key fields.
type DumpFlags struct {
	Key          uint16 `json:"key"`
	Layer        string `json:"layer"`
	InheritClass bool   `json:"inheritClass"`
}

// DumpValue is one value; Data is base64 in JSON.
type DumpValue struct {
	Name      string `json:"name"`
	Type      uint32 `json:"type"`
	Data      []byte `json:"data"`
	Tombstone bool   `json:"tombstone,omitempty"`
}

// Walk visits every key under root in pre-order (subkeys in Windows order),
// loading keys read from a hive as it goes and dropping them again after, so
// a large hive is never all in memory. fn gets the key's path.
func Walk(ctx context.Context, root *Key, fn func(path string, k *Key) error) error {
	return walk(ctx, root, `\`, 0, fn)
}

func walk(ctx context.Context, k *Key, path string, depth int, fn func(string, *Key) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	lazy := k.origin()
	if err := k.Load(); err != nil {
		return err
	}
	defer k.unload(lazy)
	if err := fn(path, k); err != nil {
		return err
	}
	subs, err := sortedSubkeys(k)
	if err != nil {
		return err
	}
	for _, s := range subs {
		p := path + `\` + s.Name
		if depth == 0 {
			p = `\` + s.Name
		}
		if err := walk(ctx, s, p, depth+1, fn); err != nil {
			return err
		}
	}
	return nil
}

// sortedSubkeys returns k's subkeys in Windows order (a copy when they had
// to be sorted).
func sortedSubkeys(k *Key) ([]*Key, error) {
	subs := k.Subkeys
	for i := 1; i < len(subs); i++ {
		if compareKeys(subs[i-1], subs[i]) >= 0 {
			subs = append([]*Key(nil), subs...)
			if err := sortSubkeys(subs); err != nil {
				return nil, err
			}
			break
		}
	}
	return subs, nil
}

// Dump returns k's dump record.
func Dump(path string, k *Key) DumpKey {
	d := DumpKey{
		Path:      path,
		Class:     k.Class,
		LastWrite: Time(k.LastWrite),
		Flags:     DumpFlags{Key: k.Flags, Layer: k.Layer.String(), InheritClass: k.InheritClass},
		Values:    make([]DumpValue, 0, len(k.Values)),
	}
	for _, v := range k.Values {
		data := v.Data
		if data == nil {
			data = []byte{} // "" in JSON, the same for every empty value
		}
		d.Values = append(d.Values, DumpValue{Name: v.Name, Type: v.Type, Data: data, Tombstone: v.Tombstone})
	}
	return d
}

// DumpJSON writes one JSON object per key under root to w.
func DumpJSON(ctx context.Context, w io.Writer, root *Key) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return Walk(ctx, root, func(path string, k *Key) error { return enc.Encode(Dump(path, k)) })
}
