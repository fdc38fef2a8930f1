package bundle

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The vectors in testdata are specified in docs/bundle-format.md: NAME.bundle
// is a bundle file, NAME.txt says which key opens it and what must happen.
// good_* vectors must open to exactly the listed entries; fail_* vectors must
// be refused, for the stated reason. Regenerate with
//
//	go test ./internal/bundle -run TestVectors -update-vectors
//
// (bundles are randomized: regenerating changes every byte).
var updateVectors = flag.Bool("update-vectors", false, "regenerate the test vectors in testdata")

type vector struct {
	comment string
	key     Key
	expect  string   // ok, wrong-key, corrupt, not-bundle, unsupported, archive
	entries []string // for ok: "dir 0755 PATH" or "file MODE SHA256 PATH", in archive order
}

func TestVectors(t *testing.T) {
	if *updateVectors {
		generateVectors(t)
	}
	names, _ := filepath.Glob("testdata/*.bundle")
	if len(names) < 10 {
		t.Fatalf("only %d vectors in testdata", len(names))
	}
	sawGood := false
	for _, path := range names {
		name := strings.TrimSuffix(filepath.Base(path), ".bundle")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			v := readVector(t, strings.TrimSuffix(path, ".bundle")+".txt")
			_, checkErr := Check(bytes.NewReader(data), v.key, Limits{})
			out := filepath.Join(t.TempDir(), "app")
			_, openErr := Open(bytes.NewReader(data), v.key, out, Limits{})
			switch {
			case strings.HasPrefix(name, "good_"):
				sawGood = true
				if v.expect != "ok" || checkErr != nil || openErr != nil {
					t.Fatalf("expect %s; Check: %v; Open: %v", v.expect, checkErr, openErr)
				}
				if got := listEntries(t, data, v.key); strings.Join(got, "\n") != strings.Join(v.entries, "\n") {
					t.Fatalf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(v.entries, "\n"))
				}
				// And the tree on disk matches the listing.
				got := listTree(t, out)
				if len(got) != len(v.entries) {
					t.Fatalf("%d entries on disk, %d listed", len(got), len(v.entries))
				}
			case strings.HasPrefix(name, "fail_"):
				if v.expect == "ok" {
					t.Fatal("a fail_ vector expects ok")
				}
				for what, err := range map[string]error{"Check": checkErr, "Open": openErr} {
					if err == nil {
						t.Fatalf("%s accepted it", what)
					}
					if !matchesExpect(err, v.expect) {
						t.Fatalf("%s: %v; want %s", what, err, v.expect)
					}
				}
				if _, err := os.Lstat(out); err == nil {
					t.Fatal("a failed Open left its directory")
				}
			default:
				t.Fatal("vector names start with good_ or fail_")
			}
		})
	}
	if !sawGood {
		t.Fatal("no good_ vector")
	}
}

func matchesExpect(err error, expect string) bool {
	switch expect {
	case "wrong-key":
		return errors.Is(err, ErrWrongKey)
	case "corrupt":
		return errors.Is(err, ErrCorrupt)
	case "not-bundle":
		return errors.Is(err, ErrNotBundle)
	case "unsupported":
		return strings.Contains(err.Error(), "bundle format version") || strings.Contains(err.Error(), "segment size")
	case "archive":
		return strings.Contains(err.Error(), "bundle archive") && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWrongKey)
	}
	return false
}

// listEntries decrypts a bundle and lists its archive.
func listEntries(t *testing.T, data []byte, key Key) []string {
	t.Helper()
	r, err := Decrypt(bytes.NewReader(data), key)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(r)
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeDir {
			out = append(out, fmt.Sprintf("dir %04o %s", h.Mode, strings.TrimSuffix(h.Name, "/")))
			continue
		}
		hh := sha256.New()
		io.Copy(hh, tr)
		out = append(out, fmt.Sprintf("file %04o %x %s", h.Mode, hh.Sum(nil), h.Name))
	}
}

func readVector(t *testing.T, path string) vector {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var v vector
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		k, val, _ := strings.Cut(line, ": ")
		switch k {
		case "#":
		case "key":
			if v.key, err = ParseKey(val); err != nil {
				t.Fatal(err)
			}
		case "expect":
			v.expect = val
		case "entry":
			v.entries = append(v.entries, val)
		default:
			if !strings.HasPrefix(line, "#") && line != "" {
				t.Fatalf("%s: bad line %q", path, line)
			}
		}
	}
	return v
}

