// Package scaffold creates a new MSE app directory: mse.toml, a Python WSGI
// hello app (standard library only), its .mseignore, a unittest test and a
// README (the Go counterpart of `mse cloud scaffold`).
package scaffold

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/template"
	"time"

	"github.com/mse-in-go/mse/internal/config"
)

// Directories of a scaffolded app, relative to its root.
const (
	CodeDir  = "mse_src"
	TestsDir = "tests"
)

var files = []struct {
	path string
	mode os.FileMode
	tmpl string
}{
	{config.FileName, 0o644, mseTOML},
	{CodeDir + "/app.py", 0o644, appPy},
	{CodeDir + "/.mseignore", 0o644, mseIgnore},
	{TestsDir + "/test_app.py", 0o644, testPy},
	{"README.md", 0o644, readme},
}

// Write creates dir/name holding a new app called name. name must satisfy the
// rule of mse.toml's name (config.ValidateName). The directory must not exist
// or be empty; on failure, what Write created is removed.
func Write(dir, name string) (err error) {
	if err := config.ValidateName(name); err != nil {
		return fmt.Errorf("scaffold: invalid app name: %w", err)
	}
	root := filepath.Join(dir, name)
	created, err := prepare(root)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if created {
				os.RemoveAll(root)
			} else {
				for _, f := range files {
					os.Remove(filepath.Join(root, filepath.FromSlash(f.path)))
				}
				os.Remove(filepath.Join(root, CodeDir))
				os.Remove(filepath.Join(root, TestsDir))
			}
		}
	}()
	data := struct{ Name, CodeDir, TestsDir, Project, Hardware string }{name, CodeDir, TestsDir, config.DefaultProject, config.DefaultHardware}
	for _, f := range files {
		var buf bytes.Buffer
		t := template.Must(template.New(f.path).Delims("[[", "]]").Parse(f.tmpl))
		if err := t.Execute(&buf, data); err != nil {
			return fmt.Errorf("scaffold: %s: %w", f.path, err)
		}
		p := filepath.Join(root, filepath.FromSlash(f.path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("scaffold: %w", err)
		}
		if err := writeNew(p, buf.Bytes(), f.mode); err != nil {
			return fmt.Errorf("scaffold: %w", err)
		}
	}
	// What we write must be what we accept.
	if _, err := config.Load(filepath.Join(root, config.FileName), time.Now()); err != nil {
		return fmt.Errorf("scaffold: generated configuration is invalid (bug): %w", err)
	}
	return nil
}

