// Package attestcmd is `mse attest`: commands over attestation evidence that
// need no backend. `mse attest verify FILE` checks an SGX quote or an RA-TLS
// certificate offline or against a PCCS. See docs/attest-verify.md.
package attestcmd

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/policyfile"
	"github.com/mse-in-go/mse/internal/attest/sgx"
	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/sgx/sgxtls"
	"github.com/mse-in-go/mse/internal/attest/snp"
	snpabi "github.com/mse-in-go/mse/internal/attest/snp/abi"
	"github.com/mse-in-go/mse/internal/attest/snp/kds"
	snpverify "github.com/mse-in-go/mse/internal/attest/snp/verify"
	"github.com/mse-in-go/mse/internal/attest/tdx"
	tdxabi "github.com/mse-in-go/mse/internal/attest/tdx/abi"
	tdxverify "github.com/mse-in-go/mse/internal/attest/tdx/verify"
	"github.com/mse-in-go/mse/internal/ratls"
)

// maxInput bounds the file read: a quote is under 64 KiB, a certificate
// with evidence under 256 KiB.
const maxInput = 1 << 20

// New returns the `attest` command with its subcommands.
func New() *cobra.Command {
	c := &cobra.Command{
		Use:   "attest",
		Short: "Check attestation evidence (quotes and RA-TLS certificates)",
	}
	c.AddCommand(newVerify(), newCollateral())
	return c
}

