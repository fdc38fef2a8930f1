package cli

import (
	"github.com/mse-in-go/mse/internal/nodeapi"

	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/mse-in-go/mse/internal/apphost"
	"github.com/mse-in-go/mse/internal/bundle"
	"github.com/mse-in-go/mse/internal/bundle/pack"
	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/runtimes/image"
)

// testCmd is MSE's `mse cloud test`: the app's own tests against the
// deployed app, trusting the certificate deploy verified.
func testCmd() *cobra.Command {
	var path, cacert string
	cmd := &cobra.Command{
		Use:   "test [APP_ID]",
		Short: "Run the app's tests (tests_cmd) against the deployed app",
		Long: `test runs mse.toml's tests_cmd in the tests directory, with TEST_REMOTE_URL set to
the deployed app's URL, trusting the certificate deploy verified (REQUESTS_CA_BUNDLE,
SSL_CERT_FILE), and the app's domain reaching the operator's router (for Python
tests). APP_ID defaults to the app of mse.toml's name deployed last from here.

In tls_mode acme and operator the app serves a CA's certificate (the CA's
for the enclave's key, or the operator's), not the RA-TLS certificate: the
tests then trust the system roots, or only the roots of --cacert FILE (e.g. a
test CA's). In acme mode the CA may take a moment to issue the certificate
after deploy; until then the tests see the RA-TLS certificate and fail.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u := newUI(cmd)
			conf, err := config.Load(path, time.Now())
			if err != nil {
				return err
			}
			if conf.TestsCmd == "" || conf.Cloud.Tests == "" {
				return fmt.Errorf("%s sets no tests: add tests_cmd (e.g. \"pytest\") and [cloud] tests (the directory)", path)
			}
			var actx *AppContext
			if len(args) == 1 {
				if actx, _, err = loadContext(args[0]); err != nil {
					return err
				}
			} else if actx, err = latestContext(conf.Name); err != nil {
				return err
			}
			if len(actx.Domains) == 0 || actx.URL == "" {
				return fmt.Errorf("the context of app %s has no domain or URL; deploy again", actx.AppID)
			}
			tmp, err := os.MkdirTemp("", "mse-test-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(tmp)
			ca := filepath.Join(tmp, "ca.pem")
			if err := os.WriteFile(ca, []byte(actx.Certificate), 0o600); err != nil {
				return err
			}
			env := []string{"TEST_REMOTE_URL=" + strings.TrimSuffix(actx.URL, "/"), "MSE_APP_ID=" + actx.AppID, "MSE_ROUTER_ADDR=" + actx.RouterAddr}
			caEnv, err := testRoots(actx.TLSMode, ca, cacert)
			if err != nil {
				return err
			}
			env = append(env, caEnv...)
			resolveEnv, err := routerResolution(tmp, actx.Domains, actx.RouterAddr)
			if err != nil {
				return err
			}
			env = append(env, resolveEnv...)
			u.step("Testing app %s at %s (tests in %s)", actx.AppID, sanitize(actx.URL), conf.Cloud.Tests)
			return runTests(cmd.Context(), u, conf, env)
		},
	}
	cmd.Flags().StringVar(&path, "path", "mse.toml", "path to the app's mse.toml")
	cmd.Flags().StringVar(&cacert, "cacert", "", "tls_mode acme or operator: PEM `FILE` of the roots the tests trust instead of the system's (REQUESTS_CA_BUNDLE, SSL_CERT_FILE)")
	return cmd
}

// testRoots is the environment that tells the tests which roots to trust.
// self: the RA-TLS certificate deploy verified (raPEM, a file) is the
// trust anchor; owner: the owner's chain goes to a CA the system trusts;
// acme and operator: a CA's certificate, checked with the system roots or
// only cacert's. Never the RA-TLS certificate there: the app does not serve
// it (operator), or serves it only until the CA's certificate is issued
// (acme).
func testRoots(mode, raPEM, cacert string) ([]string, error) {
	switch mode {
	case config.TLSACME, config.TLSOperator:
		if cacert == "" {
			return nil, nil
		}
		abs, err := filepath.Abs(cacert)
		if err != nil {
			return nil, err
		}
		if _, err := loadRoots(abs); err != nil {
			return nil, fmt.Errorf("--cacert: %w", err)
		}
		return []string{"REQUESTS_CA_BUNDLE=" + abs, "SSL_CERT_FILE=" + abs}, nil
	case config.TLSOwner:
		if cacert != "" {
			return nil, errors.New("--cacert is for apps in tls_mode acme or operator; in tls_mode owner the tests trust the system roots, as your certificate's users do")
		}
		return nil, nil
	}
	if cacert != "" {
		return nil, fmt.Errorf("--cacert is for apps in tls_mode acme or operator; in tls_mode %s the tests trust the certificate deploy verified", mode)
	}
	return []string{"REQUESTS_CA_BUNDLE=" + raPEM, "SSL_CERT_FILE=" + raPEM}, nil
}

// latestContext is the most recent saved context of an app name.
func latestContext(name string) (*AppContext, error) {
	cs, err := listContexts()
	if err != nil {
		return nil, err
	}
	var best *AppContext
	for i := range cs {
		if cs[i].Name == name && (best == nil || cs[i].CreatedAt.After(best.CreatedAt)) {
			best = &cs[i]
		}
	}
	if best == nil {
		return nil, fmt.Errorf("no deployed app named %q here: deploy it first, or pass its APP_ID (mse cloud context --list)", name)
	}
	return best, nil
}

// routerResolution makes the app's domains resolve to the router for Python
// tests (a sitecustomize on PYTHONPATH that answers getaddrinfo for exactly
// those names), unless they already resolve to it. It returns the
// environment to add.
func routerResolution(dir string, domains []string, routerAddr string) ([]string, error) {
	host, _, err := net.SplitHostPort(routerAddr)
	if err != nil {
		return nil, fmt.Errorf("the router address %q is not host:port", routerAddr)
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return nil, nil // a name: DNS knows where the router is
	}
	for _, d := range domains {
		if err := config.ValidateDomain(d); err != nil {
			return nil, fmt.Errorf("the app's domain %q: %v", sanitize(d), err)
		}
	}
	names, _ := json.Marshal(domains)
	site := fmt.Sprintf(`# Written by mse cloud test: the app's domains reach the operator's router.
import socket
_names = set(%s)
_ip = %q
_orig = socket.getaddrinfo
def getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if host in _names:
        host = _ip
    return _orig(host, *args, **kwargs)
socket.getaddrinfo = getaddrinfo
`, names, ip.String())
	sd := filepath.Join(dir, "site")
	if err := os.MkdirAll(sd, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(sd, "sitecustomize.py"), []byte(site), 0o600); err != nil {
		return nil, err
	}
	pp := sd
	if old := os.Getenv("PYTHONPATH"); old != "" {
		pp += string(os.PathListSeparator) + old
	}
	return []string{"PYTHONPATH=" + pp}, nil
}

// runTests runs tests_cmd through the shell in the tests directory, with
// the caller's environment plus env. Its exit status is the command's.
func runTests(ctx context.Context, u *ui, conf *config.AppConfig, env []string) error {
	if len(conf.TestsRequirements) > 0 {
		u.info("tests_requirements (%s) are not installed by mse: install them in the environment that runs %q", strings.Join(conf.TestsRequirements, ", "), conf.TestsCmd)
	}
	c := exec.CommandContext(ctx, "/bin/sh", "-c", conf.TestsCmd)
	c.Dir = conf.Cloud.Tests
	c.Env = append(os.Environ(), env...)
	c.Stdout, c.Stderr = u.out, u.err
	err := c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Errorf("the tests failed (%s exited with %d)", conf.TestsCmd, ee.ExitCode())
	}
	if err != nil {
		return fmt.Errorf("run %q: %w", conf.TestsCmd, err)
	}
	u.step("Tests passed (%s)", conf.TestsCmd)
	return nil
}

// localtestCmd is MSE's `mse cloud localtest`: the app in the same runtime
// image, on this machine, with no enclave; then its tests against it.
func localtestCmd() *cobra.Command {
	var (
		path    string
		noTests bool
		port    int
	)
	cmd := &cobra.Command{
		Use:   "localtest",
		Short: "Run the app locally in its runtime image (no enclave) and run its tests",
		Long: `localtest fetches the runtime image mse.toml names from the operator (once; it is
cached and checked against the catalog's digest), runs the app in it in a sandbox on
this machine (no enclave: nothing is encrypted or attested), waits for its health
check, then runs tests_cmd with TEST_REMOTE_URL pointing at it. With --no-tests it
serves until interrupted. It needs bubblewrap (bwrap).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return localtest(cmd.Context(), newUI(cmd), path, noTests, port)
		},
	}
	cmd.Flags().StringVar(&path, "path", "mse.toml", "path to the app's mse.toml")
	cmd.Flags().BoolVar(&noTests, "no-tests", false, "only run the app, until interrupted")
	cmd.Flags().IntVar(&port, "port", 0, "local port of the app (default: a free one)")
	return cmd
}

