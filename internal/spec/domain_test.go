package spec

import (
	"strings"
	"testing"
)

func TestValidateDomain(t *testing.T) {
	for _, c := range []struct {
		d    string
		want string // "" = valid
	}{
		{"app.example.com", ""},
		{"app.example.com.", ""},
		{"APP.Example.com", ""},
		{"localhost", "not a fully qualified domain name"},
		{"*.example.com", "wildcard"},
		{"a_b.example.com", "not a valid domain name"},
		{strings.Repeat("a", 64) + ".example.com", "not a valid domain name"},
	} {
		err := ValidateDomain(c.d)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("ValidateDomain(%q) = %v, want %q", c.d, err, c.want)
		}
	}
}
