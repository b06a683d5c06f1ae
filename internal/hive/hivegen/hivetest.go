package hivegen

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"unicode/utf16"

	"github.com/cimconv/cimconv/internal/hive"
)

// Fixed last-write times (FILETIME) so generated hives are reproducible.
const (
	BaseTime  uint64 = 132000000000000000 // 2019-04
	DeltaTime uint64 = 133000000000000000 // 2022-06
)

// SZ encodes a REG_SZ value's data: UTF-16LE with a terminating NUL.
func SZ(s string) []byte {
	u := append(utf16.Encode([]rune(s)), 0)
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}

// DWORD encodes a REG_DWORD value's data.
func DWORD(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }

func sz(name, s string) hive.Value { return hive.Value{Name: name, Type: hive.RegSZ, Data: SZ(s)} }
func dw(name string, v uint32) hive.Value {
	return hive.Value{Name: name, Type: hive.RegDWORD, Data: DWORD(v)}
}

// passThrough is how offreg writes a key a delta only passes through: no
// layer semantics, the class inherited from below.
func passThrough(name string, subs ...*hive.Key) *hive.Key {
	return &hive.Key{Name: name, InheritClass: true, LastWrite: DeltaTime, Subkeys: subs}
}

// Base returns a small flat hive of the given name (SOFTWARE, SYSTEM,
// DEFAULT, SAM, SECURITY) with the keys the sample deltas touch.
func Base(name string) *hive.Key {
	k := func(n string, vals []hive.Value, subs ...*hive.Key) *hive.Key {
		return &hive.Key{Name: n, LastWrite: BaseTime, Values: vals, Subkeys: subs}
	}
	root := k("ROOT", nil)
	switch name {
	case "SOFTWARE":
		root.Subkeys = []*hive.Key{
			k("Classes", nil, k(".txt", []hive.Value{sz("", "txtfile")})),
			k("Microsoft", nil,
				k("Windows NT", nil, k("CurrentVersion", []hive.Value{
					sz("ProductName", "Windows Server 2022 Datacenter"), sz("CurrentBuild", "20348"),
					dw("UBR", 2031), sz("EditionID", "ServerDatacenter")})),
				k("Windows", nil, k("CurrentVersion", []hive.Value{sz("ProgramFilesDir", `C:\Program Files`)},
					k("Run", []hive.Value{sz("SecurityHealth", `%windir%\system32\SecurityHealthSystray.exe`)}),
					k("Uninstall", nil, k("OldApp", []hive.Value{sz("DisplayName", "Old App"), sz("DisplayVersion", "1.0")})))),
				k("Tracing", nil, k("Old", []hive.Value{dw("Enable", 1)}, k("Sub", nil)))),
		}
	case "SYSTEM":
		root.Subkeys = []*hive.Key{
			k("ControlSet001", nil,
				k("Control", nil, k("Session Manager", nil, k("Environment", []hive.Value{
					sz("OS", "Windows_NT"), sz("Path", `C:\Windows\system32;C:\Windows`), sz("TEMP", `C:\Windows\TEMP`)}))),
				k("Services", nil,
					k("XBOXGIP", []hive.Value{dw("Start", 3), dw("Type", 1)}, k("Parameters", nil)),
					k("W32Time", []hive.Value{dw("Start", 3)}, k("Config", []hive.Value{dw("MaxPollInterval", 10)})))),
			k("Select", []hive.Value{dw("Current", 1), dw("Default", 1)}),
		}
	default:
		root.Subkeys = []*hive.Key{k("Software", nil, k("Microsoft", nil))}
	}
	return root
}

// Delta returns a delta hive for Base(name), with layered keys as offreg
// writes them (the shared fixture System_Delta has the same shapes): pass-
// through keys with inherit class, a tombstoned key and value, a
// supersede-tree key, a supersede-local key and new keys. Its layer index
// varies the values so consecutive app layers differ.
func Delta(name string, layer int) *hive.Key {
	root := passThrough("ROOT")
	switch name {
	case "SOFTWARE":
		root.Subkeys = []*hive.Key{
			passThrough("Microsoft",
				passThrough("Windows",
					passThrough("CurrentVersion",
						&hive.Key{Name: "Run", InheritClass: true, LastWrite: DeltaTime, Values: []hive.Value{
							{Name: "SecurityHealth", Tombstone: true},
							sz(fmt.Sprintf("App%d", layer), fmt.Sprintf(`C:\app%d\app.exe`, layer))}},
						passThrough("Uninstall",
							&hive.Key{Name: "OldApp", Layer: hive.LayerTombstone, LastWrite: DeltaTime},
							&hive.Key{Name: fmt.Sprintf("App%d", layer), LastWrite: DeltaTime, Class: "AppClass",
								Values: []hive.Value{sz("DisplayName", fmt.Sprintf("App %d", layer)), dw("Layer", uint32(layer))}}))),
				&hive.Key{Name: "Tracing", Layer: hive.LayerSupersedeTree, LastWrite: DeltaTime,
					Subkeys: []*hive.Key{{Name: "New", LastWrite: DeltaTime, Values: []hive.Value{dw("Enable", 0)}}}},
				passThrough("Windows NT",
					&hive.Key{Name: "CurrentVersion", Layer: hive.LayerSupersedeLocal, InheritClass: true, LastWrite: DeltaTime,
						Values: []hive.Value{sz("ProductName", "Windows Server 2022 Datacenter"), sz("CurrentBuild", "20348"),
							dw("UBR", uint32(2031+layer)), sz("EditionID", "ServerDatacenter")}})),
		}
	case "SYSTEM":
		root.Subkeys = []*hive.Key{
			passThrough("ControlSet001",
				passThrough("Control", passThrough("Session Manager",
					&hive.Key{Name: "Environment", InheritClass: true, LastWrite: DeltaTime, Values: []hive.Value{
						sz("Path", fmt.Sprintf(`C:\Windows\system32;C:\Windows;C:\app%d`, layer)), {Name: "TEMP", Tombstone: true}}})),
				passThrough("Services",
					&hive.Key{Name: "XBOXGIP", Layer: hive.LayerTombstone, LastWrite: DeltaTime},
					&hive.Key{Name: "W32Time", Layer: hive.LayerSupersedeTree, InheritClass: true, LastWrite: DeltaTime,
						Values: []hive.Value{dw("Start", 4)}})),
		}
	default:
		root.Subkeys = []*hive.Key{passThrough("Software",
			&hive.Key{Name: fmt.Sprintf("App%d", layer), LastWrite: DeltaTime, Values: []hive.Value{dw("Installed", 1)}})}
	}
	return root
}

