package ratls

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

// TestVerifyRuntime: the runtime image the hardware attests must be the one
// the node claims, the one the owner asked for, and one the policy accepts.
func TestVerifyRuntime(t *testing.T) {
	rtA := sha256.Sum256([]byte("runtime A"))
	rtB := sha256.Sum256([]byte("runtime B"))
	cases := []struct {
		name    string
		quoted  [32]byte // zero: the hardware states none
		claimed []byte
		expect  []byte
		policy  []string
		check   string // "" = must verify
		msg     string
	}{
		{name: "ok", quoted: rtA, claimed: rtA[:], expect: rtA[:]},
		{name: "ok with policy", quoted: rtA, claimed: rtA[:], expect: rtA[:], policy: []string{"sha256:" + hex.EncodeToString(rtA[:])}},
		{name: "claim differs from the hardware", quoted: rtA, claimed: rtB[:], expect: rtB[:], check: "runtime",
			msg: "attests runtime sha256:" + hex.EncodeToString(rtA[:]) + ", but the node claims sha256:" + hex.EncodeToString(rtB[:])},
		{name: "another runtime than asked", quoted: rtA, claimed: rtA[:], expect: rtB[:], check: "runtime",
			msg: "the node runs runtime sha256:" + hex.EncodeToString(rtA[:]) + ", not sha256:" + hex.EncodeToString(rtB[:]) + " that you asked for"},
		{name: "hardware states none", claimed: rtA[:], expect: rtA[:], check: "runtime", msg: "attests no runtime image"},
		{name: "no claim", quoted: rtA, expect: rtA[:], check: "runtime", msg: "but the node claims no runtime;"},
		{name: "outside the policy", quoted: rtA, claimed: rtA[:], expect: rtA[:], policy: []string{"sha256:" + hex.EncodeToString(rtB[:])}, check: "policy",
			msg: "runtime sha256:" + hex.EncodeToString(rtA[:]) + " is not in the trust policy (accepted: sha256:" + hex.EncodeToString(rtB[:]) + ")"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := newFixture(t)
			g.issuer.id.RuntimeDigest = c.quoted
			g.claims.RuntimeDigest = c.claimed
			crt := g.cert(t, g.issuer)
			o := g.options()
			o.Expect.RuntimeDigest = c.expect
			o.Policy.Runtimes = c.policy
			id, err := Verify(context.Background(), crt, o)
			if c.check == "" {
				if err != nil {
					t.Fatal(err)
				}
				if string(id.Verified.RuntimeDigest) != string(c.quoted[:]) || string(id.Claims.RuntimeDigest) != string(c.claimed) {
					t.Errorf("runtime: verified %x, claimed %x", id.Verified.RuntimeDigest, id.Claims.RuntimeDigest)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Check != c.check || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("err = %v (check %v), want check %q with %q", err, ve, c.check, c.msg)
			}
		})
	}
}
