package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
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

	"github.com/mse-in-go/mse/internal/appverify"
	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/bundle/pack"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/ratls"
	"github.com/mse-in-go/mse/internal/runtimes"
	sealedpkg "github.com/mse-in-go/mse/internal/sealed"
	"github.com/mse-in-go/mse/internal/spec"
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
	// untrustedSSL is MSE's --untrusted-ssl (tls_mode operator); acme is
	// --acme (tls_mode acme, the operator's default CA unless mse.toml
	// names one); cacert adds roots to check a CA's certificate with.
	untrustedSSL bool
	acme         bool
	cacert       string
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
verified TLS session. The app context, with the code key, is saved 0600.

TLS modes: by default (self) the app serves the enclave's own RA-TLS
certificate; [cloud.ssl] in mse.toml serves your certificate (owner);
[cloud.acme], or --acme, has the node get a certificate from an ACME CA for
its own key, which browsers accept (acme); --untrusted-ssl lets the operator
terminate TLS with its certificate (operator: the operator can read all
traffic). In every mode the enclave itself is verified over its own TLS.`,
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
	f.BoolVar(&o.untrustedSSL, "untrusted-ssl", false, "tls_mode operator (MSE's --untrusted-ssl): the operator terminates TLS with its own certificate and CAN READ ALL TRAFFIC; for development")
	f.BoolVar(&o.acme, "acme", false, "tls_mode acme: the node gets a certificate for its own key from the operator's default ACME CA (as an empty [cloud.acme] in mse.toml)")
	f.StringVar(&o.cacert, "cacert", "", "PEM `FILE` of roots, beside the system's, to check the CA's certificate the app serves in tls_mode acme or operator")
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
	TLSMode     string `json:"tls_mode"`
	// ACMEDirectory is the CA of tls_mode acme.
	ACMEDirectory string `json:"acme_directory,omitempty"`
}

// deployment is one run of deploy: what each step learns, for the next.
// The steps are named as docs/protocol.md ("The owner's deploy, step by
// step") names them, and run in that order.
type deployment struct {
	o     *deployOpts
	u     *ui
	stdin io.Reader
	now   time.Time

	// read config
	conf    *config.AppConfig
	mode    string
	roots   *x509.CertPool // system roots + --cacert
	timeout time.Duration
	c       *client.Client
	login   *Login
	policy  *attest.Policy
	// resolve runtime
	rt           config.Runtime
	startTimeout time.Duration
	vs           *verifiers
	// resolve TLS: the ACME CA (acme mode)
	acme *spec.ACME
	// replace running
	replaced []string
	// seal
	key         bundle.Key
	bundleFile  *os.File
	sealed      pack.Sealed
	codeDigest  string
	expires     time.Time
	req         client.CreateAppRequest
	ownerKeyPEM []byte
	appSecrets  []byte
	sealedPlain []byte
	// upload
	app        *client.App
	domain     string
	routerAddr string
	confDigest []byte
	// verify, fresh evidence
	sess *session
	id   *ratls.Identity
	// send secrets: keySent once the request may have reached the node,
	// keyAccepted once the node said it holds the key.
	keySent, keyAccepted bool
	// save context
	ctxPath, certPath string
	// check through the router: what the app serves
	served *served
}

func deploy(ctx context.Context, u *ui, stdin io.Reader, o *deployOpts) error {
	d := &deployment{o: o, u: u, stdin: stdin, now: time.Now()}
	defer d.removeBundle()
	if err := d.readConfig(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	for _, step := range []func(context.Context) error{d.resolveRuntime, d.resolveTLS, d.replaceRunning, d.seal, d.upload} {
		if err := step(ctx); err != nil {
			return err
		}
	}
	// From here on the app exists on the backend: a failure before the node
	// accepted the key stops it; after that, the context is saved and the
	// app is left to the owner.
	for _, step := range []func(context.Context) error{
		d.waitForNode, d.verify, d.freshEvidence, d.sendSecrets, d.saveContext, d.waitRunning, d.checkThroughRouter, d.stopReplaced,
	} {
		if err := step(ctx); err != nil {
			return d.failed(err)
		}
	}
	return d.print()
}

// readConfig reads mse.toml, the login and the trust policy.
func (d *deployment) readConfig() error {
	o := d.o
	if _, err := os.Stat(o.path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no %s here: run deploy in your app's directory, pass --path DIR/mse.toml, or create an app with `mse cloud scaffold NAME`", o.path)
	}
	conf, err := config.Load(o.path, d.now)
	if err != nil {
		return err
	}
	d.conf = conf
	if d.mode, err = tlsMode(conf, o); err != nil {
		return err
	}
	// Read once: what acme and operator modes check the served chain with.
	if d.roots, err = systemRootsWith(o.cacert); err != nil {
		return err
	}
	d.startTimeout = conf.Cloud.StartTimeout
	if d.startTimeout <= 0 {
		d.startTimeout = config.DefaultStartTimeout
	}
	d.timeout = o.timeout.d
	if d.timeout == 0 {
		d.timeout = max(5*time.Minute, conf.Cloud.StartTimeout+2*time.Minute)
	}
	if d.c, d.login, err = apiClient(); err != nil {
		return err
	}
	if d.policy, err = o.trust.policy(); err != nil {
		return err
	}
	if d.mode == config.TLSOperator {
		d.u.warn("%s", operatorWarning)
	}
	if o.noVerify {
		d.u.warn("--no-verify: the enclave will NOT be verified. The code key goes to whatever answers, which may be the operator. Use only for debugging.")
	} else if simAccepted(d.policy) {
		d.u.warn("simulation mode: the node's evidence is SIMULATED and proves nothing about the hardware; the operator can read your code and key. For development only.")
	}
	entry := "entrypoint " + strings.Join(conf.Entrypoint, " ")
	if conf.PythonApplication != "" {
		entry = "python_application " + conf.PythonApplication
	}
	d.u.step("Read %s: app %q (%s), TLS %s", o.path, conf.Name, entry, d.mode)
	return nil
}

// resolveRuntime matches mse.toml's docker key against the operator's
// catalog, and gets what verification needs before anything is uploaded:
// a policy that names a runtime, and the simulated root when sim is
// accepted.
func (d *deployment) resolveRuntime(ctx context.Context) error {
	if !d.o.noVerify {
		if err := checkRuntimeKnown(ctx, d.policy, d.c); err != nil {
			return err
		}
	}
	rt, err := resolveRuntime(ctx, d.c, d.conf)
	if err != nil {
		return err
	}
	d.rt = rt
	d.u.step("Runtime %s (%s, %s): %s", sanitize(rt.Name), sanitize(rt.Image), sanitize(rt.Kind), sanitize(rt.Digest))
	d.vs = &verifiers{policy: d.policy, now: time.Now}
	if simAccepted(d.policy) && !d.o.noVerify {
		if d.vs.simRoot, err = d.o.trust.loadSimRoot(ctx, d.u, d.policy, d.c); err != nil {
			return err
		}
	}
	return nil
}

// replaceRunning finds running apps of the same name and asks (or -y) to
// replace them. In scenario 2 they are stopped now (the owner's domain
// serves one app at a time); otherwise they keep serving until the new
// app answers (stopReplaced).
func (d *deployment) replaceRunning(ctx context.Context) error {
	running, err := d.c.Apps(ctx, client.ListOptions{Name: d.conf.Name})
	if err != nil {
		return err
	}
	if len(running) == 0 {
		return nil
	}
	ids := make([]string, len(running))
	for i, a := range running {
		ids[i] = a.ID
	}
	if !d.o.yes {
		if !d.u.tty {
			return fmt.Errorf("an app named %q is already running (%s); pass -y to stop it and deploy again, or rename the app in %s", d.conf.Name, strings.Join(ids, ", "), d.o.path)
		}
		fmt.Fprintf(d.u.err, "An app named %q is already running (%s). Stop it and deploy again? [y/N] ", d.conf.Name, strings.Join(ids, ", "))
		line, _ := bufio.NewReader(d.stdin).ReadString('\n')
		if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
			return errors.New("deploy cancelled")
		}
	}
	if d.customDomain() != "" {
		return stopApps(ctx, d.u, d.c, ids)
	}
	d.replaced = ids
	return nil
}

// customDomain is the owner's own domain ([cloud.ssl], or [cloud.acme]
// domain_name), or "" for the domain the platform assigns. A domain serves
// one app at a time.
func (d *deployment) customDomain() string {
	switch {
	case d.mode == config.TLSOwner:
		return d.conf.Cloud.SSL.DomainName
	case d.mode == config.TLSACME && d.conf.Cloud.ACME != nil:
		return d.conf.Cloud.ACME.DomainName
	}
	return ""
}

// seal packages and encrypts the code under a fresh key, and reads what
// stage 1 and stage 2 will carry.
func (d *deployment) seal(ctx context.Context) error {
	conf := d.conf
	key, err := bundle.NewKey()
	if err != nil {
		return err
	}
	d.key = key
	if d.bundleFile, err = os.CreateTemp("", "mse-bundle-*"); err != nil {
		return fmt.Errorf("a temporary file for the encrypted bundle: %w", err)
	}
	start := time.Now()
	bar := d.u.progress("Encrypting", treeSize(conf.Cloud.Code))
	sealed, err := pack.Seal(conf.Cloud.Code, d.bundleFile, key, bundle.DefaultLimits(), bar.set)
	bar.done(sealed.PlainSize)
	if err != nil {
		return fmt.Errorf("package %s: %w", conf.Cloud.Code, err)
	}
	d.sealed = sealed
	d.codeDigest = hex.EncodeToString(sealed.Digest[:])
	d.u.step("Encrypted %s: %d files, %s → %s in %s (code digest %s…)", conf.Cloud.Code, sealed.Files, humanBytes(sealed.PlainSize), humanBytes(sealed.Size),
		time.Since(start).Round(time.Millisecond), d.codeDigest[:16])

	d.expires = conf.Cloud.ExpirationDate
	if d.expires.IsZero() {
		d.expires = d.now.Add(DefaultLifetime)
	}
	d.expires = d.expires.UTC().Truncate(time.Second)
	d.req = client.CreateAppRequest{
		Name: conf.Name, Project: conf.Cloud.Project, Hardware: conf.Cloud.Hardware, Entrypoint: conf.Entrypoint,
		PythonApplication: conf.PythonApplication, HealthcheckEndpoint: conf.HealthcheckEndpoint, ExpiresAt: d.expires,
		TLSMode: d.mode, CodeDigest: d.codeDigest, Runtime: d.rt.Image + "@" + d.rt.Digest, StartTimeoutSeconds: int64(d.startTimeout / time.Second),
	}
	if d.mode == config.TLSOwner {
		certPEM, err := conf.Cloud.SSL.ReadCertificate()
		if err != nil {
			return err
		}
		if d.ownerKeyPEM, err = conf.Cloud.SSL.ReadPrivateKey(); err != nil {
			return fmt.Errorf("cloud.ssl.private_key: %w", err)
		}
		d.req.OwnerCertificate = string(certPEM)
	}
	d.req.Domain = d.customDomain()
	d.req.ACME = d.acme
	if d.appSecrets, err = conf.Cloud.ReadSecrets(); err != nil {
		return fmt.Errorf("cloud.secrets: %w", err)
	}
	if d.sealedPlain, err = conf.Cloud.ReadSealedSecrets(); err != nil {
		return fmt.Errorf("cloud.sealed_secrets: %w", err)
	}
	return nil
}

func (d *deployment) removeBundle() {
	if d.bundleFile != nil {
		d.bundleFile.Close()
		os.Remove(d.bundleFile.Name())
	}
}

// upload is stage 1: the configuration and the encrypted bundle. The
// answer's id, domain and router address are checked before any use: the
// domain goes into what the node must attest, and into the commands
// printed at the end.
func (d *deployment) upload(ctx context.Context) error {
	if _, err := d.bundleFile.Seek(0, io.SeekStart); err != nil {
		return err
	}
	start := time.Now()
	bar := d.u.progress("Uploading", d.sealed.Size)
	app, err := d.c.CreateApp(ctx, d.req, d.bundleFile, bar.set)
	bar.done(d.sealed.Size)
	if err != nil {
		return err
	}
	d.app = app
	if err := d.checkAssigned(); err != nil {
		return d.failed(err)
	}
	d.domain, d.routerAddr = app.Domains[0], app.RouterAddr
	d.u.step("Uploaded the encrypted code in %s: app %s created, domain %s", time.Since(start).Round(time.Millisecond), app.ID, strings.Join(app.Domains, ", "))

	// What the node must attest: our own values, plus the id and domains the
	// backend assigned.
	spec := config.Spec{
		AppID: app.ID, Name: d.conf.Name, Domains: app.Domains, Entrypoint: d.conf.Entrypoint, PythonApplication: d.conf.PythonApplication,
		HealthcheckEndpoint: d.conf.HealthcheckEndpoint, ExpiresAt: d.expires, TLSMode: d.mode, OwnerCertificate: d.req.OwnerCertificate,
		Runtime: d.rt, StartTimeoutSeconds: d.req.StartTimeoutSeconds, ACME: d.acme,
	}
	if d.confDigest, err = spec.Digest(); err != nil {
		return d.failed(err)
	}
	return nil
}

// checkAssigned refuses an answer to stage 1 that deploy cannot use
// safely: no domain, a domain or router address that is not one, or, in
// scenario 2, a domain that is not the owner's.
func (d *deployment) checkAssigned() error {
	a := d.app
	if len(a.Domains) == 0 {
		return fmt.Errorf("the backend assigned app %s no domain; refusing to continue (report this to the operator)", a.ID)
	}
	for _, dom := range a.Domains {
		if err := checkDomain(a.ID, dom); err != nil {
			return err
		}
	}
	if _, _, err := splitRouterAddr(a.RouterAddr); err != nil {
		return err
	}
	if own := d.customDomain(); own != "" && (len(a.Domains) != 1 || a.Domains[0] != strings.TrimSuffix(strings.ToLower(own), ".")) {
		return fmt.Errorf("the backend assigned domains %v, not your domain %s; refusing to continue", a.Domains, own)
	}
	return nil
}

// waitForNode polls the app until its node is up (initializing).
func (d *deployment) waitForNode(ctx context.Context) error {
	if _, err := waitStatus(ctx, d.u, d.c, d.app.ID, "Waiting for the node", "initializing", "running"); err != nil {
		return fmt.Errorf("the node did not come up: %w (see `mse cloud logs %s`)", err, d.app.ID)
	}
	d.u.step("Node is up and waiting for its secrets")
	return nil
}

// verify opens the session to the node through the router; its first TLS
// handshake verifies the node's certificate (unless --no-verify), and the
// node must say it waits for its secrets.
func (d *deployment) verify(ctx context.Context) error {
	runtimeDigest, err := runtimes.DigestBytes(d.rt.Digest)
	if err != nil {
		return err
	}
	opts := ratls.Options{Verifiers: d.vs.For, Policy: d.policy, Now: time.Now(),
		Expect: ratls.Expect{Domain: d.domain, AppID: d.app.ID, CodeDigest: d.sealed.Digest[:], ConfigDigest: d.confDigest, RuntimeDigest: runtimeDigest}}
	d.sess = openSession(ctx, d.routerAddr, d.domain, opts, sessionOptions{noVerify: d.o.noVerify, timeout: 2 * time.Minute})
	if err := d.sess.waitWaiting(ctx); err != nil {
		return err
	}
	if d.id, err = d.sess.identity(); err != nil {
		return err
	}
	if d.o.noVerify {
		return nil
	}
	v := d.id.Verified
	sim := ""
	if v.Simulated {
		sim = " (SIMULATED)"
	}
	d.u.step("Verified the enclave: TEE %s%s, measurement %s…, signer %s…, TCB %s", v.Type, sim, hexShort(v.Measurement), hexShort(v.Signer), sanitize(v.TCBStatus))
	d.u.info("app id, code digest, config digest and runtime %s match what you sent; certificate sha256 %s", d.rt.Digest, d.id.Fingerprint)
	return nil
}

// freshEvidence asks the verified node for evidence over a random nonce,
// on the same session.
func (d *deployment) freshEvidence(ctx context.Context) error {
	if d.o.noVerify {
		return nil
	}
	if _, err := d.sess.fresh(ctx); err != nil {
		return fmt.Errorf("fresh evidence: %w", err)
	}
	d.u.step("Fresh evidence over a random nonce verified on the same TLS session")
	return nil
}

// sendSecrets is stage 2, on the verified session.
func (d *deployment) sendSecrets(ctx context.Context) error {
	sreq := nodeapi.SecretsRequest{UUID: d.app.ID, CodeSecretKey: d.key.Hex(), AppSecrets: json.RawMessage(d.appSecrets)}
	if d.sealedPlain != nil {
		// Sealed to the enclave's attested key: only that node can open them.
		var err error
		if sreq.SealedSecrets, err = sealedpkg.Seal(d.id.Claims.SealingKey, d.app.ID, d.sealedPlain); err != nil {
			return fmt.Errorf("seal cloud.sealed_secrets: %w", err)
		}
	}
	if d.ownerKeyPEM != nil {
		sreq.SSLPrivateKey = string(d.ownerKeyPEM)
	}
	d.keySent = true
	refused, err := d.sess.postSecrets(ctx, &sreq)
	if refused {
		d.keySent = false // the node answered no: it holds no key
	}
	if err != nil {
		return err
	}
	d.keyAccepted = true
	d.u.step("Sent the code key over the verified session; the node checked it against the whole bundle and accepted it")
	return nil
}

// saveContext saves the app context (with the code key, 0600) as soon as
// the node holds the key, so that no later failure can lose it.
func (d *deployment) saveContext(ctx context.Context) error {
	u, err := appURL(d.domain, d.routerAddr)
	if err != nil {
		return err
	}
	actx := &AppContext{
		AppID: d.app.ID, Name: d.conf.Name, BackendURL: d.login.URL, Domains: d.app.Domains, URL: u, RouterAddr: d.routerAddr,
		TLSMode: d.mode, ACMEDirectory: acmeDirectory(d.acme), CodeKey: d.key.Hex(), CodeDigest: d.codeDigest, ConfigDigest: hex.EncodeToString(d.confDigest),
		Fingerprint: d.id.Fingerprint, Verified: !d.o.noVerify, CreatedAt: time.Now().UTC(), ExpiresAt: d.expires,
		Certificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d.id.Certificate.Raw})),
	}
	if !d.o.noVerify {
		actx.TEE, actx.Simulated = d.id.Verified.Type, d.id.Verified.Simulated
		actx.Measurement, actx.Signer = hex.EncodeToString(d.id.Verified.Measurement), hex.EncodeToString(d.id.Verified.Signer)
	}
	if d.mode == config.TLSOwner {
		actx.Certificate = d.req.OwnerCertificate
	}
	if d.ctxPath, d.certPath, err = saveContext(actx); err != nil {
		return fmt.Errorf("save the app context: %w", err)
	}
	d.u.step("Saved the app context (with the code key, mode 0600): %s; it stays, whatever happens next", d.ctxPath)
	return nil
}

// waitRunning polls the app until it runs; failed polls are retried until
// --timeout (waitStatus).
func (d *deployment) waitRunning(ctx context.Context) error {
	a, err := waitStatus(ctx, d.u, d.c, d.app.ID, fmt.Sprintf("Starting the app (start_timeout %s)", d.startTimeout), "running")
	if err != nil {
		if lines := lastLogLines(context.Background(), d.c, d.app.ID, 15); len(lines) > 0 {
			fmt.Fprintf(d.u.err, "Last lines of the app's log:\n  %s\n", strings.Join(lines, "\n  "))
		}
		if a != nil && (a.Status == "on_error" || a.Status == "stopped") {
			return fmt.Errorf("the app did not start: %w", err)
		}
		// Still starting, or the backend did not answer: it may well run.
		return fmt.Errorf("the app was not seen running: %w", err)
	}
	d.u.step("App is running")
	return nil
}

// checkThroughRouter checks that the app answers through the router, as
// its users reach it, and says what that proves in the app's TLS mode:
// self and owner pin the certificate the app must serve; acme pins the
// enclave's key; operator checks the enclave behind the operator's TLS.
func (d *deployment) checkThroughRouter(ctx context.Context) error {
	var check func([]*x509.Certificate) error
	switch d.mode {
	case config.TLSOwner:
		blk, _ := pem.Decode([]byte(d.req.OwnerCertificate))
		if blk == nil {
			return errors.New("owner certificate does not parse")
		}
		check = pinCert(blk.Bytes)
	case config.TLSACME:
		check = pinKey(d.id.Certificate, d.domain, time.Now)
	case config.TLSOperator:
		return d.checkOperator(ctx)
	default:
		check = pinCert(d.id.Certificate.Raw)
	}
	code, body, chain, err := fetchApp(ctx, d.routerAddr, d.domain, check)
	if err != nil {
		return fmt.Errorf("the app is running but did not answer through the router: %w", err)
	}
	if d.mode != config.TLSACME {
		d.u.step("The app answers over TLS (HTTP %d, %d bytes from /)", code, len(body))
		return nil
	}
	// The node asks the CA once it runs: give the CA a moment.
	for deadline := time.Now().Add(acmeIssueWait); bytes.Equal(chain[0].Raw, d.id.Certificate.Raw) && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
		if code, body, chain, err = fetchApp(ctx, d.routerAddr, d.domain, check); err != nil {
			return fmt.Errorf("the app is running but did not answer through the router: %w", err)
		}
	}
	d.served = &served{chain: chain, isRATLS: bytes.Equal(chain[0].Raw, d.id.Certificate.Raw)}
	if d.served.isRATLS {
		d.u.step("The app answers over TLS (HTTP %d, %d bytes from /), still with the enclave's RA-TLS certificate: the CA has not issued its certificate yet (it may take a moment)", code, len(body))
		return nil
	}
	d.served.trust(d.domain, d.roots, time.Now())
	d.u.step("The app answers over TLS (HTTP %d, %d bytes from /) with a certificate from %s for the enclave's own key (sha256 %s)", code, len(body),
		sanitize(chain[0].Issuer.String()), ratls.Fingerprint(chain[0]))
	if d.served.trusted {
		d.u.info("it chains to your trusted roots for %s, so browsers accept it", d.domain)
	} else {
		d.u.warn("the CA's certificate for %s does not chain to your trusted roots (%s): browsers and curl refuse it; pass --cacert FILE if the CA is a private or test one", d.domain, sanitize(d.served.trustErr))
	}
	return nil
}

// acmeIssueWait is how long deploy waits for the CA's certificate in acme
// mode before it reports that the app still serves its RA-TLS certificate.
var acmeIssueWait = 20 * time.Second

// checkOperator is checkThroughRouter in operator mode, where the router
// serves the operator's certificate: the enclave behind it is checked as
// any client can (internal/appverify: fresh evidence over a direct
// connection, pinned to the certificate deploy verified), the operator's
// certificate against the system roots and --cacert, and deploy says what
// was not checked.
func (d *deployment) checkOperator(ctx context.Context) error {
	roots := d.roots
	var servedChain []*x509.Certificate
	if !d.o.noVerify {
		runtimeDigest, err := runtimes.DigestBytes(d.rt.Digest)
		if err != nil {
			return err
		}
		opts := ratls.Options{Verifiers: d.vs.For, Policy: d.policy, Now: time.Now(),
			Expect: ratls.Expect{Domain: d.domain, AppID: d.app.ID, CodeDigest: d.sealed.Digest[:], ConfigDigest: d.confDigest, RuntimeDigest: runtimeDigest}}
		res, err := appverify.Verify(ctx, appverify.Options{Domain: d.domain, Addr: d.routerAddr, RATLS: opts, Roots: roots, Timeout: 30 * time.Second,
			Precheck: func(c *x509.Certificate) error {
				if !bytes.Equal(c.Raw, d.id.Certificate.Raw) {
					return fmt.Errorf("verification failed: the enclave behind the router presents the RA-TLS certificate sha256 %s, not the one deploy verified (%s)", ratls.Fingerprint(c), d.id.Fingerprint)
				}
				return nil
			}})
		if err != nil {
			return fmt.Errorf("the app is running but its enclave could not be checked through the router: %w", err)
		}
		if res.Mode != config.TLSOperator {
			return fmt.Errorf("the node attests tls_mode %q, not operator", sanitize(res.Mode))
		}
		servedChain = res.Served
		d.u.step("The enclave behind the router is the one you verified (fresh evidence over a direct connection, ALPN %s)", nodeapi.ALPNRATLS)
	}
	check := func(chain []*x509.Certificate) error {
		if servedChain != nil && !bytes.Equal(chain[0].Raw, servedChain[0].Raw) {
			return fmt.Errorf("the router's certificate changed (sha256 %s…) since it was checked", ratls.Fingerprint(chain[0])[:12])
		}
		return nil
	}
	code, body, chain, err := fetchApp(ctx, d.routerAddr, d.domain, check)
	if err != nil {
		return fmt.Errorf("the app is running but did not answer through the router: %w", err)
	}
	d.served = &served{chain: chain}
	d.served.trust(d.domain, roots, time.Now())
	d.u.step("The app answers through the operator's TLS (HTTP %d, %d bytes from /); the operator's certificate sha256 %s, issued by %s", code, len(body),
		ratls.Fingerprint(chain[0]), sanitize(chain[0].Issuer.String()))
	if d.served.trusted {
		d.u.info("checked: the operator's certificate chains to your trusted roots for %s", d.domain)
	} else {
		d.u.warn("the operator's certificate for %s does not chain to your trusted roots (%s): browsers and curl refuse it; pass --cacert FILE if the operator uses a private CA", d.domain, sanitize(d.served.trustErr))
	}
	d.u.info("not checked, and it cannot be: what the operator does with the traffic it decrypts; the answer above came through the operator, not straight from the enclave")
	return nil
}

// stopReplaced stops the apps replaceRunning kept serving until now.
func (d *deployment) stopReplaced(ctx context.Context) error {
	return stopApps(ctx, d.u, d.c, d.replaced)
}

// print prints the result: the URL and the commands to reach and verify
// the app, built from the verified domain and quoted for a shell.
func (d *deployment) print() error {
	u, err := appURL(d.domain, d.routerAddr)
	if err != nil {
		return err
	}
	var curl string
	switch d.mode {
	case config.TLSACME, config.TLSOperator:
		curl, err = publicCurlLine(d.domain, d.routerAddr, d.o.cacert, !routerIsDomainAddress(context.Background(), d.domain, d.routerAddr))
	default:
		curl, err = curlLine(d.domain, d.routerAddr, d.certPath, d.mode)
	}
	if err != nil {
		return err
	}
	res := DeployResult{AppID: d.app.ID, Name: d.conf.Name, URL: u, Domain: d.domain, Verified: !d.o.noVerify, Fingerprint: d.id.Fingerprint,
		Context: d.ctxPath, Certificate: d.certPath, Curl: curl, TLSMode: d.mode, ACMEDirectory: acmeDirectory(d.acme)}
	if !d.o.noVerify {
		res.TEE, res.Simulated = d.id.Verified.Type, d.id.Verified.Simulated
	}
	if d.mode == config.TLSOperator {
		defer d.u.warn("%s", operatorWarning)
	}
	if d.o.json {
		return d.u.json(res)
	}
	fmt.Fprintf(d.u.out, "\nYour app is running at %s\n", u)
	fmt.Fprintf(d.u.out, "Try it:\n  %s\n", curl)
	if d.mode == config.TLSACME && (d.served == nil || d.served.isRATLS) {
		fmt.Fprintf(d.u.out, "  (the CA's certificate may take a moment to be issued; until then the app serves its RA-TLS certificate, which curl refuses)\n")
	}
	if d.mode != config.TLSOwner && !d.o.noVerify {
		line, err := verifyLine(d.domain, d.routerAddr, d.id.Fingerprint, d.id.Verified.Simulated)
		if err != nil {
			return err
		}
		fmt.Fprintf(d.u.out, "Anyone can check the enclave behind it:\n  %s\n", line)
	}
	return nil
}

// failed handles a failure after the upload. Before the node holds the
// key, the app is stopped: a node that was not verified, or never got its
// key, must not linger. Once the node accepted the key, the app is the
// owner's: its context is saved, it is not stopped, and the error says
// what the owner can do.
func (d *deployment) failed(err error) error {
	id := d.app.ID
	if d.keyAccepted {
		if d.ctxPath == "" {
			return fmt.Errorf("%w. App %s received its code key, but its context could not be saved: fix that, then stop the app (`mse cloud stop %s`) and deploy again", err, id, id)
		}
		return fmt.Errorf("%w. App %s received its code key and its context is saved (%s), so nothing is lost: check it with `mse cloud status %s` and `mse cloud logs %s`, or stop it with `mse cloud stop %s`",
			err, id, d.ctxPath, id, id, id)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, serr := d.c.Stop(sctx, id); serr == nil {
		d.u.info("stopped app %s (logs: mse cloud logs %s)", id, id)
		return err
	} else if d.keySent && d.id != nil {
		// The node may hold the key (its answer was lost) and the app could
		// not be stopped: keep the key.
		if cerr := d.saveContext(context.Background()); cerr == nil {
			return fmt.Errorf("%w. The code key may have reached app %s, which could not be stopped (%v); its context is saved (%s): check it with `mse cloud status %s`, or stop it with `mse cloud stop %s`",
				err, id, sanitize(serr.Error()), d.ctxPath, id, id)
		}
	}
	return fmt.Errorf("%w (app %s: see `mse cloud logs %s`; stop it with `mse cloud stop %s` if it still runs)", err, id, id, id)
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

func acmeDirectory(a *spec.ACME) string {
	if a == nil {
		return ""
	}
	return a.DirectoryURL
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
// Connection errors are retried (the router may not route the new domain
// yet), a failed verification is not.
func (s *session) waitWaiting(ctx context.Context) error {
	var last error
	for i := 0; i < 50; i++ {
		resp, err := s.connect(ctx)
		if err != nil {
			if _, verr := s.identity(); verr != nil {
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
		if st := resp.Header.Get(nodeapi.HeaderStatus); st != nodeapi.StatusWaiting {
			return fmt.Errorf("the node is not waiting for secrets (HTTP %d, %s: %q)", resp.StatusCode, nodeapi.HeaderStatus, sanitize(st))
		}
		return nil
	}
	return fmt.Errorf("cannot reach the node through the router: %w", last)
}

// postSecrets sends the stage-2 request on the session. refused reports
// that the node answered and said no (it holds no key); any other error
// leaves open whether the node got the request.
func (s *session) postSecrets(ctx context.Context, sreq *nodeapi.SecretsRequest) (refused bool, err error) {
	b, err := json.Marshal(sreq)
	if err != nil {
		return true, err
	}
	req, err := http.NewRequestWithContext(ctx, "POST", nodeURL(s.domain)+"/", bytes.NewReader(b))
	if err != nil {
		return true, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("send the secrets: %w", s.p.verifyError(err))
	}
	defer resp.Body.Close()
	var r nodeapi.Response
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&r)
	if resp.StatusCode != 200 {
		return true, fmt.Errorf("the node refused the secrets (HTTP %d): %s", resp.StatusCode, sanitize(r.Error))
	}
	return false, nil
}

// fetchApp GETs / through the router as the app's users do (no ALPN
// mse-ratls/1), accepting the connection only if check accepts the served
// chain. It returns the answer and the chain.
// Any HTTP answer counts: readiness was the health check, and "/" of an
// API may well answer 401.
func fetchApp(ctx context.Context, routerAddr, domain string, check func([]*x509.Certificate) error) (int, []byte, []*x509.Certificate, error) {
	cfg := &tls.Config{
		ServerName: domain,
		MinVersion: tls.VersionTLS12,
		// Checked in VerifyConnection, by the mode's rule.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			if err := check(cs.PeerCertificates); err != nil {
				return &refusedCert{err}
			}
			return nil
		},
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, routerAddr)
		},
		TLSClientConfig:     cfg,
		TLSHandshakeTimeout: 10 * time.Second,
	}}
	defer hc.CloseIdleConnections()
	var last error
	for i := 0; i < 25; i++ {
		req, _ := http.NewRequestWithContext(ctx, "GET", nodeURL(domain)+"/", nil)
		resp, err := hc.Do(req)
		if err == nil {
			b, rerr := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			// 502 is the node saying the app did not answer.
			if rerr == nil && resp.StatusCode != http.StatusBadGateway && resp.TLS != nil {
				return resp.StatusCode, b, resp.TLS.PeerCertificates, nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		var refused *refusedCert
		if errors.As(err, &refused) {
			return 0, nil, nil, refused.err // a refused certificate is not retried
		}
		last = err
		select {
		case <-ctx.Done():
			return 0, nil, nil, last
		case <-time.After(200 * time.Millisecond):
		}
	}
	return 0, nil, nil, last
}

// refusedCert is fetchApp's check refusing the served certificate.
type refusedCert struct{ err error }

func (e *refusedCert) Error() string { return e.err.Error() }

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
