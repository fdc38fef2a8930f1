package cli

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/appverify"
	"github.com/mse-in-go/mse/internal/cli/attestcmd"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/scaffold"
)

func attestCommand() *cobra.Command { return attestcmd.New() }

func loginCmd() *cobra.Command {
	var token, url, cacert string
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Save the backend URL and your API token",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			u := newUI(cmd)
			if token == "" {
				return errors.New("--token is required (ask the operator for an API token)")
			}
			if strings.HasPrefix(url, "http://") && !isLoopbackURL(url) {
				u.warn("%s is plain HTTP: your API token crosses the network in clear; ask the operator for an https:// URL", url)
			}
			if cacert != "" {
				abs, err := filepath.Abs(cacert)
				if err != nil {
					return err
				}
				cacert = abs
			}
			l := &Login{URL: url, Token: strings.TrimSpace(token), CACert: cacert}
			c, err := newClient(l)
			if err != nil {
				return err
			}
			me, err := c.Me(cmd.Context())
			if err != nil {
				return err
			}
			p, err := saveLogin(l)
			if err != nil {
				return err
			}
			u.step("Logged in to %s as %s; saved to %s (mode 0600)", sanitize(url), sanitize(me.Name), p)
			return nil
		},
	}
	cmd.Flags().StringVar(&token, "token", "", "API token")
	cmd.Flags().StringVar(&url, "url", envOr("MSE_BACKEND_URL", "http://127.0.0.1:8080"), "backend API URL")
	cmd.Flags().StringVar(&cacert, "cacert", "", "PEM `FILE` of the CA that signed the backend's HTTPS certificate (when not publicly trusted)")
	return cmd
}

func isLoopbackURL(raw string) bool {
	u, err := neturl.Parse(raw)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func scaffoldCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "scaffold NAME",
		Short: "Create a new app directory with an mse.toml and a hello-world app",
		Args:  args("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := scaffold.Write(".", args[0]); err != nil {
				return err
			}
			u := newUI(cmd)
			u.step("Created %s/ with mse.toml, mse_src/app.py and tests/", args[0])
			fmt.Fprintf(u.out, "Next:\n  cd %s && mse cloud localtest && mse cloud deploy\n", args[0])
			return nil
		},
	}
}

