package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

var (
	m1 = strings.Repeat("a1", 32)
	m2 = strings.Repeat("b2", 32)
	s1 = strings.Repeat("c3", 32)
	s2 = strings.Repeat("d4", 32)
)

func TestPolicyCheck(t *testing.T) {
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	mb, _ := hex.DecodeString(m1)
	sb, _ := hex.DecodeString(s1)
	good := func() *Verified {
		return &Verified{Type: TypeSGX, Measurement: mb, Signer: sb, ProductID: 3, SVN: 5, TCBStatus: TCBUpToDate, CollateralIssued: now.Add(-24 * time.Hour)}
	}
	pid := uint16(3)
	base := func() *Policy {
		return &Policy{TEETypes: []string{TypeSGX, TypeSim}, Measurements: []string{m1}, Signers: []string{s1}, ProductID: &pid, MinSVN: 2,
			MaxCollateralAge: Duration{48 * time.Hour}}
	}
	if err := base().Check(good(), now); err != nil {
		t.Fatalf("good evidence refused: %v", err)
	}
	cases := []struct {
		name  string
		pol   func(*Policy)
		ver   func(*Verified)
		check string
		msgs  []string
	}{
		{"tee type", nil, func(v *Verified) { v.Type = TypeTDX }, "tee_type", []string{`TEE type "tdx"`, "accepted: sgx, sim"}},
		{"simulation", nil, func(v *Verified) { v.Type = TypeSim; v.Simulated = true }, "simulation", []string{"simulated", "allow_simulation"}},
		{"simulated flag on other type", nil, func(v *Verified) { v.Simulated = true }, "simulation", []string{"simulated"}},
		{"debug", nil, func(v *Verified) { v.Debug = true }, "debug", []string{"debug mode", "allow_debug"}},
		{"no runtime", func(p *Policy) { p.Measurements, p.Signers = nil, nil }, nil, "measurement", []string{"names no measurements and no signers"}},
		{"measurement", nil, func(v *Verified) { v.Measurement, _ = hex.DecodeString(m2) }, "measurement", []string{"measurement " + m2 + " is not", "accepted: " + m1[:8] + "…"}},
		{"signer", nil, func(v *Verified) { v.Signer, _ = hex.DecodeString(s2) }, "signer", []string{"MRSIGNER " + s2 + " is not", "accepted: " + s1[:8] + "…"}},
		{"product id", nil, func(v *Verified) { v.ProductID = 4 }, "product_id", []string{"ISVPRODID 4", "accepts (3)"}},
		{"svn", nil, func(v *Verified) { v.SVN = 1 }, "svn", []string{"ISVSVN 1", "minimum 2"}},
		{"tcb default", nil, func(v *Verified) { v.TCBStatus = TCBSWHardeningNeeded }, "tcb_status", []string{"TCB status SWHardeningNeeded", "accepted: UpToDate"}},
		{"tcb listed", func(p *Policy) { p.AcceptedTCBStatuses = []string{TCBSWHardeningNeeded} }, nil, "tcb_status", []string{"TCB status UpToDate", "accepted: SWHardeningNeeded"}},
		{"tcb unchecked", nil, func(v *Verified) { v.TCBStatus = TCBUnchecked }, "tcb_status", []string{"TCB status unchecked"}},
		{"advisory", func(p *Policy) { p.AcceptedAdvisories = []string{"INTEL-SA-00001"} }, func(v *Verified) { v.AdvisoryIDs = []string{"INTEL-SA-00001", "INTEL-SA-00615"} }, "advisory", []string{"advisory INTEL-SA-00615", "accepted: INTEL-SA-00001"}},
		{"advisory none accepted", nil, func(v *Verified) { v.AdvisoryIDs = []string{"INTEL-SA-00615"} }, "advisory", []string{"advisory INTEL-SA-00615", "accepted: none"}},
		{"collateral age", nil, func(v *Verified) { v.CollateralIssued = now.Add(-72 * time.Hour) }, "collateral_age", []string{"issued 72h0m0s ago", "max_collateral_age 48h0m0s"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, v := base(), good()
			if c.pol != nil {
				c.pol(p)
			}
			if c.ver != nil {
				c.ver(v)
			}
			err := p.Check(v, now)
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("Check = %v, want a *PolicyError", err)
			}
			if pe.Check != c.check {
				t.Errorf("Check = %q, want %q", pe.Check, c.check)
			}
			if !strings.HasPrefix(err.Error(), "verification failed: ") {
				t.Errorf("error %q has no prefix", err)
			}
			for _, m := range c.msgs {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not contain %q", err, m)
				}
			}
		})
	}
	// Acceptances.
	accept := []struct {
		name string
		pol  func(*Policy)
		ver  func(*Verified)
	}{
		{"simulation allowed", func(p *Policy) { p.AllowSimulation = true }, func(v *Verified) { v.Type = TypeSim; v.Simulated = true }},
		{"debug allowed", func(p *Policy) { p.AllowDebug = true }, func(v *Verified) { v.Debug = true }},
		{"signer only", func(p *Policy) { p.Measurements = nil }, func(v *Verified) { v.Measurement = []byte{1} }},
		{"measurement only", func(p *Policy) { p.Signers = nil }, func(v *Verified) { v.Signer = nil }},
		{"tcb listed", func(p *Policy) { p.AcceptedTCBStatuses = []string{TCBUpToDate, TCBOutOfDate} }, func(v *Verified) { v.TCBStatus = TCBOutOfDate }},
		{"advisory accepted", func(p *Policy) { p.AcceptedAdvisories = []string{"INTEL-SA-00615"} }, func(v *Verified) { v.AdvisoryIDs = []string{"INTEL-SA-00615"} }},
		{"no collateral", nil, func(v *Verified) { v.CollateralIssued = time.Time{} }},
		{"no age limit", func(p *Policy) { p.MaxCollateralAge = Duration{} }, func(v *Verified) { v.CollateralIssued = now.Add(-1000 * time.Hour) }},
	}
	for _, c := range accept {
		p, v := base(), good()
		if c.pol != nil {
			c.pol(p)
		}
		if c.ver != nil {
			c.ver(v)
		}
		if err := p.Check(v, now); err != nil {
			t.Errorf("%s: refused: %v", c.name, err)
		}
	}
	if err := (&Policy{}).Check(good(), now); err == nil {
		t.Error("the zero policy accepted evidence")
	}
}

