package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// ent is one crafted tar entry.
type ent struct {
	name string
	typ  byte
	body string
	link string
	mode int64
	size int64 // when set, the header's size (the body is padded with zeros)
}

func file(name, body string) ent        { return ent{name: name, typ: tar.TypeReg, body: body, mode: 0o644} }
func dirEnt(name string) ent            { return ent{name: name, typ: tar.TypeDir, mode: 0o755} }
func symlink(name, target string) ent   { return ent{name: name, typ: tar.TypeSymlink, link: target} }
func hardlink(name, target string) ent  { return ent{name: name, typ: tar.TypeLink, link: target} }
func withMode(e ent, m int64) ent       { e.mode = m; return e }
func special(name string, typ byte) ent { return ent{name: name, typ: typ, mode: 0o644} }

var testTime = time.Date(2023, 5, 6, 7, 8, 9, 0, time.UTC)

func mkTar(t testing.TB, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		size := int64(len(e.body))
		if e.size > 0 {
			size = e.size
		}
		if e.typ != tar.TypeReg {
			size = 0
		}
		hdr := &tar.Header{Name: e.name, Typeflag: e.typ, Linkname: e.link, Mode: e.mode, Size: size, ModTime: testTime, Format: tar.FormatPAX}
		if e.typ == tar.TypeXGlobalHeader {
			hdr = &tar.Header{Name: e.name, Typeflag: e.typ, PAXRecords: map[string]string{"comment": "x"}}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("writing %s: %v", e.name, err)
		}
		if size > 0 {
			body := []byte(e.body)
			if int64(len(body)) < size {
				body = append(body, make([]byte, size-int64(len(body)))...)
			}
			if _, err := tw.Write(body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestExtractRefusals(t *testing.T) {
	small := Limits{MaxImageBytes: 1000, MaxFiles: 10, MaxFileBytes: 100}
	many := []ent{}
	for i := range 11 {
		many = append(many, file("f"+strings.Repeat("x", i), "x"))
	}
	tests := []struct {
		name string
		ents []ent
		lim  Limits
		is   error
		want string // in the error
	}{
		{"absolute path", []ent{file("/etc/passwd", "x")}, Limits{}, ErrUnsafe, `"/etc/passwd" is an absolute path`},
		{"dot-dot", []ent{file("../x", "x")}, Limits{}, ErrUnsafe, `"../x" contains ".."`},
		{"dot-dot inside", []ent{file("a/../../x", "x")}, Limits{}, ErrUnsafe, `"a/../../x" contains ".."`},
		{"write through symlink", []ent{symlink("l", "/etc"), file("l/passwd", "x")}, Limits{}, ErrUnsafe, `"l/passwd" would be written through the symlink "l"`},
		{"write through relative symlink", []ent{dirEnt("d"), symlink("d/l", ".."), file("d/l/x", "x")}, Limits{}, ErrUnsafe, `through the symlink "d/l"`},
		{"write under a file", []ent{file("f", "x"), file("f/x", "y")}, Limits{}, ErrUnsafe, `under the file "f"`},
		{"hardlink outside", []ent{hardlink("h", "../etc/passwd")}, Limits{}, ErrUnsafe, `hard link "h" -> "../etc/passwd" points outside the tree`},
		{"hardlink absolute", []ent{hardlink("h", "/etc/passwd")}, Limits{}, ErrUnsafe, `points outside the tree (absolute target)`},
		{"hardlink not yet extracted", []ent{hardlink("h", "later"), file("later", "x")}, Limits{}, ErrUnsafe, `hard link "h" -> "later": the target is not extracted yet`},
		{"hardlink to a symlink", []ent{symlink("s", "x"), hardlink("h", "s")}, Limits{}, ErrUnsafe, `the target is not a regular file`},
		{"symlink climbs", []ent{dirEnt("a"), symlink("a/l", "../../etc")}, Limits{}, ErrUnsafe, `symlink "a/l" -> "../../etc" climbs above the root`},
		{"symlink climbs at top", []ent{symlink("l", "..")}, Limits{}, ErrUnsafe, `climbs above the root`},
		{"char device", []ent{special("dev/null", tar.TypeChar)}, Limits{}, ErrUnsafe, `"dev/null" is a device file`},
		{"block device", []ent{special("dev/sda", tar.TypeBlock)}, Limits{}, ErrUnsafe, `"dev/sda" is a device file`},
		{"fifo", []ent{special("run/fifo", tar.TypeFifo)}, Limits{}, ErrUnsafe, `"run/fifo" is a fifo`},
		{"file over the file limit", []ent{{name: "big", typ: tar.TypeReg, size: 101, mode: 0o644}}, small, ErrLimit, `"big" is 101 bytes, over the 100-byte file limit`},
		{"image over the size limit", []ent{{name: "a", typ: tar.TypeReg, size: 100}, {name: "b", typ: tar.TypeReg, size: 100}, {name: "c", typ: tar.TypeReg, size: 100},
			{name: "d", typ: tar.TypeReg, size: 100}, {name: "e", typ: tar.TypeReg, size: 100}, {name: "f", typ: tar.TypeReg, size: 100}, {name: "g", typ: tar.TypeReg, size: 100},
			{name: "h", typ: tar.TypeReg, size: 100}, {name: "i", typ: tar.TypeReg, size: 100}, {name: "j", typ: tar.TypeReg, size: 100}}, Limits{MaxImageBytes: 950, MaxFileBytes: 100}, ErrLimit, `over 950 bytes uncompressed (at "j")`},
		{"too many files", many, small, ErrLimit, `more than 10 entries`},
		{"root as a file", []ent{file(".", "x")}, Limits{}, ErrUnsafe, `names the root but is not a directory`},
		{"empty whiteout", []ent{file("a/.wh.", "")}, Limits{}, ErrUnsafe, `names no file`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			err := ExtractLayer(bytes.NewReader(mkTar(t, tc.ents...)), dir, tc.lim, nil)
			if err == nil {
				t.Fatalf("extracted; want an error containing %q", tc.want)
			}
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q; want %v containing %q", err, tc.is, tc.want)
			}
			// Nothing escaped the directory.
			if _, err := os.Lstat(filepath.Join(filepath.Dir(dir), "x")); err == nil {
				t.Fatal("a file was written next to the extraction directory")
			}
		})
	}
}

func TestExtractUnknownType(t *testing.T) {
	// tar.Writer refuses unknown type flags, so patch the header by hand.
	b := mkTar(t, file("x", "hi"))
	b[156] = 'Z'
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b[:512] {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	err := ExtractLayer(bytes.NewReader(b), t.TempDir(), Limits{}, nil)
	if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), `unsupported tar type "Z"`) {
		t.Fatalf("error %v; want the unsupported type named", err)
	}
}