func newCollateral() *cobra.Command {
	var pccs, out string
	c := &cobra.Command{
		Use:   "collateral FILE",
		Short: "Fetch the collateral for an SGX or TDX quote or RA-TLS certificate into an offline bundle",
		Long: `Collateral reads the PCK certificate of FILE (a raw SGX or TDX quote or an
SGX RA-TLS certificate), fetches the TCB info, QE identity and CRLs for its
platform (TDX: the TDX TCB info and the TD QE identity) from --pccs, and
writes them as an offline bundle that
"mse attest verify --collateral" reads. Nothing is verified here.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SilenceUsage = true
			if pccs == "" {
				return fmt.Errorf("--pccs is required (e.g. %s)", pcs.IntelPCS)
			}
			data, err := readFile(args[0])
			if err != nil {
				return err
			}
			quote, cert, err := splitInput(data)
			if err != nil {
				return err
			}
			if cert != nil {
				evs, err := sgxtls.Read(cert)
				if err != nil {
					return err
				}
				quote = evs[0].Quote
			}
			// A TDX quote's collateral is TDX TCB info and the TD QE
			// identity, from the same service.
			isTDX := false
			if tee, err := detectTEE(quote); err == nil && tee == attest.TypeTDX {
				isTDX = true
			}
			var certData []byte
			if isTDX {
				q, err := tdxabi.ParseQuote(quote)
				if err != nil {
					return err
				}
				certData = q.CertData
			} else {
				q, err := abi.ParseQuote(quote)
				if err != nil {
					return err
				}
				certData = q.CertData
			}
			chain, err := abi.ParsePCKChain(certData)
			if err != nil {
				return err
			}
			ext, err := pcs.ParsePCKExtensions(chain[0])
			if err != nil {
				return err
			}
			ca := pcs.CAOf(chain[1])
			client := pcs.NewClient(pccs)
			var col *pcs.Collateral
			if isTDX {
				col, err = client.TDXCollateral(cmd.Context(), ext.FMSPCHex(), ca)
			} else {
				col, err = client.Collateral(cmd.Context(), ext.FMSPCHex(), ca)
			}
			if err != nil {
				return err
			}
			b, err := pcs.MarshalBundle(col)
			if err != nil {
				return err
			}
			b = append(b, '\n')
			if out == "" || out == "-" {
				_, err = cmd.OutOrStdout().Write(b)
				return err
			}
			if err := os.WriteFile(out, b, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote collateral for FMSPC %s (PCK %s CA), valid until %s, to %s\n",
				ext.FMSPCHex(), ca, col.NextUpdate().UTC().Format(time.RFC3339), out)
			return nil
		},
	}
	c.Flags().StringVar(&pccs, "pccs", "", "base URL of a PCCS or of Intel PCS (API v4)")
	c.Flags().StringVarP(&out, "output", "o", "", "bundle file to write (default: standard output)")
	return c
}

type verifyFlags struct {
	tee          string
	vcek         string
	kds          string
	collateral   string
	pccs         string
	noCollateral bool
	at           string
	policy       string
	allowDebug   bool
	acceptTCB    []string
	acceptAdv    []string
	json         bool
}

func newVerify() *cobra.Command {
	var f verifyFlags
	c := &cobra.Command{
		Use:   "verify FILE",
		Short: "Verify an SGX or TDX quote, an SEV-SNP report, or an RA-TLS certificate",
		Long: `Verify checks that FILE is genuine TEE evidence: a raw Intel SGX DCAP quote
v3, a raw Intel TDX quote v4/v5, a raw AMD SEV-SNP attestation report
(optionally followed by its certificate table), or a PEM/DER RA-TLS
certificate carrying one. The type is detected; --tee forces it.

For SGX and TDX: the quote's signatures, the PCK certificate chain up to the
Intel SGX Root CA built into mse, the CRLs, TCB info and QE identity from the
collateral (and for TDX the TDX module), and the TCB status they give. For
SEV-SNP: the VCEK (or VLEK) chain up to the AMD root built into mse, that the
VCEK is the chip's and the reported TCB's, the report signature, and the
AMD CRL. The VCEK comes from --vcek, else the evidence's certificate table,
else --kds.

It then applies a policy: without --policy, any measurement is accepted but
the TCB status must be UpToDate (or one named by --accept-tcb), no advisory
may apply unless accepted, and debug enclaves and guests are refused unless
--allow-debug.

For a certificate it also checks that the certificate's public key is the
one the evidence binds.

Collateral comes from --collateral (an offline bundle; for SEV-SNP a CRL
file), --pccs (a PCS or PCCS base URL, e.g.
https://api.trustedservices.intel.com), --kds (SEV-SNP), or the policy's
[collateral] and [sev_snp] sections. --no-collateral checks signatures and
the chain only, and reports the status as "unchecked".

The exit status is 0 only when the evidence verifies under the policy.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SilenceUsage = true
			return runVerify(cmd, args[0], &f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.tee, "tee", "", "TEE type of FILE: sgx, tdx or sev-snp (default: detected)")
	fl.StringVar(&f.collateral, "collateral", "", "offline collateral: a bundle (JSON) for SGX and TDX, a CRL file (PEM or DER) for SEV-SNP")
	fl.StringVar(&f.pccs, "pccs", "", "base URL of a PCCS or of Intel PCS (API v4), for SGX and TDX")
	fl.StringVar(&f.kds, "kds", "", "base URL of AMD's KDS or a cache of it (e.g. "+kds.AMDKDS+"), for SEV-SNP VCEKs and CRLs")
	fl.StringVar(&f.vcek, "vcek", "", "SEV-SNP: the VCEK or VLEK certificate (DER or PEM) to verify with")
	fl.BoolVar(&f.noCollateral, "no-collateral", false, "check signatures and the certificate chain only; TCB status (SGX, TDX) and revocation are not checked, status unchecked")
	fl.StringVar(&f.at, "at", "", "verify at this instant (RFC 3339) instead of now")
	fl.StringVar(&f.policy, "policy", "", "trust policy file (TOML); without it any measurement and signer are accepted")
	fl.BoolVar(&f.allowDebug, "allow-debug", false, "accept debug enclaves (their host can read their memory)")
	fl.StringSliceVar(&f.acceptTCB, "accept-tcb", nil, "accepted TCB statuses (comma-separated; default UpToDate)")
	fl.StringSliceVar(&f.acceptAdv, "accept-advisories", nil, "accepted Intel advisory IDs (comma-separated)")
	fl.BoolVar(&f.json, "json", false, "print one JSON object")
	return c
}

// Result is the JSON output of `mse attest verify`.
type Result struct {
	Verified         bool              `json:"verified"`
	Error            string            `json:"error,omitempty"`
	File             string            `json:"file"`
	Input            string            `json:"input"` // "quote" or "certificate"
	TEE              string            `json:"tee"`
	EvidenceFormat   string            `json:"evidence_format,omitempty"`
	MREnclave        string            `json:"mrenclave,omitempty"`
	MRSigner         string            `json:"mrsigner,omitempty"`
	MRTD             string            `json:"mrtd,omitempty"`
	RTMR0            string            `json:"rtmr0,omitempty"`
	RTMR1            string            `json:"rtmr1,omitempty"`
	RTMR2            string            `json:"rtmr2,omitempty"`
	RTMR3            string            `json:"rtmr3,omitempty"`
	TDAttributes     string            `json:"td_attributes,omitempty"`
	Measurement      string            `json:"measurement,omitempty"`
	HostData         string            `json:"host_data,omitempty"`
	GuestPolicy      string            `json:"policy,omitempty"`
	ReportedTCB      string            `json:"reported_tcb,omitempty"`
	ChipID           string            `json:"chip_id,omitempty"`
	ISVProdID        *uint16           `json:"isv_prod_id,omitempty"`
	ISVSVN           *uint16           `json:"isv_svn,omitempty"`
	Debug            *bool             `json:"debug,omitempty"`
	TCBStatus        string            `json:"tcb_status,omitempty"`
	AdvisoryIDs      []string          `json:"advisory_ids"`
	ReportData       string            `json:"report_data,omitempty"`
	PubkeyBound      *bool             `json:"pubkey_bound,omitempty"`
	Collateral       string            `json:"collateral"`
	CollateralIssued string            `json:"collateral_issued,omitempty"`
	VerifiedAt       string            `json:"verified_at"`
	TrustPolicy      string            `json:"trust_policy"`
	Details          map[string]string `json:"details,omitempty"`
	Warnings         []string          `json:"warnings,omitempty"`
}

func runVerify(cmd *cobra.Command, file string, f *verifyFlags) error {
	res, err := verifyFile(cmd.Context(), file, f)
	if res == nil {
		return err
	}
	if err != nil {
		res.Error = err.Error()
	}
	out := cmd.OutOrStdout()
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if e := enc.Encode(res); e != nil {
			return e
		}
	} else {
		printHuman(out, res)
		for _, w := range res.Warnings {
			fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+w)
		}
	}
	return err
}