func sampleClaims() Claims {
	h := sha256.Sum256([]byte("key"))
	cd := sha256.Sum256([]byte("code"))
	cf := sha256.Sum256([]byte("conf"))
	return Claims{
		PubkeyHash: h[:], Nonce: []byte("n0nce"), AppID: "app-1", CodeDigest: cd[:], ConfigDigest: cf[:],
		SealingKey: bytes.Repeat([]byte{9}, 32),
		Other:      map[string]cbor.RawMessage{"vendor-x": {0x63, 'a', 'b', 'c'}},
	}
}

func claimsEqual(a, b *Claims) bool {
	if !bytes.Equal(a.PubkeyHash, b.PubkeyHash) || !bytes.Equal(a.Nonce, b.Nonce) || a.AppID != b.AppID ||
		!bytes.Equal(a.CodeDigest, b.CodeDigest) || !bytes.Equal(a.ConfigDigest, b.ConfigDigest) ||
		!bytes.Equal(a.SealingKey, b.SealingKey) || len(a.Other) != len(b.Other) {
		return false
	}
	for k, v := range a.Other {
		if !bytes.Equal(v, b.Other[k]) {
			return false
		}
	}
	return true
}

func TestClaimsRoundTrip(t *testing.T) {
	c := sampleClaims()
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseClaims(b)
	if err != nil {
		t.Fatal(err)
	}
	if !claimsEqual(&c, got) {
		t.Fatalf("round trip: got %+v, want %+v", got, c)
	}
	// Deterministic: same claims, same bytes.
	b2, _ := got.Marshal()
	if !bytes.Equal(b, b2) {
		t.Error("Marshal is not deterministic")
	}
	// The interoperable form wraps the hash entry in a byte string.
	var raw map[string]cbor.RawMessage
	if err := CBORDecMode().Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	var wrapped []byte
	if err := CBORDecMode().Unmarshal(raw[ClaimPubkeyHash], &wrapped); err != nil {
		t.Fatalf("pubkey-hash is not bstr-wrapped: %v", err)
	}
	// Empty claims round trip to empty claims.
	e, err := (&Claims{}).Marshal()
	if err != nil || !bytes.Equal(e, []byte{0xa0}) {
		t.Fatalf("empty claims = %x, %v", e, err)
	}
}

