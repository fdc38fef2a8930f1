package pack

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/bundle"
)

func TestSealOpenCheck(t *testing.T) {
	src := t.TempDir()
	writeTree(t, src, sampleTree)
	writeTree(t, src, tree{"big.bin": string(randomBytes(3*bundle.DefaultSegmentSize+5, 9)), ".mseignore": "*.log\n", "x.log": "no"})
	key, _ := bundle.NewKey()

	bundlePath := filepath.Join(t.TempDir(), "app.bundle")
	f, _ := os.Create(bundlePath)
	var last int64
	calls := 0
	sealed, err := Seal(src, f, key, bundle.Limits{}, func(n int64) {
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
	digest, size, err := bundle.DigestFile(bundlePath)
	if err != nil || digest != sealed.Digest || size != sealed.Size {
		t.Fatalf("DigestFile = %x, %d, %v; Seal said %x, %d", digest, size, err, sealed.Digest, sealed.Size)
	}
	data, _ := os.ReadFile(bundlePath)
	if sha256.Sum256(data) != sealed.Digest {
		t.Fatal("digest is not SHA-256 of the bundle")
	}
	if sealed.Files != 12 || sealed.Bytes != int64(3*bundle.DefaultSegmentSize+5+91+len("*.log\n")) {
		t.Errorf("sealed %+v", sealed)
	}
	// Seal = Encrypt(Pack): the plaintext is the deterministic archive.
	r, err := bundle.Decrypt(bytes.NewReader(data), key)
	if err != nil {
		t.Fatal(err)
	}
	var pt bytes.Buffer
	pt.ReadFrom(r)
	if !bytes.Equal(pt.Bytes(), packBytes(t, src, bundle.Limits{})) {
		t.Error("the sealed archive is not the packed archive")
	}

	st, err := bundle.Check(bytes.NewReader(data), key, bundle.Limits{})
	if err != nil || st != sealed.Stats {
		t.Fatalf("Check = %+v, %v", st, err)
	}
	out := filepath.Join(t.TempDir(), "app")
	st, err = bundle.Open(bytes.NewReader(data), key, out, bundle.Limits{})
	if err != nil || st != sealed.Stats {
		t.Fatalf("Open = %+v, %v", st, err)
	}
	want := listTree(t, src)
	delete(want, "x.log")
	if got := listTree(t, out); !reflect.DeepEqual(got, want) {
		t.Errorf("opened tree differs:\n got %v\nwant %v", got, want)
	}

	// Wrong key: refused before anything is written.
	other, _ := bundle.NewKey()
	out2 := filepath.Join(t.TempDir(), "app")
	if _, err := bundle.Open(bytes.NewReader(data), other, out2, bundle.Limits{}); !errors.Is(err, bundle.ErrWrongKey) {
		t.Fatalf("Open with a wrong key: %v", err)
	}
	if _, err := os.Lstat(out2); err == nil {
		t.Fatal("Open with a wrong key created the directory")
	}
	if _, err := bundle.Check(bytes.NewReader(data), other, bundle.Limits{}); !errors.Is(err, bundle.ErrWrongKey) {
		t.Fatalf("Check with a wrong key: %v", err)
	}

	// Tampering near the end: Check fails; Open fails and cleans up.
	for _, bad := range [][]byte{data[:len(data)-1], data[:len(data)-tagSize], flipBit(data, len(data)-1), flipBit(data, len(data)/2)} {
		if _, err := bundle.Check(bytes.NewReader(bad), key, bundle.Limits{}); !errors.Is(err, bundle.ErrCorrupt) {
			t.Errorf("Check: %v, want ErrCorrupt", err)
		}
		out3 := filepath.Join(t.TempDir(), "app")
		if _, err := bundle.Open(bytes.NewReader(bad), key, out3, bundle.Limits{}); !errors.Is(err, bundle.ErrCorrupt) {
			t.Errorf("Open: %v, want ErrCorrupt", err)
		}
		if _, err := os.Lstat(out3); err == nil {
			t.Error("a failed Open left its directory")
		}
	}
}

func TestSealErrors(t *testing.T) {
	d := t.TempDir()
	writeTree(t, d, tree{"a": "x"})
	os.Symlink("a", filepath.Join(d, "l"))
	key, _ := bundle.NewKey()
	if _, err := Seal(d, &bytes.Buffer{}, key, bundle.Limits{}, nil); err == nil || !strings.Contains(err.Error(), "symbolic links") {
		t.Fatal(err)
	}
	if _, err := Seal(d, &bytes.Buffer{}, bundle.Key{}, bundle.Limits{}, nil); err == nil || !strings.Contains(err.Error(), "all zeros") {
		t.Fatal(err)
	}
}