// verifyFile does the work; a nil Result means the command could not start
// (bad flags or unreadable file).
func verifyFile(ctx context.Context, file string, f *verifyFlags) (*Result, error) {
	now := time.Now()
	if f.at != "" {
		t, err := time.Parse(time.RFC3339, f.at)
		if err != nil {
			return nil, fmt.Errorf("--at %q is not an RFC 3339 time (e.g. 2025-07-01T00:00:00Z)", f.at)
		}
		now = t
	}
	switch f.tee {
	case "", attest.TypeSGX, attest.TypeTDX, attest.TypeSEVSNP:
	default:
		return nil, fmt.Errorf("--tee %q is not one of sgx, tdx, sev-snp", f.tee)
	}
	data, err := readFile(file)
	if err != nil {
		return nil, err
	}
	in, err := readInput(data, f.tee)
	if err != nil {
		return &Result{File: file, Input: "unknown", TEE: f.tee, VerifiedAt: now.UTC().Format(time.RFC3339), AdvisoryIDs: []string{}}, err
	}
	tee := in.tee
	pol, polName, err := buildPolicy(f, tee)
	if err != nil {
		return nil, err
	}
	res := &Result{File: file, TEE: tee, Input: in.input, VerifiedAt: now.UTC().Format(time.RFC3339), TrustPolicy: polName, AdvisoryIDs: []string{}}
	switch tee {
	case attest.TypeTDX:
		return verifyTDX(ctx, res, in, f, pol, now)
	case attest.TypeSEVSNP:
		return verifySNP(ctx, res, in, f, pol, now)
	}
	return verifySGX(ctx, res, in, f, pol, now)
}

