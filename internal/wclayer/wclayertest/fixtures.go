package wclayertest

import (
	"archive/tar"
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
)

// pseudo returns n deterministic bytes derived from seed.
func pseudo(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// Hive returns a fake registry hive: "regf" and deterministic bytes.
func Hive(name string, size int) []byte {
	b := pseudo(hashString(name), size)
	copy(b, "regf")
	return b
}

// PE returns a fake executable: "MZ", the PE offset at 0x3c pointing to
// "PE\0\0", then deterministic bytes.
func PE(name string, size int) []byte {
	if size < 0x100 {
		size = 0x100
	}
	b := pseudo(hashString(name), size)
	copy(b, "MZ")
	b[0x3c], b[0x3d], b[0x3e], b[0x3f] = 0x80, 0, 0, 0
	copy(b[0x80:], "PE\x00\x00")
	return b
}

func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// Names used by the fixtures, exported so tests can find them.
const (
	DeepDepth    = 45
	ZeroFileSize = 1 << 20
)

// LongNamePath is a file whose last component is exactly 255 UTF-16 units.
var LongNamePath = "Files/Users/Public/Documents/" + strings.Repeat("n", 250) + ".long"

// DeepPath is a file 45 directories below Files/deep.
var DeepPath = func() string {
	parts := []string{"Files", "deep"}
	for i := 1; i <= DeepDepth; i++ {
		parts = append(parts, fmt.Sprintf("d%02d", i))
	}
	return strings.Join(append(parts, "leaf.txt"), "/")
}()

// BaseLayer is a realistic Windows base layer: the five hives under
// Files/Windows/System32/config, executables with MZ headers, ProgramData,
// Users, a UtilityVM, SDs everywhere, an alternate stream (Zone.Identifier),
// EAs, a symlink (absolute and relative), a junction, hard links, unicode
// names (é, 日本語, an emoji outside the BMP), a 255-unit name, a 45-level
// deep path and an all-zero 1 MiB file. Entries are in the exporter's walk
// order (byte-wise sorted names, a directory before its contents).
func BaseLayer() *Layer {
	ti := WithSD(SDTrustedInstaller)
	l := NewLayer()
	l.Dir("Files")
	l.Dir("Files/ProgramData", WithAttributes(0x2012)) // hidden, not content indexed
	l.File("Files/ProgramData/Microsoft/Windows/Start Menu/desktop.ini", []byte("[.ShellClassInfo]\r\n"), WithAttributes(0x26))
	l.Dir("Files/Users", WithAttributes(0x11))
	l.Symlink("Files/Users/All Users", `C:\ProgramData`, WithAttributes(0x2416), WithSD(SDSystemOnly))
	l.Dir("Files/Users/Default", WithAttributes(0x12))
	l.File("Files/Users/Default/NTUSER.DAT", Hive("NTUSER.DAT", 16<<10), WithAttributes(0x22))
	l.Symlink("Files/Users/Default User", `C:\Users\Default`, WithMountPoint(), WithAttributes(0x2416), WithSD(SDSystemOnly))
	l.Dir("Files/Users/Public")
	l.File(LongNamePath, []byte("long name\r\n"))
	l.File("Files/Users/Public/Documents/r\u00e9sum\u00e9.txt", []byte("caf\u00e9\r\n"))
	l.File("Files/Users/Public/Documents/smile-\U0001F600.txt", []byte("\U0001F600"))
	l.File("Files/Users/Public/Documents/\u65e5\u672c\u8a9e.txt", []byte("\u65e5\u672c\u8a9e\r\n"))
	l.File("Files/Users/Public/Downloads/setup.exe", PE("setup.exe", 4096))
	l.Stream("Files/Users/Public/Downloads/setup.exe", "Zone.Identifier", []byte("[ZoneTransfer]\r\nZoneId=3\r\n"))
	l.Dir("Files/Windows", ti)
	l.Dir("Files/Windows/System32", ti)
	l.File("Files/Windows/System32/cmd.exe", PE("cmd.exe", 64<<10), ti)
	l.File("Files/Windows/System32/config/DEFAULT", Hive("DEFAULT", 64<<10), WithSD(SDSystemOnly))
	l.File("Files/Windows/System32/config/SAM", Hive("SAM", 32<<10), WithSD(SDSystemOnly))
	l.File("Files/Windows/System32/config/SECURITY", Hive("SECURITY", 32<<10), WithSD(SDSystemOnly))
	l.File("Files/Windows/System32/config/SOFTWARE", Hive("SOFTWARE", 256<<10), WithSD(SDSystemOnly))
	l.File("Files/Windows/System32/config/SYSTEM", Hive("SYSTEM", 128<<10), WithSD(SDSystemOnly))
	l.File("Files/Windows/System32/drivers/etc/hosts", []byte("# Copyright (c) 1993-2009 Microsoft Corp.\r\n127.0.0.1 localhost\r\n"), ti)
	l.File("Files/Windows/System32/drivers/ntfs.sys", PE("ntfs.sys", 48<<10), ti,
		WithEA("$KERNEL.PURGE.ESBCACHE", pseudo(7, 68)), WithEA("$CI.CATALOGHINT", []byte("\x01\x00Package_for_RollupFix.cat")))
	l.File("Files/Windows/System32/kernel32.dll", PE("kernel32.dll", 96<<10), ti)
	l.Symlink("Files/Windows/System32/notepad-link.exe", `..\notepad.exe`)
	l.File("Files/Windows/System32/notepad.exe", PE("notepad.exe", 32<<10), ti)
	l.File("Files/Windows/System32/ntdll.dll", PE("ntdll.dll", 128<<10), ti)
	l.File("Files/Windows/Temp/zeros.bin", make([]byte, ZeroFileSize))
	l.HardLink("Files/Windows/WinSxS/amd64_microsoft-windows-notepad_31bf3856ad364e35_10.0.20348.1_none/notepad.exe", "Files/Windows/System32/notepad.exe")
	l.HardLink("Files/Windows/notepad.exe", "Files/Windows/System32/notepad.exe")
	l.File(DeepPath, []byte("deep\r\n"))
	l.Dir("UtilityVM")
	l.File("UtilityVM/Files/EFI/Microsoft/Boot/BCD", Hive("BCD", 16<<10), WithSD(SDSystemOnly))
	l.File("UtilityVM/Files/EFI/Microsoft/Boot/bootmgfw.efi", PE("bootmgfw.efi", 32<<10), ti)
	l.File("UtilityVM/Files/Windows/System32/config/SOFTWARE", Hive("UVM-SOFTWARE", 64<<10), WithSD(SDSystemOnly))
	l.File("UtilityVM/Files/Windows/System32/config/SYSTEM", Hive("UVM-SYSTEM", 64<<10), WithSD(SDSystemOnly))
	return l
}

// AppLayer is the n-th (n >= 1) realistic non-base layer on top of
// BaseLayer (and earlier app layers), without delta hives: program files
// with an alternate stream, a hard link to a base file, a replacement of a
// base file spelled in a different case and whiteouts of base paths; what
// is replaced and deleted cycles with n%3 (1: notepad.exe, notepad-link.exe
// and Temp/zeros.bin; 2: ntdll.dll, hosts and Users/Public/Documents;
// 0: kernel32.dll and drivers/ntfs.sys).
func AppLayer(n int) *Layer {
	app := fmt.Sprintf("Files/Program Files/App%d", n)
	l := NewLayer()
	l.Dir("Files")
	l.Dir("Files/Program Files", WithSD(SDTrustedInstaller))
	l.File(app+"/app.exe", PE(fmt.Sprintf("app%d.exe", n), 24<<10))
	l.File(app+"/config.json", []byte(fmt.Sprintf(`{"app":%d,"name":"\u00e9t\u00e9"}`+"\n", n)))
	l.Stream(app+"/config.json", "Zone.Identifier", []byte(fmt.Sprintf("[ZoneTransfer]\r\nZoneId=%d\r\n", n)))
	l.HardLink(app+"/cmd-copy.exe", "Files/Windows/System32/cmd.exe")
	l.Dir("Files/Windows", WithSD(SDTrustedInstaller))
	l.Dir("Files/Windows/System32", WithSD(SDTrustedInstaller))
	switch n % 3 {
	case 1:
		// A case-different replacement, and deletions of a file and a symlink.
		l.File("Files/Windows/System32/NOTEPAD.EXE", PE(fmt.Sprintf("notepad-v%d", n), 40<<10), WithSD(SDTrustedInstaller))
		l.Whiteout("Files/Windows/System32/notepad-link.exe")
		l.Whiteout("Files/Windows/Temp/zeros.bin")
	case 2:
		// A deleted directory subtree, a modified file and a case-different replacement.
		l.File("Files/Windows/System32/NTDLL.dll", PE(fmt.Sprintf("ntdll-v%d", n), 64<<10), WithSD(SDTrustedInstaller))
		l.File("Files/Windows/System32/drivers/etc/hosts", []byte(fmt.Sprintf("127.0.0.1 localhost app%d\r\n", n)))
		l.Whiteout("Files/Users/Public/Documents")
	default:
		l.File("Files/Windows/System32/Kernel32.DLL", PE(fmt.Sprintf("kernel32-v%d", n), 100<<10), WithSD(SDTrustedInstaller))
		l.Whiteout("Files/Windows/System32/drivers/ntfs.sys")
	}
	return l
}

// DeltaHiveLayer is a non-base layer carrying Hives/*_Delta files, which
// need the parent's hives merged (the portable builder refuses it).
func DeltaHiveLayer() *Layer {
	l := NewLayer()
	l.File("Files/Program Files/Tool/tool.exe", PE("tool.exe", 8<<10))
	l.Dir("Hives")
	for _, h := range []string{"DefaultUser_Delta", "Sam_Delta", "Security_Delta", "Software_Delta", "System_Delta"} {
		l.File("Hives/"+h, Hive(h, 8<<10), WithSD(SDSystemOnly))
	}
	return l
}

// Chain is BaseLayer followed by AppLayer(1..n-1).
func Chain(n int) []*Layer {
	if n < 1 {
		return nil
	}
	out := []*Layer{BaseLayer()}
	for i := 1; i < n; i++ {
		out = append(out, AppLayer(i))
	}
	return out
}

// WriteSampleChain writes Chain(3) into dir as layer0.tar.gz, layer1... (the
// extension follows c) and returns their paths, base first.
func WriteSampleChain(dir string, c Compression) ([]string, error) {
	var paths []string
	for i, l := range Chain(3) {
		p := filepath.Join(dir, fmt.Sprintf("layer%d%s", i, c.Ext()))
		f, err := os.Create(p)
		if err != nil {
			return nil, err
		}
		bw := bufio.NewWriter(f)
		err = l.WriteTo(bw, c)
		if err == nil {
			err = bw.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", p, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// Large streams a big deterministic uncompressed base-style layer to w:
// files spread over 100-file directories under Files/, sizes drawn from a
// skewed distribution summing to totalBytes, content half pseudo-random,
// half runs of repeated bytes (compresses about 2:1 like real binaries).
// Only a 1 MiB pool is held in memory.
func Large(w io.Writer, files int, totalBytes int64, seed int64) error {
	if files < 1 || totalBytes < 0 {
		return fmt.Errorf("wclayertest.Large: want files >= 1 and totalBytes >= 0, got %d, %d", files, totalBytes)
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 42))
	const poolSize = 1 << 20
	pool := pseudo(uint64(seed), 2*poolSize)
	for i := 0; i < 2*poolSize; i += 4096 {
		for j := i + 2048; j < i+4096; j++ {
			pool[j] = pool[i] // second half of each 4 KiB block: a run
		}
	}
	// Skewed sizes: weights w_i = u^3, scaled to the total.
	weights := make([]float64, files)
	var sum float64
	for i := range weights {
		u := rng.Float64()
		weights[i] = u * u * u
		sum += weights[i]
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	t := tar.NewWriter(bw)
	o := collect(nil)
	writeHdr := func(h *tar.Header) error {
		if err := t.WriteHeader(h); err != nil {
			return fmt.Errorf("wclayertest.Large: %s: %w", h.Name, err)
		}
		return nil
	}
	h := basicHeader("Files", tar.TypeDir, 0, 0x10, o)
	h.Mode = modeDir
	if err := writeHdr(h); err != nil {
		return err
	}
	var written int64
	for i := 0; i < files; i++ {
		if i%100 == 0 {
			h := basicHeader(fmt.Sprintf("Files/dir%05d", i/100), tar.TypeDir, 0, 0x10, o)
			h.Mode = modeDir
			if err := writeHdr(h); err != nil {
				return err
			}
		}
		size := int64(weights[i] / sum * float64(totalBytes))
		if i == files-1 {
			size = totalBytes - written
		}
		written += size
		h := basicHeader(fmt.Sprintf("Files/dir%05d/file%06d.bin", i/100, i), tar.TypeReg, size, 0x20, o)
		h.Mode = modeRegular
		if err := writeHdr(h); err != nil {
			return err
		}
		off := rng.IntN(poolSize)
		for left := size; left > 0; {
			n := min(left, int64(2*poolSize-off))
			if _, err := t.Write(pool[off : off+int(n)]); err != nil {
				return err
			}
			left -= n
			off = 0
		}
	}
	if err := t.Close(); err != nil {
		return err
	}
	return bw.Flush()
}
