package e2e

import (
	"context"
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/client"
	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// noApps fails if the backend holds any app: a refused deploy must not
// have uploaded anything.
func noApps(t *testing.T, b *testenv.Backend) {
	t.Helper()
	apps, err := apiFor(b, b.AdminToken).Apps(context.Background(), client.ListOptions{All: true})
	if err != nil || len(apps) != 0 {
		t.Fatalf("the backend holds %d apps (%v): the refused deploy uploaded", len(apps), err)
	}
}

// TestRuntimeReferences: a runtime the operator does not offer, and a pin
// to another digest, are refused before anything is uploaded, naming what
// is offered and the closest one.
func TestRuntimeReferences(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	rts := testenv.Runtimes(t)
	other := "sha256:" + strings.Repeat("0", 64)
	cases := []struct{ name, docker, want string }{
		{"unknown", "ghcr.io/cosmian/mse-flask:20230228091325", `runtime not offered: "ghcr.io/cosmian/mse-flask:20230228091325" is not in the operator's catalog; did you mean "mse/flask:bookworm"? Offered: mse/flask:bookworm (flask, wsgi), mse/fastapi:bookworm (fastapi, asgi)`},
		{"close to fastapi", "mse-fastapi", `did you mean "mse/fastapi:bookworm"?`},
		{"pinned elsewhere", "mse/flask:bookworm@" + other, "mse/flask:bookworm is pinned to " + other[:19] + "…, but the operator's mse/flask:bookworm is " + rts[0].Digest},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errs, code := deployJSON(t, "--path", helloApp(t, "ref-"+strings.ReplaceAll(c.name, " ", "-"), "docker = \""+c.docker+"\"\n"), "--policy", b.PolicyFile(t, ""))
			if code == 0 || !strings.Contains(errs, c.want) || !strings.Contains(errs, "mse.toml: cloud.docker: ") {
				t.Fatalf("deploy with docker = %q: exit %d\n%s\nwant %q", c.docker, code, errs, c.want)
			}
			noApps(t, b)
		})
	}
	// Pinned to the operator's own digest: accepted.
	d := mustDeploy(t, "--path", helloApp(t, "ref-pinned", "docker = \"mse/flask:bookworm@"+rts[0].Digest+"\"\n"), "--policy", b.PolicyFile(t, ""))
	mustRun(t, "cloud", "stop", d.AppID)
	// A policy that accepts other runtimes only refuses the node.
	pol := b.PolicyFile(t, "runtimes = [\""+other+"\"]\n")
	if _, errs, code := deployJSON(t, "--path", helloApp(t, "ref-policy", ""), "--policy", pol); code == 0 ||
		!strings.Contains(errs, "runtime "+rts[0].Digest+" is not in the trust policy (accepted: "+other+")") {
		t.Fatalf("deploy outside the policy's runtimes: exit %d\n%s", code, errs)
	}
}

// TestSubstitutedRuntimeFile: a runtime file changed on the operator's disk
// (here the interpreter) is caught before the node starts, naming the file;
// nothing runs on the changed tree.
func TestSubstitutedRuntimeFile(t *testing.T) {
	dir := testenv.PrivateRuntimes(t)
	b := testenv.Start(t, testenv.Options{RuntimeDir: dir})
	login(t, b, b.AdminToken)
	// A first deploy extracts and checks the tree.
	d := mustDeploy(t, "--path", helloApp(t, "rt-before", ""), "--policy", b.PolicyFile(t, ""))
	mustRun(t, "cloud", "stop", d.AppID)

	trees, _ := filepath.Glob(filepath.Join(dir, "rootfs", "*", "usr", "bin", "python3.11"))
	if len(trees) == 0 {
		t.Fatal("no extracted python3.11 in the private runtime store")
	}
	for _, p := range trees {
		// An operator's wrapper that would see the app's secrets.
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\ncat /run/work/secrets.json > /tmp/stolen\nexec /usr/bin/python3.11.real \"$@\"\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	_, errs, code := deployJSON(t, "--path", helloApp(t, "rt-after", ""), "--policy", b.PolicyFile(t, ""))
	if code == 0 || !strings.Contains(errs, "the operator's copy of runtime flask (sha256:") ||
		!strings.Contains(errs, "file usr/bin/python3.11 differs from the image") || strings.Contains(errs, dir) {
		t.Fatalf("deploy on a tampered runtime: exit %d\n%s", code, errs)
	}
}

// TestNodeBinaryReplaced: replacing the mse-node file after the runner
// measured it changes nothing: nodes run the measured bytes, and verify.
func TestNodeBinaryReplaced(t *testing.T) {
	orig := testenv.Build(t, "mse-node")
	bin := filepath.Join(t.TempDir(), "mse-node")
	raw, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	b := testenv.Start(t, testenv.Options{NodeBinary: bin})
	login(t, b, b.AdminToken)
	// The operator swaps the binary (rename over it), and rewrites it in place too.
	evil := filepath.Join(t.TempDir(), "evil")
	if err := os.WriteFile(evil, []byte("#!/bin/sh\necho EVIL-NODE-RAN\nsleep 600\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(evil, bin); err != nil {
		t.Fatal(err)
	}
	d := mustDeploy(t, "--path", helloApp(t, "swapped", ""), "--policy", b.PolicyFile(t, ""))
	if page, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: e2eutil.CertPool(t, d.Certificate)}); err != nil || page != "Hello world!" {
		t.Fatalf("GET = %q, %v", page, err)
	}
	logs, _ := mustRun(t, "cloud", "logs", d.AppID)
	if strings.Contains(logs, "EVIL-NODE-RAN") {
		t.Fatal("the replaced node binary ran")
	}
}
