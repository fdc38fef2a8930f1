// Package apphost is how an app is started inside its runtime, shared by the
// node (in the enclave) and by the owner's `mse cloud localtest` (the same
// runtime image, no enclave): the Python app host that serves
// python_application with the runtime's server, the directories programs
// are looked up in, and the app's environment (MSE's variables).
package apphost

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// DefaultPython is the runtime's interpreter. Inside a sandbox the node sees
// only its runtime image, so nothing it runs comes from the host.
const DefaultPython = "/usr/bin/python3"

// SearchPath is where a bare entrypoint program is looked up: the runtime's
// directories, never the host's PATH.
var SearchPath = []string{"/usr/local/bin", "/usr/bin", "/bin"}

// PythonHost serves MSE's python_application ("module:variable") with the app
// server of the runtime: gunicorn for WSGI apps, uvicorn for ASGI apps, the
// kind detected from the app object when the runtime offers both ("any").
// Without gunicorn, a WSGI app falls back to the standard library's wsgiref
// (said on stderr). argv: module:variable kind. With MSE_HOST_WAIT=1 it
// pre-imports the servers and frameworks, then waits for a line on stdin:
// "start" goes on with argv's app, and "start {JSON}" with the JSON's "app"
// (module:variable), "kind" and "app_id" (MSE_APP_ID) instead: a standby
// node starts the host before it knows its app (StartLine).
const PythonHost = `
import importlib, inspect, json, os, sys

def die(msg):
    sys.stderr.write("mse: " + msg + "\n")
    sys.exit(3)

spec, kind = (sys.argv[1], sys.argv[2]) if len(sys.argv) > 2 else ("", "")

if os.environ.get("MSE_HOST_WAIT") == "1":
    # Warm start: the interpreter and the runtime's own libraries load while
    # the node waits for the owner's key; no app code exists yet. The node
    # writes "start" on stdin once the code and secrets are in place.
    for m in ("gunicorn.app.base", "uvicorn", "flask", "fastapi"):
        try:
            importlib.import_module(m)
        except Exception:
            pass
    line = sys.stdin.readline().strip()
    if line.startswith("start {"):
        given = json.loads(line[len("start "):])
        spec, kind = given["app"], given["kind"]
        os.environ["MSE_APP_ID"] = given["app_id"]
    elif line != "start":
        sys.exit(0)

if not spec:
    die("no python_application given to the app host")
module_name, _, var = spec.partition(":")

code = os.environ["MODULE_PATH"]
os.chdir(code)
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

// StartLine is what releases a waiting host (MSE_HOST_WAIT=1) for the app
// module:variable of that kind, with that app id.
func StartLine(app, kind, appID string) string {
	b, _ := json.Marshal(struct {
		App   string `json:"app"`
		Kind  string `json:"kind"`
		AppID string `json:"app_id"`
	}{app, kind, appID})
	return "start " + string(b) + "\n"
}

// Env is the app's environment, as MSE gave it.
type Env struct {
	Port          int
	Home          string // writable
	Tmp           string
	Secrets       string // SECRETS_PATH
	SealedSecrets string // SEALED_SECRETS_PATH
	Code          string // MODULE_PATH, also the working directory
	AppID         string
}

// List returns the environment as KEY=value strings: nothing of the
// caller's own environment.
func (e Env) List() []string {
	return []string{
		"PATH=" + strings.Join(SearchPath, ":"),
		"HOME=" + e.Home,
		"TMPDIR=" + e.Tmp,
		"LANG=C.UTF-8",
		"PYTHONUNBUFFERED=1",
		"PYTHONDONTWRITEBYTECODE=1",
		"PORT=" + strconv.Itoa(e.Port),
		"SECRETS_PATH=" + e.Secrets,
		"SEALED_SECRETS_PATH=" + e.SealedSecrets,
		"MODULE_PATH=" + e.Code,
		"MSE_APP_ID=" + e.AppID,
	}
}

// ResolveProgram finds an entrypoint's program: relative to the code
// directory when it has a '/', absolute as given, and a bare name in
// SearchPath under root ("/" inside a sandbox), never the host's PATH. It
// returns the path as the app will see it.
func ResolveProgram(prog, codeDir, root string) (string, error) {
	switch {
	case filepath.IsAbs(prog):
		return prog, nil
	case strings.Contains(prog, "/"):
		return filepath.Join(codeDir, prog), nil
	}
	for _, dir := range SearchPath {
		p := filepath.Join(dir, prog)
		if st, err := os.Stat(filepath.Join(root, p)); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("entrypoint %q is not in the runtime (looked in %s); use ./%s for a program in your code directory", prog, strings.Join(SearchPath, ", "), prog)
}

// FreePort picks a free loopback TCP port for the app's PORT.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Ready reports whether a health check's HTTP status means the app is
// ready: 2xx or 3xx on healthcheck_endpoint.
func Ready(status int) bool { return status >= 200 && status < 400 }