// Large returns a SOFTWARE-shaped base tree of roughly mib MiB once written,
// and a delta of roughly deltaMiB MiB over it (new keys, replaced and
// tombstoned values, tombstoned keys, supersede-tree and supersede-local
// keys, pass-through keys with inherit class), from seed.
func Large(mib, deltaMiB int, seed int64) (base, delta *hive.Key) {
	r := rand.New(rand.NewSource(seed))
	// About 480 bytes per key once written (nk, 3-4 values with data).
	keys := mib << 20 / 480
	const fan = 24
	base = &hive.Key{Name: "ROOT", LastWrite: BaseTime}
	var all []*hive.Key
	var grow func(parent *hive.Key, depth int)
	n := 0
	grow = func(parent *hive.Key, depth int) {
		for i := 0; i < fan && n < keys; i++ {
			k := &hive.Key{Name: fmt.Sprintf("Key%c%05d", 'A'+depth, n), LastWrite: BaseTime + uint64(n)}
			n++
			for v := 0; v < 2+r.Intn(4); v++ {
				switch r.Intn(3) {
				case 0:
					k.Values = append(k.Values, dw(fmt.Sprintf("Dword%d", v), r.Uint32()))
				case 1:
					k.Values = append(k.Values, sz(fmt.Sprintf("String%d", v), fmt.Sprintf(`C:\Program Files\Vendor%d\Product%d\file%d.dll`, r.Intn(100), r.Intn(1000), n)))
				default:
					b := make([]byte, 16+r.Intn(200))
					r.Read(b)
					k.Values = append(k.Values, hive.Value{Name: fmt.Sprintf("Binary%d", v), Type: hive.RegBinary, Data: b})
				}
			}
			parent.Subkeys = append(parent.Subkeys, k)
			all = append(all, k)
		}
		if depth < 5 {
			for _, c := range parent.Subkeys {
				if n >= keys {
					return
				}
				grow(c, depth+1)
			}
		}
	}
	for n < keys {
		grow(base, 0)
	}
	// The delta touches random keys: each touch brings its path as
	// pass-through keys.
	delta = passThrough("ROOT")
	touches := deltaMiB << 20 / 700
	index := map[*hive.Key]*hive.Key{base: delta}
	parents := map[*hive.Key]*hive.Key{}
	var index1 func(k *hive.Key)
	index1 = func(k *hive.Key) {
		for _, s := range k.Subkeys {
			parents[s] = k
			index1(s)
		}
	}
	index1(base)
	var deltaFor func(b *hive.Key) *hive.Key
	deltaFor = func(b *hive.Key) *hive.Key {
		if d, ok := index[b]; ok {
			return d
		}
		p := deltaFor(parents[b])
		d := passThrough(b.Name)
		p.Subkeys = append(p.Subkeys, d)
		index[b] = d
		return d
	}
	for i := 0; i < touches; i++ {
		b := all[r.Intn(len(all))]
		d := deltaFor(b)
		if d.Layer != hive.LayerNone {
			continue
		}
		switch x := r.Intn(100); {
		case x < 2:
			d.Layer, d.Subkeys, d.Values = hive.LayerTombstone, nil, nil
		case x < 4:
			d.Layer = hive.LayerSupersedeTree
			d.Values = append(d.Values, sz("Superseded", "yes"))
		case x < 8:
			d.Layer = hive.LayerSupersedeLocal
			d.Values = append(d.Values, dw("Local", uint32(i)))
		case x < 20:
			if len(b.Values) > 0 && !hasValue(d, b.Values[0].Name) {
				d.Values = append(d.Values, hive.Value{Name: b.Values[0].Name, Tombstone: true})
			}
		default:
			d.Values = append(d.Values, sz(fmt.Sprintf("New%d", i), fmt.Sprintf(`C:\app\new\value\%d`, i)))
			d.Subkeys = append(d.Subkeys, &hive.Key{Name: fmt.Sprintf("NewKey%d", i), LastWrite: DeltaTime,
				Values: []hive.Value{dw("n", uint32(i)), sz("s", "new key from the delta")}})
		}
	}
	return base, delta
}

func hasValue(k *hive.Key, name string) bool {
	for _, v := range k.Values {
		if v.Name == name {
			return true
		}
	}
	return false
}
