package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/nodeapi"
	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/spec"
)

// A malicious (or broken) operator for the CLI: a fake backend API and a fake
// node behind its "router". The node plays along (deploy runs with
// --no-verify, so that no real enclave is needed); the backend rewrites what
// the CLI must not trust: url, domains, router_addr, and puts escape
// sequences into names, errors, status fields and logs.

const (
	evilAppID = "0badc0de-0000-4000-8000-000000000001"
	escapes   = "\x1b[2J\x1b]0;owned\x07\x1b[31m\x9b1m\r"
)

type evilBackend struct {
	t      *testing.T
	api    *httptest.Server
	node   *httptest.Server
	domain string

	// created rewrites the answer to POST /v1/apps.
	created func(a *client.App)
	// createErr, if set, is the error body of POST /v1/apps.
	createErr string
	// app rewrites every answer to GET /v1/apps/{id}.
	app func(a *client.App)
	// goneAfterKey makes the API answer 503 once the node got its key.
	goneAfterKey bool
	// nodeRefuses makes the node refuse the secrets with this error.
	nodeRefuses string
	// platform is the answer to GET /v1/platform.
	platform client.Platform
	// mode is the tls_mode of the backend's answers.
	mode string

	// enclave, when set, makes the node a real (simulated) enclave: it
	// presents an RA-TLS certificate with sim evidence over the spec the
	// backend built from the request, and answers fresh evidence
	// (newAttestedBackend). deploy then runs with verification.
	enclave *simEnclave
	// nodeSpec rewrites the spec the node is given, and so attests.
	nodeSpec func(*spec.Spec)
	// answerSpec rewrites the spec the backend shows in its answers.
	answerSpec func(*spec.Spec)
	// received is the last create-app request.
	received *client.CreateAppRequest
	posts    int

	mu          sync.Mutex
	keyAccepted bool
	stopped     bool
}

func newEvilBackend(t *testing.T) *evilBackend {
	e := &evilBackend{t: t, domain: "helloworld-0badc0de0000.apps.example.com"}
	e.node = newDirectTLSServer(http.HandlerFunc(e.serveNode))
	e.api = httptest.NewServer(http.HandlerFunc(e.serveAPI))
	t.Cleanup(func() { e.api.Close(); e.node.Close() })
	t.Setenv("MSE_CONFIG_DIR", t.TempDir())
	t.Setenv("MSE_BACKEND_URL", e.api.URL)
	t.Setenv("MSE_TOKEN", "mse_test")
	return e
}

// newDirectTLSServer is an httptest TLS server that also accepts direct
// connections (ALPN mse-ratls/1), as nodes do, serving them HTTP/1.1 with h.
func newDirectTLSServer(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	inner := &http.Server{Handler: h}
	srv.Config.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		nodeapi.ALPNRATLS: func(_ *http.Server, c *tls.Conn, _ http.Handler) {
			ln := &oneConnListener{c: plainConn{c}, done: make(chan struct{})}
			go inner.Serve(ln)
			<-ln.done
		},
	}
	srv.TLS = &tls.Config{NextProtos: []string{nodeapi.ALPNRATLS, "http/1.1"}}
	srv.StartTLS()
	return srv
}

// plainConn hides a *tls.Conn from http.Server (which would refuse the
// negotiated mse-ratls/1).
type plainConn struct{ net.Conn }

// oneConnListener accepts one connection, then blocks until it is closed.
type oneConnListener struct {
	mu   sync.Mutex
	c    net.Conn
	done chan struct{}
	once sync.Once
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.c
	l.c = nil
	l.mu.Unlock()
	if c != nil {
		return &closeNotify{Conn: c, l: l}, nil
	}
	<-l.done
	return nil, net.ErrClosed
}
func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return &net.TCPAddr{} }

type closeNotify struct {
	net.Conn
	l *oneConnListener
}

func (c *closeNotify) Close() error {
	err := c.Conn.Close()
	c.l.once.Do(func() { close(c.l.done) })
	return err
}

func (e *evilBackend) serveNode(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case r.Method == "GET" && r.URL.Path == "/" && !e.keyAccepted:
		w.Header().Set(nodeapi.HeaderStatus, nodeapi.StatusWaiting)
		io.WriteString(w, "waiting")
	case r.Method == "POST" && r.URL.Path == "/":
		var req nodeapi.SecretsRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.UUID != evilAppID || len(req.CodeSecretKey) != 64 {
			http.Error(w, "bad request", 400)
			return
		}
		if e.nodeRefuses != "" {
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(nodeapi.Response{Status: "refused", Error: e.nodeRefuses})
			return
		}
		e.keyAccepted = true
		json.NewEncoder(w).Encode(nodeapi.Response{Status: "accepted"})
	case r.Method == "GET" && r.URL.Path == nodeapi.PathAttestation && e.enclave != nil:
		e.enclave.serveAttestation(w, r)
	case r.Method == "GET" && r.URL.Path == "/":
		io.WriteString(w, "Hello world!")
	default:
		http.NotFound(w, r)
	}
}