// input is FILE, read: its TEE type and evidence, and the certificate that
// carried it, if any.
type input struct {
	tee      string
	input    string // "quote", "report" or "certificate"
	evidence []byte
	cert     *x509.Certificate
	claims   []byte // tagged certificate evidence
	format   string
}

// readInput tells a raw quote or report from a certificate and finds the
// TEE type. force is --tee ("" to detect).
func readInput(data []byte, force string) (*input, error) {
	raw, cert, err := splitInput(data)
	if err != nil {
		return nil, err
	}
	if cert == nil {
		tee := force
		if tee == "" {
			if tee, err = detectTEE(raw); err != nil {
				return nil, err
			}
		}
		in := &input{tee: tee, input: "quote", evidence: raw}
		if tee == attest.TypeSEVSNP {
			in.input = "report"
		}
		return in, nil
	}
	ex, err := ratls.Extract(cert)
	if err != nil {
		return nil, err
	}
	if force != "" && force != ex.Type {
		return nil, fmt.Errorf("--tee %s, but the certificate carries %s evidence", force, ex.Type)
	}
	switch ex.Type {
	case attest.TypeSGX, attest.TypeTDX, attest.TypeSEVSNP:
	default:
		return nil, fmt.Errorf("the certificate carries %s evidence, which this command does not verify (use mse cloud verify)", ex.Type)
	}
	return &input{tee: ex.Type, input: "certificate", evidence: ex.Evidence, cert: cert, claims: ex.Claims, format: ex.Format}, nil
}

// detectTEE names the TEE type of raw evidence by its first bytes: Intel
// quotes start with a u16 version (3 SGX, 4 or 5 with TEE type 0x81 TDX)
// and a u16 attestation key type (2 or 3); SEV-SNP reports with a u32
// version 2..5 and have signature algorithm 1 at 0x34.
func detectTEE(b []byte) (string, error) {
	if len(b) >= 4 {
		v, key := binary.LittleEndian.Uint16(b), binary.LittleEndian.Uint16(b[2:])
		if (v == 3 || v == 4 || v == 5) && (key == 2 || key == 3) {
			if v >= 4 && len(b) >= 8 && binary.LittleEndian.Uint32(b[4:]) == tdxabi.TEETypeTDX {
				return attest.TypeTDX, nil
			}
			return attest.TypeSGX, nil
		}
	}
	if len(b) >= snpabi.ReportSize {
		if v := binary.LittleEndian.Uint32(b); v >= snpabi.MinVersion && v <= snpabi.MaxVersion && binary.LittleEndian.Uint32(b[0x34:]) == snpabi.SignatureAlgoECDSAP384SHA384 {
			return attest.TypeSEVSNP, nil
		}
	}
	return "", errors.New("the file is not an SGX or TDX quote, an SEV-SNP report or a certificate this command knows (pass --tee sgx|tdx|sev-snp to force a type)")
}

