package testenv

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/security"
	"github.com/chromedp/chromedp"

	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// BrowserOptions configure a headless Chromium for a test.
type BrowserOptions struct {
	// RootsPEM holds the certificates (PEM CERTIFICATE blocks) the browser
	// trusts as roots for TLS servers, put in the browser's own NSS database
	// as a user would import them. Nothing else is added: Chromium's built-in
	// roots stay, but every name outside HostMap fails to resolve, so no
	// server they could vouch for is reachable.
	RootsPEM []byte
	// HostMap sends host names to addresses: "app.test" -> "127.0.0.1" (a
	// value may carry a port, "127.0.0.1:8443"; a key may be a pattern,
	// "*.app.test"). Every other name fails with net::ERR_NAME_NOT_RESOLVED;
	// IP literals and localhost are left as they are.
	HostMap map[string]string
}

// Browser is a headless Chromium running until the test ends.
type Browser struct {
	// Version is what the browser says it is ("Chrome/156.0.8078.114").
	Version string
	// Started is how long the browser took to start and open its first tab.
	Started time.Duration

	ctx    context.Context // the browser's chromedp context (its first tab)
	output *syncBuffer     // the browser's stdout and stderr
}

// Page is what a browser saw loading one URL.
type Page struct {
	// URL is the address the tab ended on (after redirects).
	URL   string
	Title string
	// Text is document.body.innerText (of the browser's error page when
	// the load failed on the certificate).
	Text string
	// HTTPStatus is the status of the document's response; 0 when there was
	// none (a certificate error).
	HTTPStatus int
	// CertError is the browser's network error when it refused the server's
	// certificate (net::ERR_CERT_AUTHORITY_INVALID, net::ERR_CERT_COMMON_NAME_INVALID,
	// ...); empty when none.
	CertError string
	// SecurityState is the page's visible security state from the DevTools
	// Security domain: "secure", "neutral", "insecure", "insecure-broken", ...
	SecurityState string
	// Screenshot is a PNG of the viewport.
	Screenshot []byte
	// Loaded is how long the load took (navigation to screenshot).
	Loaded time.Duration
}

const (
	chromiumInstallHint = "apt-get install -y --no-install-recommends chromium libnss3-tools (.ci/run installs them)"
	// defaultLoadTimeout bounds a Load whose context has no deadline.
	defaultLoadTimeout = 30 * time.Second
	// securityStateWait is how long Load waits, after the page loaded, for
	// the browser to report the page's security state.
	securityStateWait   = 5 * time.Second
	browserStartTimeout = 60 * time.Second
)

// chromiumPaths are where Chromium may be, in order. Debian's /usr/bin/chromium
// is a shell wrapper that adds flags from /etc/chromium.d (extensions, API
// keys); the binary it runs comes first so that the flags are only ours.
var chromiumPaths = []string{
	"/usr/lib/chromium/chromium",
	"chromium",
	"chromium-browser",
	"google-chrome",
	"google-chrome-stable",
	"headless_shell",
}

// findChromium returns the path of the Chromium executable and of certutil,
// or what is missing.
func findChromium() (chromium, certutil, missing string) {
	for _, p := range chromiumPaths {
		if found, err := exec.LookPath(p); err == nil {
			chromium = found
			break
		}
	}
	certutil, _ = exec.LookPath("certutil")
	switch {
	case chromium == "":
		missing = "Chromium (" + strings.Join(chromiumPaths, ", ") + " not found)"
	case certutil == "":
		missing = "certutil (package libnss3-tools) to give Chromium its trusted roots"
	}
	return chromium, certutil, missing
}

// NeedChromium skips t (fails it when CI=true) when Chromium or certutil is
// not installed.
func NeedChromium(t testing.TB) {
	t.Helper()
	if _, _, missing := findChromium(); missing != "" {
		ciskip.Missing(t, "this test drives a headless browser and needs %s; to run it: %s", missing, chromiumInstallHint)
	}
}