func (e *evilBackend) appAnswer() client.App {
	port := e.node.URL[strings.LastIndex(e.node.URL, ":")+1:]
	status := "initializing"
	if e.keyAccepted {
		status = "running"
	}
	if e.stopped {
		status = "stopped"
	}
	mode := e.mode
	if mode == "" {
		mode = "self"
	}
	a := client.App{ID: evilAppID, Name: "helloworld", Project: "default", Status: status, Hardware: "4g",
		Domains: []string{e.domain}, URL: "https://" + e.domain + ":" + port + "/", RouterAddr: "127.0.0.1:" + port, TLSMode: mode,
		CreatedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)}
	if e.enclave != nil && e.enclave.spec != nil {
		a.Spec = *e.enclave.spec
		if a.Spec.ACME != nil {
			acme := *a.Spec.ACME
			a.Spec.ACME = &acme
		}
		if e.answerSpec != nil {
			e.answerSpec(&a.Spec)
		}
	}
	return a
}

func (e *evilBackend) serveAPI(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	writeJSON := func(code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(v)
	}
	if e.goneAfterKey && e.keyAccepted {
		http.Error(w, "backend restarting", http.StatusServiceUnavailable)
		return
	}
	p := r.URL.Path
	switch {
	case r.Method == "GET" && p == "/v1/runtimes":
		writeJSON(200, []runtimes.Entry{{Name: "flask", Image: "mse/flask:bookworm", Digest: "sha256:" + strings.Repeat("ab", 32), Kind: runtimes.KindWSGI}})
	case r.Method == "GET" && p == "/v1/apps":
		a := e.appAnswer()
		if e.app != nil {
			e.app(&a)
		}
		if r.URL.Query().Get("name") != "" {
			writeJSON(200, []client.App{})
			return
		}
		writeJSON(200, []client.App{a})
	case r.Method == "GET" && p == "/v1/platform":
		writeJSON(200, e.platform)
	case r.Method == "GET" && p == "/v1/sim/root" && e.enclave != nil:
		w.Write(e.enclave.plat.RootPEM())
	case r.Method == "POST" && p == "/v1/apps":
		e.posts++
		if err := e.readCreate(r); err != nil {
			writeJSON(400, client.Error{Error: err.Error()})
			return
		}
		if e.createErr != "" {
			writeJSON(400, client.Error{Error: e.createErr})
			return
		}
		a := e.appAnswer()
		a.Status = "spawning"
		if e.created != nil {
			e.created(&a)
		}
		writeJSON(201, a)
	case r.Method == "GET" && p == "/v1/apps/"+evilAppID:
		a := e.appAnswer()
		if e.app != nil {
			e.app(&a)
		}
		writeJSON(200, a)
	case r.Method == "POST" && p == "/v1/apps/"+evilAppID+"/stop":
		e.stopped = true
		writeJSON(200, e.appAnswer())
	case r.Method == "GET" && p == "/v1/apps/"+evilAppID+"/logs":
		io.WriteString(w, "time=… msg=\"app started\"\n"+escapes+"app: GET / 200\r\nlast line\n")
	default:
		writeJSON(404, client.Error{Error: "no route " + escapes})
	}
}

// mse runs the CLI in-process.
func mse(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	code = Main(ctx, args, &out, &errb)
	return out.String(), errb.String(), code
}

func helloworldToml(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "examples", "helloworld", "mse.toml")
}

func (e *evilBackend) deploy(t *testing.T, extra ...string) (string, string, int) {
	return mse(t, append([]string{"cloud", "deploy", "--no-verify", "-y", "--timeout", "3s", "--path", helloworldToml(t)}, extra...)...)
}

// assertInert checks that output is safe for a terminal: no control
// character but newline and tab, and no byte that is not UTF-8.
func assertInert(t *testing.T, what, s string) {
	t.Helper()
	for i, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || (r >= 0x7f && r < 0xa0) || (r == 0xfffd && strings.HasPrefix(s[i:], "\x9b")) {
			t.Fatalf("%s holds control character %U at %d:\n%q", what, r, i, s)
		}
	}
}

// shellWords splits a line as a POSIX shell would, for lines made only of
// plain words and single-quoted strings; any other shell syntax outside
// quotes (; | & $ ` ( ) < > * ? [ ] ~ # { } ! \ ") is an error: the line
// is not inert.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted:
			if c == '\'' {
				quoted = false
			} else {
				cur.WriteByte(c)
			}
		case c == '\'':
			quoted, in = true, true
		case c == ' ':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		case shellSafe(rune(c)):
			cur.WriteByte(c)
			in = true
		default:
			return nil, fmt.Errorf("unquoted %q at %d in %s", c, i, line)
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in %s", line)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}

