package winvalidate

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"

	"github.com/cimconv/cimconv/internal/builder/portable"
	"github.com/cimconv/cimconv/internal/fsview"
)

// SECURITY_DESCRIPTOR_CONTROL bits that describe the SACL. A layer never
// carries a SACL: hcsshim's exporter opens files with GENERIC_READ only
// (internal/wclayer/legacy.go, legacyLayerReader.Next), so BackupRead leaves
// the SACL out of the security stream it puts in the tar.
const (
	seSACLPresent       = 0x0010
	seSACLDefaulted     = 0x0020
	seSACLAutoInheritRq = 0x0200
	seSACLAutoInherited = 0x0800
	seSACLProtected     = 0x2000
	seSACLBits          = seSACLPresent | seSACLDefaulted | seSACLAutoInheritRq | seSACLAutoInherited | seSACLProtected

	seDACLPresent  = 0x0004
	seSelfRelative = 0x8000

	sdHeaderSize = 20
)

// layerSD returns the part of a self-relative security descriptor a layer
// can carry — owner, group and DACL — in one fixed layout: the 20-byte header
// {Revision 1, Sbz1, Control u16, OffsetOwner, OffsetGroup, OffsetSacl,
// OffsetDacl u32}, then owner SID, group SID and DACL, in that order. The SACL
// and the control bits about it are dropped. Two descriptors that grant the
// same thing then compare equal however the system laid them out, and one
// read with ACCESS_SYSTEM_SECURITY (SACL included) compares equal to the
// layer's.
func layerSD(sd []byte) ([]byte, error) {
	if len(sd) < sdHeaderSize {
		return nil, fmt.Errorf("security descriptor of %d bytes is shorter than its %d-byte header", len(sd), sdHeaderSize)
	}
	if sd[0] != 1 {
		return nil, fmt.Errorf("security descriptor revision %d, want 1", sd[0])
	}
	control := binary.LittleEndian.Uint16(sd[2:])
	if control&seSelfRelative == 0 {
		return nil, fmt.Errorf("security descriptor is not self-relative (control %#04x)", control)
	}
	owner, err := sdPart(sd, binary.LittleEndian.Uint32(sd[4:]), "owner", sidLen)
	if err != nil {
		return nil, err
	}
	group, err := sdPart(sd, binary.LittleEndian.Uint32(sd[8:]), "group", sidLen)
	if err != nil {
		return nil, err
	}
	var dacl []byte
	if control&seDACLPresent != 0 {
		// A present DACL at offset 0 is a NULL DACL (everyone, full access).
		if dacl, err = sdPart(sd, binary.LittleEndian.Uint32(sd[16:]), "DACL", aclLen); err != nil {
			return nil, err
		}
	}

	out := make([]byte, sdHeaderSize, sdHeaderSize+len(owner)+len(group)+len(dacl))
	out[0], out[1] = sd[0], sd[1]
	binary.LittleEndian.PutUint16(out[2:], control&^seSACLBits)
	off := uint32(sdHeaderSize)
	place := func(field int, b []byte) {
		if b == nil {
			return
		}
		binary.LittleEndian.PutUint32(out[field:], off)
		out = append(out, b...)
		off += uint32(len(b))
	}
	place(4, owner)
	place(8, group)
	place(16, dacl)
	return out, nil
}

// sdPart returns the structure at off (nil for offset 0) whose length size
// reads from its first bytes.
func sdPart(sd []byte, off uint32, what string, size func([]byte) (int, error)) ([]byte, error) {
	if off == 0 {
		return nil, nil
	}
	if off < sdHeaderSize || int64(off) >= int64(len(sd)) {
		return nil, fmt.Errorf("security descriptor %s offset %d outside its %d bytes", what, off, len(sd))
	}
	rest := sd[off:]
	n, err := size(rest)
	if err != nil {
		return nil, fmt.Errorf("security descriptor %s at %d: %w", what, off, err)
	}
	if n > len(rest) {
		return nil, fmt.Errorf("security descriptor %s at %d: %d bytes, only %d left", what, off, n, len(rest))
	}
	return rest[:n:n], nil
}

// sidLen: a SID is {Revision u8, SubAuthorityCount u8, IdentifierAuthority
// [6]byte, SubAuthority [count]u32}.
func sidLen(b []byte) (int, error) {
	if len(b) < 8 {
		return 0, fmt.Errorf("SID shorter than 8 bytes")
	}
	if b[0] != 1 || b[1] > 15 {
		return 0, fmt.Errorf("SID revision %d with %d sub-authorities, want revision 1 and at most 15", b[0], b[1])
	}
	return 8 + 4*int(b[1]), nil
}

// aclLen: an ACL is {AclRevision u8, Sbz1 u8, AclSize u16, AceCount u16,
// Sbz2 u16} followed by its ACEs, AclSize bytes in all.
func aclLen(b []byte) (int, error) {
	if len(b) < 8 {
		return 0, fmt.Errorf("ACL shorter than its 8-byte header")
	}
	n := int(binary.LittleEndian.Uint16(b[2:]))
	if n < 8 {
		return 0, fmt.Errorf("ACL size %d below its 8-byte header", n)
	}
	return n, nil
}

// layerSDBase64 applies layerSD to a base64 descriptor as fsview holds it
// ("" stays "").
func layerSDBase64(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return "", fmt.Errorf("security descriptor: %w", err)
	}
	sd, err := layerSD(raw)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(sd), nil
}

// Compare compares the layers' expected view (portable.ExpectedView) with a
// mounted CIM's view (MountedView), as portable.CompareViews does, after
// reducing both sides' security descriptors to what a layer can carry (owner,
// group, DACL; see layerSD). A descriptor that does not parse is an error
// naming the path.
func Compare(want, got []fsview.Entry) ([]fsview.Difference, error) {
	w, err := withLayerSDs(want)
	if err != nil {
		return nil, fmt.Errorf("expected view: %w", err)
	}
	g, err := withLayerSDs(got)
	if err != nil {
		return nil, fmt.Errorf("mounted view: %w", err)
	}
	return portable.CompareViews(w, g), nil
}

func withLayerSDs(es []fsview.Entry) ([]fsview.Entry, error) {
	out := make([]fsview.Entry, len(es))
	for i, e := range es {
		sd, err := layerSDBase64(e.SD)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", e.Path, err)
		}
		e.SD = sd
		out[i] = e
	}
	return out, nil
}
