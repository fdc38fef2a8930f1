package attest

import "testing"

// A well-formed but invalid unknown claim (tag 1, epoch time, over a byte
// string) is refused, so parsed claims always marshal again.
func TestParseClaimsUnknownInvalid(t *testing.T) {
	// {"x": 1(h'00')}
	b := []byte{0xa1, 0x61, 'x', 0xc1, 0x41, 0x00}
	if _, err := ParseClaims(b); err == nil {
		t.Fatal("accepted tag 1 over a byte string")
	}
	// {"x": 1(0)} is fine and round-trips.
	c, err := ParseClaims([]byte{0xa1, 0x61, 'x', 0xc1, 0x00})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Marshal(); err != nil {
		t.Fatal(err)
	}
}
