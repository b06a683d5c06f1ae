package hive

import (
	"encoding/binary"
	"unicode/utf16"
)

// Helpers that build in-memory trees for the synthetic tests.

type kopt func(*Key)

func key(name string, opts ...kopt) *Key {
	k := &Key{Name: name}
	for _, o := range opts {
		o(k)
	}
	return k
}

func sub(children ...*Key) kopt {
	return func(k *Key) { k.Subkeys = append(k.Subkeys, children...) }
}

func val(name string, typ uint32, data []byte) kopt {
	return func(k *Key) { k.Values = append(k.Values, Value{Name: name, Type: typ, Data: data}) }
}

func sz(name, s string) kopt { return val(name, RegSZ, utf16z(s)) }

func dword(name string, v uint32) kopt {
	return val(name, RegDWORD, binary.LittleEndian.AppendUint32(nil, v))
}

func tombVal(name string) kopt {
	return func(k *Key) { k.Values = append(k.Values, Value{Name: name, Tombstone: true}) }
}

func layer(l Layer) kopt     { return func(k *Key) { k.Layer = l } }
func inherit() kopt          { return func(k *Key) { k.InheritClass = true } }
func class(c string) kopt    { return func(k *Key) { k.Class = c } }
func at(ft uint64) kopt      { return func(k *Key) { k.LastWrite = ft } }
func sd(b []byte) kopt       { return func(k *Key) { k.Security = b } }
func flags(f uint16) kopt    { return func(k *Key) { k.Flags = f } }
func utf16z(s string) []byte { return utf16le(append(utf16.Encode([]rune(s)), 0)) }

func utf16le(u []uint16) []byte {
	b := make([]byte, 2*len(u))
	for i, c := range u {
		binary.LittleEndian.PutUint16(b[2*i:], c)
	}
	return b
}
