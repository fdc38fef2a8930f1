package node

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx"
	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
	"github.com/mse-in-go/mse/internal/ratls"
)

// reportDataOffset is where report data sits in an SGX quote v3: a 48-byte
// header, then the report body with REPORTDATA at offset 320.
const reportDataOffset = 48 + 320

// fakeAttestationDir emulates Gramine's /dev/attestation: writing
// user_report_data then reading quote yields a quote over that report data.
// The quote is a recorded real one whose report data field is replaced (its
// signature no longer verifies: this tests the issuer's wiring, not the
// quote); "quote" is a FIFO, so each read is answered after the write.
func fakeAttestationDir(t *testing.T, recorded []byte) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "attestation_type"), []byte("dcap"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "user_report_data"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "quote")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		var last []byte
		for ctx.Err() == nil {
			// One quote per new user_report_data: the issuer writes it, then
			// opens quote, and reads until the writer closes.
			rd, _ := os.ReadFile(filepath.Join(dir, "user_report_data"))
			if len(rd) != 64 || bytes.Equal(rd, last) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(2 * time.Millisecond):
				}
				continue
			}
			last = rd
			f, err := os.OpenFile(fifo, os.O_WRONLY, 0) // blocks until the reader opens it
			if err != nil {
				return
			}
			if ctx.Err() != nil {
				f.Close()
				return
			}
			q := bytes.Clone(recorded)
			copy(q[reportDataOffset:reportDataOffset+64], rd)
			_, _ = f.Write(q)
			f.Close()
		}
	}()
	t.Cleanup(func() {
		cancel()
		// Unblock the writer's open.
		if f, err := os.OpenFile(fifo, os.O_RDONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		<-done
	})
	return dir
}

// TestSGXIssuerInNode: a node configured for sgx writes the hash of its
// claims to user_report_data and serves, in its RA-TLS certificate, the quote
// it then read from quote.
func TestSGXIssuerInNode(t *testing.T) {
	recorded, err := os.ReadFile("../attest/sgx/testdata/good_phala_quote.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := abi.ParseQuote(recorded); err != nil {
		t.Fatal(err)
	}
	dir := fakeAttestationDir(t, recorded)
	tn := startNode(t, makeBundle(t, map[string]string{"app.py": "x"}), baseSpec(), func(c *Config) { c.Issuer = sgx.NewIssuer(dir) })

	cert := tn.peerCert(t)
	ex, err := ratls.Extract(cert)
	if err != nil {
		t.Fatal(err)
	}
	if ex.Type != attest.TypeSGX || ex.Format != ratls.FormatTagged {
		t.Fatalf("evidence type %s, format %s", ex.Type, ex.Format)
	}
	if _, err := abi.ParseQuote(ex.Evidence); err != nil {
		t.Fatalf("the certificate's evidence is not a quote: %v", err)
	}
	want := attest.ReportData(ex.Claims)
	if !bytes.Equal(ex.Evidence[reportDataOffset:reportDataOffset+64], want[:]) {
		t.Fatal("the quote's report data is not the SHA-256 of the certificate's claims")
	}
	// Apart from the report data, it is the quote the device gave.
	patched := bytes.Clone(recorded)
	copy(patched[reportDataOffset:reportDataOffset+64], want[:])
	if !bytes.Equal(ex.Evidence, patched) {
		t.Fatal("the certificate does not carry the quote read from /dev/attestation")
	}
	claims, err := attest.ParseClaims(ex.Claims)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(claims.PubkeyHash, ratls.PubkeyHash(cert)) {
		t.Fatal("claims do not bind the certificate's key")
	}

	// The verifier wiring refuses it: the patched quote's signature no
	// longer verifies (a recorded quote cannot carry new report data).
	v := sgx.NewVerifier(sgx.Options{SkipCollateral: true})
	if _, err := v.Verify(context.Background(), ex.Evidence); err == nil {
		t.Fatal("a quote with replaced report data verified")
	}
}
