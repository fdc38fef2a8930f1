package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/mse-in-go/mse/internal/cli"
	"github.com/mse-in-go/mse/internal/testenv"
)

// TestMain lets scripts run `mse` as a real program: testscript re-executes
// this test binary under that name, so every `exec mse …` (or plain `mse …`)
// is a separate process with its own environment and exit status, as a user
// would see it.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"mse": func() {
			// What `make build` bakes in with -ldflags: the default
			// trust policy accepts the mse-node built with this CLI.
			cli.NodeMeasurement = os.Getenv("MSE_TEST_NODE_MEASUREMENT")
			os.Exit(cli.Main(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
		},
	})
}

// TestScripts runs testdata/script/*.txtar (good_* must work, fail_* must be
// refused). Each script gets its own backend, started in-process on
// loopback, and these variables:
//
//	MSE_CONFIG_DIR  $WORK/config (the CLI's login and app contexts)
//	HOME            $WORK
//	MSE_URL         the backend's API URL
//	ADMIN_TOKEN     the backend's administrator token
//	ROUTER          the backend's SNI router (host:port)
//	SIM_ROOT        a PEM file of the backend's simulated platform root
//	MEASUREMENT     the mse-node measurement the backend's nodes report
//	POLICY          $WORK/policy.toml: a trust policy that accepts them (sim)
//	MSE_TEST_NODE_MEASUREMENT  $MEASUREMENT, read by the test's `mse` as
//	                the measurement it was released with (make build sets
//	                it with -ldflags), so the default policy accepts the
//	                backend's nodes, and --simulation is all a script adds
//
// and a copy of examples/helloworld in $WORK/helloworld. A script that names
// none of the backend's variables ($MSE_URL, $ADMIN_TOKEN, …) runs without a
// backend, to stay fast.
//
// Commands beyond testscript's own:
//
//	grepvar VAR REGEXP FILE   set $VAR to the first submatch of REGEXP in
//	                          FILE (stdout and stderr name the last command's)
//	expand IN OUT             copy IN to OUT with $VARS replaced
//
// MSE_SCRIPT_DIR=DIR runs the scripts of another directory instead.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 scriptDir(),
		RequireExplicitExec: false,
		Setup:               setup,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"grepvar": grepvar,
			"expand":  expand,
		},
	})
}

func setup(env *testscript.Env) error {
	env.Setenv("HOME", env.WorkDir)
	env.Setenv("MSE_CONFIG_DIR", filepath.Join(env.WorkDir, "config"))
	// Recorded real SGX evidence, kept in the repository (internal/attest/sgx/testdata, README there names the sources).
	env.Setenv("SGX_TESTDATA", filepath.Join(testenv.RepoRoot(), "internal", "attest", "sgx", "testdata"))
	if err := copyDir(filepath.Join(testenv.RepoRoot(), "examples", "helloworld"), filepath.Join(env.WorkDir, "helloworld")); err != nil {
		return err
	}
	if !needsBackend(env) {
		return nil
	}
	tb, ok := env.T().(testing.TB)
	if !ok {
		return fmt.Errorf("testscript did not give a testing.TB")
	}
	// A short data directory: the local runner puts a unix socket under
	// DATA/nodes/APP_ID/, and t.TempDir() (named after the script) can make
	// that path longer than a socket path may be.
	dataDir, err := os.MkdirTemp("", "mse-")
	if err != nil {
		return err
	}
	tb.Cleanup(func() { os.RemoveAll(dataDir) })
	b := testenv.Start(tb, testenv.Options{DataDir: dataDir})
	env.Defer(func() {
		b.Stop(tb)
		b.KillNodes()
	})
	policy := filepath.Join(env.WorkDir, "policy.toml")
	body := fmt.Sprintf("tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [%q]\n", b.Measurement)
	if err := os.WriteFile(policy, []byte(body), 0o600); err != nil {
		return err
	}
	env.Setenv("MSE_URL", b.APIURL)
	env.Setenv("ADMIN_TOKEN", b.AdminToken)
	env.Setenv("ROUTER", b.RouterAddr)
	env.Setenv("SIM_ROOT", b.SimRootFile)
	env.Setenv("MEASUREMENT", b.Measurement)
	env.Setenv("POLICY", policy)
	env.Setenv("MSE_TEST_NODE_MEASUREMENT", b.Measurement)
	return nil
}

func scriptDir() string {
	if d := os.Getenv("MSE_SCRIPT_DIR"); d != "" {
		return d
	}
	return filepath.Join("testdata", "script")
}

var backendVars = []string{"MSE_URL", "ADMIN_TOKEN", "ROUTER", "SIM_ROOT", "MEASUREMENT", "POLICY"}

// needsBackend reports whether the script uses one of backendVars.
func needsBackend(env *testscript.Env) bool {
	name := strings.TrimPrefix(filepath.Base(env.WorkDir), "script-")
	b, err := os.ReadFile(filepath.Join(scriptDir(), name+".txtar"))
	if err != nil {
		return true
	}
	for _, v := range backendVars {
		if strings.Contains(string(b), "$"+v) {
			return true
		}
	}
	return false
}

// grepvar VAR REGEXP FILE sets $VAR to the first submatch of REGEXP (or the
// whole match if it has no group) in FILE.
func grepvar(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! grepvar")
	}
	if len(args) != 3 {
		ts.Fatalf("usage: grepvar VAR REGEXP FILE")
	}
	re, err := regexp.Compile(`(?m)` + args[1])
	ts.Check(err)
	text := ts.ReadFile(args[2])
	m := re.FindStringSubmatch(text)
	if m == nil {
		ts.Fatalf("no match for %#q in %s", args[1], args[2])
	}
	v := m[0]
	if len(m) > 1 {
		v = m[1]
	}
	ts.Setenv(args[0], v)
	ts.Logf("%s=%s", args[0], v)
}

// expand IN OUT writes IN with $VARS (the script's environment) expanded.
func expand(ts *testscript.TestScript, neg bool, args []string) {
	if neg {
		ts.Fatalf("unsupported: ! expand")
	}
	if len(args) != 2 {
		ts.Fatalf("usage: expand IN OUT")
	}
	out := os.Expand(ts.ReadFile(args[0]), ts.Getenv)
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(out), 0o600))
}

func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o644)
	})
}
