package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/testenv"
)

// TestBackendRewritesURL puts a proxy in front of a real backend that
// rewrites every app's `url` to another host (a valid URL, so the client
// takes it). A verified deploy prints the URL of the domain the node
// attested, and the printed curl line, run by a shell, reaches the app.
func TestBackendRewritesURL(t *testing.T) {
	b := testenv.Start(t, testenv.Options{})
	target, _ := url.Parse(b.APIURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	const evil = "https://evil.example.net/"
	rp.ModifyResponse = func(resp *http.Response) error {
		if !strings.HasPrefix(resp.Request.URL.Path, "/v1/apps") || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		var v any
		if json.Unmarshal(body, &v) == nil {
			rewrite := func(m map[string]any) {
				if _, ok := m["url"]; ok {
					m["url"] = evil
				}
			}
			switch x := v.(type) {
			case map[string]any:
				rewrite(x)
			case []any:
				for _, e := range x {
					if m, ok := e.(map[string]any); ok {
						rewrite(m)
					}
				}
			}
			body, _ = json.Marshal(v)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	proxy := httptest.NewServer(rp)
	defer proxy.Close()

	t.Setenv("MSE_CONFIG_DIR", t.TempDir())
	t.Setenv("MSE_BACKEND_URL", "")
	t.Setenv("MSE_TOKEN", "")
	mustRun(t, "cloud", "login", "--url", proxy.URL, "--token", b.AdminToken)
	out, errs := mustRun(t, "cloud", "deploy", "-y", "--timeout", "90s", "--path", helloApp(t, "rewrite", ""), "--policy", b.PolicyFile(t, ""))
	if strings.Contains(out+errs, "evil") {
		t.Fatalf("the backend's url reached deploy's output:\n%s\n%s", out, errs)
	}
	id := appIDFrom(t, errs)
	a, err := apiFor(b, b.AdminToken).App(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(b.RouterAddr, ":")
	want := "https://" + a.Domains[0] + ":" + port + "/"
	if !strings.Contains(out, "Your app is running at "+want+"\n") {
		t.Fatalf("deploy did not print %s:\n%s", want, out)
	}
	var curl string
	for _, l := range strings.Split(out, "\n") {
		if c, ok := strings.CutPrefix(l, "  curl "); ok {
			curl = "curl " + c
		}
	}
	page, err := exec.Command("sh", "-c", curl+" --silent --show-error --fail").Output()
	if err != nil || string(page) != "Hello world!" {
		t.Fatalf("the printed curl line %q: %q, %v", curl, page, err)
	}
	mustRun(t, "cloud", "stop", id)
}