func encMap(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := CBOREncMode().Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseClaimsPubkeyHashEncodings(t *testing.T) {
	h := sha256.Sum256([]byte("spki"))
	entry, _ := CBOREncMode().Marshal([]any{1, h[:]})
	for name, v := range map[string]any{
		"bstr-wrapped": entry,
		"bare array":   []any{1, h[:]},
	} {
		c, err := ParseClaims(encMap(t, map[string]any{ClaimPubkeyHash: v}))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !bytes.Equal(c.PubkeyHash, h[:]) {
			t.Errorf("%s: hash %x", name, c.PubkeyHash)
		}
	}
}

func TestParseClaimsRefusals(t *testing.T) {
	h := sha256.Sum256([]byte("x"))
	wrap := func(v any) []byte { b, _ := CBOREncMode().Marshal(v); return b }
	// A map with a duplicate key, written by hand: {"mse-app-id": "a", "mse-app-id": "b"}.
	dup := []byte{0xa2, 0x6a}
	dup = append(dup, "mse-app-id"...)
	dup = append(dup, 0x61, 'a', 0x6a)
	dup = append(dup, "mse-app-id"...)
	dup = append(dup, 0x61, 'b')
	// An indefinite-length map.
	indef := []byte{0xbf, 0x61, 'a', 0x01, 0xff}
	many := map[string]any{}
	for i := 0; i < 65; i++ {
		many[strings.Repeat("k", i+1)] = i
	}
	cases := []struct {
		name string
		b    []byte
		msg  string
	}{
		{"oversize", make([]byte, MaxClaimsSize+1), "more than the 16384 allowed"},
		{"duplicate key", dup, "not a CBOR map with text keys"},
		{"indefinite length", indef, "not a CBOR map with text keys"},
		{"too many pairs", encMap(t, many), "not a CBOR map with text keys"},
		{"not a map", wrap([]int{1, 2}), "not a CBOR map"},
		{"int keys", wrap(map[int]int{1: 2}), "not a CBOR map with text keys"},
		{"trailing data", append(wrap(map[string]int{"a": 1}), 0x00), "not a CBOR map"},
		{"hash not array", encMap(t, map[string]any{ClaimPubkeyHash: 5}), `"pubkey-hash" is not [alg, digest]`},
		{"hash 3 elements", encMap(t, map[string]any{ClaimPubkeyHash: []any{1, h[:], 3}}), `"pubkey-hash" is not [alg, digest]`},
		{"hash sha-384", encMap(t, map[string]any{ClaimPubkeyHash: []any{7, h[:]}}), "only hash algorithm 1"},
		{"hash short", encMap(t, map[string]any{ClaimPubkeyHash: wrap([]any{1, h[:31]})}), "digest is not 32 bytes"},
		{"nonce text", encMap(t, map[string]any{ClaimNonce: "abc"}), `claim "nonce" is not a byte string`},
		{"nonce long", encMap(t, map[string]any{ClaimNonce: make([]byte, 65)}), `"nonce" is longer than 64 bytes`},
		{"app id bytes", encMap(t, map[string]any{ClaimAppID: []byte("a")}), `"mse-app-id" is not a short text string`},
		{"app id long", encMap(t, map[string]any{ClaimAppID: strings.Repeat("a", 129)}), `"mse-app-id" is not a short text string`},
		{"code digest short", encMap(t, map[string]any{ClaimCodeDigest: h[:16]}), `claim "mse-code-digest" is 16 bytes, want 32`},
		{"config digest text", encMap(t, map[string]any{ClaimConfigDigest: "x"}), `claim "mse-config-digest" is not a byte string`},
		{"sealing key short", encMap(t, map[string]any{ClaimSealingKey: h[:31]}), `claim "mse-sealing-key" is 31 bytes, want 32`},
	}
	for _, c := range cases {
		_, err := ParseClaims(c.b)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.msg)
		}
	}
}

