package hive

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
	"unicode/utf8"

	"www.velocidex.com/golang/regparser"
)

// The tests below read every hive the writer produces with readers written
// by others (Debian's hivex and libregf, the Go regparser module) and compare
// what they see with this package's dump.

// canon is a hive's content reduced to what every reader reports: one entry
// per key path ("" value), one per value (path + "\x00" + name -> type:hex).
type canon map[string]string

func canonValue(typ uint32, data []byte) string { return fmt.Sprintf("%d:%x", typ, data) }

func ourCanon(t *testing.T, b []byte) canon {
	t.Helper()
	root, err := ReadTree(b)
	if err != nil {
		t.Fatal(err)
	}
	c := canon{}
	err = Walk(context.Background(), root, func(p string, k *Key) error {
		c[p] = ""
		for _, v := range k.Values {
			c[p+"\x00"+v.Name] = canonValue(v.Type, v.Data)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func compareCanon(t *testing.T, reader string, got, want canon) {
	t.Helper()
	var diffs []string
	for k, w := range want {
		if g, ok := got[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("missing %q", k))
		} else if g != w {
			diffs = append(diffs, fmt.Sprintf("%q: %s sees %.80s, we wrote %.80s", k, reader, g, w))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, fmt.Sprintf("extra %q", k))
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		if len(diffs) > 10 {
			diffs = append(diffs[:10], fmt.Sprintf("... %d more", len(diffs)-10))
		}
		t.Errorf("%s disagrees with our dump:\n  %s", reader, strings.Join(diffs, "\n  "))
	}
}

// needTool finds a command-line reader; absent, the test skips with the
// reason, or fails under CI where .ci/run installs it.
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not installed (Debian package %s; .ci/run installs it)", name, pkg)
		}
		t.Skipf("%s not installed (apt-get install -y %s): independent check skipped", name, pkg)
	}
	return p
}

// writtenHives is every hive the writer produces in the tests: each
// readable fixture written again, each synthetic merge, and the real delta
// merged onto a synthetic base.
func writtenHives(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, mc := range mergeCases() {
		out["merge: "+mc.name] = mergeBytes(t, mc.base, mc.deltas...)
	}
	dir := filepath.Join("..", "..", "..", "shared", "fixtures", "hives")
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("shared hive fixtures missing: %v", err)
		}
		t.Logf("shared hive fixtures absent (%v): only synthetic hives are compared", err)
		return out
	}
	for _, name := range []string{"BigDataHive", "BogusKeyNamesHive", "EmptyHive", "ExtendedASCIIHive",
		"ManySubkeysHive", "MultiSzHive", "OffHive", "StringValuesHive", "System_Delta", "UnicodeHive",
		"UpcaseHive", "ValuesOrderHive", "WrongOrderHive", "NewDirtyHive1/RecoveredHive_Windows10"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		out["written: "+name] = roundTrip(t, b, name == "System_Delta")
	}
	delta, err := os.ReadFile(filepath.Join(dir, "System_Delta"))
	if err != nil {
		t.Fatal(err)
	}
	dr := rootOf(t, delta)
	base := key("ROOT", sub(key("ControlSet001", sub(key("Services", sub(key("XBOXGIP", sz("Start", "3"))))))))
	m, err := Merge(context.Background(), base, []*Key{dr})
	if err != nil {
		t.Fatal(err)
	}
	if out["merge: System_Delta onto a small base"], err = Marshal(m); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeTemp(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "hive")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestIndependentReaders(t *testing.T) {
	hives := writtenHives(t)
	names := make([]string, 0, len(hives))
	for n := range hives {
		names = append(names, n)
	}
	sort.Strings(names)
	readers := []struct {
		name string
		read func(t *testing.T, path string, b []byte) canon
	}{
		{"regparser (Go module)", regparserCanon},
		{"hivexregedit --export (Debian libwin-hivex-perl)", hivexCanon},
		{"hivexml (Debian libhivex-bin)", hivexmlCanon},
		{"regfexport (Debian libregf-utils)", regfexportCanon},
	}
	for _, r := range readers {
		t.Run(r.name, func(t *testing.T) {
			for _, n := range names {
				b := hives[n]
				t.Run(n, func(t *testing.T) {
					if strings.Contains(n, "BogusKeyNames") && !strings.HasPrefix(r.name, "regparser") {
						t.Skip("the text output of this tool cannot carry BogusKeyNamesHive's key names with CR/LF/NUL in them")
					}
					want := ourCanon(t, b)
					got := r.read(t, writeTemp(t, b), b)
					switch {
					case strings.HasPrefix(r.name, "hivexml"):
						want = keysAndValueNames(want)
					case strings.HasPrefix(r.name, "regfexport"):
						want = sizesWhereDecoded(want, got)
					}
					compareCanon(t, r.name, got, want)
				})
			}
		})
	}
}

