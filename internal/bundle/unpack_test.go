package bundle

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

func TestPackUnpackRoundTrip(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, sampleTree)
	archive := packBytes(t, src, Limits{})

	old := syscall.Umask(0o077) // modes must not depend on the node's umask
	defer syscall.Umask(old)
	out := filepath.Join(t.TempDir(), "app")
	st, err := Unpack(bytes.NewReader(archive), out, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := listTree(t, out), listTree(t, src); !reflect.DeepEqual(got, want) {
		t.Errorf("unpacked tree differs:\n got %v\nwant %v", got, want)
	}
	if st.Files != 10 || st.Dirs != 65 {
		t.Errorf("stats %+v", st)
	}
	if fi, _ := os.Stat(out); fi.Mode().Perm() != 0o700 {
		t.Errorf("app directory mode %v, want 0700", fi.Mode().Perm())
	}
	// Check agrees.
	cst, err := extract(bytes.NewReader(archive), Limits{}, nil)
	if err != nil || cst != st {
		t.Errorf("extract without writing: %+v, %v; want %+v", cst, err, st)
	}
	// Re-packing the unpacked tree gives the same archive.
	if again := packBytes(t, out, Limits{}); !bytes.Equal(again, archive) {
		t.Error("pack(unpack(archive)) != archive")
	}
}

func TestUnpackTarget(t *testing.T) {
	archive := makeTar(t, file("a", "x"))
	t.Run("existing empty directory", func(t *testing.T) {
		d := t.TempDir()
		if _, err := Unpack(bytes.NewReader(archive), d, Limits{}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("not empty", func(t *testing.T) {
		d := t.TempDir()
		writeTree(t, d, tree{"old": "x"})
		if _, err := Unpack(bytes.NewReader(archive), d, Limits{}); err == nil || !strings.Contains(err.Error(), "not empty") {
			t.Fatal(err)
		}
	})
	t.Run("a file", func(t *testing.T) {
		d := t.TempDir()
		writeTree(t, d, tree{"f": "x"})
		if _, err := Unpack(bytes.NewReader(archive), filepath.Join(d, "f"), Limits{}); err == nil {
			t.Fatal("unpacked over a file")
		}
	})
	t.Run("failure leaves an existing directory empty", func(t *testing.T) {
		d := t.TempDir()
		bad := makeTar(t, dir("a/"), file("a/b", "x"), file("../c", "x"))
		if _, err := Unpack(bytes.NewReader(bad), d, Limits{}); err == nil {
			t.Fatal("no error")
		}
		if got := listTree(t, d); len(got) != 0 {
			t.Fatalf("left %v", got)
		}
	})
}

func TestUnpackRefuses(t *testing.T) {
	small := Limits{MaxTotalSize: 100, MaxFiles: 4, MaxPathLen: 20, MaxFileSize: 50}
	good := makeTar(t, file("a", "x"))
	tests := []struct {
		name    string
		archive []byte
		lim     Limits
		want    string // substring of the error
		limit   string // or the LimitError's Limit
	}{
		{name: "dotdot", archive: makeTar(t, file("../evil", "x")), want: `".." path components`},
		{name: "nested dotdot", archive: makeTar(t, dir("a/"), file("a/../../evil", "x")), want: `".." path components`},
		{name: "dotdot dir", archive: makeTar(t, dir("../"), file("../evil", "x")), want: `".." path components`},
		{name: "absolute", archive: makeTar(t, file("/tmp/evil", "x")), want: "absolute paths"},
		{name: "absolute dir", archive: makeTar(t, dir("/")), want: "empty path"},
		{name: "dot", archive: makeTar(t, file("./a", "x")), want: `"." path components`},
		{name: "double slash", archive: makeTar(t, dir("a/"), file("a//b", "x")), want: "empty path component"},
		{name: "symlink", archive: makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/etc"}}, file("l/passwd", "x")), want: "symbolic links are not allowed"},
		{name: "symlink to parent", archive: makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "up", Linkname: ".."}}), want: "symbolic links are not allowed"},
		{name: "hardlink", archive: makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "h", Linkname: "/etc/passwd"}}), want: "hard links are not allowed"},
		{name: "char device", archive: makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3}}), want: "device files"},
		{name: "block device", archive: makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "sda", Devmajor: 8}}), want: "device files"},
		{name: "fifo", archive: makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "p"}}), want: "named pipes"},
		{name: "pax global header", archive: makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": "x"}}}), want: "only regular files and directories"},
		{name: "unknown type", archive: makeTar(t, entry{hdr: tar.Header{Typeflag: 'Z', Name: "z"}}), want: "only regular files and directories"},
		{name: "duplicate file", archive: makeTar(t, file("a", "1"), file("a", "2")), want: "duplicate entry"},
		{name: "file then dir", archive: makeTar(t, file("a", "1"), dir("a/")), want: "duplicate entry"},
		{name: "dir then file", archive: makeTar(t, dir("a/"), file("a", "1")), want: "duplicate entry"},
		{name: "duplicate dir", archive: makeTar(t, dir("a/"), dir("a/")), want: "duplicate entry"},
		{name: "unsorted", archive: makeTar(t, file("b", "1"), file("a", "2")), want: "out of order"},
		{name: "unsorted subtree", archive: makeTar(t, dir("a/"), file("a-b", "1"), file("a/c", "2")), want: "out of order"},
		{name: "missing parent", archive: makeTar(t, file("a/b", "1")), want: `its directory "a" is not an entry before it`},
		{name: "file as parent", archive: makeTar(t, file("a", "1"), file("a/b", "2")), want: `its directory "a" is not an entry before it`},
		{name: "dir without slash", archive: makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "d", Mode: 0o755}}), want: "must end with a slash"},
		{name: "file with slash", archive: append(rawHeader("f/", tar.TypeReg, 0), make([]byte, 1024)...), want: "empty path component"},
		{name: "raw dotdot", archive: append(rawHeader("../x", tar.TypeReg, 0), make([]byte, 1024)...), want: `".." path components`},
		{name: "dir with contents", archive: append(headerOnly(t, tar.Header{Typeflag: tar.TypeDir, Name: "d/", Size: 512}), make([]byte, 2048)...), want: "directory entry has contents"},
		{name: "oversized file", archive: makeTar(t, file("big", strings.Repeat("x", 51))), lim: small, limit: "MaxFileSize"},
		{name: "huge declared size", archive: headerOnly(t, tar.Header{Typeflag: tar.TypeReg, Name: "big", Size: 1 << 40}), limit: "MaxFileSize"},
		{name: "total size", archive: makeTar(t, file("a", strings.Repeat("x", 50)), file("b", strings.Repeat("x", 50)), file("c", "x")), lim: small, limit: "MaxTotalSize"},
		{name: "too many files", archive: makeTar(t, file("a", ""), file("b", ""), file("c", ""), file("d", ""), file("e", "")), lim: small, limit: "MaxFiles"},
		{name: "too many dirs", archive: makeTar(t, dir("a/"), dir("a/b/"), dir("a/b/c/"), dir("a/b/c/d/"), dir("a/b/c/d/e/")), lim: small, limit: "MaxFiles"},
		{name: "long path", archive: makeTar(t, file(strings.Repeat("x", 21), "")), lim: small, limit: "MaxPathLen"},
		{name: "long path default limit", archive: makeTar(t, file(strings.Repeat("x", 1025), "")), limit: "MaxPathLen"},
		{name: "no end marker", archive: good[:len(good)-1024], want: "truncated"},
		{name: "half end marker", archive: good[:len(good)-512], want: "truncated"},
		{name: "cut in contents", archive: makeTar(t, file("a", strings.Repeat("x", 1000)))[:700], want: "ends in the middle of entry"},
		{name: "cut in padding", archive: good[:513], want: "truncated"},
		{name: "cut in header", archive: good[:100], want: "malformed"},
		{name: "data after end", archive: append(bytes.Clone(good), 0), want: "data follows the end-of-archive marker"},
		{name: "block after end", archive: append(bytes.Clone(good), make([]byte, 512)...), want: "data follows the end-of-archive marker"},
		{name: "empty input", archive: nil, want: "truncated"},
		{name: "garbage", archive: bytes.Repeat([]byte("garbage!"), 128), want: "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check := func(what string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s accepted the archive", what)
				}
				if tt.limit != "" {
					var le *LimitError
					if !errors.As(err, &le) || le.Limit != tt.limit || le.Packing {
						t.Fatalf("%s: got %v, want a LimitError for %s", what, err, tt.limit)
					}
					if !strings.Contains(err.Error(), tt.limit) {
						t.Errorf("%s: message does not name the limit: %v", what, err)
					}
					return
				}
				if !strings.Contains(err.Error(), tt.want) {
					t.Fatalf("%s: got %q, want it to contain %q", what, err, tt.want)
				}
			}
			_, err := extract(bytes.NewReader(tt.archive), tt.lim, nil)
			check("check", err)

			base := t.TempDir()
			writeTree(t, base, tree{"canary": "x", "root/": ""})
			out := filepath.Join(base, "root", "app")
			_, err = Unpack(bytes.NewReader(tt.archive), out, tt.lim)
			check("unpack", err)
			if got := listTree(t, base); !reflect.DeepEqual(got, listTreeWant) {
				t.Fatalf("file system changed: %v", got)
			}
		})
	}
}

