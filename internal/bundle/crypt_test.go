package bundle

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/bundle/bundletest"
)

const testSeg = MinSegmentSize // small segments: many boundaries in little data

func randomBytes(n int, seed uint64) []byte { return bundletest.RandomBytes(n, seed) }

func decryptAll(ct []byte, key Key) ([]byte, error) {
	r, err := Decrypt(bytes.NewReader(ct), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestKey(t *testing.T) {
	k1, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := NewKey()
	if k1.Equal(k2) || k1.IsZero() {
		t.Fatal("NewKey is not random")
	}
	k, err := ParseKey(" " + strings.ToUpper(k1.Hex()) + "\n")
	if err != nil || !k.Equal(k1) || k != k1 {
		t.Fatalf("ParseKey(Hex()) = %v, %v", k, err)
	}
	secret := k1.Hex()
	for _, s := range []string{fmt.Sprint(k1), fmt.Sprintf("%x %X %d %v %+v %#v %s %q", k1, k1, k1, k1, k1, k1, k1, k1), fmt.Sprint(struct{ K Key }{k1}), fmt.Errorf("oops: %v", k1).Error()} {
		if strings.Contains(s, secret) || strings.Contains(s, secret[:8]) || strings.Contains(s, fmt.Sprint(k1[0])+" ") {
			t.Errorf("key printed: %s", s)
		}
	}
	for _, bad := range []string{"", "00", secret[:63], secret + "0", strings.Repeat("zz", 32), strings.Repeat("0", 64)} {
		_, err := ParseKey(bad)
		if err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
			continue
		}
		if len(bad) > 4 && strings.Contains(err.Error(), bad) {
			t.Errorf("error repeats the input: %v", err)
		}
	}
	if _, err := Encrypt(io.Discard, Key{}); err == nil {
		t.Error("Encrypt accepted the zero key")
	}
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	firstPT := testSeg - tagSize - tinkHeaderSize - headerSize
	segPT := testSeg - tagSize
	sizes := []int{0, 1, firstPT - 1, firstPT, firstPT + 1, firstPT + segPT - 1, firstPT + segPT, firstPT + segPT + 1, firstPT + 5*segPT + 77}
	key := testKey(1)
	for _, seg := range []int{testSeg, DefaultSegmentSize} {
		for _, n := range sizes {
			pt := randomBytes(n, uint64(n))
			ct := encryptBytes(t, key, pt, seg)
			// Layout: header, Tink header, segments aligned to the segment size.
			// The last segment may be full; it is empty only for empty input.
			nseg := 1
			if n > firstPT && seg == testSeg {
				nseg = 2 + (n-firstPT-1)/segPT
			}
			if seg == testSeg && len(ct) != headerSize+tinkHeaderSize+n+nseg*tagSize {
				t.Errorf("seg %d, %d bytes: ciphertext is %d bytes, want %d", seg, n, len(ct), headerSize+tinkHeaderSize+n+nseg*tagSize)
			}
			got, err := decryptAll(ct, key)
			if err != nil || !bytes.Equal(got, pt) {
				t.Errorf("seg %d, %d bytes: round trip failed: %v", seg, n, err)
			}
		}
	}
	// A fresh salt per bundle: same key and plaintext, different bytes.
	a, b := encryptBytes(t, key, []byte("x"), testSeg), encryptBytes(t, key, []byte("x"), testSeg)
	if bytes.Equal(a, b) {
		t.Error("two encryptions are identical")
	}
}

func TestWrongKey(t *testing.T) {
	ct := encryptBytes(t, testKey(1), randomBytes(3*testSeg, 1), testSeg)
	_, err := Decrypt(bytes.NewReader(ct), testKey(2))
	if !errors.Is(err, ErrWrongKey) {
		t.Fatalf("got %v, want ErrWrongKey", err)
	}
	if err.Error() != "the code key does not decrypt this bundle: wrong key, or the bundle was tampered with" {
		t.Fatalf("message: %q", err)
	}
	if strings.Contains(err.Error(), testKey(2).Hex()) {
		t.Fatal("key in error")
	}
}

// segments splits a ciphertext into its header and segments.
func segments(ct []byte, seg int) (head []byte, segs [][]byte) {
	first := headerSize + tinkHeaderSize
	head = ct[:first]
	rest := ct[first:]
	n := seg - first
	for len(rest) > 0 {
		if n > len(rest) {
			n = len(rest)
		}
		segs = append(segs, rest[:n])
		rest = rest[n:]
		n = seg
	}
	return head, segs
}

func join(head []byte, segs ...[]byte) []byte {
	out := bytes.Clone(head)
	for _, s := range segs {
		out = append(out, s...)
	}
	return out
}

func TestTamperEveryByte(t *testing.T) {
	key := testKey(1)
	pt := randomBytes(3*testSeg+100, 2)
	ct := encryptBytes(t, key, pt, testSeg)
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 0x01
		_, err := decryptAll(bad, key)
		if err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
		if i >= headerSize && !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d: unexpected error %v", i, err)
		}
		if i >= testSeg && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("byte %d (after segment 0): got %v, want ErrCorrupt", i, err)
		}
	}
}

func TestTruncation(t *testing.T) {
	key := testKey(1)
	pt := randomBytes(4*testSeg, 3)
	ct := encryptBytes(t, key, pt, testSeg)
	for n := 0; n < len(ct); n++ {
		got, err := decryptAll(ct[:n], key)
		if err == nil {
			t.Fatalf("truncation to %d of %d bytes went unnoticed", n, len(ct))
		}
		if !bytes.HasPrefix(pt, got) {
			t.Fatalf("truncation to %d: released bytes that are not plaintext", n)
		}
		// Segment 0 failing reads as a wrong key (which names tampering too).
		if n > testSeg && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncation to %d: %v, want ErrCorrupt", n, err)
		}
	}
	// Named cases, for the record: at each segment boundary, and mid-segment.
	for _, n := range []int{headerSize, headerSize + tinkHeaderSize, testSeg, 2 * testSeg, 3 * testSeg, 4 * testSeg, testSeg + testSeg/2, len(ct) - 1, len(ct) - tagSize} {
		if _, err := decryptAll(ct[:n], key); err == nil {
			t.Errorf("truncation at %d accepted", n)
		}
	}
}