// runtimeCacheDir is where the CLI keeps runtime images.
func runtimeCacheDir() string {
	if d := os.Getenv("MSE_RUNTIME_DIR"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "mse", "runtimes")
	}
	return filepath.Join(os.TempDir(), "mse-runtimes")
}

func localtest(ctx context.Context, u *ui, path string, noTests bool, port int) error {
	conf, err := config.Load(path, time.Now())
	if err != nil {
		return err
	}
	if !noTests && (conf.TestsCmd == "" || conf.Cloud.Tests == "") {
		return fmt.Errorf("%s sets no tests: add tests_cmd and [cloud] tests, or pass --no-tests", path)
	}
	bwrap, err := exec.LookPath("bwrap")
	if err != nil {
		return errors.New("localtest runs the app in a sandbox with bubblewrap, which is not installed (apt-get install bubblewrap)")
	}
	c, _, err := apiClient()
	if err != nil {
		return err
	}
	rt, err := resolveRuntime(ctx, c, conf)
	if err != nil {
		return err
	}
	rootfs, err := fetchRuntime(ctx, u, c, rt)
	if err != nil {
		return err
	}

	tmp, err := os.MkdirTemp("", "mse-localtest-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	// What runs is what deploy would send: the code packed with the ignore
	// rules, then unpacked.
	code := filepath.Join(tmp, "code")
	pr, pw := io.Pipe()
	go func() { _, err := pack.Pack(conf.Cloud.Code, pw, bundle.DefaultLimits()); pw.CloseWithError(err) }()
	if _, err := bundle.Unpack(pr, code, bundle.DefaultLimits()); err != nil {
		return fmt.Errorf("package %s: %w", conf.Cloud.Code, err)
	}
	secrets, err := conf.Cloud.ReadSecrets()
	if err != nil {
		return fmt.Errorf("cloud.secrets: %w", err)
	}
	sealed, err := conf.Cloud.ReadSealedSecrets()
	if err != nil {
		return fmt.Errorf("cloud.sealed_secrets: %w", err)
	}
	switch {
	case sealed != nil:
		if secrets, err = nodeapi.MergeSecrets(secrets, sealed); err != nil {
			return fmt.Errorf("cloud.secrets and cloud.sealed_secrets: %w", err)
		}
	case secrets == nil:
		secrets = []byte("{}")
	}
	if sealed == nil {
		sealed = []byte("{}")
	}
	for name, b := range map[string][]byte{"secrets.json": secrets, "sealed_secrets.json": sealed, "mse_host.py": []byte(apphost.PythonHost)} {
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o600); err != nil {
			return err
		}
	}
	if port == 0 {
		if port, err = apphost.FreePort(); err != nil {
			return err
		}
	}

	const work = "/run/work"
	env := apphost.Env{Port: port, Home: work + "/home", Tmp: "/tmp", Secrets: work + "/secrets.json",
		SealedSecrets: work + "/sealed_secrets.json", Code: work + "/code", AppID: "localtest"}
	var argv []string
	if conf.PythonApplication != "" {
		argv = []string{apphost.DefaultPython, work + "/mse_host.py", conf.PythonApplication, rt.Kind}
	} else {
		prog, err := apphost.ResolveProgram(conf.Entrypoint[0], env.Code, rootfs)
		if err != nil {
			return err
		}
		argv = append([]string{prog}, conf.Entrypoint[1:]...)
	}
	bw := []string{
		"--ro-bind", rootfs, "/",
		"--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/run",
		"--dir", work, "--dir", env.Home,
		"--bind", code, env.Code,
		"--ro-bind", filepath.Join(tmp, "secrets.json"), env.Secrets,
		"--ro-bind", filepath.Join(tmp, "sealed_secrets.json"), env.SealedSecrets,
		"--ro-bind", filepath.Join(tmp, "mse_host.py"), work + "/mse_host.py",
		"--unshare-all", "--share-net", "--die-with-parent", "--new-session", "--clearenv",
		"--chdir", env.Code,
	}
	for _, kv := range env.List() {
		k, v, _ := strings.Cut(kv, "=")
		bw = append(bw, "--setenv", k, v)
	}
	if os.Geteuid() == 0 {
		// As root, bubblewrap keeps the caller's UID unless told: run the
		// app as an unprivileged user of its own namespace.
		bw = append(bw, "--unshare-user", "--uid", "1000", "--gid", "1000")
	}
	bw = append(bw, "--")
	bw = append(bw, argv...)
	app := exec.Command(bwrap, bw...)
	app.Stdout, app.Stderr = u.err, u.err
	app.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	u.step("Starting %s in runtime %s (%s) on 127.0.0.1:%d, no enclave", conf.Name, sanitize(rt.Name), rt.Digest, port)
	if err := app.Start(); err != nil {
		return fmt.Errorf("start bwrap: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- app.Wait() }()
	defer func() {
		_ = syscall.Kill(-app.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-app.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}()

	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	timeout := conf.Cloud.StartTimeout
	if timeout <= 0 {
		timeout = config.DefaultStartTimeout
	}
	if err := waitHealthy(ctx, base+conf.HealthcheckEndpoint, timeout, exited); err != nil {
		return err
	}
	u.step("The app answers its health check %s", conf.HealthcheckEndpoint)
	if noTests {
		u.info("serving at %s; interrupt (Ctrl-C) to stop", base)
		sig, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		select {
		case <-sig.Done():
			return nil
		case err := <-exited:
			exited <- err
			return fmt.Errorf("the app exited: %v", err)
		}
	}
	return runTests(ctx, u, conf, []string{"TEST_REMOTE_URL=" + base})
}

// fetchRuntime returns the extracted tree of a runtime, downloading its image
// from the operator into the local cache first if needed; the image must
// have exactly the catalog's digest.
func fetchRuntime(ctx context.Context, u *ui, c *client.Client, rt config.Runtime) (string, error) {
	st, err := image.Open(runtimeCacheDir(), image.DefaultLimits())
	if err != nil {
		return "", err
	}
	if !st.Has(rt.Digest) {
		start := time.Now()
		rc, err := c.RuntimeImage(ctx, rt.Name)
		if err != nil {
			return "", fmt.Errorf("download runtime %s: %w", rt.Name, err)
		}
		f, err := os.CreateTemp("", "mse-runtime-*.tar")
		if err != nil {
			rc.Close()
			return "", err
		}
		defer os.Remove(f.Name())
		n, err := io.Copy(f, io.LimitReader(rc, image.DefaultLimits().MaxImageBytes+1))
		rc.Close()
		f.Close()
		if err != nil {
			return "", fmt.Errorf("download runtime %s: %w", rt.Name, err)
		}
		d, err := st.Import(ctx, f.Name())
		if err != nil {
			return "", fmt.Errorf("runtime %s from the operator: %w", rt.Name, err)
		}
		if d != rt.Digest {
			_ = st.Remove(d)
			return "", fmt.Errorf("the operator sent runtime %s with digest %s, but its catalog says %s; refusing it", rt.Name, d, rt.Digest)
		}
		u.step("Downloaded runtime %s (%s) in %s", sanitize(rt.Name), humanBytes(n), time.Since(start).Round(time.Millisecond))
	}
	return st.Rootfs(ctx, rt.Digest)
}

func waitHealthy(ctx context.Context, url string, timeout time.Duration, exited chan error) error {
	deadline := time.Now().Add(timeout)
	hc := &http.Client{Timeout: 5 * time.Second}
	var last error
	for time.Now().Before(deadline) {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := hc.Do(req)
		if err == nil {
			resp.Body.Close()
			if apphost.Ready(resp.StatusCode) {
				return nil
			}
			err = fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		last = err
		select {
		case err := <-exited:
			exited <- err
			return fmt.Errorf("the app exited before it answered its health check: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("the app did not answer its health check %s within %s: %v", url, timeout, last)
}