// TestMaliciousBackendURL: the backend answers a `url` of another host
// (valid, so the client takes it). The CLI prints the verified domain's URL,
// and its printed commands parse to exactly the expected arguments.
func TestMaliciousBackendURL(t *testing.T) {
	e := newEvilBackend(t)
	rewrite := func(a *client.App) { a.URL = "https://evil.example.net/" }
	e.created, e.app = rewrite, rewrite
	out, errs, code := e.deploy(t)
	if code != 0 {
		t.Fatalf("deploy failed:\n%s\n%s", out, errs)
	}
	assertInert(t, "stdout", out)
	assertInert(t, "stderr", errs)
	port := e.node.URL[strings.LastIndex(e.node.URL, ":")+1:]
	wantURL := "https://" + e.domain + ":" + port + "/"
	if strings.Contains(out+errs, "evil.example.net") {
		t.Fatalf("the backend's url reached the output:\n%s", out)
	}
	if !strings.Contains(out, "Your app is running at "+wantURL+"\n") {
		t.Fatalf("no URL built from the domain in:\n%s", out)
	}
	var curl string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "  curl ") {
			curl = strings.TrimPrefix(l, "  ")
		}
	}
	words, err := shellWords(curl)
	if err != nil {
		t.Fatal(err)
	}
	ctxDir := filepath.Join(os.Getenv("MSE_CONFIG_DIR"), "contexts")
	want := []string{"curl", "--cacert", filepath.Join(ctxDir, evilAppID+".pem"), "--resolve", e.domain + ":" + port + ":127.0.0.1", wantURL}
	if fmt.Sprint(words) != fmt.Sprint(want) {
		t.Fatalf("curl line %q parses to %q, want %q", curl, words, want)
	}
	// The saved context holds the URL deploy printed, not the backend's.
	b, err := os.ReadFile(filepath.Join(ctxDir, evilAppID+".toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), wantURL) || strings.Contains(string(b), "evil") {
		t.Fatalf("context:\n%s", b)
	}
}

// TestMaliciousBackendRefused: answers to stage 1 that deploy cannot use
// safely are refused with a message that names the problem, before any
// secret is sent, and the app is stopped when the CLI knows its id. None
// panics.
func TestMaliciousBackendRefused(t *testing.T) {
	cases := []struct {
		name    string
		rewrite func(a *client.App)
		want    string
		stopped bool
	}{
		{"url with a command", func(a *client.App) { a.URL = "https://x.example.com/;touch${IFS}pwned" }, "not valid", false},
		{"domain with a command", func(a *client.App) { a.Domains = []string{"x.example.com;touch pwned"} }, "not valid", false},
		{"domain with escapes", func(a *client.App) { a.Domains = []string{"x.example.com" + escapes} }, "not valid", false},
		{"router_addr with a command", func(a *client.App) { a.RouterAddr = "127.0.0.1:8443;touch pwned" }, "not valid", false},
		{"no domain", func(a *client.App) { a.Domains, a.Status, a.URL = nil, "stopped", "" }, "assigned app " + evilAppID + " no domain", true},
		{"empty domain list", func(a *client.App) { a.Domains, a.Status, a.URL = []string{}, "on_error", "" }, "no domain", true},
		{"no router_addr", func(a *client.App) { a.RouterAddr = "" }, "router address \"\", which is empty", true},
		{"single-label domain", func(a *client.App) { a.Domains = []string{"localhost"} }, `domain "localhost" is not a fully qualified domain name`, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEvilBackend(t)
			e.created = c.rewrite
			out, errs, code := e.deploy(t)
			if code == 0 {
				t.Fatalf("deploy succeeded:\n%s\n%s", out, errs)
			}
			assertInert(t, "stderr", errs)
			if !strings.Contains(errs, c.want) {
				t.Fatalf("the error lacks %q:\n%s", c.want, errs)
			}
			if strings.Contains(errs, "Sent the code key") || e.keyAccepted {
				t.Fatalf("the key was sent:\n%s", errs)
			}
			if e.stopped != c.stopped {
				t.Fatalf("app stopped = %v, want %v:\n%s", e.stopped, c.stopped, errs)
			}
			if out != "" {
				t.Fatalf("stdout: %q", out)
			}
		})
	}
}