func verifyCmd() *cobra.Command {
	var fingerprint, ctxFile, addr, caFile string
	var trust trustFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify DOMAIN",
		Short: "Verify the enclave behind an app's domain, as any user of the app can",
		Long: `verify connects to DOMAIN as any client does, asks the node for fresh evidence
on that same connection, and checks it under your trust policy: the enclave is
genuine, the evidence was made for this connection (TLS exporter) and for the
key the connection presented. It works in every TLS mode and says what each
proves: self (the enclave's self-signed key), acme (a CA's certificate for the
enclave's own key), owner (the owner's certificate: the owner holds the key
too), operator (the operator terminates TLS; the enclave is then checked over a
direct connection). With --fingerprint it also checks that the node's RA-TLS
certificate is the one the owner published; with --context (an exported app
context) it checks the app id, code digest and config digest as well.`,
		Args: args("DOMAIN"),
		RunE: func(cmd *cobra.Command, args []string) error {
			u := newUI(cmd)
			ctx := cmd.Context()
			domain := strings.ToLower(args[0])
			policy, err := trust.policy()
			if err != nil {
				return err
			}
			if err := checkRuntimeKnown(ctx, policy, nil); err != nil {
				return err
			}
			expect := ratls.Expect{Domain: domain}
			if ctxFile != "" {
				ac, err := readContextFile(ctxFile)
				if err != nil {
					return err
				}
				expect.AppID = ac.AppID
				if expect.CodeDigest, err = hex.DecodeString(ac.CodeDigest); err != nil {
					return fmt.Errorf("context: bad code_digest")
				}
				if expect.ConfigDigest, err = hex.DecodeString(ac.ConfigDigest); err != nil {
					return fmt.Errorf("context: bad config_digest")
				}
				if fingerprint == "" && ac.TLSMode != "owner" {
					fingerprint = ac.Fingerprint
				}
				if addr == "" {
					addr = ac.RouterAddr
				}
			}
			if addr == "" {
				addr = net.JoinHostPort(domain, "443")
			}
			vs := &verifiers{policy: policy, now: time.Now}
			if simAccepted(policy) {
				u.warn("simulation mode: simulated evidence proves nothing about the hardware")
				var c *client.Client
				if trust.simRoot == "" {
					if c, _, err = apiClient(); err != nil {
						return fmt.Errorf("simulation needs the simulated root: pass --sim-root FILE, or log in to the backend (%v)", err)
					}
				}
				if vs.simRoot, err = trust.loadSimRoot(ctx, u, policy, c); err != nil {
					return err
				}
			}
			opts := ratls.Options{Verifiers: vs.For, Policy: policy, Now: time.Now(), Expect: expect}
			precheck := func(cert *x509.Certificate) error {
				if fingerprint != "" && ratls.Fingerprint(cert) != strings.ToLower(fingerprint) {
					return fmt.Errorf("verification failed: the certificate's sha256 is %s, not the fingerprint %s you expect; this is not the node the owner verified",
						ratls.Fingerprint(cert), sanitize(fingerprint))
				}
				return nil
			}
			vo := appverify.Options{Domain: domain, Addr: addr, RATLS: opts, Precheck: precheck, Timeout: 30 * time.Second}
			if caFile != "" {
				if vo.Roots, err = loadRoots(caFile); err != nil {
					return err
				}
			}
			res, err := appverify.Verify(ctx, vo)
			if err != nil {
				return err
			}
			id := res.Identity
			out := verifyResult(id, expect)
			out.TLSMode, out.TerminatedInEnclave, out.Direct, out.Proves = res.Mode, res.TerminatedInEnclave, res.Direct, res.Proves
			served := res.Served[0]
			out.ServedFingerprint, out.ServedIssuer, out.ServedTrusted = ratls.Fingerprint(served), served.Issuer.String(), res.ServedTrusted
			if asJSON {
				return u.json(out)
			}
			v := id.Verified
			u.step("%s runs in a verified enclave", domain)
			rt := out.Runtime
			if rt == "" {
				rt = "(none claimed)"
			}
			fmt.Fprintf(u.out, "  TEE:           %s%s\n  measurement:   %s\n  signer:        %s\n  TCB status:    %s\n  app id:        %s\n  code digest:   %s\n  config digest: %s\n  runtime:       %s\n  RA-TLS cert:   sha256 %s\n  TLS mode:      %s\n  served cert:   sha256 %s, issued by %s\n",
				v.Type, map[bool]string{true: " (SIMULATED)", false: ""}[v.Simulated], hex.EncodeToString(v.Measurement), hex.EncodeToString(v.Signer), v.TCBStatus,
				sanitize(id.Claims.AppID), hex.EncodeToString(id.Claims.CodeDigest), hex.EncodeToString(id.Claims.ConfigDigest), rt, id.Fingerprint,
				sanitize(res.Mode), out.ServedFingerprint, sanitize(out.ServedIssuer))
			for _, p := range res.Proves {
				fmt.Fprintf(u.out, "  • %s\n", sanitize(p))
			}
			if res.Mode == "operator" {
				u.warn("the operator terminates TLS for %s: it can read and change all traffic of this app", domain)
			}
			if fingerprint == "" && ctxFile == "" {
				u.warn("no --fingerprint or --context given: the enclave is genuine and runs a trusted runtime, but nothing ties it to a particular owner's code")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&fingerprint, "fingerprint", "", "expected SHA-256 of the node's certificate (hex), as the owner published it")
	f.StringVar(&ctxFile, "context", "", "an app context `FILE`, as written by mse cloud context --export")
	f.StringVar(&addr, "addr", "", "connect to this host:port instead of DOMAIN:443 (e.g. the operator's router)")
	f.BoolVar(&asJSON, "json", false, "print the verified identity as JSON")
	f.StringVar(&caFile, "cacert", "", "PEM `FILE` of roots to check the served certificate with, as a browser would (default: the system roots)")
	trust.register(f)
	return cmd
}

// VerifyResult is what verify prints with --json.
type VerifyResult struct {
	Verified     bool   `json:"verified"`
	TEE          string `json:"tee"`
	Simulated    bool   `json:"simulated"`
	Measurement  string `json:"measurement"`
	Signer       string `json:"signer"`
	TCBStatus    string `json:"tcb_status"`
	Debug        bool   `json:"debug"`
	AppID        string `json:"app_id"`
	CodeDigest   string `json:"code_digest"`
	ConfigDigest string `json:"config_digest"`
	// Runtime is the runtime image the node claims (the evidence attests
	// it for sim, the measurement covers it for SGX).
	Runtime      string `json:"runtime_digest,omitempty"`
	Fingerprint  string `json:"certificate_sha256"`
	BoundToOwner bool   `json:"bound_to_owner"`
	// TLSMode is the mode the enclave attests; the served certificate is
	// what ordinary clients (browsers) get.
	TLSMode             string   `json:"tls_mode,omitempty"`
	ServedFingerprint   string   `json:"served_certificate_sha256,omitempty"`
	ServedIssuer        string   `json:"served_issuer,omitempty"`
	ServedTrusted       bool     `json:"served_trusted"`
	TerminatedInEnclave bool     `json:"terminated_in_enclave"`
	Direct              bool     `json:"checked_over_direct_connection"`
	Proves              []string `json:"proves,omitempty"`
}

func verifyResult(id *ratls.Identity, e ratls.Expect) VerifyResult {
	v := id.Verified
	return VerifyResult{Verified: true, TEE: v.Type, Simulated: v.Simulated, Measurement: hex.EncodeToString(v.Measurement),
		Signer: hex.EncodeToString(v.Signer), TCBStatus: v.TCBStatus, Debug: v.Debug, AppID: id.Claims.AppID,
		CodeDigest: hex.EncodeToString(id.Claims.CodeDigest), ConfigDigest: hex.EncodeToString(id.Claims.ConfigDigest),
		Runtime: runtimeDigestString(id.Claims.RuntimeDigest), Fingerprint: id.Fingerprint, BoundToOwner: e.AppID != ""}
}

func runtimeDigestString(d []byte) string {
	if len(d) == 0 {
		return ""
	}
	return "sha256:" + hex.EncodeToString(d)
}

func statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status APP_ID",
		Short: "Show an app's status",
		Args:  args("APP_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			a, err := c.App(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			u := newUI(cmd)
			if asJSON {
				return u.json(a)
			}
			tw := tabwriter.NewWriter(u.out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "id\t%s\nname\t%s\nproject\t%s\nstatus\t%s\nurl\t%s\ndomains\t%s\nhardware\t%s\ntls mode\t%s\n",
				sanitize(a.ID), sanitize(a.Name), sanitize(a.Project), sanitize(a.Status), sanitize(a.URL), sanitize(strings.Join(a.Domains, ", ")), sanitize(a.Hardware),
				sanitize(tlsModeDesc(a.TLSMode)))
			if ac := a.Spec.ACME; ac != nil {
				fmt.Fprintf(tw, "acme ca\t%s\n", sanitize(ac.DirectoryURL))
			}
			if t := a.TLS; t != nil {
				// What the node says it serves, relayed by the operator:
				// informative; `mse cloud verify` checks it.
				fmt.Fprintf(tw, "certificate\tsha256 %s, issued by %s, until %s (as the node reports it; check with mse cloud verify)\n",
					sanitize(t.Served), sanitize(t.Issuer), fmtTime(t.NotAfter))
				if t.ACME != "" {
					acme := t.ACME
					if t.ACMEError != "" {
						acme += ": " + t.ACMEError
					}
					fmt.Fprintf(tw, "acme\t%s\n", sanitize(acme))
				}
			}
			fmt.Fprintf(tw, "code digest\t%s\ncreated\t%s\nexpires\t%s\n", sanitize(a.CodeDigest), fmtTime(a.CreatedAt), fmtTime(a.ExpiresAt))
			if a.StoppedAt != nil {
				fmt.Fprintf(tw, "stopped\t%s\n", fmtTime(*a.StoppedAt))
			}
			if a.Error != "" {
				label := "error"
				if a.Status == "stopped" {
					label = "reason"
				}
				fmt.Fprintf(tw, "%s\t%s\n", label, sanitize(a.Error))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// tlsModeDesc is a TLS mode with what it means for the app's users.
func tlsModeDesc(mode string) string {
	switch mode {
	case config.TLSSelf:
		return "self (the enclave's own RA-TLS certificate)"
	case config.TLSOwner:
		return "owner (your certificate; its key is in the enclave and yours)"
	case config.TLSACME:
		return "acme (a CA's certificate for the enclave's own key)"
	case config.TLSOperator:
		return "operator (the operator terminates TLS: it can read all traffic)"
	}
	return mode
}

func listCmd() *cobra.Command {
	var all, asJSON bool
	var name, status, project string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List your running apps (--all: also stopped and failed ones)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			apps, err := c.Apps(cmd.Context(), client.ListOptions{All: all, Name: name, Status: status, Project: project})
			if err != nil {
				return err
			}
			u := newUI(cmd)
			if asJSON {
				if apps == nil {
					apps = []client.App{}
				}
				return u.json(apps)
			}
			if len(apps) == 0 {
				fmt.Fprintln(u.out, "No apps.")
				return nil
			}
			tw := tabwriter.NewWriter(u.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSTATUS\tTLS\tURL\tCREATED")
			for _, a := range apps {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sanitize(a.ID), sanitize(a.Name), sanitize(a.Status), sanitize(a.TLSMode), sanitize(a.URL), fmtTime(a.CreatedAt))
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.BoolVar(&all, "all", false, "include stopped and failed apps")
	f.StringVar(&name, "name", "", "only apps with this name")
	f.StringVar(&status, "status", "", "only apps with this status")
	f.StringVar(&project, "project", "", "only apps of this project")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func logsCmd() *cobra.Command {
	var follow, raw bool
	var tail int
	cmd := &cobra.Command{
		Use:   "logs APP_ID",
		Short: "Print an app's logs (-f to follow)",
		Args:  args("APP_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			rc, err := c.Logs(cmd.Context(), args[0], tail, follow)
			if err != nil {
				return err
			}
			defer rc.Close()
			// The log is the app's and the node's output: on a terminal,
			// control characters (escape sequences) are neutralised;
			// redirected, or with --raw, it is copied byte for byte.
			out := cmd.OutOrStdout()
			var w io.Writer = out
			var sw *sanitizingWriter
			if !raw && isTerminal(out) {
				sw = &sanitizingWriter{w: out}
				w = sw
			}
			_, err = io.Copy(w, rc)
			if sw != nil {
				if ferr := sw.Flush(); err == nil {
					err = ferr
				}
			}
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the log until the app stops")
	cmd.Flags().IntVar(&tail, "tail", 64, "print the last N KiB")
	cmd.Flags().BoolVar(&raw, "raw", false, "copy the log byte for byte even to a terminal (default: control characters are shown as U+FFFD on a terminal)")
	return cmd
}

func stopCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "stop APP_ID...",
		Short: "Stop apps",
		Args:  atLeastOne("APP_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			u := newUI(cmd)
			var errs []error
			for _, id := range args {
				a, err := c.Stop(cmd.Context(), id)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", id, err))
					continue
				}
				u.step("App %s (%s) is %s", sanitize(a.ID), sanitize(a.Name), sanitize(a.Status))
			}
			return errors.Join(errs...)
		},
	}
}

func contextCmd() *cobra.Command {
	var list bool
	var export, remove, output string
	cmd := &cobra.Command{
		Use:   "context",
		Short: "List, export or remove saved app contexts (they hold code keys)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			u := newUI(cmd)
			switch {
			case list:
				cs, err := listContexts()
				if err != nil {
					return err
				}
				if len(cs) == 0 {
					fmt.Fprintln(u.out, "No saved contexts.")
					return nil
				}
				tw := tabwriter.NewWriter(u.out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "APP ID\tNAME\tTLS\tURL\tVERIFIED\tCREATED")
				for _, c := range cs {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\n", sanitize(c.AppID), sanitize(c.Name), sanitize(c.TLSMode), sanitize(c.URL), c.Verified, fmtTime(c.CreatedAt))
				}
				return tw.Flush()
			case export != "":
				c, src, err := loadContext(export)
				if err != nil {
					return err
				}
				if output == "" {
					output = c.AppID + ".toml"
				}
				b, err := os.ReadFile(src)
				if err != nil {
					return err
				}
				if err := writePrivate(output, b); err != nil {
					return err
				}
				u.step("Exported the context of %s to %s (mode 0600)", c.AppID, output)
				u.warn("the context holds the app's code key: share it only with whom may decrypt the code; for third-party verification, give the domain and `--fingerprint %s` instead", c.Fingerprint)
				return nil
			case remove != "":
				if err := removeContext(remove); err != nil {
					return err
				}
				u.step("Removed the context of %s", remove)
				return nil
			}
			return errors.New("pass --list, --export APP_ID or --remove APP_ID")
		},
	}
	f := cmd.Flags()
	f.BoolVar(&list, "list", false, "list saved contexts")
	f.StringVar(&export, "export", "", "export an app's context to a file")
	f.StringVarP(&output, "output", "o", "", "with --export: the file to write (default APP_ID.toml)")
	f.StringVar(&remove, "remove", "", "remove an app's context")
	cmd.MarkFlagsMutuallyExclusive("list", "export", "remove")
	return cmd
}

func hardwareCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "hardware",
		Short: "List the operator's hardware",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			hw, err := c.Hardware(cmd.Context())
			if err != nil {
				return err
			}
			u := newUI(cmd)
			if asJSON {
				return u.json(hw)
			}
			tw := tabwriter.NewWriter(u.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tMEMORY\tCORES\tTEE\tAVAILABLE")
			for _, h := range hw {
				fmt.Fprintf(tw, "%s\t%d MiB\t%d\t%s\t%d\n", sanitize(h.Name), h.MemoryMiB, h.Cores, sanitize(h.TEE), h.Available)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func projectCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "project", Short: "List or create projects"}
	var asJSON bool
	ls := &cobra.Command{
		Use: "list", Short: "List your projects", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			ps, err := c.Projects(cmd.Context())
			if err != nil {
				return err
			}
			u := newUI(cmd)
			if asJSON {
				return u.json(ps)
			}
			for _, p := range ps {
				fmt.Fprintln(u.out, sanitize(p.Name))
			}
			return nil
		},
	}
	ls.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a project", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			p, err := c.CreateProject(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			newUI(cmd).step("Project %s", sanitize(p.Name))
			return nil
		},
	}
	cmd.AddCommand(ls, create)
	return cmd
}

func userCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Manage users and tokens (administrators)"}
	var admin bool
	add := &cobra.Command{
		Use: "add NAME", Short: "Create a user; prints its token once", Args: args("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			r, err := c.CreateUser(cmd.Context(), args[0], admin)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), sanitize(r.Token))
			return nil
		},
	}
	add.Flags().BoolVar(&admin, "admin", false, "administrator")
	revoke := &cobra.Command{
		Use: "revoke-token TOKEN_ID", Short: "Revoke an API token", Args: args("TOKEN_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			newUI(cmd).step("Revoked token %s", args[0])
			return nil
		},
	}
	var asJSON bool
	tokens := &cobra.Command{
		Use: "tokens", Short: "List your API tokens (ids, not the tokens themselves)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := apiClient()
			if err != nil {
				return err
			}
			ts, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			u := newUI(cmd)
			if asJSON {
				return u.json(ts)
			}
			tw := tabwriter.NewWriter(u.out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tCREATED\tREVOKED")
			for _, t := range ts {
				rev := "-"
				if t.RevokedAt != nil {
					rev = fmtTime(*t.RevokedAt)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", sanitize(t.ID), sanitize(t.Name), fmtTime(t.CreatedAt), rev)
			}
			return tw.Flush()
		},
	}
	tokens.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	whoami := &cobra.Command{
		Use: "whoami", Short: "Show who you are logged in as", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, l, err := apiClient()
			if err != nil {
				return err
			}
			me, err := c.Me(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s (%s) at %s\n", sanitize(me.Name), sanitize(me.ID), sanitize(l.URL))
			return nil
		},
	}
	cmd.AddCommand(add, revoke, whoami, tokens)
	return cmd
}
