package bundle

import (
	"archive/tar"
	"bytes"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/bundle/bundletest"
)

// Code directories described as data, shared with the tests of package pack.
type tree = bundletest.Tree

var sampleTree = bundletest.SampleTree

func writeTree(t testing.TB, dir string, tr tree) {
	t.Helper()
	bundletest.WriteTree(t, dir, tr)
}

func listTree(t testing.TB, dir string) map[string]string {
	t.Helper()
	return bundletest.ListTree(t, dir)
}

// entry of a hand-made archive.
type entry struct {
	hdr  tar.Header
	body string
}

func file(name, body string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body))}, body: body}
}

func dir(name string) entry {
	return entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755}}
}

// makeTar writes entries as they are, however wrong, and the end marker.
func makeTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.hdr
		if h.Format == 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("WriteHeader(%q): %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// headerOnly returns the bytes of a single header block (and PAX records),
// with no contents: for entries whose declared size is a lie.
func headerOnly(t testing.TB, h tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	h.Format = tar.FormatPAX
	if err := tw.WriteHeader(&h); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// packFunc is pack.Pack, set by pack_link_test.go: package bundle cannot
// import the owner side (pack imports bundle), but its tests need archives
// exactly as owners write them.
var packFunc func(dir string, w io.Writer, lim Limits) (Stats, error)

// packBytes packs dir with pack.Pack.
func packBytes(t testing.TB, dir string, lim Limits) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := packFunc(dir, &buf, lim); err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return buf.Bytes()
}

func testKey(b byte) Key {
	var k Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

// encryptBytes encrypts pt with the given segment size.
func encryptBytes(t testing.TB, key Key, pt []byte, seg int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := encrypt(&buf, key, seg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pt); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawHeader builds a ustar header block by hand, for names Go's writer refuses.
func rawHeader(name string, typ byte, size int64) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], []byte(padOctal(size, 11)+"\x00"))
	copy(b[136:148], "00000000000\x00")
	b[156] = typ
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	for i := 148; i < 156; i++ {
		b[i] = ' '
	}
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], padOctal(int64(sum), 6)+"\x00 ")
	return b
}

func padOctal(n int64, width int) string {
	s := strconv.FormatInt(n, 8)
	return strings.Repeat("0", width-len(s)) + s
}
