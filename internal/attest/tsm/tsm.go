// Package tsm is the node-side issuer of confidential-VM evidence through
// the Linux configfs-tsm interface (Documentation/ABI/testing/
// configfs-tsm-report, Linux 6.7 and later): the guest creates a report
// entry under <root>/report, writes the 64 bytes of report data to inblob,
// and reads the evidence from outblob: a TDX quote (provider tdx_guest), or
// an SEV-SNP attestation report (provider sev_guest) with the host's
// certificate table in auxblob. The kernel counts writes in generation, so a
// concurrent writer to the same entry is detected.
//
// It implements attest.Issuer for the tdx and sev-snp TEE types. It runs
// inside the enclave, so it imports only the standard library and the
// length-checking parsers of attest/tdx/abi and attest/snp/abi: no
// verification code (TestNoVerificationDeps keeps it so).
package tsm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/mse-in-go/mse/internal/attest"
	snpabi "github.com/mse-in-go/mse/internal/attest/snp/abi"
	tdxabi "github.com/mse-in-go/mse/internal/attest/tdx/abi"
)

// DefaultRoot is where configfs-tsm is mounted.
const DefaultRoot = "/sys/kernel/config/tsm"

// Providers, as the entry's provider file names them.
const (
	ProviderTDX = "tdx_guest"
	ProviderSNP = "sev_guest"
)

// Bounds on what is read back.
const (
	maxOutblob = tdxabi.MaxQuoteSize
	maxAuxblob = snpabi.MaxCertTableSize
	maxSmall   = 256
)

// FS is what the issuer does to the configfs tree; the zero Options use
// the operating system's. Tests pass a fake configfs.
type FS interface {
	Mkdir(path string) error
	Remove(path string) error
	ReadFile(path string, limit int64) ([]byte, error)
	WriteFile(path string, data []byte) error
}

// Options configure an Issuer.
type Options struct {
	// Root is the configfs-tsm directory; "" means DefaultRoot.
	Root string
	// PrivLevel, when set, is written to privlevel before the report is
	// requested (SEV-SNP: the VMPL the report is made at, 0..3).
	PrivLevel *int
	// FS replaces the operating system's file system; for tests.
	FS FS
}

// Issuer obtains TDX or SEV-SNP evidence through configfs-tsm. It
// implements attest.Issuer.
type Issuer struct {
	tee string
	o   Options
	mu  sync.Mutex
}

var _ attest.Issuer = (*Issuer)(nil)

// NewIssuer returns an issuer of evidence of TEE type tee (attest.TypeTDX
// or attest.TypeSEVSNP).
func NewIssuer(tee string, o Options) (*Issuer, error) {
	if tee != attest.TypeTDX && tee != attest.TypeSEVSNP {
		return nil, fmt.Errorf("tsm issuer: TEE type %q is not a confidential VM type (tdx, sev-snp)", tee)
	}
	if o.Root == "" {
		o.Root = DefaultRoot
	}
	if o.FS == nil {
		o.FS = osFS{}
	}
	if o.PrivLevel != nil && (*o.PrivLevel < 0 || *o.PrivLevel > 3) {
		return nil, fmt.Errorf("tsm issuer: privilege level %d is not 0..3", *o.PrivLevel)
	}
	return &Issuer{tee: tee, o: o}, nil
}

// Type implements attest.Issuer.
func (i *Issuer) Type() string { return i.tee }

