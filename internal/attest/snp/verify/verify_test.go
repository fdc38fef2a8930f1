package verify

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha512"
	"testing"
)

func TestPinnedRoots(t *testing.T) {
	roots := AMDRoots()
	if len(roots) != 6 {
		t.Fatalf("%d root sets, want Milan, Genoa, Turin × VCEK, VLEK", len(roots))
	}
	for _, r := range roots {
		if r.ARK.Subject.CommonName != "ARK-"+r.Product || signedBy(r.ASK, r.ARK) != nil || signedBy(r.ARK, r.ARK) != nil {
			t.Errorf("%s %s: ARK %q, ASK %q", r.Product, r.Kind, r.ARK.Subject.CommonName, r.ASK.Subject.CommonName)
		}
	}
}

func TestDecodeTCB(t *testing.T) {
	v := uint64(0x73_00_00_00_00_00_08_03) | 0x0a<<48
	if got := DecodeTCB(v, Milan); got != (TCB{Bootloader: 3, TEE: 8, SNP: 0x0a, Microcode: 0x73}) {
		t.Errorf("Milan %v", got)
	}
	// Turin: FMC, bootloader, TEE, SNP in bytes 0..3.
	if got := DecodeTCB(0x73_00_00_00_04_03_02_01, Turin); got != (TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 4, Microcode: 0x73}) {
		t.Errorf("Turin %v", got)
	}
}

// BenchmarkP384Verify is the floor of report verification: one ECDSA
// P-384 signature check with the standard library.
func BenchmarkP384Verify(b *testing.B) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	h := sha512.Sum384([]byte("report"))
	r, s, err := ecdsa.Sign(rand.Reader, k, h[:])
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !ecdsa.Verify(&k.PublicKey, h[:], r, s) {
			b.Fatal("no")
		}
	}
}
