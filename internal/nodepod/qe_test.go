package nodepod

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The relay's own answers, and what it makes of a broken backend (the
// backend's side is tested in internal/backend/api).
func TestQEHandler(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		switch {
		case r.Header.Get("Authorization") != "Bearer tok" || r.Method != "POST" || r.URL.Path != "/v1/nodes/app/quote":
			http.Error(w, "bad request", 400)
		case b[0] == 'h': // huge
			w.Write(bytes.Repeat([]byte{1}, maxQuote+1))
		case b[0] == 'e':
			w.WriteHeader(200)
		case b[0] == 'f':
			http.Error(w, "forbidden: not yours", 403)
		default:
			w.Write(append([]byte("QUOTE:"), b...))
		}
	}))
	defer backend.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, TokenFile), []byte("tok"), 0o600)
	os.WriteFile(filepath.Join(dir, QuoteURLFile), []byte(backend.URL+"/v1/nodes/app/quote"), 0o600)
	h, err := QEHandler(QEConfig{Credentials: dir})
	if err != nil {
		t.Fatal(err)
	}
	rd := func(c byte) string { return string(c) + strings.Repeat("x", 63) }
	for _, c := range []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"ok", "POST", "/quote", rd('o'), 200, "QUOTE:" + rd('o')},
		{"GET", "GET", "/quote", "", 405, "POST only"},
		{"other path", "POST", "/other", rd('o'), 404, ""},
		{"short", "POST", "/quote", "x", 400, "exactly 64 bytes"},
		{"long", "POST", "/quote", rd('o') + "x", 400, "exactly 64 bytes"},
		{"backend refuses", "POST", "/quote", rd('f'), 500, "403 Forbidden: forbidden: not yours"},
		{"huge answer", "POST", "/quote", rd('h'), 500, "a quote has 1 to 8192"},
		{"empty answer", "POST", "/quote", rd('e'), 500, "0 bytes"},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, strings.NewReader(c.body)))
		if rec.Code != c.code || !strings.Contains(rec.Body.String(), c.want) {
			t.Errorf("%s: %d %q, want %d with %q", c.name, rec.Code, rec.Body.String(), c.code, c.want)
		}
		if strings.Contains(rec.Body.String(), "tok") && !strings.HasPrefix(c.want, "QUOTE") {
			t.Errorf("%s: the answer shows the credential", c.name)
		}
	}

	os.WriteFile(filepath.Join(dir, QuoteURLFile), []byte("unix:///x"), 0o600)
	if _, err := QEHandler(QEConfig{Credentials: dir}); err == nil || !strings.Contains(err.Error(), "not an http(s) URL") {
		t.Errorf("bad quote-url: %v", err)
	}
	os.Remove(filepath.Join(dir, QuoteURLFile))
	if _, err := QEHandler(QEConfig{Credentials: dir}); err == nil || !strings.Contains(err.Error(), "quote-url") {
		t.Errorf("no quote-url (not a sim node): %v", err)
	}
	var out bytes.Buffer
	if code := Main([]string{"qe-proxy"}, &out); code != 2 || !strings.Contains(out.String(), "--listen") {
		t.Errorf("qe-proxy without --listen: exit %d %s", code, out.String())
	}
}
