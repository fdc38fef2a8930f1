package sim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func bigOne() *big.Int { return big.NewInt(1) }

func TestLoadOrCreatePlatform(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim")
	p1, err := LoadOrCreatePlatform(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode: %v %v", fi.Mode(), err)
	}
	for name, mode := range map[string]os.FileMode{RootKeyFile: 0o600, AKKeyFile: 0o600, RootCertFile: 0o644, AKCertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, AKKeyFile))
	if !strings.HasPrefix(string(b), "-----BEGIN PRIVATE KEY-----") {
		t.Errorf("AK key is not PKCS#8 PEM")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 4 {
		t.Errorf("dir holds %d entries, want 4 (temporary files left?)", len(ents))
	}

	p2, err := LoadOrCreatePlatform(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p1.RootFingerprint() != p2.RootFingerprint() {
		t.Fatal("reload changed the root fingerprint")
	}
	if p1.AKCertificate().SerialNumber.Cmp(p2.AKCertificate().SerialNumber) != 0 {
		t.Fatal("reload changed the attestation key")
	}
	// A quote of the reloaded platform verifies with the first root.
	raw, err := p2.Quote(testIdentity(), testReportData(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewVerifier(p1.RootCertificate(), nil).Verify(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
}

func copyDir(t *testing.T, src string) string {
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(src, e.Name()))
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestLoadPlatformErrors(t *testing.T) {
	base := t.TempDir()
	if _, err := LoadOrCreatePlatform(base); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	if _, err := LoadOrCreatePlatform(other); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		mod  func(dir string)
		msg  string
	}{
		{"missing ak key", func(d string) { os.Remove(filepath.Join(d, AKKeyFile)) }, "incomplete"},
		{"corrupt ak cert", func(d string) { os.WriteFile(filepath.Join(d, AKCertFile), []byte("garbage"), 0o600) }, AKCertFile + " is corrupt"},
		{"corrupt root key DER", func(d string) {
			os.WriteFile(filepath.Join(d, RootKeyFile), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600)
		}, RootKeyFile + " is corrupt"},
		{"cert in key file", func(d string) {
			b, _ := os.ReadFile(filepath.Join(d, AKCertFile))
			os.WriteFile(filepath.Join(d, AKKeyFile), b, 0o600)
		}, "want exactly one PEM block of type \"PRIVATE KEY\""},
		{"ak key of another platform", func(d string) {
			b, _ := os.ReadFile(filepath.Join(other, AKKeyFile))
			os.WriteFile(filepath.Join(d, AKKeyFile), b, 0o600)
		}, AKKeyFile + " does not match"},
		{"root key of another platform", func(d string) {
			b, _ := os.ReadFile(filepath.Join(other, RootKeyFile))
			os.WriteFile(filepath.Join(d, RootKeyFile), b, 0o600)
		}, RootKeyFile + " does not match"},
		{"ak of another platform", func(d string) {
			for _, f := range []string{AKKeyFile, AKCertFile} {
				b, _ := os.ReadFile(filepath.Join(other, f))
				os.WriteFile(filepath.Join(d, f), b, 0o600)
			}
		}, "is not issued by"},
		{"ak cert as root", func(d string) {
			b, _ := os.ReadFile(filepath.Join(d, AKCertFile))
			os.WriteFile(filepath.Join(d, RootCertFile), b, 0o600)
		}, "is not a CA certificate"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := copyDir(t, base)
			c.mod(d)
			_, err := LoadOrCreatePlatform(d)
			if err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err %v, want %q", err, c.msg)
			}
		})
	}
}

func TestExpiredAKIsReissued(t *testing.T) {
	dir := t.TempDir()
	p, err := newPlatform(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// An AK issued long ago, expired by now.
	if err := p.issueAK(time.Now().Add(-akValidity - 24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := p.save(dir, true); err != nil {
		t.Fatal(err)
	}
	old := p.AKCertificate().SerialNumber
	p2, err := LoadOrCreatePlatform(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p2.RootFingerprint() != p.RootFingerprint() {
		t.Fatal("root changed")
	}
	if p2.AKCertificate().SerialNumber.Cmp(old) == 0 || !time.Now().Before(p2.AKCertificate().NotAfter) {
		t.Fatal("expired AK not re-issued")
	}
	p3, err := LoadOrCreatePlatform(dir)
	if err != nil || p3.AKCertificate().SerialNumber.Cmp(p2.AKCertificate().SerialNumber) != 0 {
		t.Fatalf("re-issued AK not persisted: %v", err)
	}
}

func TestMeasureFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mse-node")
	content := []byte("#!/bin/false\nnot really an executable\n")
	if err := os.WriteFile(path, content, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := MeasureFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if m != sha256.Sum256(content) {
		t.Fatal("measurement is not the SHA-256 of the file")
	}
	if _, err := MeasureFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("measured a missing file")
	}
}

func TestDevSigner(t *testing.T) {
	if DevSigner != sha256.Sum256([]byte("mse-in-go development signer")) {
		t.Fatal("DevSigner")
	}
}

func TestDevSignerDocumentedValue(t *testing.T) {
	if hex.EncodeToString(DevSigner[:]) != "ca3610de707e3b40fec30100615315c042d711fbfc8ac2393f499adbb6173f22" {
		t.Fatal("DevSigner differs from docs/sim.md")
	}
}
