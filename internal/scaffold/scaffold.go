// Package scaffold creates a new MSE app directory: mse.toml, a Flask hello
// app, its .mseignore, pytest tests and a README (the Go counterpart of
// `mse cloud scaffold`). The tests pass under `mse cloud localtest` (the app
// in its runtime image on the owner's machine) and `mse cloud test` (the
// deployed app).
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

// DefaultRuntime is the runtime a scaffolded app asks for: the flask preset
// of `mse-backend runtime build`.
const DefaultRuntime = "mse/flask:bookworm"

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
	data := struct{ Name, CodeDir, TestsDir, Project, Hardware, Runtime string }{name, CodeDir, TestsDir, config.DefaultProject, config.DefaultHardware, DefaultRuntime}
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
tests_cmd = "pytest"             # run in [[.TestsDir]]/ by mse cloud test and localtest

[cloud]
code = "[[.CodeDir]]"       # packaged, encrypted and run inside the enclave
tests = "[[.TestsDir]]"
project = "[[.Project]]"
hardware = "[[.Hardware]]"
docker = "[[.Runtime]]"   # the runtime image: see ` + "`mse cloud runtimes`" + `
# start_timeout = "5m"                      # how long the app may take to answer /health
# secrets = "secrets.json"                  # JSON object, sent to the enclave only
# expiration_date = 2030-01-31T00:00:00Z    # default: the platform's maximum

# Serve the app on your own domain with your own certificate instead of the
# enclave's RA-TLS certificate (the key is sent to the enclave only):
# [cloud.ssl]
# domain_name = "app.example.com"
# certificate = "cert.pem"   # PEM chain, leaf first
# private_key = "key.pem"
`

const appPy = `"""[[.Name]]: an MSE app (Flask).

Inside MSE the node serves it with the runtime's gunicorn on the loopback port
given in PORT; app secrets (if any) are in the JSON file named by SECRETS_PATH;
HOME is writable; the code directory is MODULE_PATH.
"""

import os

from flask import Flask

app = Flask(__name__)
NAME = "[[.Name]]"


def _secrets_present():
    """Whether the app was given secrets; their content is never shown."""
    path = os.environ.get("SECRETS_PATH", "")
    return bool(path) and os.path.isfile(path)


@app.get("/health")
def health():
    """healthcheck_endpoint: the node serves the app once this answers 2xx."""
    return "OK"


@app.get("/")
def hello():
    return f"Hello from {NAME}!", 200, {"X-App-Secrets": "present" if _secrets_present() else "absent"}
`

const mseIgnore = `# Files of the code directory that are not packaged (same syntax as .gitignore).
__pycache__/
*.pyc
.env
.venv/
secrets.json
`

const testPy = `"""Tests of [[.Name]] (pytest).

` + "`mse cloud localtest`" + ` runs them against the app in its runtime image on your
machine, ` + "`mse cloud test`" + ` against the deployed app (trusting the certificate
deploy verified). Both set TEST_REMOTE_URL.
"""

import os

import requests

URL = os.environ["TEST_REMOTE_URL"].rstrip("/")


def test_hello():
    r = requests.get(URL + "/", timeout=10)
    assert r.status_code == 200
    assert r.text == "Hello from [[.Name]]!"


def test_health():
    r = requests.get(URL + "/health", timeout=10)
    assert r.status_code == 200
    assert r.text == "OK"
`

const readme = "# [[.Name]]\n\n" +
	"An MSE app: a Flask application, served in the enclave by the runtime's gunicorn.\n\n" +
	"| file | what |\n|---|---|\n" +
	"| `mse.toml` | the app's configuration (keys: docs/mse-toml.md of MSE-in-Go); `docker` names the runtime |\n" +
	"| `[[.CodeDir]]/app.py` | the app: `/` says hello, `/health` answers `OK` |\n" +
	"| `[[.CodeDir]]/.mseignore` | files of the code directory left out of the encrypted bundle |\n" +
	"| `[[.TestsDir]]/test_app.py` | its tests (pytest, against `TEST_REMOTE_URL`) |\n\n" +
	"Run it in its runtime image on this machine (no enclave), with its tests:\n\n" +
	"```console\n$ mse cloud localtest\n```\n\n" +
	"Deploy it from this directory, then run the same tests against the deployed app:\n\n" +
	"```console\n$ mse cloud deploy\n$ mse cloud test\n```\n\n" +
	"Inside the enclave the app is told its loopback port in `PORT`, the JSON file of its\n" +
	"secrets in `SECRETS_PATH` (if `[cloud] secrets` is set), a writable `HOME`, and its code\n" +
	"directory in `MODULE_PATH`. `mse cloud runtimes` lists the runtimes the operator offers.\n"
