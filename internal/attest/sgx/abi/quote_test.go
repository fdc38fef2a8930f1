package abi

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

const testdata = "../testdata/"

func read(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(testdata + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseGood(t *testing.T) {
	for _, tc := range []struct {
		file                string
		mrenclave, mrsigner string
		attr0               byte
		prodID, svn         uint16
		debug               bool
	}{
		{"good_phala_quote.bin", "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb", "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6", 0x05, 0, 0, false},
		{"good_oasis_quote.bin", "68823bc62f409ee33a32ea270cfe45d4b19a6fb3c8570d7bc186cbe062398e8f", "9affcfae47b848ec2caf1c49b4b283531e1cc425f93582b36806e52a43d78d1a", 0x05, 0, 0, false},
	} {
		t.Run(tc.file, func(t *testing.T) {
			q, err := ParseQuote(read(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(q.Body.MREnclave[:]); got != tc.mrenclave {
				t.Errorf("MRENCLAVE = %s, want %s", got, tc.mrenclave)
			}
			if got := hex.EncodeToString(q.Body.MRSigner[:]); got != tc.mrsigner {
				t.Errorf("MRSIGNER = %s, want %s", got, tc.mrsigner)
			}
			if q.Body.Attributes[0] != tc.attr0 || q.Body.Debug() != tc.debug {
				t.Errorf("attributes = %#x", q.Body.Attributes[0])
			}
			if q.Body.ISVProdID != tc.prodID || q.Body.ISVSVN != tc.svn {
				t.Errorf("ISVPRODID/ISVSVN = %d/%d", q.Body.ISVProdID, q.Body.ISVSVN)
			}
			if q.CertDataType != CertDataPCKChain || len(q.QEAuthData) != 32 {
				t.Errorf("cert data type %d, auth data %d bytes", q.CertDataType, len(q.QEAuthData))
			}
			chain, err := ParsePCKChain(q.CertData)
			if err != nil {
				t.Fatal(err)
			}
			if chain[2].Subject.CommonName != "Intel SGX Root CA" {
				t.Errorf("root is %q", chain[2].Subject.CommonName)
			}
		})
	}
}

func TestParseEncryptedPPID(t *testing.T) {
	_, err := ParseQuote(read(t, "fail_oasis_eppid_quote.bin"))
	if err == nil {
		t.Fatal("encrypted-PPID quote accepted")
	}
	want := "certification data type 3 (encrypted PPID) is not supported: the quote must carry a PCK chain"
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

// Every prefix of a good quote is refused, and so is one more byte.
func TestParseTruncatedAndOversized(t *testing.T) {
	b := read(t, "good_phala_quote.bin")
	for n := 0; n < len(b); n++ {
		if _, err := ParseQuote(b[:n]); err == nil {
			t.Fatalf("quote truncated to %d bytes accepted", n)
		}
	}
	if _, err := ParseQuote(append(append([]byte{}, b...), 0)); err == nil || !strings.Contains(err.Error(), "trailing") {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, err := ParseQuote(make([]byte, MaxQuoteSize+1)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("oversized: %v", err)
	}
}

func TestParseFail(t *testing.T) {
	good := read(t, "good_phala_quote.bin")
	authOff := SignedSize + 4 + 64 + 64 + ReportBodySize + 64
	certOff := authOff + 2 + 32
	edit := func(f func(b []byte) []byte) []byte { return f(append([]byte{}, good...)) }
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"version 4", edit(func(b []byte) []byte { b[0] = 4; return b }), "version 4 is not supported"},
		{"P-384 key", edit(func(b []byte) []byte { b[2] = 3; return b }), "attestation key type 3"},
		{"vendor", edit(func(b []byte) []byte { b[12] ^= 1; return b }), "QE vendor id"},
		{"sig len too big", edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[SignedSize:], 1<<31); return b }), "truncated"},
		{"sig len too small", edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[SignedSize:], 100); return b }), "trailing"},
		{"auth len too big", edit(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[authOff:], 4000); return b }), "truncated"},
		{"auth len bound", edit(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[authOff:], 60000); return b }), "more than"},
		{"cert type 2", edit(func(b []byte) []byte { b[certOff] = 2; return b }), "certification data type 2 (encrypted PPID) is not supported: the quote must carry a PCK chain"},
		{"cert len too big", edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[certOff+2:], 5000); return b }), "truncated"},
		{"cert len bound", edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[certOff+2:], 1<<30); return b }), "more than"},
		{"cert len short", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[certOff+2:], binary.LittleEndian.Uint32(b[certOff+2:])-1)
			return b
		}), "trailing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseQuote(tc.b)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "sgx quote: ") {
				t.Errorf("error %q lacks the sgx quote prefix", err)
			}
		})
	}
}

func TestParsePCKChainFail(t *testing.T) {
	q, err := ParseQuote(read(t, "good_phala_quote.bin"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimRight(string(q.CertData), "\x00")
	first := s[:strings.Index(s, "-----END CERTIFICATE-----")+len("-----END CERTIFICATE-----\n")]
	for _, tc := range []struct{ name, data, want string }{
		{"one cert", first, "holds 1 certificates, want 3"},
		{"four certs", s + first, "holds 4 certificates, want 3"},
		{"garbage", s + "junk", "not a PEM certificate"},
		{"key block", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PRIVATE KEY"},
		{"empty", "", "holds 0 certificates"},
	} {
		if _, err := ParsePCKChain([]byte(tc.data)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzParseQuote(f *testing.F) {
	for _, n := range []string{"good_phala_quote.bin", "good_oasis_quote.bin", "fail_oasis_eppid_quote.bin"} {
		f.Add(read(f, n))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		if err != nil {
			return
		}
		if len(q.Signed) != SignedSize || len(q.QEReportRaw) != ReportBodySize || q.CertDataType != CertDataPCKChain {
			t.Fatalf("inconsistent quote accepted")
		}
		_, _ = ParsePCKChain(q.CertData)
	})
}

// Random mutations of the real quotes never panic, and what parses is
// consistent. (A cheap complement to FuzzParseQuote that always runs.)
func TestParseMutations(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, name := range []string{"good_phala_quote.bin", "good_oasis_quote.bin"} {
		seed := read(t, name)
		for range 3000 {
			b := append([]byte{}, seed...)
			for range 1 + r.IntN(4) {
				b[r.IntN(len(b))] = byte(r.IntN(256))
			}
			if r.IntN(4) == 0 {
				b = b[:r.IntN(len(b))]
			}
			q, err := ParseQuote(b)
			if err != nil {
				continue
			}
			if len(q.Signed) != SignedSize || q.CertDataType != CertDataPCKChain {
				t.Fatal("inconsistent quote accepted")
			}
			_, _ = ParsePCKChain(q.CertData)
		}
	}
}