func TestCheckReportData(t *testing.T) {
	claims := []byte("claims bytes")
	rd := ReportData(claims)
	h := sha256.Sum256(claims)
	if !bytes.Equal(rd[:32], h[:]) || [32]byte(rd[32:]) != [32]byte{} {
		t.Fatalf("ReportData = %x", rd)
	}
	if err := CheckReportData(rd, claims); err != nil {
		t.Fatal(err)
	}
	if err := CheckReportData(rd, []byte("other claims")); err == nil || !strings.Contains(err.Error(), "report data does not match the SHA-256 of the certificate's claims") {
		t.Errorf("other claims: %v", err)
	}
	extra := rd
	extra[40] = 1
	if err := CheckReportData(extra, claims); err == nil || !strings.Contains(err.Error(), "[32:64] is not zero") {
		t.Errorf("extra data: %v", err)
	}
	var zero [64]byte
	if err := CheckReportData(zero, claims); err == nil {
		t.Error("zero report data accepted")
	}
}

func TestDuration(t *testing.T) {
	var d Duration
	if err := d.UnmarshalText([]byte("1h30m")); err != nil || d.Duration != 90*time.Minute {
		t.Fatalf("UnmarshalText = %v, %v", d, err)
	}
	b, _ := d.MarshalText()
	if string(b) != "1h30m0s" {
		t.Errorf("MarshalText = %s", b)
	}
}

// FuzzParseClaims: untrusted claims never panic, and what parses survives a
// Marshal/ParseClaims round trip unchanged.
func FuzzParseClaims(f *testing.F) {
	c := sampleClaims()
	b, _ := c.Marshal()
	f.Add(b)
	f.Add([]byte{0xa0})
	f.Add([]byte{0xa1, 0x6b, 'p', 'u', 'b', 'k', 'e', 'y', '-', 'h', 'a', 's', 'h', 0x80})
	f.Add([]byte{0xbf, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c1, err := ParseClaims(b)
		if err != nil {
			return
		}
		if len(c1.PubkeyHash) != 0 && len(c1.PubkeyHash) != 32 {
			t.Fatalf("pubkey-hash of %d bytes accepted", len(c1.PubkeyHash))
		}
		if len(c1.Nonce) > 64 || len(c1.AppID) > 128 {
			t.Fatal("oversize claim accepted")
		}
		m, err := c1.Marshal()
		if err != nil {
			// ParseClaims keeps unknown claims as raw, well-formed CBOR, which
			// may still be invalid (e.g. tag 1 over a byte string) and then
			// does not re-encode. The claims this platform knows always do.
			c1.Other = nil
			if m, err = c1.Marshal(); err != nil {
				t.Fatalf("parsed claims do not marshal: %v", err)
			}
		}
		c2, err := ParseClaims(m)
		if err != nil {
			t.Fatalf("marshalled claims do not parse: %v", err)
		}
		if !claimsEqual(c1, c2) {
			t.Fatalf("round trip changed the claims:\n%+v\n%+v", c1, c2)
		}
	})
}