// TestMaliciousBackendEscapes: escape sequences in errors, status fields,
// node answers and logs do not reach a terminal.
func TestMaliciousBackendEscapes(t *testing.T) {
	e := newEvilBackend(t)
	e.createErr = "quota " + escapes + "exceeded"
	_, errs, code := e.deploy(t)
	if code == 0 || !strings.Contains(errs, "quota") {
		t.Fatalf("deploy: exit %d\n%s", code, errs)
	}
	assertInert(t, "deploy's error", errs)

	e = newEvilBackend(t)
	e.nodeRefuses = "wrong key " + escapes
	_, errs, code = e.deploy(t)
	if code == 0 || !strings.Contains(errs, "the node refused the secrets") || !e.stopped {
		t.Fatalf("deploy: exit %d, stopped %v\n%s", code, e.stopped, errs)
	}
	assertInert(t, "deploy's error", errs)

	e = newEvilBackend(t)
	e.app = func(a *client.App) {
		a.Status, a.Error, a.TLSMode = "on_error", "crashed "+escapes, "self"+escapes
	}
	for _, args := range [][]string{
		{"cloud", "status", evilAppID},
		{"cloud", "list", "--all"},
		{"cloud", "stop", evilAppID},
		{"cloud", "status", "nothere"},
	} {
		out, errs, _ := mse(t, args...)
		assertInert(t, strings.Join(args, " ")+" stdout", out)
		assertInert(t, strings.Join(args, " ")+" stderr", errs)
	}
	out, _, _ := mse(t, "cloud", "status", evilAppID)
	if !strings.Contains(out, "crashed") {
		t.Fatalf("status lacks the error:\n%s", out)
	}
	// An app name the client refuses is named in its error, escaped.
	e.app = func(a *client.App) { a.Name = "hello" + escapes }
	_, errs, code = mse(t, "cloud", "list")
	if code == 0 {
		t.Fatal("list accepted an app name with escapes")
	}
	assertInert(t, "list's error", errs)
	// A deploy that fails waiting for the node shows the escaped status.
	e = newEvilBackend(t)
	e.app = func(a *client.App) { a.Status, a.Error = "on_error", "node died "+escapes }
	_, errs, code = e.deploy(t)
	if code == 0 || !strings.Contains(errs, "node died") {
		t.Fatalf("deploy: exit %d\n%s", code, errs)
	}
	assertInert(t, "deploy's error", errs)
}

// TestLogsOnTerminal: `mse cloud logs` sanitizes on a terminal (keeping
// newlines), and copies bytes as they are when redirected or with --raw.
func TestLogsOnTerminal(t *testing.T) {
	newEvilBackend(t)
	raw, _, code := mse(t, "cloud", "logs", evilAppID)
	if code != 0 || !strings.Contains(raw, escapes) {
		t.Fatalf("redirected logs are not raw (exit %d): %q", code, raw)
	}
	old := isTerminal
	isTerminal = func(io.Writer) bool { return true }
	t.Cleanup(func() { isTerminal = old })
	out, _, code := mse(t, "cloud", "logs", evilAppID)
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	assertInert(t, "logs on a terminal", out)
	if want := "time=… msg=\"app started\"\n"; !strings.HasPrefix(out, want) || !strings.HasSuffix(out, "app: GET / 200\nlast line\n") {
		t.Fatalf("logs on a terminal lost their lines: %q", out)
	}
	out, _, _ = mse(t, "cloud", "logs", "--raw", evilAppID)
	if out != raw {
		t.Fatalf("--raw on a terminal: %q, want %q", out, raw)
	}
}

// TestDeployBackendGoneAfterKey: the backend stops answering right after
// the node accepted the key. The deploy fails once --timeout is spent, but
// the context (with the code key) is saved, the app is not stopped, and the
// error says what the owner can do.
func TestDeployBackendGoneAfterKey(t *testing.T) {
	e := newEvilBackend(t)
	e.goneAfterKey = true
	start := time.Now()
	_, errs, code := e.deploy(t)
	if code == 0 {
		t.Fatalf("deploy succeeded without a backend:\n%s", errs)
	}
	if time.Since(start) < 2*time.Second {
		t.Fatalf("deploy gave up after %s, before its 3s timeout:\n%s", time.Since(start), errs)
	}
	if e.stopped {
		t.Fatal("the CLI stopped an app that holds its key")
	}
	ctxFile := filepath.Join(os.Getenv("MSE_CONFIG_DIR"), "contexts", evilAppID+".toml")
	ac, err := readContextFile(ctxFile)
	if err != nil {
		t.Fatalf("no context after the key was accepted: %v\n%s", err, errs)
	}
	if len(ac.CodeKey) != 64 || ac.AppID != evilAppID {
		t.Fatalf("context %+v", ac)
	}
	for _, want := range []string{"Saved the app context", "`mse cloud status " + evilAppID + "`", "`mse cloud logs " + evilAppID + "`", "`mse cloud stop " + evilAppID + "`", ctxFile} {
		if !strings.Contains(errs, want) {
			t.Errorf("output lacks %q:\n%s", want, errs)
		}
	}
}
