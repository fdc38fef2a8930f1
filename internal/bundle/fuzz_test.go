package bundle

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// FuzzUnpack feeds arbitrary bytes to the archive reader. Check (no writes)
// and Unpack must agree, never panic, and Unpack must create nothing but
// regular files and directories with the allowed modes, inside its directory.
func FuzzUnpack(f *testing.F) {
	d := f.TempDir()
	writeTree(f, d, tree{"a/b.txt": "hello", "run*": "#!/bin/sh\n", "e/": "", "z": ""})
	f.Add(packBytes(f, d, Limits{}))
	f.Add(makeTar(f))
	f.Add(makeTar(f, file("../x", "1")))
	f.Add(makeTar(f, dir("a/"), file("a/b", "1"), file("a/c", "2")))
	f.Add(makeTar(f, file("a", "1"), file("a", "2")))
	f.Add(makeTar(f, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: ".."}}, file("l/x", "1")))
	f.Add(makeTar(f, entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "h", Linkname: "a"}}))
	f.Add(makeTar(f, file(string(bytes.Repeat([]byte("x/"), 60))+"long", "1")))
	f.Add(append(rawHeader("f/", tar.TypeReg, 0), make([]byte, 1024)...))
	lim := Limits{MaxTotalSize: 1 << 20, MaxFiles: 64, MaxPathLen: 200, MaxFileSize: 1 << 19}
	f.Fuzz(func(t *testing.T, data []byte) {
		cst, cerr := extract(bytes.NewReader(data), lim, nil)
		base := t.TempDir()
		out := filepath.Join(base, "out")
		ust, uerr := Unpack(bytes.NewReader(data), out, lim)
		if (cerr == nil) != (uerr == nil) {
			t.Fatalf("Check and Unpack disagree: %v / %v", cerr, uerr)
		}
		entries, _ := os.ReadDir(base)
		if uerr != nil {
			if len(entries) != 0 {
				t.Fatalf("failed Unpack left %d entries", len(entries))
			}
			return
		}
		if cst != ust {
			t.Fatalf("stats differ: %+v / %+v", cst, ust)
		}
		if len(entries) != 1 || entries[0].Name() != "out" {
			t.Fatalf("Unpack wrote outside its directory: %v", entries)
		}
		n := 0
		filepath.WalkDir(out, func(p string, e fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			info, _ := os.Lstat(p)
			m := info.Mode()
			switch {
			case p == out:
			case m.IsDir() && m.Perm() == 0o755, m.IsRegular() && (m.Perm() == 0o644 || m.Perm() == 0o755):
				n++
			default:
				t.Fatalf("%s: mode %v", p, m)
			}
			return nil
		})
		if n != ust.Files+ust.Dirs {
			t.Fatalf("%d entries on disk, stats %+v", n, ust)
		}
	})
}

// FuzzDecrypt feeds arbitrary bytes to Decrypt and Check under a fixed key:
// no panics, only the documented errors, and plaintext only from bundles that
// authenticate.
func FuzzDecrypt(f *testing.F) {
	key := testKey(0)
	names, _ := filepath.Glob("testdata/*.bundle")
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(encryptBytes(f, key, nil, MinSegmentSize))
	f.Add(encryptBytes(f, key, randomBytes(3*MinSegmentSize, 1), MinSegmentSize))
	f.Add([]byte(magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := Decrypt(bytes.NewReader(data), key)
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		if err != nil && !errors.Is(err, ErrNotBundle) && !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrCorrupt) {
			if _, herr := parseHeader(data); herr == nil {
				t.Fatalf("undocumented error for a well-formed header: %v", err)
			}
		}
		_, cerr := Check(bytes.NewReader(data), key, Limits{MaxTotalSize: 1 << 20})
		if err != nil && cerr == nil {
			t.Fatalf("Check accepted what Decrypt refused: %v", err)
		}
	})
}
