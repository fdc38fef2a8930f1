package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// exampleApp copies examples/NAME (mse.toml, code, tests, secrets) into a
// temp dir and returns its mse.toml.
func exampleApp(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	e2eutil.CopyTree(t, filepath.Join(testenv.RepoRoot(), "examples", name), dst)
	return filepath.Join(dst, "mse.toml")
}

// needPytest: the examples' tests are the owner's pytest suites, run on the
// owner's machine (here, Debian's python3-pytest and python3-requests).
func needPytest(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/usr/bin/pytest"); err != nil {
		ciskip.Missing(t, "pytest is not installed (apt-get install python3-pytest python3-requests): the examples' own tests need it")
	}
	t.Setenv("PATH", "/usr/bin:"+os.Getenv("PATH")) // Debian's pytest, with requests
}

// TestExamples deploys each example app as its mse.toml says (its own
// runtime, verified in simulation) and runs its own pytest suite against it
// with `mse cloud test`, as an MSE user would.
func TestExamples(t *testing.T) {
	needPytest(t)
	b := testenv.Start(t, testenv.Options{})
	b.Offer(t, testenv.Runtime(t, "pandas"))
	login(t, b, b.AdminToken)
	for _, ex := range []struct{ name, runtime, server string }{
		{"helloworld", "flask", "gunicorn"},
		{"flask-hello", "flask", "gunicorn"},
		{"fastapi-hello", "fastapi", "uvicorn"},
		{"pandas-stats", "pandas", "gunicorn"},
	} {
		t.Run(ex.name, func(t *testing.T) {
			toml := exampleApp(t, ex.name)
			d := mustDeploy(t, "--path", toml, "--policy", b.PolicyFile(t, ""))
			if !strings.Contains(d.stderr, "✔ Runtime "+ex.runtime+" (mse/"+ex.runtime+":bookworm") {
				t.Errorf("deploy did not run in runtime %s:\n%s", ex.runtime, d.stderr)
			}
			out, errs, code := run(t, "cloud", "test", d.AppID, "--path", toml)
			if code != 0 || !strings.Contains(errs, "✔ Tests passed") || !strings.Contains(out, "passed") {
				t.Fatalf("mse cloud test: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
			}
			logs, _ := mustRun(t, "cloud", "logs", d.AppID)
			if !strings.Contains(logs, "with "+ex.server) {
				t.Errorf("the app was not served by %s; logs:\n%s", ex.server, logs)
			}
			mustRun(t, "cloud", "stop", d.AppID)
		})
	}
}

// TestLocaltest runs an example in its runtime image on this machine, with
// no enclave, after downloading the image from the operator into an empty
// cache (checked against the catalog's digest), then runs its tests.
func TestLocaltest(t *testing.T) {
	needPytest(t)
	if _, err := os.Stat("/usr/bin/bwrap"); err != nil {
		ciskip.Missing(t, "bubblewrap is not installed (apt-get install bubblewrap): localtest needs it")
	}
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	t.Setenv("MSE_RUNTIME_DIR", t.TempDir()) // the owner's own cache: empty
	for _, name := range []string{"flask-hello", "fastapi-hello"} {
		t.Run(name, func(t *testing.T) {
			out, errs, code := run(t, "cloud", "localtest", "--path", exampleApp(t, name))
			if code != 0 || !strings.Contains(errs, "✔ Tests passed") {
				t.Fatalf("localtest: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
			}
			if !strings.Contains(errs, "✔ Downloaded runtime") {
				t.Errorf("localtest did not download the runtime into the empty cache:\n%s", errs)
			}
		})
	}
	// A second run finds the image in the cache.
	_, errs, code := run(t, "cloud", "localtest", "--path", exampleApp(t, "flask-hello"))
	if code != 0 || strings.Contains(errs, "Downloaded") {
		t.Fatalf("second localtest: exit %d\n%s", code, errs)
	}
	// Failing tests fail localtest.
	toml := exampleApp(t, "flask-hello")
	if err := os.WriteFile(filepath.Join(filepath.Dir(toml), "tests", "test_fail.py"), []byte("def test_fails():\n    assert False\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := run(t, "cloud", "localtest", "--path", toml); code == 0 || !strings.Contains(errs, "the tests failed") {
		t.Fatalf("localtest with a failing test: exit %d\n%s", code, errs)
	}
}

// TestScaffoldedApp: what `mse cloud scaffold` writes passes its own tests
// under localtest (its runtime, no enclave) and, deployed, under test.
func TestScaffoldedApp(t *testing.T) {
	needPytest(t)
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	t.Chdir(t.TempDir())
	mustRun(t, "cloud", "scaffold", "myapp")
	if _, errs, code := run(t, "cloud", "localtest", "--path", "myapp/mse.toml"); code != 0 || !strings.Contains(errs, "✔ Tests passed") {
		t.Fatalf("localtest of the scaffolded app: exit %d\n%s", code, errs)
	}
	d := mustDeploy(t, "--path", "myapp/mse.toml", "--policy", b.PolicyFile(t, ""))
	if out, errs, code := run(t, "cloud", "test", "--path", "myapp/mse.toml"); code != 0 || !strings.Contains(out, "2 passed") {
		t.Fatalf("mse cloud test of the scaffolded app: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}
	mustRun(t, "cloud", "stop", d.AppID)
}