// Chromium starts a headless Chromium that trusts, for TLS, the roots in
// o.RootsPEM (and resolves the names of o.HostMap). It stops when the test
// ends. Without Chromium it skips t, or fails it when CI=true.
//
// The roots go into an NSS database in the browser's own HOME
// ($HOME/.pki/nssdb), which is where Chromium on Linux takes the trust
// anchors a user added; no flag makes it ignore certificate errors.
func Chromium(t testing.TB, o BrowserOptions) *Browser {
	t.Helper()
	exe, certutil, missing := findChromium()
	if missing != "" {
		NeedChromium(t)
		return nil
	}
	roots, err := parseRoots(o.RootsPEM)
	if err != nil {
		t.Fatalf("testenv.Chromium: RootsPEM: %v", err)
	}
	rules, err := hostResolverRules(o.HostMap)
	if err != nil {
		t.Fatalf("testenv.Chromium: HostMap: %v", err)
	}
	home := t.TempDir()
	if err := makeNSSDB(certutil, filepath.Join(home, ".pki", "nssdb"), roots); err != nil {
		t.Fatalf("testenv.Chromium: %v", err)
	}

	out := &syncBuffer{}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.NoInheritEnv,
		chromedp.Env("HOME="+home,
			"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
			"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
			"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
			"PATH=/usr/local/bin:/usr/bin:/bin",
			"TMPDIR="+os.TempDir()),
		chromedp.Headless,
		chromedp.NoSandbox, // root, and no user namespaces to rely on
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-client-side-phishing-detection", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		chromedp.Flag("host-resolver-rules", rules),
		chromedp.WindowSize(1280, 800),
		chromedp.CombinedOutput(out),
	}
	// The user data directory is chromedp's own temporary one: it removes
	// it, and kills what is left of the browser by it, when the browser ends.
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	b := &Browser{ctx: bctx, output: out}
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(bctx, 10*time.Second)
		defer cancel()
		if err := chromedp.Cancel(cctx); err != nil && !errors.Is(err, context.Canceled) {
			t.Logf("testenv.Chromium: closing the browser: %v", err)
		}
		bcancel()
		acancel()
		if t.Failed() {
			t.Logf("chromium output:\n%s", b.Output())
		}
	})

	// The first run on bctx starts the browser, which then lives as long as
	// the context of that run: so it is bctx itself, with a timer.
	start := time.Now()
	timer := time.AfterFunc(browserStartTimeout, bcancel)
	var v browser.GetVersionResult
	err = chromedp.Do(bctx) // starts the browser and opens its first tab
	if err == nil {
		v, err = cdp.Call(bctx, chromedp.FromContext(bctx).Browser, browser.GetVersion, cdp.Empty{})
	}
	if !timer.Stop() {
		err = fmt.Errorf("not started within %v (%v)", browserStartTimeout, err)
	}
	if err != nil {
		t.Fatalf("testenv.Chromium: starting %s: %v\nits output:\n%s", exe, err, b.Output())
	}
	b.Started = time.Since(start)
	b.Version = v.Product
	t.Logf("testenv.Chromium: %s started in %v", b.Version, b.Started.Round(time.Millisecond))
	return b
}