func verifySGX(ctx context.Context, res *Result, in *input, f *verifyFlags, pol *attest.Policy, now time.Time) (*Result, error) {
	if f.vcek != "" || f.kds != "" {
		return nil, errors.New("--vcek and --kds are for SEV-SNP evidence, not SGX")
	}
	src, srcName, err := collateralSource(f, pol, now)
	if err != nil {
		return nil, err
	}
	res.Collateral = srcName
	if f.noCollateral {
		res.Warnings = append(res.Warnings, "no collateral (--no-collateral): only the quote's signatures and the PCK chain were checked; revocation and the TCB status were NOT checked (tcb_status unchecked)")
	}
	quote, cert := in.evidence, in.cert
	var ev sgxtls.Evidence
	if cert != nil {
		evs, err := sgxtls.Read(cert)
		if err != nil {
			return res, fmt.Errorf("verification failed: %w", err)
		}
		ev = evs[0]
		res.EvidenceFormat = ev.Format
		quote = ev.Quote
		res.Details = map[string]string{}
		if len(evs) > 1 {
			res.Details["other_evidence"] = evs[1].Format
		}
		// Informational: RA-TLS certificates are self-signed, but Gramine's
		// are not CA certificates, so the signature is checked directly.
		selfSigned := cert.CheckSignature(cert.SignatureAlgorithm, cert.RawTBSCertificate, cert.Signature) == nil
		res.Details["certificate_self_signed"] = fmt.Sprint(selfSigned)
	} else {
		res.EvidenceFormat = "sgx-dcap-quote-v3"
	}

	v := sgx.NewVerifier(sgx.Options{Collateral: src, SkipCollateral: f.noCollateral, Now: func() time.Time { return now }})
	vr, err := v.VerifyQuote(ctx, quote)
	if err != nil {
		return res, fmt.Errorf("verification failed: the SGX evidence is not genuine: %w", err)
	}
	ver := sgx.ToVerified(vr)
	fill(res, ver)
	if cert != nil {
		// The binding is part of genuineness: a certificate whose key the
		// evidence does not bind proves nothing about its key holder.
		err := sgxtls.CheckBinding(cert, ev, ver.ReportData)
		bound := err == nil
		res.PubkeyBound = &bound
		if err != nil {
			return res, fmt.Errorf("verification failed: the certificate's key is not bound to the evidence: %w", err)
		}
	}
	return accept(res, ver, f, pol, now)
}

// accept applies the policy to verified values. Without --policy, the
// evidence's own measurement is accepted: this command checks genuineness,
// and everything else is still enforced.
func accept(res *Result, ver *attest.Verified, f *verifyFlags, pol *attest.Policy, now time.Time) (*Result, error) {
	if f.policy == "" {
		pol.Measurements = []string{hex.EncodeToString(ver.Measurement)}
	}
	if err := pol.Check(ver, now); err != nil {
		return res, err
	}
	res.Verified = true
	return res, nil
}

// bindCertificate checks that a certificate's key is the one tagged
// evidence binds (report data = SHA-256(claims), claims name the key).
func bindCertificate(res *Result, in *input, reportData [64]byte) error {
	if in.cert == nil {
		return nil
	}
	res.EvidenceFormat = in.format
	err := sgxtls.CheckBinding(in.cert, sgxtls.Evidence{Format: in.format, Claims: in.claims}, reportData)
	bound := err == nil
	res.PubkeyBound = &bound
	if err != nil {
		return fmt.Errorf("verification failed: the certificate's key is not bound to the evidence: %w", err)
	}
	return nil
}

