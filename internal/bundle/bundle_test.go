package bundle

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSealOpenCheck(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, sampleTree)
	writeTree(t, src, tree{"big.bin": string(randomBytes(3*DefaultSegmentSize+5, 9)), ".mseignore": "*.log\n", "x.log": "no"})
	key, _ := NewKey()

	bundlePath := filepath.Join(t.TempDir(), "app.bundle")
	f, _ := os.Create(bundlePath)
	var last int64
	calls := 0
	sealed, err := Seal(src, f, key, Limits{}, func(n int64) {
		if n < last {
			t.Errorf("progress went back: %d after %d", n, last)
		}
		last = n
		calls++
	})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if calls == 0 || last != sealed.PlainSize {
		t.Errorf("progress: %d calls, last %d, PlainSize %d", calls, last, sealed.PlainSize)
	}
	digest, size, err := DigestFile(bundlePath)
	if err != nil || digest != sealed.Digest || size != sealed.Size {
		t.Fatalf("DigestFile = %x, %d, %v; Seal said %x, %d", digest, size, err, sealed.Digest, sealed.Size)
	}
	data, _ := os.ReadFile(bundlePath)
	if sha256.Sum256(data) != sealed.Digest {
		t.Fatal("digest is not SHA-256 of the bundle")
	}
	if sealed.Files != 12 || sealed.Bytes != int64(3*DefaultSegmentSize+5+91+len("*.log\n")) {
		t.Errorf("sealed %+v", sealed)
	}
	// Seal = Encrypt(Pack): the plaintext is the deterministic archive.
	r, err := Decrypt(bytes.NewReader(data), key)
	if err != nil {
		t.Fatal(err)
	}
	var pt bytes.Buffer
	pt.ReadFrom(r)
	if !bytes.Equal(pt.Bytes(), packBytes(t, src, Limits{})) {
		t.Error("the sealed archive is not the packed archive")
	}

	st, err := Check(bytes.NewReader(data), key, Limits{})
	if err != nil || st != sealed.Stats {
		t.Fatalf("Check = %+v, %v", st, err)
	}
	out := filepath.Join(t.TempDir(), "app")
	st, err = Open(bytes.NewReader(data), key, out, Limits{})
	if err != nil || st != sealed.Stats {
		t.Fatalf("Open = %+v, %v", st, err)
	}
	want := listTree(t, src)
	delete(want, "x.log")
	if got := listTree(t, out); !reflect.DeepEqual(got, want) {
		t.Errorf("opened tree differs:\n got %v\nwant %v", got, want)
	}

	// Wrong key: refused before anything is written.
	other, _ := NewKey()
	out2 := filepath.Join(t.TempDir(), "app")
	if _, err := Open(bytes.NewReader(data), other, out2, Limits{}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Open with a wrong key: %v", err)
	}
	if _, err := os.Lstat(out2); err == nil {
		t.Fatal("Open with a wrong key created the directory")
	}
	if _, err := Check(bytes.NewReader(data), other, Limits{}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Check with a wrong key: %v", err)
	}

	// Tampering near the end: Check fails; Open fails and cleans up.
	for _, bad := range [][]byte{data[:len(data)-1], data[:len(data)-tagSize], flipBit(data, len(data)-1), flipBit(data, len(data)/2)} {
		if _, err := Check(bytes.NewReader(bad), key, Limits{}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Check: %v, want ErrCorrupt", err)
		}
		out3 := filepath.Join(t.TempDir(), "app")
		if _, err := Open(bytes.NewReader(bad), key, out3, Limits{}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Open: %v, want ErrCorrupt", err)
		}
		if _, err := os.Lstat(out3); err == nil {
			t.Error("a failed Open left its directory")
		}
	}
}

func TestCheckRefusesBadArchiveInsideGoodEncryption(t *testing.T) {
	key := testKey(7)
	for name, archive := range map[string][]byte{
		"dotdot":  makeTar(t, file("../x", "1")),
		"no end":  makeTar(t, file("a", "1"))[:512+512],
		"garbage": []byte("not a tar"),
	} {
		ct := encryptBytes(t, key, archive, testSeg)
		if _, err := Check(bytes.NewReader(ct), key, Limits{}); err == nil || !strings.Contains(err.Error(), "bundle archive") {
			t.Errorf("%s: Check = %v", name, err)
		}
	}
}

func TestSealErrors(t *testing.T) {
	d := t.TempDir()
	writeTree(t, d, tree{"a": "x"})
	os.Symlink("a", filepath.Join(d, "l"))
	key, _ := NewKey()
	if _, err := Seal(d, &bytes.Buffer{}, key, Limits{}, nil); err == nil || !strings.Contains(err.Error(), "symbolic links") {
		t.Fatal(err)
	}
	if _, err := Seal(d, &bytes.Buffer{}, Key{}, Limits{}, nil); err == nil || !strings.Contains(err.Error(), "all zeros") {
		t.Fatal(err)
	}
	if _, _, err := DigestFile(filepath.Join(d, "missing")); err == nil {
		t.Fatal("DigestFile of a missing file")
	}
}
