package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultPython is the runtime's interpreter. Inside a sandbox the node sees
// only its runtime image, so nothing it runs comes from the host.
const DefaultPython = "/usr/bin/python3"

// searchPath is where a bare entrypoint program is looked up: the runtime's
// directories, never the host's PATH.
var searchPath = []string{"/usr/local/bin", "/usr/bin", "/bin"}

// pyHost serves MSE's python_application ("module:variable") with the app
// server of the runtime: gunicorn for WSGI apps, uvicorn for ASGI apps, the
// kind detected from the app object when the runtime offers both ("any").
// Without gunicorn, a WSGI app falls back to the standard library's wsgiref
// (said on stderr). argv: module:variable kind.
const pyHost = `
import importlib, inspect, os, sys

def die(msg):
    sys.stderr.write("mse: " + msg + "\n")
    sys.exit(3)

spec, kind = sys.argv[1], sys.argv[2]
module_name, _, var = spec.partition(":")
code = os.environ["MODULE_PATH"]
sys.path.insert(0, code)
app = getattr(importlib.import_module(module_name), var or "app", None)
if app is None:
    die("%s has no attribute %r (python_application = %r)" % (module_name, var, spec))

def is_asgi(a):
    if inspect.iscoroutinefunction(a):
        return True
    return inspect.iscoroutinefunction(getattr(a, "__call__", None))

asgi = is_asgi(app)
if kind == "wsgi" and asgi:
    die("%s is an ASGI app, but the runtime serves WSGI apps; choose an ASGI runtime (mse cloud runtimes)" % spec)
if kind == "asgi" and not asgi:
    die("%s is a WSGI app, but the runtime serves ASGI apps; choose a WSGI runtime (mse cloud runtimes)" % spec)
port = int(os.environ["PORT"])
workers = int(os.environ.get("MSE_WORKERS", "1"))

if asgi:
    try:
        import uvicorn
    except ImportError:
        die("the runtime has no ASGI server (uvicorn); choose an ASGI runtime (mse cloud runtimes)")
    sys.stderr.write("mse: serving %s (ASGI) with uvicorn %s\n" % (spec, uvicorn.__version__))
    uvicorn.run(app, host="127.0.0.1", port=port, proxy_headers=True, forwarded_allow_ips="127.0.0.1", log_level="info")
    sys.exit(0)

try:
    from gunicorn.app.base import BaseApplication
    import gunicorn
except ImportError:
    BaseApplication = None
if BaseApplication is not None:
    class Host(BaseApplication):
        def load_config(self):
            for k, v in {"bind": "127.0.0.1:%d" % port, "workers": workers, "threads": 4, "worker_class": "gthread",
                         "accesslog": "-", "errorlog": "-", "timeout": 120, "forwarded_allow_ips": "127.0.0.1",
                         "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None}.items():
                if v is not None:
                    self.cfg.set(k, v)
        def load(self):
            return app
    sys.stderr.write("mse: serving %s (WSGI) with gunicorn %s\n" % (spec, gunicorn.__version__))
    Host().run()
    sys.exit(0)

sys.stderr.write("mse: the runtime has no gunicorn: serving %s (WSGI) with the standard library's wsgiref\n" % spec)
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIServer, WSGIRequestHandler, make_server
class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
class Handler(WSGIRequestHandler):
    def log_message(self, format, *args):
        sys.stderr.write("app: %s %s\n" % (self.command, format % args))
make_server("127.0.0.1", port, app, server_class=Server, handler_class=Handler).serve_forever()
`

type runningApp struct {
	n       *Node
	cmd     *exec.Cmd
	port    int
	exited  chan struct{}
	waitErr error
	once    sync.Once
}

// codeDir is where stage 2 unpacks the app's code.
func (n *Node) codeDir() string { return filepath.Join(n.cfg.WorkDir, "code") }