func verifyTDX(ctx context.Context, res *Result, in *input, f *verifyFlags, pol *attest.Policy, now time.Time) (*Result, error) {
	if f.vcek != "" || f.kds != "" {
		return nil, errors.New("--vcek and --kds are for SEV-SNP evidence, not TDX")
	}
	src, srcName, err := collateralSource(f, pol, now)
	if err != nil {
		return nil, err
	}
	res.Collateral = srcName
	if f.noCollateral {
		res.Warnings = append(res.Warnings, "no collateral (--no-collateral): only the quote's signatures and the PCK chain were checked; revocation, the TDX module and the TCB status were NOT checked (tcb_status unchecked)")
	}
	res.EvidenceFormat = "tdx-dcap-quote"
	var tsrc pcs.TDXSource
	if src != nil {
		tsrc = src.(pcs.TDXSource)
	}
	v := tdx.NewVerifier(tdx.Options{Collateral: tsrc, SkipCollateral: f.noCollateral, Now: func() time.Time { return now }})
	vr, err := v.VerifyQuote(ctx, in.evidence)
	if err != nil {
		// The TCB level is evaluated last: a quote refused there is genuine.
		if tdxverify.StepOf(err) == tdxverify.StepTCBLevel {
			return res, fmt.Errorf("verification failed: the TDX quote is genuine, but its platform is refused: %w", err)
		}
		return res, fmt.Errorf("verification failed: the TDX evidence is not genuine: %w", err)
	}
	ver := tdx.ToVerified(vr)
	fill(res, ver)
	if err := bindCertificate(res, in, ver.ReportData); err != nil {
		return res, err
	}
	return accept(res, ver, f, pol, now)
}

func verifySNP(ctx context.Context, res *Result, in *input, f *verifyFlags, pol *attest.Policy, now time.Time) (*Result, error) {
	if f.pccs != "" {
		return nil, errors.New("--pccs is Intel's collateral service; for SEV-SNP pass --kds URL (AMD's KDS or a cache) or --collateral CRLFILE")
	}
	o := snp.Options{SkipCRL: f.noCollateral, Now: func() time.Time { return now }}
	if f.vcek != "" {
		b, err := readFile(f.vcek)
		if err != nil {
			return nil, fmt.Errorf("--vcek: %w", err)
		}
		certs, err := snpverify.ParseCertificates(b)
		if err != nil {
			return nil, fmt.Errorf("--vcek %s: %v", f.vcek, err)
		}
		o.EndorsementKey = certs[0]
	}
	file, kdsURL := f.collateral, f.kds
	if f.noCollateral {
		if file != "" || kdsURL != "" {
			return nil, errors.New("--no-collateral cannot be combined with --collateral or --kds")
		}
		res.Collateral = "none"
		res.Warnings = append(res.Warnings, "no collateral (--no-collateral): the report's signature and the VCEK chain were checked; revocation (AMD's CRL) was NOT checked (tcb_status unchecked)")
	} else {
		if file == "" && kdsURL == "" {
			file, kdsURL = pol.SEVSNP.CRLFile, pol.SEVSNP.KDS
		}
		var names []string
		if kdsURL != "" {
			c := kds.NewClient(kdsURL)
			c.Now = func() time.Time { return now }
			o.KDS, o.CRLs = c, c
			names = append(names, "kds "+kdsURL)
		}
		if file != "" {
			b, err := kds.LoadBundle(file)
			if err != nil {
				return nil, err
			}
			o.CRLs = b
			names = append(names, "file "+file)
		}
		if o.CRLs == nil {
			return nil, fmt.Errorf("no collateral source: pass --collateral FILE (AMD's CRL, PEM or DER), --kds URL (e.g. %s), or --no-collateral to check the signature and the VCEK chain only", kds.AMDKDS)
		}
		res.Collateral = strings.Join(names, ", ")
	}
	if in.cert == nil {
		res.EvidenceFormat = "sev-snp-report"
		if len(in.evidence) > snpabi.ReportSize {
			res.EvidenceFormat = "sev-snp-report+certificate-table"
		}
	}
	vr, err := snp.NewVerifier(o).VerifyEvidence(ctx, in.evidence)
	if err != nil {
		return res, fmt.Errorf("verification failed: the SEV-SNP evidence is not genuine: %w", err)
	}
	ver := snp.ToVerified(vr)
	fill(res, ver)
	if err := bindCertificate(res, in, ver.ReportData); err != nil {
		return res, err
	}
	return accept(res, ver, f, pol, now)
}

