package wclayer

import (
	"bytes"
	"crypto/sha256"
	"hash"
	"io"
	"strings"
	"testing"
	"time"
)

func TestParsePAXTime(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"1715679015", time.Unix(1715679015, 0), true},
		{"1715679015.1234567", time.Unix(1715679015, 123456700), true},
		{"1715679015.1234567891", time.Unix(1715679015, 123456789), true},
		{"-1.5", time.Unix(-1, -500000000), true},
		{"", time.Time{}, false},
		{"1.", time.Time{}, false},
		{"1.2x", time.Time{}, false},
		{"x", time.Time{}, false},
	}
	for _, tt := range tests {
		got, ok := parsePAXTime(tt.in)
		if ok != tt.ok || !got.Equal(tt.want) {
			t.Errorf("parsePAXTime(%q) = %v %v, want %v %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestFiletime(t *testing.T) {
	tests := []struct {
		in   time.Time
		want int64
		ok   bool
	}{
		{time.Time{}, 0, true},
		{time.Unix(0, 0), 116444736000000000, true},
		{time.Date(1601, 1, 1, 0, 0, 0, 100, time.UTC), 1, true},
		{time.Date(1600, 12, 31, 0, 0, 0, 0, time.UTC), 0, false},
		{time.Date(40000, 1, 1, 0, 0, 0, 0, time.UTC), 0, false},
	}
	for _, tt := range tests {
		got, ok := filetime(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("filetime(%v) = %d %v, want %d %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestFoldAndUTF16(t *testing.T) {
	tests := []struct {
		in, fold string
		units    int
	}{
		{"Files/a.TXT", "FILES/A.TXT", 11},
		{"FILES", "FILES", 5},
		{"r\u00e9sum\u00e9", "R\u00c9SUM\u00c9", 6},
		{"\U00010428", "\U00010428", 2}, // outside the BMP: left alone, two units
		{"\u65e5\u672c", "\u65e5\u672c", 2},
		// The CIM writer's upcase table keeps these (unicode.ToUpper gives
		// I, S and Greek Mu): the merged view must count entries as a CIM does.
		{"\u0131.txt", "\u0131.TXT", 5},
		{"\u017f", "\u017f", 1},
		{"\u00b5", "\u00b5", 1},
	}
	for _, tt := range tests {
		if got := fold(tt.in); got != tt.fold {
			t.Errorf("fold(%q) = %q, want %q", tt.in, got, tt.fold)
		}
		if got := utf16Len(tt.in); got != tt.units {
			t.Errorf("utf16Len(%q) = %d, want %d", tt.in, got, tt.units)
		}
	}
}

func TestCleanPath(t *testing.T) {
	tests := []struct {
		in       string
		dir      bool
		want     string
		wantKind error
	}{
		{"Files/a", false, "Files/a", nil},
		{"./Files/a", false, "Files/a", nil},
		{`Files\a\b`, false, "Files/a/b", nil},
		{"Files/a/", true, "Files/a", nil},
		{"Files/a/", false, "", ErrInvalidName},
		{"Files/./a", false, "", ErrInvalidName},
		{"Files/a/..", false, "", ErrPathTraversal},
		{"c:x", false, "", ErrPathTraversal},
		{`\\.\pipe\x`, false, "", ErrPathTraversal},
		{"", false, "", ErrInvalidName},
		// The last component may carry ".wh." or ":stream:$DATA": its
		// length is checkLengths's to judge, a directory's is not.
		{"Files/" + long256, false, "Files/" + long256, nil},
		{"Files/" + long256 + "/a", false, "", ErrInvalidName},
	}
	for _, tt := range tests {
		got, pr := cleanPath(tt.in, tt.dir)
		var kind error
		if pr != nil {
			kind = pr.kind
		}
		if got != tt.want || kind != tt.wantKind {
			t.Errorf("cleanPath(%q, %v) = %q %v, want %q %v", tt.in, tt.dir, got, kind, tt.want, tt.wantKind)
		}
	}
}

var long256 = strings.Repeat("n", 256)

func TestCheckLengths(t *testing.T) {
	deep := "Files"
	for len(deep) < maxPathUnits-300 {
		deep += "/" + strings.Repeat("d", 200)
	}
	fill := func(n int) string { return deep + "/" + strings.Repeat("f", n-len(deep)-1) } // a path of n units
	tests := []struct {
		path, stream string
		wantErr      string
	}{
		{"Files/" + strings.Repeat("é", 255), "", ""},
		{"Files/" + strings.Repeat("é", 255), strings.Repeat("s", 255), ""},
		{"Files/" + long256, "", "file name of 256 UTF-16 units exceeds 255"},
		{"Files/" + strings.Repeat("\U0001F600", 128), "", "file name of 256 UTF-16 units exceeds 255"},
		{"Files/a", long256, "stream name of 256 UTF-16 units exceeds 255"},
		{fill(maxPathUnits), "", ""},
		{fill(maxPathUnits + 1), "", "path of 32768 UTF-16 units exceeds 32767"},
		// ":s:$DATA" counts: a stream is opened by that whole name.
		{fill(maxPathUnits - 8), "s", ""},
		{fill(maxPathUnits - 7), "s", "path of 32768 UTF-16 units exceeds 32767"},
	}
	for _, tt := range tests {
		pr := checkLengths(tt.path, tt.stream)
		var got string
		if pr != nil {
			got = pr.msg
			if pr.kind != ErrInvalidName {
				t.Errorf("checkLengths(%.20q..., %.20q): kind %v, want %v", tt.path, tt.stream, pr.kind, ErrInvalidName)
			}
		}
		if got != tt.wantErr {
			t.Errorf("checkLengths(%.20q... (%d units), %.20q) = %q, want %q", tt.path, utf16Len(tt.path), tt.stream, got, tt.wantErr)
		}
	}
}

type panickingHash struct{ hash.Hash }

func (panickingHash) Write([]byte) (int, error) { panic("hash bug") }

// A panic of the hash on its goroutine is an error from Sum, not a crash;
// the buffers keep flowing so the reader does not stall.
func TestHashingReadaheadPanicIsAnError(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 3<<20)
	ra := newReadahead(bytes.NewReader(data), 256<<10, 4, panickingHash{sha256.New()})
	defer ra.Close()
	n, err := io.Copy(io.Discard, ra)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("read %d bytes, %v; want all %d", n, err, len(data))
	}
	if _, err := ra.Sum(); err == nil || !strings.Contains(err.Error(), "hash bug") {
		t.Fatalf("Sum: %v, want the hash's panic as an error", err)
	}
}