// launch writes the secrets and starts the app from the code stage 2
// unpacked, then waits until it answers its health check.
func (n *Node) launch(ctx context.Context, in *intake) (*runningApp, error) {
	cfg := n.cfg
	codeDir := n.codeDir()
	secretsPath := filepath.Join(cfg.WorkDir, "secrets.json")
	sealedPath := filepath.Join(cfg.WorkDir, "sealed_secrets.json")
	home := filepath.Join(cfg.WorkDir, "home")
	secrets := in.appSecrets
	if len(secrets) == 0 {
		secrets = []byte("{}")
	}
	if err := os.WriteFile(secretsPath, secrets, 0o600); err != nil {
		return nil, fmt.Errorf("node: write secrets: %w", err)
	}
	sealedSecrets := in.sealedSecrets
	if len(sealedSecrets) == 0 {
		sealedSecrets = []byte("{}")
	}
	if err := os.WriteFile(sealedPath, sealedSecrets, 0o600); err != nil {
		return nil, fmt.Errorf("node: write sealed secrets: %w", err)
	}
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, fmt.Errorf("node: HOME: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	var cmd *exec.Cmd
	if cfg.Spec.PythonApplication != "" {
		host := filepath.Join(cfg.WorkDir, "mse_host.py")
		if err := os.WriteFile(host, []byte(pyHost), 0o500); err != nil {
			return nil, fmt.Errorf("node: write the app host: %w", err)
		}
		cmd = exec.Command(cfg.Python, host, cfg.Spec.PythonApplication, cfg.Spec.Runtime.Kind)
	} else {
		argv := cfg.Spec.Entrypoint
		prog, err := resolveProgram(argv[0], codeDir)
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(prog, argv[1:]...)
	}
	cmd.Dir = codeDir
	// MSE's environment: PORT, HOME (writable), SECRETS_PATH,
	// SEALED_SECRETS_PATH, MODULE_PATH. PATH names the runtime's directories.
	cmd.Env = []string{
		"PATH=" + strings.Join(searchPath, ":"),
		"HOME=" + home,
		"TMPDIR=" + cfg.WorkDir,
		"LANG=C.UTF-8",
		"PYTHONUNBUFFERED=1",
		"PYTHONDONTWRITEBYTECODE=1",
		"PORT=" + strconv.Itoa(port),
		"SECRETS_PATH=" + secretsPath,
		"SEALED_SECRETS_PATH=" + sealedPath,
		"MODULE_PATH=" + codeDir,
		"MSE_APP_ID=" + cfg.Spec.AppID,
	}
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("node: start the app (%s): %w", cmd.Path, err)
	}
	a := &runningApp{n: n, cmd: cmd, port: port, exited: make(chan struct{})}
	go func() { a.waitErr = cmd.Wait(); close(a.exited) }()
	n.log.Info("app started", "pid", cmd.Process.Pid, "port", port)

	deadline := time.Now().Add(cfg.HealthTimeout)
	var lastErr error
	for {
		// Each check is bounded by the deadline too, so that an app that
		// accepts connections but never answers fails within HealthTimeout.
		hctx, cancel := context.WithDeadline(ctx, deadline)
		lastErr = a.health(hctx)
		cancel()
		if lastErr == nil {
			return a, nil
		}
		select {
		case <-a.exited:
			a.stop() // the group may hold children the app left behind
			return nil, fmt.Errorf("node: the app exited before it answered its health check: %v", exitString(a.waitErr))
		case <-ctx.Done():
			a.stop()
			return nil, ctx.Err()
		case <-time.After(healthPoll(time.Until(deadline), cfg.HealthTimeout)):
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, fmt.Errorf("node: the app did not answer its health check within %s (start_timeout): %v; it must listen on 127.0.0.1:$PORT (PORT=%d)", cfg.HealthTimeout, lastErr, port)
		}
	}
}

// resolveProgram finds the entrypoint's program: relative to the code
// directory when it has a '/', absolute as given, and a bare name in the
// runtime's directories (searchPath), never the host's PATH.
func resolveProgram(prog, codeDir string) (string, error) {
	switch {
	case filepath.IsAbs(prog):
		return prog, nil
	case strings.Contains(prog, "/"):
		return filepath.Join(codeDir, prog), nil
	}
	for _, dir := range searchPath {
		p := filepath.Join(dir, prog)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("node: entrypoint %q is not in the runtime (looked in %s); use ./%s for a program in your code directory", prog, strings.Join(searchPath, ", "), prog)
}

// healthPoll polls fast while the app starts (most answer within a second),
// then more slowly.
func healthPoll(left, total time.Duration) time.Duration {
	if total-left < 2*time.Second {
		return 25 * time.Millisecond
	}
	return 200 * time.Millisecond
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var healthClient = &http.Client{Timeout: 5 * time.Second}

func (a *runningApp) health(ctx context.Context) error {
	path := a.n.cfg.Spec.HealthcheckEndpoint
	if path == "" {
		path = "/"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", a.port, path), nil)
	if err != nil {
		return err
	}
	resp, err := healthClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	// Readiness is the health check: a 2xx or 3xx on healthcheck_endpoint.
	// What "/" answers does not matter (an API may answer 401 there).
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("health check GET %s answered HTTP %d; healthcheck_endpoint must answer 2xx when the app is ready", path, resp.StatusCode)
	}
	return nil
}

func (a *runningApp) handler() http.Handler {
	target := &url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", a.port)}
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			r.SetXForwarded()
			r.Out.Host = r.In.Host
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeJSON(w, http.StatusBadGateway, map[string]string{"error": "the app did not answer"})
		},
	}
}

// monitor watches the app until ctx ends, it exits, health fails three times
// in a row, or the app expires.
func (a *runningApp) monitor(ctx context.Context, expired <-chan time.Time, serveErr <-chan error) error {
	t := time.NewTicker(a.n.cfg.HealthInterval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-expired:
			return ErrExpired
		case err := <-serveErr:
			return fmt.Errorf("node: serve: %w", err)
		case <-a.exited:
			return fmt.Errorf("node: the app exited: %v", exitString(a.waitErr))
		case <-t.C:
			if err := a.health(ctx); err != nil {
				failures++
				a.n.log.Warn("health check failed", "err", err, "consecutive", failures)
				if failures >= 3 {
					return fmt.Errorf("node: the app failed its health check 3 times in a row: %v", err)
				}
			} else {
				failures = 0
			}
		}
	}
}

// stop terminates the app's process group: SIGTERM, then SIGKILL after 5s.
func (a *runningApp) stop() {
	a.once.Do(func() {
		pid := a.cmd.Process.Pid
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-a.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			<-a.exited
		}
		// Children the app left in its group do not outlive it.
		_ = syscall.Kill(-pid, syscall.SIGKILL)
	})
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.String()
	}
	return err.Error()
}
