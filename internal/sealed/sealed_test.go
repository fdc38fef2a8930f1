package sealed

import (
	"bytes"
	"testing"
)

func TestSealOpen(t *testing.T) {
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewKey()
	msg := []byte(`{"db_password":"s3cret"}`)
	ct, err := Seal(k.Public(), "app-1", msg)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, msg) {
		t.Fatal("ciphertext contains the plaintext")
	}
	got, err := k.Open("app-1", ct)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	tampered := bytes.Clone(ct)
	tampered[len(tampered)-1] ^= 1
	cases := []struct {
		name string
		key  *Key
		app  string
		ct   []byte
	}{
		{"other enclave", other, "app-1", ct},
		{"other app", k, "app-2", ct},
		{"tampered", k, "app-1", tampered},
		{"truncated", k, "app-1", ct[:10]},
		{"empty", k, "app-1", nil},
	}
	for _, c := range cases {
		if _, err := c.key.Open(c.app, c.ct); err == nil {
			t.Errorf("%s: Open succeeded", c.name)
		}
	}
	if _, err := Seal([]byte{1, 2, 3}, "a", msg); err == nil {
		t.Error("Seal to a 3-byte key succeeded")
	}
}
