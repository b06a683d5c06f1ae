package wclayertest

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
)

// Well-known SIDs.
const (
	SIDAdministrators   = "S-1-5-32-544"
	SIDUsers            = "S-1-5-32-545"
	SIDSystem           = "S-1-5-18"
	SIDTrustedInstaller = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
	SIDEveryone         = "S-1-1-0"
)

// Access masks.
const (
	MaskFullControl = 0x001F01FF
	MaskReadExecute = 0x001200A9
)

// ACE flags.
const (
	ObjectInherit    = 0x01
	ContainerInherit = 0x02
	Inherited        = 0x10
)

// ACE is one access-allowed (or, with Deny, access-denied) entry of a DACL.
type ACE struct {
	SID   string
	Mask  uint32
	Flags uint8
	Deny  bool
}

// ParseSID encodes a SID string ("S-1-5-32-544") in its binary form:
// Revision u8 (1), SubAuthorityCount u8, IdentifierAuthority 6 bytes
// big-endian, SubAuthority u32 little-endian each.
func ParseSID(s string) ([]byte, error) {
	parts := strings.Split(s, "-")
	if len(parts) < 3 || parts[0] != "S" || parts[1] != "1" || len(parts)-3 > 15 {
		return nil, fmt.Errorf("SID %q: want S-1-<authority>[-<subauthority>]...", s)
	}
	auth, err := strconv.ParseUint(parts[2], 10, 48)
	if err != nil {
		return nil, fmt.Errorf("SID %q: authority: %w", s, err)
	}
	b := []byte{1, byte(len(parts) - 3), byte(auth >> 40), byte(auth >> 32), byte(auth >> 24), byte(auth >> 16), byte(auth >> 8), byte(auth)}
	for _, p := range parts[3:] {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("SID %q: sub-authority %q: %w", s, p, err)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return b, nil
}

// SD builds a self-relative SECURITY_DESCRIPTOR: a 20-byte header {Revision
// 1, Sbz1 0, Control SE_SELF_RELATIVE|SE_DACL_PRESENT|SE_DACL_AUTO_INHERITED,
// OffsetOwner, OffsetGroup, OffsetSacl 0, OffsetDacl}, then the DACL (ACL
// header {AclRevision 2, Sbz1, AclSize u16, AceCount u16, Sbz2 u16} and ACEs
// {AceType u8, AceFlags u8, AceSize u16, Mask u32, SID}), owner and group.
// It panics on a malformed SID literal: fixtures are written by hand.
func SD(ownerSID, groupSID string, aces ...ACE) []byte {
	must := func(s string) []byte {
		b, err := ParseSID(s)
		if err != nil {
			panic("wclayertest.SD: " + err.Error())
		}
		return b
	}
	owner, group := must(ownerSID), must(groupSID)
	var acl []byte
	for _, a := range aces {
		sid := must(a.SID)
		typ := byte(0) // ACCESS_ALLOWED_ACE_TYPE
		if a.Deny {
			typ = 1
		}
		acl = append(acl, typ, a.Flags)
		acl = binary.LittleEndian.AppendUint16(acl, uint16(8+len(sid)))
		acl = binary.LittleEndian.AppendUint32(acl, a.Mask)
		acl = append(acl, sid...)
	}
	dacl := []byte{2, 0}
	dacl = binary.LittleEndian.AppendUint16(dacl, uint16(8+len(acl)))
	dacl = binary.LittleEndian.AppendUint16(dacl, uint16(len(aces)))
	dacl = append(dacl, 0, 0)
	dacl = append(dacl, acl...)

	const hdr = 20
	daclOff := hdr
	ownerOff := daclOff + len(dacl)
	groupOff := ownerOff + len(owner)
	b := []byte{1, 0}
	b = binary.LittleEndian.AppendUint16(b, 0x8000|0x0004|0x0400)
	b = binary.LittleEndian.AppendUint32(b, uint32(ownerOff))
	b = binary.LittleEndian.AppendUint32(b, uint32(groupOff))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(daclOff))
	b = append(b, dacl...)
	b = append(b, owner...)
	return append(b, group...)
}

// Ready-made descriptors, as found on Windows base images.
var (
	// SDAdminsFull: owner Administrators; Administrators and SYSTEM full
	// control, Users read & execute, inheritable.
	SDAdminsFull = SD(SIDAdministrators, SIDSystem,
		ACE{SID: SIDAdministrators, Mask: MaskFullControl, Flags: ObjectInherit | ContainerInherit},
		ACE{SID: SIDSystem, Mask: MaskFullControl, Flags: ObjectInherit | ContainerInherit},
		ACE{SID: SIDUsers, Mask: MaskReadExecute, Flags: ObjectInherit | ContainerInherit})
	// SDSystemOnly: owner and only trustee SYSTEM.
	SDSystemOnly = SD(SIDSystem, SIDSystem,
		ACE{SID: SIDSystem, Mask: MaskFullControl})
	// SDTrustedInstaller: the System32 style: owner TrustedInstaller (full
	// control); Administrators, SYSTEM and Users read & execute.
	SDTrustedInstaller = SD(SIDTrustedInstaller, SIDTrustedInstaller,
		ACE{SID: SIDTrustedInstaller, Mask: MaskFullControl},
		ACE{SID: SIDAdministrators, Mask: MaskReadExecute},
		ACE{SID: SIDSystem, Mask: MaskReadExecute},
		ACE{SID: SIDUsers, Mask: MaskReadExecute})
)