// Issue implements attest.Issuer. For sev-snp the evidence is the report
// followed by the certificate table, when the host supplied one.
func (i *Issuer) Issue(ctx context.Context, reportData [64]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	fsys := i.o.FS
	reports := filepath.Join(i.o.Root, "report")
	var name [8]byte
	if _, err := rand.Read(name[:]); err != nil {
		return nil, err
	}
	entry := filepath.Join(reports, "mse-"+hex.EncodeToString(name[:]))
	if err := fsys.Mkdir(entry); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("tsm issuer: %s does not exist: the node does not run in a confidential VM with configfs-tsm (Linux 6.7 or later, the %s driver loaded, configfs mounted at /sys/kernel/config)", reports, i.provider())
		}
		return nil, fmt.Errorf("tsm issuer: create report entry: %w", err)
	}
	defer fsys.Remove(entry)
	file := func(n string) string { return filepath.Join(entry, n) }

	prov, err := fsys.ReadFile(file("provider"), maxSmall)
	if err != nil {
		return nil, fmt.Errorf("tsm issuer: read provider: %w", err)
	}
	if p := strings.TrimSpace(string(prov)); p != i.provider() {
		return nil, fmt.Errorf("tsm issuer: the configfs-tsm provider is %q, not %q: this VM is not %s (start the node with --tee matching the hardware)", p, i.provider(), i.tee)
	}
	if i.o.PrivLevel != nil {
		if err := fsys.WriteFile(file("privlevel"), []byte(strconv.Itoa(*i.o.PrivLevel))); err != nil {
			return nil, fmt.Errorf("tsm issuer: write privlevel: %w", err)
		}
	}
	before, err := i.generation(file("generation"))
	if err != nil {
		return nil, err
	}
	if err := fsys.WriteFile(file("inblob"), reportData[:]); err != nil {
		return nil, fmt.Errorf("tsm issuer: write inblob: %w", err)
	}
	out, err := fsys.ReadFile(file("outblob"), maxOutblob)
	if err != nil {
		return nil, fmt.Errorf("tsm issuer: read outblob: %w (the %s driver could not obtain evidence)", err, i.provider())
	}
	var aux []byte
	if i.tee == attest.TypeSEVSNP {
		aux, err = fsys.ReadFile(file("auxblob"), maxAuxblob)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("tsm issuer: read auxblob: %w", err)
		}
	}
	after, err := i.generation(file("generation"))
	if err != nil {
		return nil, err
	}
	if after != before+1 {
		return nil, fmt.Errorf("tsm issuer: the report entry's generation went from %d to %d: another writer changed inblob while the evidence was read; retry", before, after)
	}
	return i.check(out, aux, reportData)
}

func (i *Issuer) provider() string {
	if i.tee == attest.TypeTDX {
		return ProviderTDX
	}
	return ProviderSNP
}

func (i *Issuer) generation(path string) (uint64, error) {
	b, err := i.o.FS.ReadFile(path, maxSmall)
	if err != nil {
		return 0, fmt.Errorf("tsm issuer: read generation: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("tsm issuer: generation %q is not a number", strings.TrimSpace(string(b)))
	}
	return n, nil
}

// check parses what the kernel returned and makes sure it binds the report
// data just written.
func (i *Issuer) check(out, aux []byte, reportData [64]byte) ([]byte, error) {
	if i.tee == attest.TypeTDX {
		q, err := tdxabi.ParseQuote(out)
		if err != nil {
			return nil, fmt.Errorf("tsm issuer: the kernel returned an unusable TDX quote: %w", err)
		}
		if q.Body.ReportData != reportData {
			return nil, errors.New("tsm issuer: the TDX quote does not carry the report data just written (stale or raced evidence)")
		}
		return out[:len(out)-q.Padding], nil
	}
	r, err := snpabi.ParseReport(out)
	if err != nil {
		return nil, fmt.Errorf("tsm issuer: the kernel returned an unusable SEV-SNP report: %w", err)
	}
	if r.ReportData != reportData {
		return nil, errors.New("tsm issuer: the SEV-SNP report does not carry the report data just written (stale or raced evidence)")
	}
	if len(aux) == 0 {
		return out, nil
	}
	if _, err := snpabi.ParseCertTable(aux); err != nil {
		return nil, fmt.Errorf("tsm issuer: the host's certificate table (auxblob) is unusable: %w", err)
	}
	ev := make([]byte, 0, len(out)+len(aux))
	return append(append(ev, out...), aux...), nil
}

type osFS struct{}

func (osFS) Mkdir(path string) error  { return os.Mkdir(path, 0o700) }
func (osFS) Remove(path string) error { return os.Remove(path) }

func (osFS) ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

func (osFS) WriteFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
