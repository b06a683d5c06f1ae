package hive

import "encoding/binary"

// defaultSecurity is the descriptor the writer gives a root key that has
// none (a tree built in memory): owner BUILTIN\Administrators, group SYSTEM,
// a protected DACL granting full control (KEY_ALL_ACCESS) to SYSTEM and
// Administrators and read access (KEY_READ) to Everyone, all inherited by
// subkeys. Keys read from a hive always carry their own descriptor.
var defaultSecurity = buildSecurity()

func buildSecurity() []byte {
	sid := func(auth byte, subs ...uint32) []byte {
		b := []byte{1, byte(len(subs)), 0, 0, 0, 0, 0, auth}
		for _, s := range subs {
			b = binary.LittleEndian.AppendUint32(b, s)
		}
		return b
	}
	admins, system, everyone := sid(5, 32, 544), sid(5, 18), sid(1, 0)
	ace := func(mask uint32, s []byte) []byte {
		b := []byte{0 /* allow */, 0x02 /* container inherit */, 0, 0}
		binary.LittleEndian.PutUint16(b[2:], uint16(8+len(s)))
		b = binary.LittleEndian.AppendUint32(b, mask)
		return append(b, s...)
	}
	aces := append(append(ace(0xf003f, system), ace(0xf003f, admins)...), ace(0x20019, everyone)...)
	acl := []byte{2, 0, 0, 0, 3, 0, 0, 0}
	binary.LittleEndian.PutUint16(acl[2:], uint16(8+len(aces)))
	acl = append(acl, aces...)
	sd := make([]byte, 20)
	sd[0] = 1                                                   // revision
	binary.LittleEndian.PutUint16(sd[2:], 0x8000|0x1000|0x0004) // self-relative, DACL protected, DACL present
	off := 20
	binary.LittleEndian.PutUint32(sd[4:], uint32(off)) // owner
	off += len(admins)
	binary.LittleEndian.PutUint32(sd[8:], uint32(off)) // group
	off += len(system)
	binary.LittleEndian.PutUint32(sd[16:], uint32(off)) // DACL
	sd = append(append(append(sd, admins...), system...), acl...)
	return sd
}