func fill(res *Result, v *attest.Verified) {
	d := v.Details
	switch v.Type {
	case attest.TypeTDX:
		res.MRTD = hex.EncodeToString(v.Measurement)
		res.RTMR0, res.RTMR1, res.RTMR2, res.RTMR3 = d[attest.DetailRTMR0], d[attest.DetailRTMR1], d[attest.DetailRTMR2], d[attest.DetailRTMR3]
		res.TDAttributes = d[attest.DetailTDAttributes]
	case attest.TypeSEVSNP:
		res.Measurement = hex.EncodeToString(v.Measurement)
		res.HostData = d[attest.DetailHostData]
		res.GuestPolicy = d[attest.DetailGuestPolicy]
		res.ReportedTCB = d["reported_tcb"]
		res.ChipID = d[attest.DetailChipID]
	default:
		res.MREnclave = hex.EncodeToString(v.Measurement)
		res.MRSigner = hex.EncodeToString(v.Signer)
		res.ISVProdID = &v.ProductID
		res.ISVSVN = &v.SVN
	}
	res.Debug = &v.Debug
	res.TCBStatus = v.TCBStatus
	res.AdvisoryIDs = append([]string{}, v.AdvisoryIDs...)
	res.ReportData = hex.EncodeToString(v.ReportData[:])
	if !v.CollateralIssued.IsZero() {
		res.CollateralIssued = v.CollateralIssued.UTC().Format(time.RFC3339)
	}
	if res.Details == nil {
		res.Details = map[string]string{}
	}
	for k, val := range v.Details {
		res.Details[k] = val
	}
}

func buildPolicy(f *verifyFlags, tee string) (*attest.Policy, string, error) {
	var p *attest.Policy
	name := "default (genuine " + teeName(tee) + ", any measurement)"
	if f.policy != "" {
		var err error
		if p, err = policyfile.Load(f.policy); err != nil {
			return nil, "", err
		}
		name = f.policy
		if !slices.Contains(p.TEETypes, tee) {
			return nil, "", fmt.Errorf("trust policy %s does not accept the %s TEE type (tee_types = %q); add %q", f.policy, tee, p.TEETypes, tee)
		}
	} else {
		p = &attest.Policy{TEETypes: []string{tee}}
	}
	if f.allowDebug {
		p.AllowDebug = true
	}
	if len(f.acceptTCB) > 0 {
		p.AcceptedTCBStatuses = trimAll(f.acceptTCB)
	}
	if len(f.acceptAdv) > 0 {
		p.AcceptedAdvisories = append(p.AcceptedAdvisories, trimAll(f.acceptAdv)...)
	}
	if f.noCollateral {
		if len(p.AcceptedTCBStatuses) == 0 {
			p.AcceptedTCBStatuses = []string{attest.TCBUpToDate}
		}
		if !slices.Contains(p.AcceptedTCBStatuses, attest.TCBUnchecked) {
			p.AcceptedTCBStatuses = append(p.AcceptedTCBStatuses, attest.TCBUnchecked)
		}
	}
	if err := p.Validate(); err != nil {
		return nil, "", fmt.Errorf("policy: %w", err)
	}
	return p, name, nil
}

func teeName(tee string) string {
	switch tee {
	case attest.TypeTDX:
		return "TDX"
	case attest.TypeSEVSNP:
		return "SEV-SNP"
	}
	return "SGX"
}

