package kubernetes

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/attest/sim"
)

// A sim node's quote states what the runner knows of it (the node image's
// mse-node, the app's runtime) and binds the report data it asked for.
func TestSimQuote(t *testing.T) {
	p, err := sim.NewPlatformInMemory()
	if err != nil {
		t.Fatal(err)
	}
	meas := strings.Repeat("ab", 32)
	rt := "sha256:" + strings.Repeat("cd", 32)
	hb := func(tee, runtime string) []byte {
		b, _ := json.Marshal(handle{Namespace: "ns", Pod: "mse-x", UID: "u", Port: 7443, TEE: tee, RuntimeDigest: runtime})
		return b
	}
	var rd [64]byte
	copy(rd[:], "report data of the node")

	m, _ := hex.DecodeString(meas)
	r := &Runner{cfg: Config{Platform: p, Measurement: meas}, measurement: (*[32]byte)(m)}
	q, err := r.SimQuote(hb(attest.TypeSim, rt), rd)
	if err != nil {
		t.Fatal(err)
	}
	v, err := sim.NewVerifier(p.RootCertificate(), time.Now).Verify(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(v.Measurement) != meas || "sha256:"+hex.EncodeToString(v.RuntimeDigest) != rt || v.ReportData != rd ||
		!bytes.Equal(v.Signer, sim.DevSigner[:]) {
		t.Errorf("quote states %x %x %x", v.Measurement, v.RuntimeDigest, v.ReportData)
	}

	for _, c := range []struct {
		name string
		r    *Runner
		h    []byte
		err  string
	}{
		{"sgx node", r, hb(attest.TypeSGX, rt), "quotes for itself"},
		{"no platform", &Runner{cfg: Config{Measurement: meas}, measurement: r.measurement}, hb(attest.TypeSim, rt), "no simulated platform"},
		{"no measurement", &Runner{cfg: Config{Platform: p}}, hb(attest.TypeSim, rt), "--node-measurement"},
		{"bad runtime digest", r, hb(attest.TypeSim, "sha256:zz"), "bad runtime digest"},
		{"bad handle", r, []byte("{}"), "bad node handle"},
	} {
		if _, err := c.r.SimQuote(c.h, rd); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: %v, want %q", c.name, err, c.err)
		}
	}
}
