package tsm

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/snp"
	snpabi "github.com/mse-in-go/mse/internal/attest/snp/abi"
	"github.com/mse-in-go/mse/internal/attest/tdx"
	tdxabi "github.com/mse-in-go/mse/internal/attest/tdx/abi"
)

// fakeConfigfs is a configfs-tsm in a temporary directory: creating an
// entry makes its attribute files, writing inblob bumps generation and
// makes outblob (and auxblob) from the recorded evidence, as the kernel's
// tdx_guest and sev_guest drivers do.
type fakeConfigfs struct {
	root     string
	provider string
	outblob  []byte
	auxblob  []byte
	// onRead runs before outblob is read (a concurrent writer, in tests).
	onRead  func(entry string)
	entries []string
	inblob  []byte // the last one written
}

func newFake(t *testing.T, provider string, outblob, auxblob []byte) *fakeConfigfs {
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "report"), 0o755); err != nil {
		t.Fatal(err)
	}
	return &fakeConfigfs{root: root, provider: provider, outblob: outblob, auxblob: auxblob}
}

func (f *fakeConfigfs) Mkdir(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return err
	}
	f.entries = append(f.entries, path)
	for n, v := range map[string]string{"provider": f.provider + "\n", "generation": "0\n"} {
		if err := os.WriteFile(filepath.Join(path, n), []byte(v), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeConfigfs) Remove(path string) error { return os.RemoveAll(path) }

func (f *fakeConfigfs) ReadFile(path string, limit int64) ([]byte, error) {
	if filepath.Base(path) == "outblob" && f.onRead != nil {
		f.onRead(filepath.Dir(path))
	}
	return osFS{}.ReadFile(path, limit)
}

func (f *fakeConfigfs) WriteFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return err
	}
	if filepath.Base(path) != "inblob" {
		return nil
	}
	f.inblob = append([]byte(nil), data...)
	return f.bump(filepath.Dir(path))
}

func (f *fakeConfigfs) bump(entry string) error {
	b, err := os.ReadFile(filepath.Join(entry, "generation"))
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := os.WriteFile(filepath.Join(entry, "generation"), []byte(strconv.Itoa(n+1)+"\n"), 0o600); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(entry, "outblob"), f.outblob, 0o600); err != nil {
		return err
	}
	if f.auxblob != nil {
		return os.WriteFile(filepath.Join(entry, "auxblob"), f.auxblob, 0o600)
	}
	return nil
}

func read(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const (
	tdxQuote = "../tdx/testdata/good_phala_quote_v4.bin"
	snpRep   = "../snp/testdata/good_gosevguest_report_v2.bin"
	snpVCEK  = "../snp/testdata/good_gosevguest_vcek.der"
)

// TestTDX issues a TDX quote from a fake configfs that answers with the
// recorded Phala quote, and verifies what comes out.
func TestTDX(t *testing.T) {
	quote := read(t, tdxQuote)
	q, err := tdxabi.ParseQuote(quote)
	if err != nil {
		t.Fatal(err)
	}
	fake := newFake(t, ProviderTDX, quote, nil)
	iss, err := NewIssuer(attest.TypeTDX, Options{Root: fake.root, FS: fake})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := iss.Issue(context.Background(), q.Body.ReportData)
	if err != nil {
		t.Fatal(err)
	}
	if len(ev) != len(quote)-q.Padding || !bytes.Equal(ev, quote[:len(ev)]) {
		t.Errorf("evidence is %d bytes, want the quote without its padding (%d)", len(ev), len(quote)-q.Padding)
	}
	// The report data was written to inblob, and the entry is gone afterwards.
	if !bytes.Equal(fake.inblob, q.Body.ReportData[:]) {
		t.Errorf("inblob %x", fake.inblob)
	}
	if _, err := os.Stat(fake.entries[0]); !os.IsNotExist(err) {
		t.Errorf("report entry left behind: %v", err)
	}
	b, err := pcs.LoadBundle("../tdx/testdata/good_phala_collateral.json")
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	if _, err := tdx.NewVerifier(tdx.Options{Collateral: b, Now: func() time.Time { return at }}).Verify(context.Background(), ev); err != nil {
		t.Errorf("issued evidence does not verify: %v", err)
	}
}

// TestSNP issues an SEV-SNP report with the host's certificate table from
// auxblob; the evidence verifies without being given the VCEK.
func TestSNP(t *testing.T) {
	rep := read(t, snpRep)
	r, err := snpabi.ParseReport(rep)
	if err != nil {
		t.Fatal(err)
	}
	table := append(snpabi.MarshalCertTable([]snpabi.CertEntry{{GUID: snpabi.GUIDVCEK, Data: read(t, snpVCEK)}}), make([]byte, 512)...) // padded, as hosts do
	fake := newFake(t, ProviderSNP, rep, table)
	level := 0
	iss, err := NewIssuer(attest.TypeSEVSNP, Options{Root: fake.root, FS: fake, PrivLevel: &level})
	if err != nil {
		t.Fatal(err)
	}
	fake.onRead = func(entry string) {
		if string(read(t, filepath.Join(entry, "privlevel"))) != "0" {
			t.Error("privlevel not written")
		}
	}
	ev, err := iss.Issue(context.Background(), r.ReportData)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ev[:snpabi.ReportSize], rep) || !bytes.Equal(ev[snpabi.ReportSize:], table) {
		t.Error("evidence is not report ‖ auxblob")
	}
	at := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	res, err := snp.NewVerifier(snp.Options{SkipCRL: true, Now: func() time.Time { return at }}).VerifyEvidence(context.Background(), ev)
	if err != nil {
		t.Fatalf("issued evidence does not verify: %v", err)
	}
	if res.KeySource != "certificate table" {
		t.Errorf("VCEK from %s", res.KeySource)
	}
	// Without auxblob, the bare report.
	fake.auxblob = nil
	fake.onRead = nil
	if ev, err := iss.Issue(context.Background(), r.ReportData); err != nil || len(ev) != snpabi.ReportSize {
		t.Errorf("no auxblob: %d bytes, %v", len(ev), err)
	}
}

