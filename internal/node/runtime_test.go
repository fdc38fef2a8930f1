package node

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestBundleFromDescriptor: in a sandbox the bundle comes as an open
// descriptor (--bundle-fd), with no path; stage 2 and the app work the same.
func TestBundleFromDescriptor(t *testing.T) {
	needPython(t)
	b := pyBundle(t, nil)
	f, err := os.Open(b.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tn := startNode(t, b, baseSpec(), func(c *Config) { c.BundlePath, c.Bundle = "", f })
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	tn.waitApp(t, "/")
}

// readyApp answers 401 on / (an API that wants a token) and 200 on /health.
const readyApp = `
def app(environ, start_response):
    if environ["PATH_INFO"] == "/health":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"OK"]
    start_response("401 Unauthorized", [("Content-Type", "text/plain")])
    return [b"token please"]
`

// TestReadinessIsHealthCheck: an app whose / answers 401 runs, because its
// healthcheck_endpoint answers 200.
func TestReadinessIsHealthCheck(t *testing.T) {
	needPython(t)
	spec := baseSpec()
	spec.HealthcheckEndpoint = "/health"
	tn := startNode(t, makeBundle(t, map[string]string{"app.py": readyApp}), spec)
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _, body := tn.get(t, "/")
		if code == 401 && string(body) == "token please" {
			break
		}
		if !tn.running() || time.Now().After(deadline) {
			t.Fatalf("the app never served: HTTP %d %q, Run: %v", code, body, tn.runErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAppOnWrongPort: an app that listens elsewhere than $PORT fails within
// its start timeout, and the error says where it must listen.
func TestAppOnWrongPort(t *testing.T) {
	needPython(t)
	spec := baseSpec()
	spec.PythonApplication = ""
	spec.Entrypoint = []string{"./run.sh"}
	spec.HealthcheckEndpoint = "/"
	b := makeBundle(t, map[string]string{"run.sh": "#!/bin/sh\nexec python3 -m http.server 0 --bind 127.0.0.1\n"})
	tn := startNode(t, b, spec, func(c *Config) { c.HealthTimeout = 2 * time.Second })
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	err := tn.wait(t, 15*time.Second)
	if err == nil || !strings.Contains(err.Error(), "it must listen on 127.0.0.1:$PORT (PORT=") {
		t.Fatalf("Run = %v, want the PORT hint", err)
	}
}

// TestRemovedFlags: options that would change what the node runs or checks
// are not flags: the node refuses them instead of obeying an operator.
func TestRemovedFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--python", "/tmp/evil-python"},
		{"--max-attempts", "1000000"},
		{"--health-timeout", "1000h"},
	} {
		var stderr bytes.Buffer
		if code := Main(context.Background(), args, &stderr); code != 2 || !strings.Contains(stderr.String(), "flag provided but not defined: -"+strings.TrimLeft(args[0], "-")) {
			t.Errorf("mse-node %v: exit %d, %q", args, code, stderr.String())
		}
	}
}

// TestBareEntrypointNotFromHostPath: a bare program name is looked up in the
// runtime's directories only.
func TestBareEntrypointNotFromHostPath(t *testing.T) {
	needPython(t)
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/mse-evil-server", []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+":"+os.Getenv("PATH"))
	spec := baseSpec()
	spec.PythonApplication = ""
	spec.Entrypoint = []string{"mse-evil-server"}
	tn := startNode(t, makeBundle(t, map[string]string{"x": "y"}), spec)
	if code, r := tn.post(t, tn.request()); code != 200 {
		t.Fatalf("HTTP %d %+v", code, r)
	}
	err := tn.wait(t, 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), `entrypoint "mse-evil-server" is not in the runtime`) {
		t.Fatalf("Run = %v", err)
	}
}
