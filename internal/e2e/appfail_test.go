package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/testenv"
)

// writeApp writes a one-file Flask app and its mse.toml.
func writeApp(t *testing.T, name, appPy, extraToml string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "code"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "code", "app.py"), []byte(appPy), 0o644); err != nil {
		t.Fatal(err)
	}
	conf := "name = \"" + name + "\"\npython_application = \"app:app\"\nhealthcheck_endpoint = \"/health\"\n\n[cloud]\ncode = \"code\"\nhardware = \"1g\"\n" + extraToml
	p := filepath.Join(dir, "mse.toml")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAppFailures: an app that crashes while it starts, one that never
// becomes healthy, and one that is ASGI on a WSGI runtime: each deploy fails
// with the cause, and shows the app's last log lines.
func TestAppFailures(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	login(t, b, b.AdminToken)
	policy := b.PolicyFile(t, "")
	cases := []struct {
		name, app, toml string
		want            []string
		within          time.Duration
	}{
		{"crashes", "raise RuntimeError('boom at import')\n", "",
			[]string{"Last lines of the app's log:", "RuntimeError: boom at import", "the app did not start"}, time.Minute},
		{"unhealthy", "from flask import Flask\napp = Flask(__name__)\n@app.get('/health')\ndef h():\n    return 'not yet', 503\n", "start_timeout = 3\n",
			[]string{"did not answer its health check within 3s (start_timeout)", "answered HTTP 503"}, time.Minute},
		{"asgi-on-wsgi", "async def app(scope, receive, send):\n    pass\n", "docker = \"flask\"\n",
			[]string{"app:app is an ASGI app, but the runtime serves WSGI apps; choose an ASGI runtime"}, time.Minute},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			_, errs, code := deployJSON(t, "--path", writeApp(t, "fail-"+c.name, c.app, c.toml), "--policy", policy)
			if code == 0 {
				t.Fatal("deploy succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(errs, w) {
					t.Errorf("deploy output lacks %q:\n%s", w, errs)
				}
			}
			if el := time.Since(start); el > c.within {
				t.Errorf("deploy took %s to fail", el)
			}
		})
	}
}