func TestRefusals(t *testing.T) {
	quote := read(t, tdxQuote)
	q, _ := tdxabi.ParseQuote(quote)
	rep := read(t, snpRep)
	r, _ := snpabi.ParseReport(rep)
	for _, tc := range []struct {
		name  string
		tee   string
		fake  *fakeConfigfs
		rd    [64]byte
		race  bool
		want  string
		noDir bool
	}{
		{name: "other report data", tee: attest.TypeTDX, fake: newFake(t, ProviderTDX, quote, nil), want: "does not carry the report data just written"},
		{name: "SNP other report data", tee: attest.TypeSEVSNP, fake: newFake(t, ProviderSNP, rep, nil), want: "does not carry the report data just written"},
		{name: "wrong provider", tee: attest.TypeTDX, fake: newFake(t, ProviderSNP, rep, nil), rd: q.Body.ReportData, want: `provider is "sev_guest", not "tdx_guest"`},
		{name: "garbage quote", tee: attest.TypeTDX, fake: newFake(t, ProviderTDX, []byte("nope"), nil), want: "unusable TDX quote"},
		{name: "garbage auxblob", tee: attest.TypeSEVSNP, fake: newFake(t, ProviderSNP, rep, []byte{1, 2, 3}), rd: r.ReportData, want: "certificate table (auxblob) is unusable"},
		{name: "concurrent writer", tee: attest.TypeTDX, fake: newFake(t, ProviderTDX, quote, nil), rd: q.Body.ReportData, race: true, want: "generation went from 0 to 2"},
		{name: "no configfs", tee: attest.TypeTDX, noDir: true, want: "does not run in a confidential VM with configfs-tsm"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{}
			if tc.noDir {
				o.Root = filepath.Join(t.TempDir(), "tsm")
			} else {
				o.Root, o.FS = tc.fake.root, tc.fake
				if tc.race {
					tc.fake.onRead = func(entry string) { tc.fake.bump(entry) }
				}
			}
			iss, err := NewIssuer(tc.tee, o)
			if err != nil {
				t.Fatal(err)
			}
			_, err = iss.Issue(context.Background(), tc.rd)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := NewIssuer(attest.TypeSGX, Options{}); err == nil {
		t.Error("an sgx tsm issuer")
	}
	bad := 4
	if _, err := NewIssuer(attest.TypeSEVSNP, Options{PrivLevel: &bad}); err == nil {
		t.Error("privilege level 4")
	}
}

// TestNoVerificationDeps: the issuer runs in the node, which must not link
// verification libraries (go-tdx-guest, go-sev-guest, protobuf) or the
// verify layers.
func TestNoVerificationDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/google/go-", "google.golang.org/protobuf", "/verify", "/pcs", "/kds", "net/http"} {
			if strings.Contains(dep, banned) {
				t.Errorf("package tsm depends on %s", dep)
			}
		}
	}
}
