package attest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// A verifier that did not report a value the policy checks is refused, not
// passed: a missing detail never weakens a policy.
func TestPolicyMissingDetail(t *testing.T) {
	h48 := strings.Repeat("ab", 48)
	for _, tc := range []struct {
		v     *Verified
		edit  func(p *Policy)
		check string
	}{
		{&Verified{Type: TypeTDX, Measurement: make([]byte, 48), TCBStatus: TCBUpToDate}, func(p *Policy) { p.TDX.RTMR0 = []string{h48} }, "rtmr0"},
		{&Verified{Type: TypeTDX, Measurement: make([]byte, 48), TCBStatus: TCBUpToDate}, func(p *Policy) {}, "sept_ve_disable"},
		{&Verified{Type: TypeSEVSNP, Measurement: make([]byte, 48)}, func(p *Policy) {}, "policy"},
	} {
		p := &Policy{TEETypes: []string{tc.v.Type}, Measurements: []string{strings.Repeat("00", 48)}}
		tc.edit(p)
		var pe *PolicyError
		if err := p.Check(tc.v, time.Now()); !errors.As(err, &pe) || pe.Check != tc.check {
			t.Errorf("%s: error %v, want check %s", tc.v.Type, err, tc.check)
		}
	}
}