func TestSegmentsMovedOrDuplicated(t *testing.T) {
	key := testKey(1)
	ct := encryptBytes(t, key, randomBytes(5*testSeg, 4), testSeg)
	head, s := segments(ct, testSeg)
	if len(s) != 6 {
		t.Fatalf("%d segments", len(s))
	}
	other := encryptBytes(t, key, randomBytes(5*testSeg, 4), testSeg) // same key and plaintext
	_, o := segments(other, testSeg)
	tests := map[string][]byte{
		"swap 1 and 2":             join(head, s[0], s[2], s[1], s[3], s[4], s[5]),
		"duplicate 2":              join(head, s[0], s[1], s[2], s[2], s[3], s[4], s[5]),
		"drop 3":                   join(head, s[0], s[1], s[2], s[4], s[5]),
		"drop last":                join(head, s[0], s[1], s[2], s[3], s[4]),
		"last moved earlier":       join(head, s[0], s[5], s[1], s[2], s[3], s[4]),
		"repeat last":              join(head, s[0], s[1], s[2], s[3], s[4], s[5], s[5]),
		"splice from other bundle": join(head, s[0], o[1], s[2], s[3], s[4], s[5]),
		"append a byte":            append(bytes.Clone(ct), 0),
		"append a segment":         join(head, s[0], s[1], s[2], s[3], s[4], s[1], s[5]),
	}
	for name, bad := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := decryptAll(bad, key)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
		})
	}
	if _, err := decryptAll(join(head, s...), key); err != nil {
		t.Fatalf("reassembled bundle: %v", err)
	}
}

func TestHeaderErrors(t *testing.T) {
	key := testKey(1)
	ct := encryptBytes(t, key, []byte("hello"), testSeg)
	with := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(ct)) }
	tests := []struct {
		name string
		in   []byte
		is   error
		want string
	}{
		{"empty", nil, ErrNotBundle, ""},
		{"short", []byte("MSE"), ErrNotBundle, ""},
		{"tar file", makeTar(t, file("a", "b")), ErrNotBundle, ""},
		{"bad magic", with(func(b []byte) []byte { b[0] = 'm'; return b }), ErrNotBundle, ""},
		{"header only", ct[:headerSize], ErrCorrupt, "ends inside its header"},
		{"cut in header", ct[:9], ErrCorrupt, "ends inside its header"},
		{"cut in stream header", ct[:headerSize+20], ErrCorrupt, "ends inside its header"},
		{"version 0", with(func(b []byte) []byte { b[7] = 0; return b }), nil, "version 0 is not supported"},
		{"version 2", with(func(b []byte) []byte { b[7] = 2; return b }), nil, "version 2 is not supported"},
		{"segment size 0", with(func(b []byte) []byte { copy(b[8:], []byte{0, 0, 0, 0}); return b }), nil, "segment size 0 is outside"},
		{"segment size 4 GiB", with(func(b []byte) []byte { copy(b[8:], []byte{0xff, 0xff, 0xff, 0xff}); return b }), nil, "outside the accepted range"},
		{"segment size changed", with(func(b []byte) []byte { b[10]++; return b }), ErrWrongKey, ""},
		{"stream header length", with(func(b []byte) []byte { b[headerSize]++; return b }), ErrCorrupt, "bad stream header"},
		{"salt", with(func(b []byte) []byte { b[headerSize+1]++; return b }), ErrWrongKey, ""},
		{"nonce prefix", with(func(b []byte) []byte { b[headerSize+tinkHeaderSize-1]++; return b }), ErrWrongKey, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decryptAll(tt.in, key)
			if err == nil {
				t.Fatal("accepted")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("got %v, want %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

type failingReader struct {
	r   io.Reader
	n   int
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, f.err
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= n
	return n, err
}

func TestDecryptErrors(t *testing.T) {
	key := testKey(1)
	ct := encryptBytes(t, key, randomBytes(3*testSeg, 5), testSeg)
	ioErr := errors.New("disk on fire")
	for _, at := range []int{0, 5, headerSize + 3, 100, testSeg + 7} {
		_, err := decryptAll(ct, key) // sanity
		if err != nil {
			t.Fatal(err)
		}
		_, err = func() ([]byte, error) {
			r, err := Decrypt(&failingReader{r: bytes.NewReader(ct), n: at, err: ioErr}, key)
			if err != nil {
				return nil, err
			}
			return io.ReadAll(r)
		}()
		if !errors.Is(err, ioErr) || errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongKey) {
			t.Errorf("I/O error at %d: got %v", at, err)
		}
	}
	// Errors are sticky.
	bad := bytes.Clone(ct)
	bad[2*testSeg] ^= 1
	r, err := Decrypt(bytes.NewReader(bad), key)
	if err != nil {
		t.Fatal(err)
	}
	_, err1 := io.ReadAll(r)
	n, err2 := r.Read(make([]byte, 10))
	if err1 == nil || n != 0 || err2 != err1 {
		t.Fatalf("not sticky: %v, %d, %v", err1, n, err2)
	}
	if want := "the bundle is truncated or was tampered with: segment 2 does not authenticate"; err1.Error() != want {
		t.Fatalf("got %q, want %q", err1, want)
	}
}