func regparserCanon(t *testing.T, _ string, b []byte) canon {
	reg, err := regparser.NewRegistry(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	c := canon{}
	var walk func(k *regparser.CM_KEY_NODE, path string, depth int)
	walk = func(k *regparser.CM_KEY_NODE, path string, depth int) {
		c[path] = ""
		for _, v := range k.Values() {
			vd := v.ValueData()
			data := vd.Data
			if n := v.DataSize(); int64(len(data)) > n {
				data = data[:n] // resident data comes back as 4 bytes
			}
			c[path+"\x00"+rawName(v.ValueName(), v.Flags()&0x1 != 0)] = canonValue(v.Type(), data)
		}
		for _, s := range k.Subkeys() {
			name := rawName(s.Name(), s.Flags()&0x20 != 0)
			p := path + `\` + name
			if depth == 0 {
				p = `\` + name
			}
			walk(s, p, depth+1)
		}
	}
	root := reg.OpenKey("")
	if root == nil {
		t.Fatal("regparser: no root key")
	}
	walk(root, `\`, 0)
	return c
}

// rawName decodes a name as regparser returns it (the stored bytes):
// Latin-1 when the compressed flag is set, else UTF-16LE.
func rawName(b string, compressed bool) string {
	if compressed {
		r := make([]rune, len(b))
		for i := 0; i < len(b); i++ {
			r[i] = rune(b[i])
		}
		return string(r)
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = uint16(b[2*i]) | uint16(b[2*i+1])<<8
	}
	return string(utf16.Decode(u))
}

var (
	regLine  = regexp.MustCompile(`^(@|"((?:[^"\\]|\\.)*)")=hex\(([0-9a-f]+)\):(.*)$`)
	regDword = regexp.MustCompile(`^(@|"((?:[^"\\]|\\.)*)")=dword:([0-9a-f]{8})$`)
)

func hivexCanon(t *testing.T, path string, _ []byte) canon {
	tool := needTool(t, "hivexregedit", "libwin-hivex-perl")
	out, err := exec.Command(tool, "--export", path, `\`).Output()
	if err != nil {
		t.Fatalf("hivexregedit: %v", err)
	}
	c := canon{}
	cur := ""
	lines := strings.Split(strings.ReplaceAll(string(out), "\\\n", ""), "\n")
	for _, l := range lines {
		l = latin1IfNotUTF8(strings.TrimRight(strings.TrimSpace(l), "\r"))
		switch {
		case l == "" || strings.HasPrefix(l, "Windows Registry Editor"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			cur = l[1 : len(l)-1]
			c[cur] = ""
		case regDword.MatchString(l):
			m := regDword.FindStringSubmatch(l)
			name := ""
			if m[1] != "@" {
				name = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(m[2])
			}
			v, _ := strconv.ParseUint(m[3], 16, 32)
			c[cur+"\x00"+name] = canonValue(RegDWORD, binary.LittleEndian.AppendUint32(nil, uint32(v)))
		default:
			m := regLine.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("hivexregedit: cannot parse %q", l)
			}
			name := ""
			if m[1] != "@" {
				name = strings.NewReplacer(`\\`, `\`, `\"`, `"`).Replace(m[2])
			}
			typ, _ := strconv.ParseUint(m[3], 16, 32)
			data, err := hex.DecodeString(strings.ReplaceAll(strings.ReplaceAll(m[4], ",", ""), " ", ""))
			if err != nil {
				t.Fatalf("hivexregedit: %q: %v", l, err)
			}
			c[cur+"\x00"+name] = canonValue(uint32(typ), data)
		}
	}
	return c
}

// sizesWhereDecoded turns our entries into "type:size=N" where regfexport
// printed the value decoded (strings, numbers) instead of as a hex dump.
func sizesWhereDecoded(want, got canon) canon {
	out := canon{}
	for k, w := range want {
		out[k] = w
		if g, ok := got[k]; ok && strings.Contains(g, ":size=") {
			typ, hx, _ := strings.Cut(w, ":")
			n := len(hx) / 2
			if typ == "1" || typ == "2" {
				// libregf counts a string up to its first NUL.
				data, _ := hex.DecodeString(hx)
				for i := 0; i+1 < len(data); i += 2 {
					if data[i] == 0 && data[i+1] == 0 {
						n = i + 2
						break
					}
				}
			}
			out[k] = fmt.Sprintf("%s:size=%d", typ, n)
		}
	}
	return out
}

// latin1IfNotUTF8: hivexregedit (Perl) prints names of Latin-1 characters
// as Latin-1 bytes and others as UTF-8.
func latin1IfNotUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}

// keysAndValueNames keeps key paths and value names (hivexml decodes value
// data by type, so only the structure is compared).
func keysAndValueNames(c canon) canon {
	out := canon{}
	for k := range c {
		out[k] = ""
	}
	return out
}

type xmlNode struct {
	Name   string     `xml:"name,attr"`
	Nodes  []xmlNode  `xml:"node"`
	Values []xmlValue `xml:"value"`
}

type xmlValue struct {
	Key     string `xml:"key,attr"`
	Default string `xml:"default,attr"`
}

func hivexmlCanon(t *testing.T, path string, _ []byte) canon {
	tool := needTool(t, "hivexml", "libhivex-bin")
	out, err := exec.Command(tool, path).Output()
	if err != nil {
		t.Fatalf("hivexml: %v", err)
	}
	var doc struct {
		Root xmlNode `xml:"node"`
	}
	if err := xml.Unmarshal(out, &doc); err != nil {
		t.Fatalf("hivexml output: %v", err)
	}
	c := canon{}
	var walk func(n xmlNode, p string, depth int)
	walk = func(n xmlNode, p string, depth int) {
		c[p] = ""
		for _, v := range n.Values {
			c[p+"\x00"+v.Key] = ""
		}
		for _, s := range n.Nodes {
			q := p + `\` + s.Name
			if depth == 0 {
				q = `\` + s.Name
			}
			walk(s, q, depth+1)
		}
	}
	walk(doc.Root, `\`, 0)
	return c
}

func regfexportCanon(t *testing.T, path string, _ []byte) canon {
	tool := needTool(t, "regfexport", "libregf-utils")
	out, err := exec.Command(tool, path).Output()
	if err != nil {
		t.Fatalf("regfexport: %v", err)
	}
	c := canon{}
	var rootName, cur, vname string
	var vtype uint32
	var data []byte
	size := -1
	inData, haveValue := false, false
	flush := func() {
		if haveValue && !inData && size >= 0 {
			c[cur+"\x00"+vname] = fmt.Sprintf("%d:size=%d", vtype, size) // shown decoded
		} else if haveValue {
			c[cur+"\x00"+vname] = canonValue(vtype, data)
		}
		haveValue, inData, data = false, false, nil
	}
	typeRe := regexp.MustCompile(`\((REG_[A-Z_]+|0x[0-9a-fA-F]+)\)\s*$`)
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "Key path: "):
			flush()
			p := strings.TrimPrefix(l, "Key path: ")
			if rootName == "" {
				rootName = p
			}
			cur = `\` + strings.TrimPrefix(strings.TrimPrefix(p, rootName), `\`)
			c[cur] = ""
		case strings.HasPrefix(l, "Value: "):
			flush()
			rest := strings.TrimPrefix(l, "Value: ")
			_, name, _ := strings.Cut(rest, " ")
			if name == "(default)" {
				name = ""
			}
			vname, haveValue, size = name, true, -1
		case strings.HasPrefix(l, "Type: ") && haveValue:
			m := typeRe.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("regfexport: type line %q", l)
			}
			vtype = regTypes[m[1]]
			if strings.HasPrefix(m[1], "0x") {
				v, _ := strconv.ParseUint(m[1][2:], 16, 32)
				vtype = uint32(v)
			}
		case strings.HasPrefix(l, "Data size: ") && haveValue:
			size, _ = strconv.Atoi(strings.TrimPrefix(l, "Data size: "))
		case l == "Data:" && haveValue:
			inData = true
		case inData && len(l) > 10 && l[8] == ':':
			hexPart := l[10:]
			if len(hexPart) > 49 {
				hexPart = hexPart[:49]
			}
			b, err := hex.DecodeString(strings.ReplaceAll(hexPart, " ", ""))
			if err != nil {
				t.Fatalf("regfexport data line %q: %v", l, err)
			}
			data = append(data, b...)
		case l == "":
			flush()
		}
	}
	flush()
	return c
}

var regTypes = map[string]uint32{
	"REG_NONE": 0, "REG_SZ": 1, "REG_EXPAND_SZ": 2, "REG_BINARY": 3, "REG_DWORD_LITTLE_ENDIAN": 4,
	"REG_DWORD": 4, "REG_DWORD_BIG_ENDIAN": 5, "REG_LINK": 6, "REG_MULTI_SZ": 7, "REG_RESOURCE_LIST": 8,
	"REG_FULL_RESOURCE_DESCRIPTOR": 9, "REG_RESOURCE_REQUIREMENTS_LIST": 10, "REG_QWORD": 11, "REG_QWORD_LITTLE_ENDIAN": 11,
}
