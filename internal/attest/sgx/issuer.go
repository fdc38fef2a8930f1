package sgx

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
)

// DefaultAttestationDir is where Gramine exposes its attestation interface.
const DefaultAttestationDir = "/dev/attestation"

// Issuer obtains SGX DCAP quotes inside a Gramine enclave through its
// /dev/attestation pseudo-files: write the 64 bytes of report data to
// user_report_data, then read quote. It implements attest.Issuer.
type Issuer struct{ root string }

// NewIssuer returns an issuer over the Gramine attestation directory root
// ("" means /dev/attestation; tests pass a fake directory).
func NewIssuer(root string) attest.Issuer {
	if root == "" {
		root = DefaultAttestationDir
	}
	return &Issuer{root: root}
}

var _ attest.Issuer = (*Issuer)(nil)

// The pseudo-files are process-wide state: writing report data and reading
// the quote must not interleave between goroutines.
var issueMu sync.Mutex

// Type implements attest.Issuer.
func (i *Issuer) Type() string { return attest.TypeSGX }

// Issue implements attest.Issuer.
func (i *Issuer) Issue(ctx context.Context, reportData [64]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	issueMu.Lock()
	defer issueMu.Unlock()
	if t, err := os.ReadFile(filepath.Join(i.root, "attestation_type")); err == nil {
		if typ := strings.TrimSpace(string(bytes.TrimRight(t, "\x00"))); typ != "dcap" {
			return nil, fmt.Errorf("sgx issuer: Gramine's attestation type is %q, not \"dcap\"; set sgx.remote_attestation = \"dcap\" in the manifest", typ)
		}
	} else if os.IsNotExist(err) {
		if _, err := os.Stat(i.root); err != nil {
			return nil, fmt.Errorf("sgx issuer: %s does not exist: the node does not run inside a Gramine SGX enclave with remote attestation enabled", i.root)
		}
	}
	f, err := os.OpenFile(filepath.Join(i.root, "user_report_data"), os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("sgx issuer: open user_report_data: %w", err)
	}
	if _, err := f.Write(reportData[:]); err != nil {
		f.Close()
		return nil, fmt.Errorf("sgx issuer: write user_report_data: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sgx issuer: write user_report_data: %w", err)
	}
	qf, err := os.Open(filepath.Join(i.root, "quote"))
	if err != nil {
		return nil, fmt.Errorf("sgx issuer: open quote: %w", err)
	}
	defer qf.Close()
	quote, err := io.ReadAll(io.LimitReader(qf, abi.MaxQuoteSize+1))
	if err != nil {
		return nil, fmt.Errorf("sgx issuer: read quote: %w", err)
	}
	if len(quote) > abi.MaxQuoteSize {
		return nil, fmt.Errorf("sgx issuer: quote is larger than %d bytes", abi.MaxQuoteSize)
	}
	// Gramine may return a buffer padded with zeros: keep exactly the quote.
	if len(quote) >= abi.SignedSize+4 {
		n := abi.SignedSize + 4 + int(binary.LittleEndian.Uint32(quote[abi.SignedSize:]))
		if n > abi.SignedSize+4 && n < len(quote) && allZero(quote[n:]) {
			quote = quote[:n]
		}
	}
	q, err := abi.ParseQuote(quote)
	if err != nil {
		return nil, fmt.Errorf("sgx issuer: Gramine returned an unusable quote: %w", err)
	}
	if q.Body.ReportData != reportData {
		return nil, fmt.Errorf("sgx issuer: the quote does not carry the report data just written (another writer raced, or the quote is stale)")
	}
	return quote, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