func trimAll(l []string) []string {
	out := make([]string, 0, len(l))
	for _, s := range l {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func collateralSource(f *verifyFlags, p *attest.Policy, now time.Time) (pcs.Source, string, error) {
	file, pccs := f.collateral, f.pccs
	if f.noCollateral {
		if file != "" || pccs != "" {
			return nil, "", errors.New("--no-collateral cannot be combined with --collateral or --pccs")
		}
		return nil, "none", nil
	}
	if file != "" && pccs != "" {
		return nil, "", errors.New("pass either --collateral or --pccs, not both")
	}
	if file == "" && pccs == "" {
		file, pccs = p.Collateral.File, p.Collateral.PCCS
	}
	src, err := pcs.OpenSource(file, pccs, func() time.Time { return now })
	switch {
	case err != nil:
		return nil, "", err
	case file != "":
		return src, "file " + file, nil
	case pccs != "":
		return src, "pccs " + pccs, nil
	}
	return nil, "", fmt.Errorf("no collateral source: pass --collateral FILE (an offline bundle), --pccs URL (e.g. %s), or --no-collateral to check signatures and the PCK chain only", pcs.IntelPCS)
}

func readFile(path string) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxInput+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxInput {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a quote or certificate", path, maxInput)
	}
	return b, nil
}

// splitInput tells a raw quote from a PEM or DER certificate.
func splitInput(b []byte) ([]byte, *x509.Certificate, error) {
	t := bytes.TrimSpace(b)
	if bytes.HasPrefix(t, []byte("-----BEGIN")) {
		rest := t
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				return nil, nil, errors.New("the PEM file holds no CERTIFICATE block")
			}
			if blk.Type == "CERTIFICATE" {
				c, err := x509.ParseCertificate(blk.Bytes)
				if err != nil {
					return nil, nil, fmt.Errorf("the PEM certificate does not parse: %v", err)
				}
				return nil, c, nil
			}
		}
	}
	if len(b) > 2 && b[0] == 0x30 && b[1] >= 0x80 {
		if c, err := x509.ParseCertificate(b); err == nil {
			return nil, c, nil
		}
	}
	return b, nil, nil
}

func printHuman(w io.Writer, r *Result) {
	if r.Verified {
		fmt.Fprintf(w, "VERIFIED: genuine %s %s, accepted by the policy\n", teeName(r.TEE), r.Input)
	} else {
		fmt.Fprintf(w, "NOT VERIFIED: %s\n", r.Error)
	}
	row := func(k, v string) { fmt.Fprintf(w, "  %-27s %s\n", k, v) }
	row("file", r.File+" ("+r.Input+", "+r.EvidenceFormat+")")
	row("tee", r.TEE)
	shown := r.Debug != nil
	if r.MREnclave != "" {
		row("mrenclave", r.MREnclave)
		row("mrsigner", r.MRSigner)
		row("isv_prod_id", fmt.Sprint(*r.ISVProdID))
		row("isv_svn", fmt.Sprint(*r.ISVSVN))
	}
	if r.MRTD != "" {
		row("mrtd", r.MRTD)
		row("rtmr0", r.RTMR0)
		row("rtmr1", r.RTMR1)
		row("rtmr2", r.RTMR2)
		row("rtmr3", r.RTMR3)
		row("td_attributes", r.TDAttributes)
	}
	if r.Measurement != "" {
		row("measurement", r.Measurement)
		row("host_data", r.HostData)
		row("policy", r.GuestPolicy)
		row("reported_tcb", r.ReportedTCB)
		row("chip_id", r.ChipID)
	}
	if shown {
		row("debug", fmt.Sprint(*r.Debug))
		if r.TCBStatus != "" {
			row("tcb_status", r.TCBStatus)
		}
		adv := "none"
		if len(r.AdvisoryIDs) > 0 {
			adv = strings.Join(r.AdvisoryIDs, ", ")
		}
		row("advisory_ids", adv)
		row("report_data", r.ReportData)
	}
	if r.PubkeyBound != nil {
		row("pubkey_bound", fmt.Sprint(*r.PubkeyBound))
	}
	c := r.Collateral
	if r.CollateralIssued != "" {
		c += ", issued " + r.CollateralIssued
	}
	row("collateral", c)
	row("trust_policy", r.TrustPolicy)
	row("verified_at", r.VerifiedAt)
	keys := make([]string, 0, len(r.Details))
	for k := range r.Details {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		row(k, r.Details[k])
	}
}
