package winvalidate

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/cimconv/cimconv/internal/fsview"
	"github.com/cimconv/cimconv/internal/wclayer/fixture"
)

// sdParts splits a self-relative SD built by fixture.SD into control,
// owner, group and DACL (test helper; layerSD is what is under test).
func sdParts(t *testing.T, sd []byte) (control uint16, owner, group, dacl []byte) {
	t.Helper()
	control = binary.LittleEndian.Uint16(sd[2:])
	o := binary.LittleEndian.Uint32(sd[4:])
	g := binary.LittleEndian.Uint32(sd[8:])
	d := binary.LittleEndian.Uint32(sd[16:])
	owner = sd[o : o+8+4*uint32(sd[o+1])]
	group = sd[g : g+8+4*uint32(sd[g+1])]
	dacl = sd[d : d+uint32(binary.LittleEndian.Uint16(sd[d+2:]))]
	return
}

// assemble lays out a self-relative SD with the given parts in the given
// order ("sacl", "dacl", "owner", "group"), as Windows may when it returns
// a descriptor read with ACCESS_SYSTEM_SECURITY.
func assemble(control uint16, parts map[string][]byte, order ...string) []byte {
	b := make([]byte, 20)
	b[0] = 1
	binary.LittleEndian.PutUint16(b[2:], control)
	field := map[string]int{"owner": 4, "group": 8, "sacl": 12, "dacl": 16}
	for _, name := range order {
		binary.LittleEndian.PutUint32(b[field[name]:], uint32(len(b)))
		b = append(b, parts[name]...)
	}
	return b
}

// sacl is a SYSTEM_AUDIT_ACE for Everyone, failed accesses.
func sacl(t *testing.T) []byte {
	sid, err := fixture.ParseSID(fixture.SIDEveryone)
	if err != nil {
		t.Fatal(err)
	}
	ace := []byte{2, 0x80} // SYSTEM_AUDIT_ACE_TYPE, FAILED_ACCESS_ACE_FLAG
	ace = binary.LittleEndian.AppendUint16(ace, uint16(8+len(sid)))
	ace = binary.LittleEndian.AppendUint32(ace, 0x001F01FF)
	ace = append(ace, sid...)
	acl := []byte{2, 0}
	acl = binary.LittleEndian.AppendUint16(acl, uint16(8+len(ace)))
	acl = binary.LittleEndian.AppendUint16(acl, 1)
	acl = append(acl, 0, 0)
	return append(acl, ace...)
}

func TestLayerSDDropsSACLAndLayout(t *testing.T) {
	layer := fixture.SDAdminsFull // what a layer tar carries: no SACL
	control, owner, group, dacl := sdParts(t, layer)
	parts := map[string][]byte{"owner": owner, "group": group, "dacl": dacl, "sacl": sacl(t)}
	want, err := layerSD(layer)
	if err != nil {
		t.Fatal(err)
	}
	// Read elevated with ACCESS_SYSTEM_SECURITY: a SACL, its control bits and
	// another layout; the same owner, group and DACL.
	elevated := assemble(control|seSACLPresent|seSACLAutoInherited, parts, "sacl", "dacl", "owner", "group")
	got, err := layerSD(elevated)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("elevated SD reduces to %x, layer SD to %x", got, want)
	}
	if bytes.Contains(got, parts["sacl"]) {
		t.Error("SACL still present")
	}
	if c := binary.LittleEndian.Uint16(got[2:]); c&seSACLBits != 0 || binary.LittleEndian.Uint32(got[12:]) != 0 {
		t.Errorf("control %#04x / SACL offset %d: want no SACL", c, binary.LittleEndian.Uint32(got[12:]))
	}
	// The reduction keeps what matters: another DACL, owner or group differs.
	for name, other := range map[string][]byte{
		"dacl":  sdPartsDACL(t, fixture.SDSystemOnly),
		"owner": group, // SYSTEM instead of Administrators
	} {
		changed := map[string][]byte{"owner": owner, "group": group, "dacl": dacl}
		changed[name] = other
		d, err := layerSD(assemble(control, changed, "owner", "group", "dacl"))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(d, want) {
			t.Errorf("a different %s went unnoticed", name)
		}
	}
	// A layer SD is already in the canonical layout or only reordered.
	if again, _ := layerSD(want); !bytes.Equal(again, want) {
		t.Error("layerSD is not idempotent")
	}
}

func sdPartsDACL(t *testing.T, sd []byte) []byte {
	_, _, _, d := sdParts(t, sd)
	return d
}

func TestLayerSDRejectsMalformed(t *testing.T) {
	good := append([]byte(nil), fixture.SDAdminsFull...)
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name   string
		sd     []byte
		errHas string
	}{
		{"short", good[:10], "shorter than its 20-byte header"},
		{"revision", mut(func(b []byte) []byte { b[0] = 2; return b }), "revision 2"},
		{"absolute", mut(func(b []byte) []byte { b[3] &^= 0x80; return b }), "not self-relative"},
		{"owner offset out of range", mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], 9999); return b }), "owner offset 9999"},
		{"owner offset in header", mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[4:], 4); return b }), "owner offset 4"},
		{"truncated group", good[:len(good)-2], "group at"},
		{"DACL size too small", mut(func(b []byte) []byte {
			d := binary.LittleEndian.Uint32(b[16:])
			binary.LittleEndian.PutUint16(b[d+2:], 4)
			return b
		}), "ACL size 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := layerSD(tt.sd); err == nil || !strings.Contains(err.Error(), tt.errHas) {
				t.Errorf("err = %v, want it to mention %q", err, tt.errHas)
			}
		})
	}
	// A NULL DACL (present, offset 0) stays a NULL DACL.
	null := mut(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 0); return b })
	got, err := layerSD(null)
	if err != nil || binary.LittleEndian.Uint16(got[2:])&seDACLPresent == 0 || binary.LittleEndian.Uint32(got[16:]) != 0 {
		t.Errorf("NULL DACL: %x, %v", got, err)
	}
}

func TestCompareIgnoresSACLOnly(t *testing.T) {
	layer := fixture.SDAdminsFull
	control, owner, group, dacl := sdParts(t, layer)
	withSACL := assemble(control|seSACLPresent, map[string][]byte{"owner": owner, "group": group, "dacl": dacl, "sacl": sacl(t)}, "sacl", "owner", "group", "dacl")
	b64 := base64.StdEncoding.EncodeToString
	entry := func(sd []byte) []fsview.Entry {
		return []fsview.Entry{{Path: "Files/a", Type: fsview.TypeFile, Attributes: 0x20, SHA256: "00", SD: b64(sd)}}
	}
	diffs, err := Compare(entry(layer), entry(withSACL))
	if err != nil || len(diffs) != 0 {
		t.Errorf("SACL-only difference reported: %v, %v", diffs, err)
	}
	// Raw bytes differ: without the reduction every file would differ.
	if d := fsview.Compare(entry(layer), entry(withSACL), fsview.CompareOptions{}); len(d) == 0 {
		t.Error("test SDs are byte-identical; the SACL case is not exercised")
	}
	diffs, err = Compare(entry(layer), entry(fixture.SDSystemOnly))
	if err != nil || len(diffs) != 1 || diffs[0].Field != "sd" {
		t.Errorf("different DACL: %v, %v; want one sd difference", diffs, err)
	}
	if _, err := Compare(entry(layer), entry([]byte{1, 2, 3})); err == nil || !strings.Contains(err.Error(), `"Files/a"`) || !strings.Contains(err.Error(), "mounted view") {
		t.Errorf("malformed mounted SD: err = %v, want it to name the path and side", err)
	}
}
