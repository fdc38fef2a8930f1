package abi

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
)

const (
	v4File = "../testdata/good_phala_quote_v4.bin"
	v5File = "../testdata/fail_phala_outdated_quote_v5.bin"
)

func read(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseVectors(t *testing.T) {
	for _, tc := range []struct {
		file     string
		version  uint16
		bodyType uint16
		padding  int
		mrtd     string
		tdAttr   string
		teeTCB   string
		sept     bool
	}{
		{v4File, 4, BodyTypeTD10, 70, "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7", "0000001000000000", "06010300000000000000000000000000", true},
		{v5File, 5, BodyTypeTD15, 0, "273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd", "0000001000000000", "07010300000000000000000000000000", true},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			b := read(t, tc.file)
			q, err := ParseQuote(b)
			if err != nil {
				t.Fatal(err)
			}
			if q.Header.Version != tc.version || q.BodyType != tc.bodyType || q.Padding != tc.padding {
				t.Errorf("version %d body type %d padding %d", q.Header.Version, q.BodyType, q.Padding)
			}
			if got := hex.EncodeToString(q.Body.MRTD[:]); got != tc.mrtd {
				t.Errorf("MRTD %s", got)
			}
			if got := hex.EncodeToString(q.Body.TDAttributes[:]); got != tc.tdAttr || q.Body.Debug() || q.Body.SEPTVEDisable() != tc.sept {
				t.Errorf("TD attributes %s debug %v", got, q.Body.Debug())
			}
			if got := hex.EncodeToString(q.Body.TEETCBSVN[:]); got != tc.teeTCB {
				t.Errorf("TEE_TCB_SVN %s", got)
			}
			if len(q.QEAuthData) != 32 || !strings.HasPrefix(string(q.CertData), "-----BEGIN CERTIFICATE-----") {
				t.Errorf("auth data %d bytes, cert data %.30q", len(q.QEAuthData), q.CertData)
			}
			// The report data sits where ReportDataOffset says (issuers rely on it).
			off := ReportDataOffset(q.Header.Version)
			if string(b[off:off+64]) != string(q.Body.ReportData[:]) {
				t.Error("ReportDataOffset does not point at REPORTDATA")
			}
			if want := len(b) - tc.padding - 4 - int(binary.LittleEndian.Uint32(b[len(q.Signed):])); len(q.Signed) != want {
				t.Errorf("signed part is %d bytes, want %d", len(q.Signed), want)
			}
		})
	}
}

func mustFail(t *testing.T, b []byte, want string) {
	t.Helper()
	_, err := ParseQuote(b)
	var pe *Error
	if err == nil || !errors.As(err, &pe) || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want a parse error containing %q", err, want)
	}
}

func TestParseRefusals(t *testing.T) {
	v4 := read(t, v4File)
	v4 = v4[:len(v4)-70] // without its padding
	v5 := read(t, v5File)
	edit := func(b []byte, f func(c []byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	sigOff := len(v4) - int(binary.LittleEndian.Uint32(v4[HeaderSize+TD10BodySize:]))
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"sgx v3", edit(v4, func(c []byte) { c[0] = 3 }), "version 3 is an SGX quote"},
		{"v6", edit(v4, func(c []byte) { c[0] = 6 }), "version 6 is not supported"},
		{"sgx tee type", edit(v4, func(c []byte) { c[4] = 0 }), "TEE type 0x0 is not TDX"},
		{"key type", edit(v4, func(c []byte) { c[2] = 3 }), "attestation key type 3"},
		{"vendor", edit(v4, func(c []byte) { c[12] ^= 1 }), "not Intel's quoting enclave"},
		{"v5 sgx body", edit(v5, func(c []byte) { c[48] = 1 }), "body type 1 is an SGX enclave report"},
		{"v5 body type 4", edit(v5, func(c []byte) { c[48] = 4 }), "body type 4 is not supported"},
		{"v5 wrong size", edit(v5, func(c []byte) { c[50] = 0x48 }), "declares 584 bytes, want 648"},
		{"v5 as TD10", edit(v5, func(c []byte) { c[48] = 2 }), "declares 648 bytes, want 584"},
		{"trailing non-zero", append(append([]byte(nil), v4...), 0, 0, 1), "3 trailing bytes after the signature data"},
		{"signature length too long", edit(v4, func(c []byte) { binary.LittleEndian.PutUint32(c[HeaderSize+TD10BodySize:], uint32(len(v4))) }), "truncated: signature data is declared"},
		{"cert data type", edit(v4, func(c []byte) { c[sigOff+128] = 5 }), "certification data type 5 is not supported"},
		{"cert data too long", edit(v4, func(c []byte) { c[sigOff+130]++ }), "truncated: certification data is declared"},
		{"cert data too short", edit(v4, func(c []byte) { c[sigOff+130]-- }), "1 bytes after the certification data"},
		{"auth data too long", edit(v4, func(c []byte) { binary.LittleEndian.PutUint16(c[sigOff+134+448:], 5000) }), "QE authentication data is 5000 bytes"},
		{"pck data type", edit(v4, func(c []byte) { c[sigOff+134+450+32] = 3 }), "PCK certification data type 3"},
		{"pck data too long", edit(v4, func(c []byte) { c[sigOff+134+450+32+2]++ }), "truncated: PCK certification data"},
		{"too large", make([]byte, MaxQuoteSize+1), "more than the"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { mustFail(t, tc.b, tc.want) })
	}
	// Zero padding is not part of the quote and is accepted.
	if q, err := ParseQuote(append(append([]byte(nil), v5...), 0, 0)); err != nil || q.Padding != 2 {
		t.Errorf("zero padding: %v", err)
	}
}

// TestTruncatedEverywhere cuts the quote at every length: each prefix is
// refused with a parse error, and nothing panics.
func TestTruncatedEverywhere(t *testing.T) {
	for _, f := range []string{v4File, v5File} {
		b := read(t, f)
		q, err := ParseQuote(b)
		if err != nil {
			t.Fatal(err)
		}
		end := len(b) - q.Padding
		for n := 0; n < end; n++ {
			if _, err := ParseQuote(b[:n]); err == nil {
				t.Fatalf("%s cut to %d of %d bytes parses", f, n, end)
			}
		}
	}
}

func FuzzParseQuote(f *testing.F) {
	f.Add(read(f, v4File))
	f.Add(read(f, v5File))
	f.Fuzz(func(t *testing.T, b []byte) {
		q, err := ParseQuote(b)
		if err != nil {
			return
		}
		// What parses keeps its lengths: the signed part and what follows
		// account for every byte but the zero padding.
		sig := int(binary.LittleEndian.Uint32(b[len(q.Signed):]))
		if len(q.Signed)+4+sig+q.Padding != len(b) {
			t.Fatalf("lengths do not add up: signed %d, signature %d, padding %d, input %d", len(q.Signed), sig, q.Padding, len(b))
		}
		if len(q.QEReportRaw) != 384 || len(q.CertData) > 32<<10 {
			t.Fatal("bounds not kept")
		}
	})
}