// Output returns what the browser process printed so far, without its
// complaints that the machine has no D-Bus (headless needs none).
func (b *Browser) Output() string {
	var keep []string
	for _, l := range strings.SplitAfter(b.output.String(), "\n") {
		if !strings.Contains(l, ":ERROR:dbus/") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

// Load opens url in a new tab, waits until it has loaded, and returns what
// the tab shows. A refused certificate is not an error: it is Page.CertError
// (with the browser's error page as Text and Screenshot). Other failures to
// load (connection refused, unknown name, ctx done) are errors.
func (b *Browser) Load(ctx context.Context, url string) (*Page, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultLoadTimeout)
		defer cancel()
	}
	tab, closeTab := chromedp.NewContext(b.ctx)
	defer closeTab()
	// The tab's context derives from the browser's, not from ctx: end it
	// when ctx ends.
	tab, cancel := context.WithCancel(tab)
	defer cancel()
	stop := context.AfterFunc(ctx, cancel)
	defer stop()
	wrap := func(step string, err error) error {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("browser: load %s: %s: %w", url, step, err)
	}

	start := time.Now()
	st := &securityStates{changed: make(chan struct{}, 1)}
	if err := chromedp.Listen(tab, st.event); err != nil {
		return nil, wrap("open a tab", err)
	}
	if err := chromedp.Do(tab, func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, security.Enable, cdp.Empty{})
		return chromedp.Void{}, err
	}); err != nil {
		return nil, wrap("enable the Security domain", err)
	}

	p := &Page{}
	resp, err := chromedp.Run(tab, chromedp.NavigateResponse(url))
	var le *chromedp.LoadError
	switch {
	case errors.As(err, &le) && isCertError(le.ErrorText):
		p.CertError = le.ErrorText
		// The browser shows its error page (an interstitial) instead.
		if err := waitErrorPage(tab); err != nil {
			return nil, wrap("wait for the certificate error page", err)
		}
	case err != nil:
		return nil, wrap("navigate", err)
	case resp != nil:
		p.HTTPStatus = int(resp.Status)
	}
	if p.URL, err = chromedp.Run(tab, chromedp.Location()); err != nil {
		return nil, wrap("read the location", err)
	}
	if p.Title, err = chromedp.Run(tab, chromedp.Title()); err != nil {
		return nil, wrap("read the title", err)
	}
	if p.Text, err = chromedp.Run(tab, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`)); err != nil {
		return nil, wrap("read the text", err)
	}
	p.SecurityState, err = st.wait(tab, securityStateWait)
	if err != nil {
		return nil, wrap("read the security state", err)
	}
	if p.Screenshot, err = chromedp.Run(tab, chromedp.CaptureScreenshot()); err != nil {
		return nil, wrap("take a screenshot", err)
	}
	p.Loaded = time.Since(start)
	return p, nil
}

// isCertError reports whether a Chromium network error (net_error_list.h)
// is about the server's certificate: the ERR_CERT_* range and
// ERR_CERTIFICATE_TRANSPARENCY_REQUIRED.
func isCertError(text string) bool { return strings.HasPrefix(text, "net::ERR_CERT") }

// waitErrorPage waits until the tab has committed the browser's error page
// that replaces a page whose certificate was refused.
func waitErrorPage(tab context.Context) error {
	for {
		ready, err := chromedp.Run(tab, chromedp.Evaluate[bool](`document.readyState === "complete" && !!document.body && document.body.innerText.length > 0`))
		if err == nil && ready {
			return nil
		}
		select {
		case <-tab.Done():
			if err != nil {
				return err
			}
			return tab.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// securityStates keeps the last visible security state the tab reported
// after its main frame committed a navigation away from about:blank.
type securityStates struct {
	mu        sync.Mutex
	committed bool   // the main frame navigated to the URL
	state     string // the last state reported since
	changed   chan struct{}
}

func (s *securityStates) event(ev any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ev := ev.(type) {
	case *page.EventFrameNavigated:
		if ev.Frame.ParentID == "" && ev.Frame.URL != "about:blank" {
			s.committed, s.state = true, ""
		}
	case *security.EventVisibleSecurityStateChanged:
		if s.committed && ev.VisibleSecurityState != nil {
			s.state = string(ev.VisibleSecurityState.SecurityState)
			select {
			case s.changed <- struct{}{}:
			default:
			}
		}
	}
}

// wait returns the last state reported, waiting up to d for one.
func (s *securityStates) wait(tab context.Context, d time.Duration) (string, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		s.mu.Lock()
		state := s.state
		s.mu.Unlock()
		if state != "" {
			return state, nil
		}
		select {
		case <-s.changed:
		case <-tab.Done():
			return "", tab.Err()
		case <-timer.C:
			return "", fmt.Errorf("the browser reported no security state within %v of the load", d)
		}
	}
}

// Bounds on RootsPEM and HostMap: a test gives a few of each.
const (
	maxRoots     = 16
	maxHostRules = 64
)

// parseRoots returns the certificates of the PEM blocks in b, each a CA.
func parseRoots(b []byte) ([]*x509.Certificate, error) {
	var roots []*x509.Certificate
	for len(strings.TrimSpace(string(b))) > 0 {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("not PEM: give PEM CERTIFICATE blocks")
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a PEM %q block: give only CERTIFICATE blocks", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(roots)+1, err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("certificate %d (%s) is not a CA: a browser trusts roots, not leaves", len(roots)+1, c.Subject)
		}
		if roots = append(roots, c); len(roots) > maxRoots {
			return nil, fmt.Errorf("more than %d certificates", maxRoots)
		}
	}
	return roots, nil
}

// makeNSSDB creates an NSS database at dir (no password) trusting each root
// as a CA for TLS servers, with certutil as a user would.
func makeNSSDB(certutil, dir string, roots []*x509.Certificate) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the NSS database directory: %w", err)
	}
	db := "sql:" + dir
	run := func(args ...string) error {
		out, err := exec.Command(certutil, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("certutil %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	if err := run("-d", db, "-N", "--empty-password"); err != nil {
		return fmt.Errorf("create the NSS database: %w", err)
	}
	for i, c := range roots {
		f := filepath.Join(dir, fmt.Sprintf("root-%d.der", i))
		if err := os.WriteFile(f, c.Raw, 0o600); err != nil {
			return err
		}
		// C,, : a trusted CA for TLS servers; nothing for mail or code.
		if err := run("-d", db, "-A", "-t", "C,,", "-n", fmt.Sprintf("mse-test-root-%d", i), "-i", f); err != nil {
			return fmt.Errorf("add root %d (%s): %w", i, c.Subject, err)
		}
		os.Remove(f)
	}
	return nil
}

// hostResolverRules turns m into Chromium's --host-resolver-rules: each
// name to its address, every other name to "not found" (nothing leaves the
// machine), IP literals and localhost untouched.
func hostResolverRules(m map[string]string) (string, error) {
	if len(m) > maxHostRules {
		return "", fmt.Errorf("%d names; at most %d", len(m), maxHostRules)
	}
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	slices.Sort(names)
	var rules []string
	for _, name := range names {
		addr := m[name]
		if !validRuleToken(name) || !validRuleToken(addr) {
			return "", fmt.Errorf("%q -> %q: a name and an address have no spaces, commas or control characters", name, addr)
		}
		rules = append(rules, "MAP "+name+" "+addr)
	}
	rules = append(rules, "MAP * ~NOTFOUND", "EXCLUDE localhost", "EXCLUDE 127.0.0.1")
	return strings.Join(rules, ", "), nil
}

func validRuleToken(s string) bool {
	if s == "" || len(s) > 253+6 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == ',' || r == 0x7f {
			return false
		}
	}
	return true
}
