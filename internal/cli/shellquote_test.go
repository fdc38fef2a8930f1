package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestShellQuote(t *testing.T) {
	cases := []struct{ in, want string }{
		{"", "''"},
		{"plain", "plain"},
		{"/home/me/.config/mse/contexts/9bbc9e33-6083.pem", "/home/me/.config/mse/contexts/9bbc9e33-6083.pem"},
		{"app.example.com:8443:127.0.0.1", "app.example.com:8443:127.0.0.1"},
		{"https://app.example.com:8443/", "https://app.example.com:8443/"},
		{"a@b%c+d=e,f_g", "a@b%c+d=e,f_g"},
		{"two words", "'two words'"},
		{"it's", `'it'\''s'`},
		{"'", `''\'''`},
		{"; touch pwned", "'; touch pwned'"},
		{"$(touch pwned)", "'$(touch pwned)'"},
		{"`touch pwned`", "'`touch pwned`'"},
		{"a&&b", "'a&&b'"},
		{"a|b", "'a|b'"},
		{"a>b", "'a>b'"},
		{"*", "'*'"},
		{"[::1]:8443", "'[::1]:8443'"},
		{"~root", "'~root'"},
		{"#comment", "'#comment'"},
		{"a\nb", "'a\nb'"},
		{`back\slash`, `'back\slash'`},
		{`"dq"`, `'"dq"'`},
		{"{a,b}", "'{a,b}'"},
		{"!history", "'!history'"},
		{"é", "'é'"},
		{"\x1b[2J", "'\x1b[2J'"},
	}
	for _, c := range cases {
		if got := shellQuote(c.in); got != c.want {
			t.Errorf("shellQuote(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestShellQuoteRoundTrip runs each quoted word through a real shell: it must
// come back as one unchanged argument, and nothing in it may run.
func TestShellQuoteRoundTrip(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatalf("no sh to check quoting against: %v", err)
	}
	dir := t.TempDir()
	marker := filepath.Join(dir, "pwned")
	words := []string{"", "plain", "two words", "it's", "''", "; touch " + marker, "$(touch " + marker + ")", "`touch " + marker + "`",
		"a\nb; touch " + marker, "*", "$HOME", "${IFS}", `\'`, "'; touch " + marker + "; '", "!!", "-n"}
	for _, w := range words {
		out, err := exec.Command(sh, "-c", "printf '%s|' "+shellQuote(w)).Output()
		if err != nil {
			t.Fatalf("sh on %q: %v", shellQuote(w), err)
		}
		if string(out) != w+"|" {
			t.Errorf("%q quoted as %q reads back as %q", w, shellQuote(w), out)
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a quoted word ran a command")
	}
}

func TestCommandLines(t *testing.T) {
	curl, err := curlLine("app-1.example.com", "127.0.0.1:8443", "/tmp/my dir/ctx.pem", "self")
	if err != nil {
		t.Fatal(err)
	}
	if want := "curl --cacert '/tmp/my dir/ctx.pem' --resolve app-1.example.com:8443:127.0.0.1 https://app-1.example.com:8443/"; curl != want {
		t.Errorf("curl line\n got %s\nwant %s", curl, want)
	}
	curl, err = curlLine("app-1.example.com", "[::1]:443", "/c.pem", "owner")
	if err != nil {
		t.Fatal(err)
	}
	if want := "curl --resolve 'app-1.example.com:443:[::1]' https://app-1.example.com/"; curl != want {
		t.Errorf("curl line\n got %s\nwant %s", curl, want)
	}
	v, err := verifyLine("app-1.example.com", "router.example.net:8443", strings.Repeat("ab", 32), true)
	if err != nil {
		t.Fatal(err)
	}
	if want := "mse cloud verify app-1.example.com --addr router.example.net:8443 --fingerprint " + strings.Repeat("ab", 32) + " --simulation"; v != want {
		t.Errorf("verify line\n got %s\nwant %s", v, want)
	}

	for _, c := range []struct{ domain, router string }{
		{"app.example.com;touch x", "127.0.0.1:8443"},
		{"app.example.com", "127.0.0.1:8443;touch x"},
		{"app.example.com", "127.0.0.1"},
		{"app.example.com", ""},
		{"app.example.com", "127.0.0.1:0"},
		{"app.example.com", "127.0.0.1:99999"},
		{"app.example.com", "$(id):443"},
		{"app.example.com", "exa mple.com:443"},
		{"", "127.0.0.1:8443"},
		{"localhost", "127.0.0.1:8443"},
		{"a.example.com\x1b[2J", "127.0.0.1:8443"},
	} {
		if l, err := curlLine(c.domain, c.router, "/c.pem", "self"); err == nil {
			t.Errorf("curlLine(%q, %q) = %q, want an error", c.domain, c.router, l)
		}
		if l, err := verifyLine(c.domain, c.router, "00", false); err == nil {
			t.Errorf("verifyLine(%q, %q) = %q, want an error", c.domain, c.router, l)
		}
	}
}
