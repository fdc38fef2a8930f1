package cli

import (
	"strings"
	"testing"
	"time"
)

func TestTimeoutFlag(t *testing.T) {
	for in, want := range map[string]time.Duration{"15": 15 * time.Minute, "90s": 90 * time.Second, "1h30m": 90 * time.Minute} {
		var f timeoutFlag
		if err := f.Set(in); err != nil || f.d != want {
			t.Errorf("Set(%q) = %v, %v; want %v", in, f.d, err, want)
		}
	}
	for _, in := range []string{"0", "-3", "soon", "-1m", ""} {
		var f timeoutFlag
		if err := f.Set(in); err == nil {
			t.Errorf("Set(%q) accepted: %v", in, f.d)
		}
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"plain name":            "plain name",
		"tab\tok":               "tab\tok",
		"esc\x1b[31mred":        "esc\uFFFD[31mred",
		"bell\a cr\r nl\n":      "bell\uFFFD cr\uFFFD nl\uFFFD",
		"bidi \u202e evil":      "bidi \uFFFD evil",
		"del\x7f c1\u009b":      "del\uFFFD c1\uFFFD",
		"ünïcödé is fine ✔":     "ünïcödé is fine ✔",
		"\uFFFD stays as it is": "\uFFFD stays as it is",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
	if got := sanitizeText("a\nb\x1bc", true); got != "a\nb\uFFFDc" {
		t.Errorf("sanitizeText keeping newlines = %q", got)
	}
}

func TestPackageSummary(t *testing.T) {
	got := packageSummary([]string{"libc6=2.36", "python3-flask=2.2.2-3", "python3-minimal=3.11", "python3-gunicorn=20.1.0-4"})
	if got != "python3-flask=2.2.2-3 python3-gunicorn=20.1.0-4" {
		t.Errorf("summary %q", got)
	}
	var many []string
	for i := 0; i < 9; i++ {
		many = append(many, "python3-p"+string(rune('a'+i)))
	}
	if got := packageSummary(many); !strings.HasSuffix(got, "(+3)") {
		t.Errorf("long summary %q", got)
	}
}