func writeVector(t *testing.T, name string, data []byte, v vector) {
	t.Helper()
	var b strings.Builder
	for _, c := range strings.Split(v.comment, "\n") {
		fmt.Fprintf(&b, "# %s\n", c)
	}
	fmt.Fprintf(&b, "key: %s\nexpect: %s\n", v.key.Hex(), v.expect)
	for _, e := range v.entries {
		fmt.Fprintf(&b, "entry: %s\n", e)
	}
	if err := os.WriteFile(filepath.Join("testdata", name+".bundle"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join("testdata", name+".txt"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func generateVectors(t *testing.T) {
	old, _ := filepath.Glob("testdata/*")
	for _, p := range old {
		os.Remove(p)
	}
	os.MkdirAll("testdata", 0o755)
	key := testKey(0)   // 000102...1f
	other := testKey(1) // 0102...20

	good := func(name, comment string, tr tree, seg int) []byte {
		d := t.TempDir()
		writeTree(t, d, tr)
		data := encryptBytes(t, key, packBytes(t, d, Limits{}), seg)
		writeVector(t, name, data, vector{comment: comment, key: key, expect: "ok", entries: listEntries(t, data, key)})
		return data
	}
	small := good("good_small", "files, an executable, an empty directory, an empty file; 4096-byte segments (5 segments)",
		tree{"hello.txt": "hello, world\n", "bin/run*": "#!/bin/sh\necho hi\n", "empty/": "", "emptyfile": "",
			"data/random.bin": string(randomBytes(10000, 42)), "data/z-last.txt": "z"}, MinSegmentSize)
	good("good_empty", "an empty code directory: the archive is only the end-of-archive marker; 1 MiB segments", tree{}, DefaultSegmentSize)
	good("good_default_segment", "a small tree with the default 1 MiB segment size (one segment)",
		tree{"app.py": "print('hi')\n", "static/index.html": "<h1>hi</h1>\n"}, DefaultSegmentSize)

	fail := func(name, expect, comment string, data []byte) {
		writeVector(t, name, data, vector{comment: comment, key: key, expect: expect})
	}
	head, s := segments(small, MinSegmentSize)
	if len(s) < 4 {
		t.Fatalf("good_small has %d segments, want at least 4", len(s))
	}
	cat := func(parts ...[]byte) []byte { return join(head, parts...) }
	writeVector(t, "fail_wrong_key", small, vector{comment: "good_small with another key", key: other, expect: "wrong-key"})
	fail("fail_truncated_at_segment_boundary", "corrupt", "good_small cut after segment 1 (at byte 8192)", small[:2*MinSegmentSize])
	fail("fail_truncated_mid_segment", "corrupt", "good_small cut in the middle of segment 2", small[:2*MinSegmentSize+1000])
	fail("fail_truncated_last_byte", "corrupt", "good_small without its last byte", small[:len(small)-1])
	fail("fail_segments_swapped", "corrupt", "good_small with segments 1 and 2 swapped", cat(append([][]byte{s[0], s[2], s[1]}, s[3:]...)...))
	fail("fail_segment_duplicated", "corrupt", "good_small with segment 1 repeated", cat(append([][]byte{s[0], s[1], s[1]}, s[2:]...)...))
	fail("fail_segment_dropped", "corrupt", "good_small without segment 2", cat(append([][]byte{s[0], s[1]}, s[3:]...)...))
	fail("fail_flipped_byte", "corrupt", "good_small with one bit flipped in segment 2", flipBit(small, 2*MinSegmentSize+100))
	fail("fail_flipped_byte_first_segment", "wrong-key", "good_small with one bit flipped in segment 0: reported as wrong key or tampering", flipBit(small, 200))
	fail("fail_appended_byte", "corrupt", "good_small with a zero byte appended", append(bytes.Clone(small), 0))
	hdr := bytes.Clone(small)
	hdr[10] ^= 0x20 // segment size 4096 -> 12288: still in range, but the header is associated data
	fail("fail_header_segment_size", "wrong-key", "good_small with the segment size in the header changed to 12288", hdr)
	fail("fail_salt", "wrong-key", "good_small with a bit flipped in the Tink salt", flipBit(small, headerSize+5))
	fail("fail_bad_magic", "not-bundle", "good_small starting with MSEBNDX", func() []byte { b := bytes.Clone(small); b[6] = 'X'; return b }())
	fail("fail_bad_version", "unsupported", "good_small with version byte 2", func() []byte { b := bytes.Clone(small); b[7] = 2; return b }())
	fail("fail_segment_size_too_large", "unsupported", "segment size 16 MiB + 1 in the header (over the 8 MiB bound)", func() []byte {
		b := bytes.Clone(small)
		copy(b[8:12], []byte{0x01, 0x00, 0x00, 0x01})
		return b
	}())
	fail("fail_header_only", "corrupt", "only the 12-byte header", small[:headerSize])

	archive := func(name, comment string, tarBytes []byte) {
		fail(name, "archive", comment+" (well encrypted: the archive is refused)", encryptBytes(t, key, tarBytes, MinSegmentSize))
	}
	archive("fail_archive_dotdot", `an entry "../evil"`, makeTar(t, file("../evil", "x")))
	archive("fail_archive_absolute", `an entry "/etc/evil"`, makeTar(t, file("/etc/evil", "x")))
	archive("fail_archive_symlink", `a symbolic link "l" -> "/etc", then "l/passwd"`, makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "l", Linkname: "/etc"}}, file("l/passwd", "x")))
	archive("fail_archive_hardlink", `a hard link "h" -> "/etc/passwd"`, makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "h", Linkname: "/etc/passwd"}}))
	archive("fail_archive_device", `a character device "null"`, makeTar(t, entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3}}))
	archive("fail_archive_duplicate", `the file "a" twice`, makeTar(t, file("a", "1"), file("a", "2")))
	archive("fail_archive_unsorted", `"b" before "a"`, makeTar(t, file("b", "1"), file("a", "2")))
	archive("fail_archive_missing_parent", `"a/b" without a directory entry "a/" before it`, makeTar(t, file("a/b", "1")))
	archive("fail_archive_no_end_marker", "an archive without its two zero blocks", makeTar(t, file("a", "1"))[:1024])
	archive("fail_archive_trailing_data", "a byte after the end-of-archive marker", append(makeTar(t, file("a", "1")), 'x'))
	archive("fail_archive_not_tar", "plaintext that is not a tar archive", []byte("hello, I am not a tar archive, but I am well encrypted"))

	names, _ := filepath.Glob("testdata/*.bundle")
	t.Logf("wrote %d vectors", len(names))
}

func flipBit(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}
