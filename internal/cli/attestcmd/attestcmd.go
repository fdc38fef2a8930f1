// Package attestcmd is `mse attest`: commands over attestation evidence that
// need no backend. `mse attest verify FILE` checks an SGX quote or an RA-TLS
// certificate offline or against a PCCS. See docs/attest-verify.md.
package attestcmd

import (
	"bytes"
	"context"
	"crypto/x509"
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
	"github.com/mse-in-go/mse/internal/attest/sgx"
	"github.com/mse-in-go/mse/internal/attest/sgx/abi"
	"github.com/mse-in-go/mse/internal/attest/sgx/pcs"
	"github.com/mse-in-go/mse/internal/attest/sgx/sgxtls"
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
		Short: "Fetch the collateral for an SGX quote or RA-TLS certificate into an offline bundle",
		Long: `Collateral reads the PCK certificate of FILE (a raw SGX quote or an RA-TLS
certificate), fetches the TCB info, QE identity and CRLs for its platform
from --pccs, and writes them as an offline bundle that
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
			q, err := abi.ParseQuote(quote)
			if err != nil {
				return err
			}
			chain, err := abi.ParsePCKChain(q.CertData)
			if err != nil {
				return err
			}
			ext, err := pcs.ParsePCKExtensions(chain[0])
			if err != nil {
				return err
			}
			ca := pcs.CAOf(chain[1])
			col, err := pcs.NewClient(pccs).Collateral(cmd.Context(), ext.FMSPCHex(), ca)
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
		Short: "Verify an SGX DCAP quote or an RA-TLS certificate",
		Long: `Verify checks that FILE (a raw SGX DCAP quote v3, or a PEM/DER RA-TLS
certificate carrying one) is genuine Intel SGX evidence: the quote's
signatures, the PCK certificate chain up to the Intel SGX Root CA built into
mse, the CRLs, TCB info and QE identity from the collateral, and the TCB
status they give. It then applies a policy: without --policy, any enclave
(MRENCLAVE/MRSIGNER) is accepted but the TCB status must be UpToDate (or one
named by --accept-tcb), no advisory may apply unless accepted, and debug
enclaves are refused unless --allow-debug.

For a certificate it also checks that the certificate's public key is the
one the evidence binds.

Collateral comes from --collateral (an offline bundle), --pccs (a PCS or PCCS
base URL, e.g. https://api.trustedservices.intel.com), or the policy's
[collateral] section. --no-collateral checks signatures and the PCK chain
only, and reports the TCB status as "unchecked".

The exit status is 0 only when the evidence verifies under the policy.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.SilenceUsage = true
			return runVerify(cmd, args[0], &f)
		},
	}
	fl := c.Flags()
	fl.StringVar(&f.collateral, "collateral", "", "offline collateral bundle (JSON)")
	fl.StringVar(&f.pccs, "pccs", "", "base URL of a PCCS or of Intel PCS (API v4)")
	fl.BoolVar(&f.noCollateral, "no-collateral", false, "check signatures and the PCK chain only; TCB status is reported as unchecked")
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
	Policy           string            `json:"policy"`
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
	pol, polName, err := buildPolicy(f)
	if err != nil {
		return nil, err
	}
	src, srcName, err := collateralSource(f, pol, now)
	if err != nil {
		return nil, err
	}
	data, err := readFile(file)
	if err != nil {
		return nil, err
	}
	res := &Result{File: file, TEE: attest.TypeSGX, VerifiedAt: now.UTC().Format(time.RFC3339), Collateral: srcName, Policy: polName, AdvisoryIDs: []string{}}
	if f.noCollateral {
		res.Warnings = append(res.Warnings, "no collateral (--no-collateral): only the quote's signatures and the PCK chain were checked; revocation and the TCB status were NOT checked (tcb_status unchecked)")
	}

	quote, cert, err := splitInput(data)
	if err != nil {
		res.Input = "unknown"
		return res, err
	}
	var ev sgxtls.Evidence
	if cert != nil {
		res.Input = "certificate"
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
		res.Input = "quote"
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
	if f.policy == "" {
		// No --policy: this command checks genuineness, so it accepts the
		// quote's own measurement; everything else is still enforced.
		pol.Measurements = []string{hex.EncodeToString(ver.Measurement)}
	}
	if err := pol.Check(ver, now); err != nil {
		return res, err
	}
	res.Verified = true
	return res, nil
}

func fill(res *Result, v *attest.Verified) {
	res.MREnclave = hex.EncodeToString(v.Measurement)
	res.MRSigner = hex.EncodeToString(v.Signer)
	res.ISVProdID = &v.ProductID
	res.ISVSVN = &v.SVN
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

func buildPolicy(f *verifyFlags) (*attest.Policy, string, error) {
	var p *attest.Policy
	name := "default (genuine SGX, any MRENCLAVE/MRSIGNER)"
	if f.policy != "" {
		var err error
		if p, err = attest.LoadPolicy(f.policy); err != nil {
			return nil, "", err
		}
		name = f.policy
		if !slices.Contains(p.TEETypes, attest.TypeSGX) {
			return nil, "", fmt.Errorf("trust policy %s does not accept the sgx TEE type (tee_types = %q); add \"sgx\"", f.policy, p.TEETypes)
		}
	} else {
		p = &attest.Policy{TEETypes: []string{attest.TypeSGX}}
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
		fmt.Fprintf(w, "VERIFIED: genuine SGX %s, accepted by the policy\n", r.Input)
	} else {
		fmt.Fprintf(w, "NOT VERIFIED: %s\n", r.Error)
	}
	row := func(k, v string) { fmt.Fprintf(w, "  %-27s %s\n", k, v) }
	row("file", r.File+" ("+r.Input+", "+r.EvidenceFormat+")")
	if r.MREnclave != "" {
		row("mrenclave", r.MREnclave)
		row("mrsigner", r.MRSigner)
		row("isv_prod_id", fmt.Sprint(*r.ISVProdID))
		row("isv_svn", fmt.Sprint(*r.ISVSVN))
		row("debug", fmt.Sprint(*r.Debug))
		row("tcb_status", r.TCBStatus)
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
	row("policy", r.Policy)
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
