package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/bundle/pack"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/runtimes"
	sealedpkg "github.com/mse-in-go/mse/internal/sealed"
)

// DefaultLifetime is an app's lifetime when mse.toml sets no expiration_date.
const DefaultLifetime = 7 * 24 * time.Hour

type deployOpts struct {
	path     string
	noVerify bool
	yes      bool
	timeout  timeoutFlag
	trust    trustFlags
	json     bool
}

func deployCmd() *cobra.Command {
	var o deployOpts
	cmd := &cobra.Command{
		Use:   "deploy",
		Short: "Encrypt the code, deploy it, verify the enclave, then send the code key",
		Long: `deploy runs the whole flow: package and encrypt the code under a fresh key,
upload it, wait for the node, verify its evidence (genuine TEE, trusted runtime,
exactly your code and configuration), and only then send the code key (and, with
[cloud.ssl], your certificate's private key) straight to the node over the
verified TLS session. The app context, with the code key, is saved 0600.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return deploy(cmd.Context(), newUI(cmd), cmd.InOrStdin(), &o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.path, "path", "mse.toml", "path to the app's mse.toml")
	f.BoolVar(&o.noVerify, "no-verify", false, "do NOT verify the enclave before sending it the code key (insecure)")
	f.BoolVarP(&o.yes, "yes", "y", false, "stop a running app of the same name without asking")
	f.Var(&o.timeout, "timeout", "give up after this long: a duration (10m) or MSE's integer minutes (default: 5m, or start_timeout plus 2m)")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	o.trust.register(f)
	return cmd
}

// DeployResult is what deploy prints with --json.
type DeployResult struct {
	AppID       string `json:"app_id"`
	Name        string `json:"name"`
	URL         string `json:"url"`
	Domain      string `json:"domain"`
	Verified    bool   `json:"verified"`
	TEE         string `json:"tee"`
	Simulated   bool   `json:"simulated"`
	Fingerprint string `json:"certificate_sha256"`
	Context     string `json:"context"`
	Certificate string `json:"certificate_file"`
	Curl        string `json:"curl"`
}

func deploy(ctx context.Context, u *ui, stdin io.Reader, o *deployOpts) (err error) {
	now := time.Now()
	if _, serr := os.Stat(o.path); errors.Is(serr, os.ErrNotExist) {
		return fmt.Errorf("no %s here: run deploy in your app's directory, pass --path DIR/mse.toml, or create an app with `mse cloud scaffold NAME`", o.path)
	}
	conf, err := config.Load(o.path, now)
	if err != nil {
		return err
	}
	timeout := o.timeout.d
	if timeout == 0 {
		timeout = max(5*time.Minute, conf.Cloud.StartTimeout+2*time.Minute)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, login, err := apiClient()
	if err != nil {
		return err
	}
	policy, err := o.trust.policy()
	if err != nil {
		return err
	}
	if !o.noVerify {
		if err := checkRuntimeKnown(ctx, policy, c); err != nil {
			return err
		}
	}
	if o.noVerify {
		u.warn("--no-verify: the enclave will NOT be verified. The code key goes to whatever answers, which may be the operator. Use only for debugging.")
	} else if simAccepted(policy) {
		u.warn("simulation mode: the node's evidence is SIMULATED and proves nothing about the hardware; the operator can read your code and key. For development only.")
	}
	mode := conf.TLSMode()
	entry := "entrypoint " + strings.Join(conf.Entrypoint, " ")
	if conf.PythonApplication != "" {
		entry = "python_application " + conf.PythonApplication
	}
	u.step("Read %s: app %q (%s), TLS %s", o.path, conf.Name, entry, mode)
	rt, err := resolveRuntime(ctx, c, conf)
	if err != nil {
		return err
	}
	u.step("Runtime %s (%s, %s): %s", sanitize(rt.Name), sanitize(rt.Image), rt.Kind, rt.Digest)
	startTimeout := conf.Cloud.StartTimeout
	if startTimeout <= 0 {
		startTimeout = config.DefaultStartTimeout
	}

	// A running app of the same name: ask, or -y.
	var replaced []string
	running, err := c.Apps(ctx, client.ListOptions{Name: conf.Name})
	if err != nil {
		return err
	}
	if len(running) > 0 {
		ids := make([]string, len(running))
		for i, a := range running {
			ids[i] = a.ID
		}
		if !o.yes {
			if !u.tty {
				return fmt.Errorf("an app named %q is already running (%s); pass -y to stop it and deploy again, or rename the app in %s", conf.Name, strings.Join(ids, ", "), o.path)
			}
			fmt.Fprintf(u.err, "An app named %q is already running (%s). Stop it and deploy again? [y/N] ", conf.Name, strings.Join(ids, ", "))
			line, _ := bufio.NewReader(stdin).ReadString('\n')
			if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
				return errors.New("deploy cancelled")
			}
		}
		if mode == config.TLSOwner {
			// Your domain can serve one app at a time: stop the old one first.
			if err := stopApps(ctx, u, c, ids); err != nil {
				return err
			}
		} else {
			// The new app gets its own domain: the old one keeps serving
			// until the new one is verified and running.
			replaced = ids
		}
	}

	var simRootNeeded = simAccepted(policy) && !o.noVerify
	vs := &verifiers{policy: policy, now: time.Now}
	if simRootNeeded {
		if vs.simRoot, err = o.trust.loadSimRoot(ctx, u, policy, c); err != nil {
			return err
		}
	}

	// Package and encrypt.
	key, err := bundle.NewKey()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp("", "mse-bundle-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	start := time.Now()
	bar := u.progress("Encrypting", treeSize(conf.Cloud.Code))
	sealed, err := pack.Seal(conf.Cloud.Code, tmp, key, bundle.DefaultLimits(), bar.set)
	bar.done(sealed.PlainSize)
	if err != nil {
		return fmt.Errorf("package %s: %w", conf.Cloud.Code, err)
	}
	codeDigest := hex.EncodeToString(sealed.Digest[:])
	u.step("Encrypted %s: %d files, %s → %s in %s (code digest %s…)", conf.Cloud.Code, sealed.Files, humanBytes(sealed.PlainSize), humanBytes(sealed.Size),
		time.Since(start).Round(time.Millisecond), codeDigest[:16])

	expires := conf.Cloud.ExpirationDate
	if expires.IsZero() {
		expires = now.Add(DefaultLifetime)
	}
	expires = expires.UTC().Truncate(time.Second)
	req := client.CreateAppRequest{
		Name: conf.Name, Project: conf.Cloud.Project, Hardware: conf.Cloud.Hardware, Entrypoint: conf.Entrypoint,
		PythonApplication: conf.PythonApplication, HealthcheckEndpoint: conf.HealthcheckEndpoint, ExpiresAt: expires,
		TLSMode: mode, CodeDigest: codeDigest, Runtime: rt.Image + "@" + rt.Digest, StartTimeoutSeconds: int64(startTimeout / time.Second),
	}
	var ownerKeyPEM []byte
	if mode == config.TLSOwner {
		certPEM, err := conf.Cloud.SSL.ReadCertificate()
		if err != nil {
			return err
		}
		if ownerKeyPEM, err = conf.Cloud.SSL.ReadPrivateKey(); err != nil {
			return fmt.Errorf("cloud.ssl.private_key: %w", err)
		}
		req.Domain = conf.Cloud.SSL.DomainName
		req.OwnerCertificate = string(certPEM)
	}
	appSecrets, err := conf.Cloud.ReadSecrets()
	if err != nil {
		return fmt.Errorf("cloud.secrets: %w", err)
	}
	sealedPlain, err := conf.Cloud.ReadSealedSecrets()
	if err != nil {
		return fmt.Errorf("cloud.sealed_secrets: %w", err)
	}

	// Stage 1: upload.
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return err
	}
	start = time.Now()
	bar = u.progress("Uploading", sealed.Size)
	app, err := c.CreateApp(ctx, req, tmp, bar.set)
	bar.done(sealed.Size)
	if err != nil {
		return err
	}
	u.step("Uploaded the encrypted code in %s: app %s created, domain %s", time.Since(start).Round(time.Millisecond), app.ID, strings.Join(app.Domains, ", "))
	// From here on, a failure stops the app: a node that was not verified, or
	// did not start, must not linger (it never received the key unless the
	// failure came after stage 2).
	defer func() {
		if err == nil {
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, serr := c.Stop(sctx, app.ID); serr == nil {
			u.info("stopped app %s (logs: mse cloud logs %s)", app.ID, app.ID)
		}
	}()

	// What the node must attest: our own values, plus the id and domains the
	// backend assigned.
	spec := config.Spec{
		AppID: app.ID, Name: conf.Name, Domains: app.Domains, Entrypoint: conf.Entrypoint, PythonApplication: conf.PythonApplication,
		HealthcheckEndpoint: conf.HealthcheckEndpoint, ExpiresAt: expires, TLSMode: mode, OwnerCertificate: req.OwnerCertificate,
		Runtime: rt, StartTimeoutSeconds: req.StartTimeoutSeconds,
	}
	if mode == config.TLSOwner && (len(app.Domains) != 1 || app.Domains[0] != strings.TrimSuffix(strings.ToLower(conf.Cloud.SSL.DomainName), ".")) {
		return fmt.Errorf("the backend assigned domains %v, not your domain %s; refusing to continue", app.Domains, conf.Cloud.SSL.DomainName)
	}
	confDigest, err := spec.Digest()
	if err != nil {
		return err
	}

	if _, err := waitStatus(ctx, u, c, app.ID, "Waiting for the node", "initializing", "running"); err != nil {
		return fmt.Errorf("the node did not come up: %w (see `mse cloud logs %s`)", err, app.ID)
	}
	u.step("Node is up and waiting for its secrets")

	domain := app.Domains[0]
	runtimeDigest, err := runtimes.DigestBytes(rt.Digest)
	if err != nil {
		return err
	}
	opts := ratls.Options{Verifiers: vs.For, Policy: policy, Now: time.Now(),
		Expect: ratls.Expect{Domain: domain, AppID: app.ID, CodeDigest: sealed.Digest[:], ConfigDigest: confDigest, RuntimeDigest: runtimeDigest}}
	p := &pinned{verify: func(cert *x509.Certificate) (*ratls.Identity, error) {
		if o.noVerify {
			return &ratls.Identity{Certificate: cert, Fingerprint: ratls.Fingerprint(cert)}, nil
		}
		opts.Now = time.Now()
		return ratls.Verify(ctx, cert, opts)
	}}
	hc := httpClient(app.RouterAddr, domain, p, 2*time.Minute)

	// Stage 2 preparation: verification happens in the TLS handshake of
	// this first request.
	if err := waitWaiting(ctx, hc, domain, p); err != nil {
		return err
	}
	id, _ := p.identity()
	if !o.noVerify {
		v := id.Verified
		sim := ""
		if v.Simulated {
			sim = " (SIMULATED)"
		}
		u.step("Verified the enclave: TEE %s%s, measurement %s…, signer %s…, TCB %s", v.Type, sim, hexShort(v.Measurement), hexShort(v.Signer), v.TCBStatus)
		u.info("app id, code digest, config digest and runtime %s match what you sent; certificate sha256 %s", rt.Digest, id.Fingerprint)
		if _, err := checkFresh(ctx, hc, domain, p, opts); err != nil {
			return fmt.Errorf("fresh evidence: %w", err)
		}
		u.step("Fresh evidence over a random nonce verified on the same TLS session")
	}

	sreq := nodeapi.SecretsRequest{UUID: app.ID, CodeSecretKey: key.Hex(), AppSecrets: json.RawMessage(appSecrets)}
	if sealedPlain != nil {
		// Sealed to the enclave's attested key: only that node can open them.
		if sreq.SealedSecrets, err = sealedpkg.Seal(id.Claims.SealingKey, app.ID, sealedPlain); err != nil {
			return fmt.Errorf("seal cloud.sealed_secrets: %w", err)
		}
	}
	if ownerKeyPEM != nil {
		sreq.SSLPrivateKey = string(ownerKeyPEM)
	}
	if err := sendSecrets(ctx, hc, domain, &sreq); err != nil {
		return err
	}
	u.step("Sent the code key over the verified session; the node checked it against the whole bundle and accepted it")

	if _, err := waitStatus(ctx, u, c, app.ID, fmt.Sprintf("Starting the app (start_timeout %s)", startTimeout), "running"); err != nil {
		if lines := lastLogLines(context.Background(), c, app.ID, 15); len(lines) > 0 {
			fmt.Fprintf(u.err, "Last lines of the app's log:\n  %s\n", strings.Join(lines, "\n  "))
		}
		return fmt.Errorf("the app did not start: %w (see `mse cloud logs %s`)", err, app.ID)
	}
	u.step("App is running")

	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Certificate.Raw})
	actx := &AppContext{
		AppID: app.ID, Name: conf.Name, BackendURL: login.URL, Domains: app.Domains, URL: app.URL, RouterAddr: app.RouterAddr,
		TLSMode: mode, CodeKey: key.Hex(), CodeDigest: codeDigest, ConfigDigest: hex.EncodeToString(confDigest),
		Fingerprint: id.Fingerprint, Verified: !o.noVerify, Certificate: string(certPEM), ExpiresAt: expires, CreatedAt: time.Now().UTC(),
	}
	if !o.noVerify {
		actx.TEE, actx.Simulated = id.Verified.Type, id.Verified.Simulated
		actx.Measurement, actx.Signer = hex.EncodeToString(id.Verified.Measurement), hex.EncodeToString(id.Verified.Signer)
	}
	if mode == config.TLSOwner {
		actx.Certificate = req.OwnerCertificate
	}
	ctxPath, certPath, err := saveContext(actx)
	if err != nil {
		return fmt.Errorf("save the app context: %w", err)
	}
	u.step("Saved the app context (with the code key, mode 0600): %s", ctxPath)

	// Check that the app answers through the router with the expected certificate.
	code, body, err := fetchApp(ctx, app.RouterAddr, domain, mode, id.Certificate, req.OwnerCertificate)
	if err != nil {
		return fmt.Errorf("the app is running but did not answer through the router: %w", err)
	}
	u.step("The app answers over TLS (HTTP %d, %d bytes from /)", code, len(body))

	if err := stopApps(ctx, u, c, replaced); err != nil {
		return err
	}

	curl := curlLine(app.URL, domain, app.RouterAddr, certPath, mode)
	res := DeployResult{AppID: app.ID, Name: conf.Name, URL: app.URL, Domain: domain, Verified: !o.noVerify, Fingerprint: id.Fingerprint,
		Context: ctxPath, Certificate: certPath, Curl: curl}
	if !o.noVerify {
		res.TEE, res.Simulated = id.Verified.Type, id.Verified.Simulated
	}
	if o.json {
		return u.json(res)
	}
	fmt.Fprintf(u.out, "\nYour app is running at %s\n", app.URL)
	fmt.Fprintf(u.out, "Try it:\n  %s\n", curl)
	if mode == config.TLSSelf && !o.noVerify {
		fmt.Fprintf(u.out, "Anyone can check the enclave behind it:\n  %s\n", verifyLine(domain, app.RouterAddr, id.Fingerprint, id.Verified.Simulated))
	}
	return nil
}

func stopApps(ctx context.Context, u *ui, c *client.Client, ids []string) error {
	for _, id := range ids {
		if _, err := c.Stop(ctx, id); err != nil {
			return fmt.Errorf("stop app %s: %w", id, err)
		}
		u.step("Stopped the previous app %s", id)
	}
	return nil
}

// verifyLine is an `mse cloud verify` command that works as printed.
func verifyLine(domain, routerAddr, fingerprint string, simulated bool) string {
	line := "mse cloud verify " + domain
	if _, port, err := net.SplitHostPort(routerAddr); err == nil && port != "443" {
		line += " --addr " + routerAddr
	}
	line += " --fingerprint " + fingerprint
	if simulated {
		line += " --simulation"
	}
	return line
}

func hexShort(b []byte) string {
	h := hex.EncodeToString(b)
	if len(h) > 16 {
		return h[:16]
	}
	if h == "" {
		return "(none)"
	}
	return h
}

// waitWaiting does the first request of the session: its TLS handshake
// verifies the node; the answer must say the node waits for secrets.
func waitWaiting(ctx context.Context, hc *http.Client, domain string, p *pinned) error {
	var last error
	for i := 0; i < 50; i++ {
		resp, err := p.getRoot(ctx, hc, domain)
		if err != nil {
			if _, verr := p.identity(); verr != nil {
				return verr
			}
			last = err
			select {
			case <-ctx.Done():
				return fmt.Errorf("cannot reach the node through the router: %w", last)
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if resp.Header.Get(nodeapi.HeaderStatus) != nodeapi.StatusWaiting {
			return fmt.Errorf("the node is not waiting for secrets (HTTP %d, %s: %q)", resp.StatusCode, nodeapi.HeaderStatus, resp.Header.Get(nodeapi.HeaderStatus))
		}
		return nil
	}
	return fmt.Errorf("cannot reach the node through the router: %w", last)
}

func sendSecrets(ctx context.Context, hc *http.Client, domain string, sreq *nodeapi.SecretsRequest) error {
	b, err := json.Marshal(sreq)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", nodeURL(domain)+"/", bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("send the secrets: %w", err)
	}
	defer resp.Body.Close()
	var r nodeapi.Response
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&r)
	if resp.StatusCode != 200 {
		return fmt.Errorf("the node refused the secrets (HTTP %d): %s", resp.StatusCode, r.Error)
	}
	return nil
}

// fetchApp GETs / through the router, pinned to the certificate the app must
// serve: the verified RA-TLS one, or the owner's.
// Any HTTP answer counts: readiness was the health check, and "/" of an
// API may well answer 401.
func fetchApp(ctx context.Context, routerAddr, domain, mode string, ra *x509.Certificate, ownerChain string) (int, []byte, error) {
	der := ra.Raw
	if mode == config.TLSOwner {
		blk, _ := pem.Decode([]byte(ownerChain))
		if blk == nil {
			return 0, nil, errors.New("owner certificate does not parse")
		}
		der = blk.Bytes
	}
	hc := httpClient(routerAddr, domain, pinnedTo(der), 30*time.Second)
	var last error
	for i := 0; i < 25; i++ {
		req, _ := http.NewRequestWithContext(ctx, "GET", nodeURL(domain)+"/", nil)
		resp, err := hc.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			// 502 is the node saying the app did not answer.
			if rerr == nil && resp.StatusCode != http.StatusBadGateway {
				return resp.StatusCode, b, nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return 0, nil, last
		case <-time.After(200 * time.Millisecond):
		}
	}
	return 0, nil, last
}

// curlLine is a curl command that works as printed: --resolve sends the
// app's domain to the router.
func curlLine(appURL, domain, routerAddr, certPath, mode string) string {
	port := "443"
	host := routerAddr
	if i := strings.LastIndex(routerAddr, ":"); i >= 0 {
		host, port = routerAddr[:i], routerAddr[i+1:]
	}
	resolve := fmt.Sprintf("--resolve %s:%s:%s ", domain, port, host)
	if mode == config.TLSOwner {
		return fmt.Sprintf("curl %s%s", resolve, appURL)
	}
	return fmt.Sprintf("curl --cacert %s %s%s", shellQuote(certPath), resolve, appURL)
}

func shellQuote(s string) string {
	if strings.ContainsAny(s, " '\"$\\") {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// timeoutFlag is a duration ("10m", "90s") or, as in MSE, an integer number
// of minutes.
type timeoutFlag struct{ d time.Duration }

func (t *timeoutFlag) String() string {
	if t.d == 0 {
		return ""
	}
	return t.d.String()
}

func (t *timeoutFlag) Set(s string) error {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 {
			return fmt.Errorf("%d minutes: the timeout must be positive", n)
		}
		t.d = time.Duration(n) * time.Minute
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return fmt.Errorf("%q is not a positive duration (10m) nor a number of minutes", s)
	}
	t.d = d
	return nil
}

func (t *timeoutFlag) Type() string { return "duration" }