func sum(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

func TestExtractModesLinksAndIndex(t *testing.T) {
	dir := t.TempDir()
	idx := NewIndex()
	layer := mkTar(t,
		withMode(dirEnt("usr/"), 0o700),
		withMode(file("usr/bin/su", "su"), 0o4755),
		withMode(file("usr/bin/wall", "wall"), 0o2777),
		withMode(file("etc/shadow", "secret"), 0o640),
		withMode(dirEnt("tmp"), 0o1777),
		symlink("bin", "usr/bin"),
		symlink("usr/bin/python3", "/usr/bin/python3.11"),
		hardlink("usr/bin/su2", "usr/bin/su"),
		ent{name: "pax", typ: tar.TypeXGlobalHeader},
	)
	if err := ExtractLayer(bytes.NewReader(layer), dir, Limits{}, idx); err != nil {
		t.Fatal(err)
	}
	modes := map[string]fs.FileMode{
		"usr":          fs.ModeDir | 0o755,
		"usr/bin":      fs.ModeDir | 0o755,
		"tmp":          fs.ModeDir | 0o755,
		"usr/bin/su":   0o755, // setuid stripped
		"usr/bin/wall": 0o755, // setgid and group/other write stripped
		"etc/shadow":   0o640,
	}
	for p, want := range modes {
		fi, err := os.Lstat(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
	fi, _ := os.Stat(filepath.Join(dir, "usr/bin/su"))
	if !fi.ModTime().Equal(testTime) {
		t.Errorf("mtime %v, want %v (kept from the tar)", fi.ModTime(), testTime)
	}
	if l, _ := os.Readlink(filepath.Join(dir, "usr/bin/python3")); l != "/usr/bin/python3.11" {
		t.Errorf("symlink target %q", l)
	}
	a, _ := os.Stat(filepath.Join(dir, "usr/bin/su"))
	b, _ := os.Stat(filepath.Join(dir, "usr/bin/su2"))
	if !os.SameFile(a, b) {
		t.Error("the hard link is not the same file")
	}
	e, ok := idx.Lookup("usr/bin/su2")
	if !ok || e.Type != TypeFile || e.SHA256 != sum("su") || e.Mode != 0o755 {
		t.Errorf("index entry of the hard link: %+v", e)
	}
	if e, _ := idx.Lookup("etc/shadow"); e.SHA256 != sum("secret") || e.Size != 6 {
		t.Errorf("index entry: %+v", e)
	}
	if e, _ := idx.Lookup("bin"); e.Type != TypeSymlink || e.Link != "usr/bin" {
		t.Errorf("index entry: %+v", e)
	}
	if idx.Len() != 11 { // root, usr, usr/bin, 4 files, etc, tmp, 2 links
		t.Errorf("index has %d entries: %+v", idx.Len(), idx.Entries())
	}
}

func TestExtractWhiteouts(t *testing.T) {
	dir := t.TempDir()
	idx := NewIndex()
	l1 := mkTar(t,
		file("a/x", "x1"), file("a/y", "y1"),
		file("b/z", "z1"), file("b/sub/deep", "d1"),
		file("d/old", "o"), file("d/sub/old2", "o2"),
		file("replaced", "file"),
	)
	l2 := mkTar(t,
		file("a/.wh.x", ""),
		file(".wh.b", ""),
		file("d/sub/new2", "n2"), // before the opaque marker: kept
		file("d/.wh..wh..opq", ""),
		file("d/new", "n"),
		file("a/y", "y2"),
		dirEnt("replaced"), file("replaced/inner", "i"),
		file("new/.wh.ghost", ""), // whiteout of nothing
	)
	for _, l := range [][]byte{l1, l2} {
		if err := ExtractLayer(bytes.NewReader(l), dir, Limits{}, idx); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		r, _ := filepath.Rel(dir, p)
		if !d.IsDir() {
			b, _ := os.ReadFile(p)
			r += "=" + string(b)
		}
		got = append(got, r)
		return nil
	})
	want := ".|a|a/y=y2|d|d/new=n|d/sub|d/sub/new2=n2|new|replaced|replaced/inner=i"
	if g := strings.Join(got, "|"); g != want {
		t.Fatalf("tree\n%s\nwant\n%s", g, want)
	}
	var paths []string
	for _, e := range idx.Entries() {
		paths = append(paths, e.Path)
	}
	if g := strings.Join(paths, "|"); g != "|a|a/y|d|d/new|d/sub|d/sub/new2|new|replaced|replaced/inner" {
		t.Fatalf("index %s", g)
	}
	if e, _ := idx.Lookup("a/y"); e.SHA256 != sum("y2") {
		t.Error("index keeps the lower layer's hash")
	}
}

func FuzzExtractLayer(f *testing.F) {
	seeds := [][]ent{
		{file("a/b", "x"), symlink("a/l", "b"), hardlink("a/h", "a/b")},
		{symlink("l", "/etc"), file("l/x", "x")},
		{file("../x", "x")},
		{dirEnt("d"), file("d/.wh..wh..opq", ""), file(".wh.d", "")},
		{symlink("a", "../.."), hardlink("b", "a")},
		{file("x", "1"), dirEnt("x"), file("x/y", "2"), symlink("x", "y")},
	}
	for _, s := range seeds {
		f.Add(mkTar(f, s...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		root := filepath.Join(dir, "root")
		os.Mkdir(root, 0o755)
		idx := NewIndex()
		err := ExtractLayer(bytes.NewReader(data), root, Limits{MaxImageBytes: 1 << 20, MaxFiles: 1000, MaxFileBytes: 1 << 16}, idx)
		// Nothing outside root.
		ents, _ := os.ReadDir(dir)
		if len(ents) != 1 {
			t.Fatalf("extraction wrote outside its directory: %v", ents)
		}
		if err != nil {
			return
		}
		// The tree is exactly the index, and holds no unsafe entry.
		n := 0
		filepath.WalkDir(root, func(p string, d fs.DirEntry, werr error) error {
			if werr != nil {
				t.Fatal(werr)
			}
			n++
			r, _ := filepath.Rel(root, p)
			if r == "." {
				r = ""
			}
			e, ok := idx.Lookup(filepath.ToSlash(r))
			if !ok {
				t.Fatalf("%s is in the tree but not in the index", r)
			}
			fi, _ := d.Info()
			switch {
			case fi.Mode().IsRegular():
				b, _ := os.ReadFile(p)
				if e.Type != TypeFile || sum(string(b)) != e.SHA256 || fi.Mode()&0o7022 != 0 {
					t.Fatalf("%s: %v vs index %+v", r, fi.Mode(), e)
				}
			case fi.IsDir():
				if e.Type != TypeDir || fi.Mode().Perm() != 0o755 {
					t.Fatalf("%s: %v vs index %+v", r, fi.Mode(), e)
				}
			case fi.Mode()&fs.ModeSymlink != 0:
				l, _ := os.Readlink(p)
				d := path.Dir(filepath.ToSlash(r))
				if d == "." {
					d = ""
				}
				if e.Type != TypeSymlink || l != e.Link || (!strings.HasPrefix(l, "/") && climbs(d, l)) {
					t.Fatalf("%s -> %s vs index %+v", r, l, e)
				}
			default:
				t.Fatalf("%s is a %v", r, fi.Mode())
			}
			return nil
		})
		if n != idx.Len() {
			t.Fatalf("tree has %d entries, index %d", n, idx.Len())
		}
	})
}