var listTreeWant = map[string]string{"canary": "file -rw-r--r-- 2d711642b726b044", "root": "dir -rwxr-xr-x"}

func TestUnpackNeverFollowsExistingLinks(t *testing.T) {
	// Even if something plants a link in the target between checks, files
	// are created with O_EXCL|O_NOFOLLOW through an os.Root.
	base := t.TempDir()
	out := filepath.Join(base, "app")
	os.Mkdir(out, 0o700)
	root, err := os.OpenRoot(out)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	os.Symlink(filepath.Join(base, "victim"), filepath.Join(out, "a"))
	err = writeFile(root, "a", strings.NewReader("x"), 1, ModeFile, make([]byte, 16))
	if err == nil {
		t.Fatal("wrote through a symlink")
	}
	if _, err := os.Lstat(filepath.Join(base, "victim")); err == nil {
		t.Fatal("created the link target")
	}
	os.Symlink("..", filepath.Join(out, "up"))
	if err := writeFile(root, "up/escaped", strings.NewReader("x"), 1, ModeFile, make([]byte, 16)); err == nil {
		t.Fatal("wrote through a symlink to the parent")
	}
	if _, err := os.Lstat(filepath.Join(base, "escaped")); err == nil {
		t.Fatal("escaped the root")
	}
}

func TestComparePaths(t *testing.T) {
	ordered := []string{"a", "a/b", "a/b/c", "a/c", "a-b", "a.txt", "a0", "b", "é"}
	for i := range ordered {
		for j := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := comparePaths(ordered[i], ordered[j]); got != want {
				t.Errorf("comparePaths(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}
