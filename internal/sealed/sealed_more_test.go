package sealed

import (
	"bytes"
	"strings"
	"testing"
)

func TestSealLimits(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if len(k.Public()) != 32 {
		t.Fatalf("public key is %d bytes", len(k.Public()))
	}
	// The largest plaintext Seal takes opens again.
	big := bytes.Repeat([]byte{'x'}, MaxSize-64)
	ct, err := Seal(k.Public(), "app", big)
	if err != nil {
		t.Fatal(err)
	}
	if len(ct) > MaxSize {
		t.Fatalf("a sealed maximum plaintext is %d bytes, more than MaxSize %d, so Open refuses it", len(ct), MaxSize)
	}
	if pt, err := k.Open("app", ct); err != nil || !bytes.Equal(pt, big) {
		t.Fatalf("Open(max) = %d bytes, %v", len(pt), err)
	}
	if _, err := Seal(k.Public(), "app", append(big, 'x')); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("Seal(too big) = %v", err)
	}
	if _, err := k.Open("app", make([]byte, MaxSize+1)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("Open(too big) = %v", err)
	}
	// An all-zero (low-order) X25519 public key is refused.
	if _, err := Seal(make([]byte, 32), "app", []byte("x")); err == nil {
		t.Error("Seal to the zero key succeeded")
	}
	// Each seal is fresh.
	a, _ := Seal(k.Public(), "app", []byte("same"))
	b, _ := Seal(k.Public(), "app", []byte("same"))
	if bytes.Equal(a, b) {
		t.Error("two seals of the same plaintext are equal")
	}
	// The error names the cause without the plaintext.
	other, _ := NewKey()
	_, err = other.Open("app", a)
	if err == nil || !strings.Contains(err.Error(), "sealed to another node or app") {
		t.Errorf("Open(other key) = %v", err)
	}
}

func FuzzOpen(f *testing.F) {
	k, _ := NewKey()
	ct, _ := Seal(k.Public(), "app", []byte(`{"a":1}`))
	f.Add(ct)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if bytes.Equal(b, ct) {
			return
		}
		if pt, err := k.Open("app", b); err == nil {
			t.Fatalf("Open accepted forged ciphertext: %q", pt)
		}
	})
}