// prepare makes root, or accepts it if it is an empty directory.
func prepare(root string) (created bool, err error) {
	fi, err := os.Stat(root)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(root, 0o755); err != nil {
			return false, fmt.Errorf("scaffold: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("scaffold: %w", err)
	case !fi.IsDir():
		return false, fmt.Errorf("scaffold: %s exists and is not a directory", root)
	}
	d, err := os.Open(root)
	if err != nil {
		return false, fmt.Errorf("scaffold: %w", err)
	}
	defer d.Close()
	if _, err := d.Readdirnames(1); err != io.EOF {
		if err == nil {
			return false, fmt.Errorf("scaffold: %s already exists and is not empty; choose another name or directory", root)
		}
		return false, fmt.Errorf("scaffold: %w", err)
	}
	return false, nil
}

func writeNew(path string, b []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

const mseTOML = `# mse.toml of [[.Name]]. Every key is described in docs/mse-toml.md.
name = "[[.Name]]"
python_application = "app:app"   # module app.py of [[.CodeDir]]/, variable app
healthcheck_endpoint = "/health"
tests_cmd = "python3 -m unittest discover -v"   # run in [[.TestsDir]]/

[cloud]
code = "[[.CodeDir]]"       # packaged, encrypted and run inside the enclave
tests = "[[.TestsDir]]"
project = "[[.Project]]"
hardware = "[[.Hardware]]"
# secrets = "secrets.json"                  # JSON object, sent to the enclave only
# expiration_date = 2030-01-31T00:00:00Z    # default: the platform's maximum

# Serve the app on your own domain with your own certificate instead of the
# enclave's RA-TLS certificate (the key is sent to the enclave only):
# [cloud.ssl]
# domain_name = "app.example.com"
# certificate = "cert.pem"   # PEM chain, leaf first
# private_key = "key.pem"
`

const appPy = `"""[[.Name]]: an MSE app (WSGI, Python standard library only).

Inside MSE the node serves it on the loopback port given in PORT; app secrets
(if any) are in the JSON file named by SECRETS_PATH; the code directory is
MODULE_PATH. Run it locally with:  PORT=8080 python3 app.py
"""

import os
from wsgiref.simple_server import make_server

NAME = "[[.Name]]"


def _reply(start_response, status, body, extra_headers=()):
    data = body.encode("utf-8")
    headers = [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(data))),
    ]
    headers.extend(extra_headers)
    start_response(status, headers)
    return [data]


def _secrets_present():
    """Whether the app was given secrets; their content is never shown."""
    path = os.environ.get("SECRETS_PATH", "")
    return bool(path) and os.path.isfile(path)


def app(environ, start_response):
    """The WSGI application (python_application = "app:app")."""
    path = environ.get("PATH_INFO", "/") or "/"
    if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
        return _reply(start_response, "405 Method Not Allowed", "Method Not Allowed\n",
                      [("Allow", "GET, HEAD")])
    if path == "/health":
        return _reply(start_response, "200 OK", "OK")
    if path == "/":
        secrets = "present" if _secrets_present() else "absent"
        return _reply(start_response, "200 OK", f"Hello from {NAME}!",
                      [("X-App-Secrets", secrets)])
    return _reply(start_response, "404 Not Found", "Not Found\n")


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "8080"))
    with make_server("127.0.0.1", port, app) as httpd:
        print(f"{NAME} listening on http://127.0.0.1:{port}", flush=True)
        httpd.serve_forever()
`

const mseIgnore = `# Files of the code directory that are not packaged (same syntax as .gitignore).
__pycache__/
*.pyc
.env
.venv/
secrets.json
`

const testPy = `"""Tests of [[.Name]] (standard library unittest).

Run from this directory:  python3 -m unittest discover -v
They call the WSGI app directly; set APP_URL (e.g. http://127.0.0.1:8080) to
test a running instance over HTTP instead.
"""

import os
import sys
import unittest
import urllib.request
from wsgiref.util import setup_testing_defaults

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "[[.CodeDir]]"))

import app  # noqa: E402


def get(path):
    """GET path; returns (status code, body)."""
    base = os.environ.get("APP_URL")
    if base:
        with urllib.request.urlopen(base.rstrip("/") + path, timeout=10) as resp:
            return resp.status, resp.read().decode("utf-8")
    environ = {"PATH_INFO": path}
    setup_testing_defaults(environ)
    status = []
    body = b"".join(app.app(environ, lambda s, h: status.append(s)))
    return int(status[0].split()[0]), body.decode("utf-8")


class AppTest(unittest.TestCase):
    def test_hello(self):
        code, body = get("/")
        self.assertEqual(code, 200)
        self.assertEqual(body, "Hello from [[.Name]]!")

    def test_health(self):
        code, body = get("/health")
        self.assertEqual(code, 200)
        self.assertEqual(body, "OK")


if __name__ == "__main__":
    unittest.main()
`

const readme = "# [[.Name]]\n\n" +
	"An MSE app: a WSGI application written with Python's standard library only.\n\n" +
	"| file | what |\n|---|---|\n" +
	"| `mse.toml` | the app's configuration (keys: docs/mse-toml.md of MSE-in-Go) |\n" +
	"| `[[.CodeDir]]/app.py` | the app: `/` says hello, `/health` answers `OK` |\n" +
	"| `[[.CodeDir]]/.mseignore` | files of the code directory left out of the encrypted bundle |\n" +
	"| `[[.TestsDir]]/test_app.py` | its tests (`unittest`) |\n\n" +
	"Run it locally, then test it:\n\n" +
	"```console\n" +
	"$ (cd [[.CodeDir]] && PORT=8080 python3 app.py) &\n" +
	"$ (cd [[.TestsDir]] && APP_URL=http://127.0.0.1:8080 python3 -m unittest discover -v)\n" +
	"```\n\n" +
	"Deploy it from this directory:\n\n" +
	"```console\n$ mse cloud deploy\n```\n\n" +
	"Inside the enclave the app is told its loopback port in `PORT`, the JSON file of its\n" +
	"secrets in `SECRETS_PATH` (if `[cloud] secrets` is set) and its code directory in\n" +
	"`MODULE_PATH`.\n"
