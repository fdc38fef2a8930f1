package backend

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/runtimes/image"
)

func TestRouterPeers(t *testing.T) {
	for _, c := range []struct {
		own, apps string
		want      string // the namespace selected, "" for the runner's default
	}{
		{"mse", "mse-apps", "mse"},
		{"mse-apps", "mse-apps", ""},
		{"", "mse-apps", ""},
	} {
		p := routerPeers(c.own, c.apps)
		if c.want == "" {
			if p != nil {
				t.Errorf("routerPeers(%q, %q) = %+v, want the default", c.own, c.apps, p)
			}
			continue
		}
		if len(p) != 1 || p[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != c.want ||
			p[0].PodSelector.MatchLabels["app.kubernetes.io/name"] != "mse-backend" {
			t.Errorf("routerPeers(%q, %q) = %+v", c.own, c.apps, p)
		}
	}
}

// The local runner offers only runtimes whose image it holds; with the
// kubernetes runner the cluster pulls them, so the catalog is offered as is.
func TestCatalogRequiresImagesOnlyLocally(t *testing.T) {
	dir := t.TempDir()
	st, err := image.Open(filepath.Join(dir, "store"), image.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	cat := filepath.Join(dir, "runtimes.json")
	if err := os.WriteFile(cat, []byte(`{"runtimes":[{"name":"flask","image":"mse/flask:bookworm","digest":"sha256:`+
		strings.Repeat("ab", 32)+`","kind":"wsgi"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		require bool
		want    int
	}{{true, 0}, {false, 1}} {
		fc, err := openCatalog(cat, st, c.require, log)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(fc.Entries()); got != c.want {
			t.Errorf("requireImages %v: %d entries offered, want %d", c.require, got, c.want)
		}
	}
}

func TestCIDRPeers(t *testing.T) {
	for _, c := range []struct {
		in      []string
		want    []string
		wantErr string
	}{
		{nil, nil, ""},
		{[]string{"192.0.2.2/32", "10.245.0.1/32"}, []string{"192.0.2.2/32", "10.245.0.1/32"}, ""},
		{[]string{"10.0.0.0/8"}, []string{"10.0.0.0/8"}, ""},
		{[]string{"10.1.2.3/8"}, nil, `"10.1.2.3/8" has host bits set: it would admit all of 10.0.0.0/8; give the address as 10.1.2.3/32`},
		{[]string{"192.0.2.2"}, nil, `--kube-backend-cidr "192.0.2.2" is not a CIDR`},
		{[]string{"10.0.0.0/33"}, nil, "is not a CIDR"},
	} {
		p, err := cidrPeers("--kube-backend-cidr", c.in)
		if c.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Errorf("cidrPeers(%q) error %v, want %q", c.in, err, c.wantErr)
			}
			continue
		}
		if err != nil || len(p) != len(c.want) {
			t.Fatalf("cidrPeers(%q) = %+v, %v", c.in, p, err)
		}
		for i, w := range c.want {
			if p[i].IPBlock == nil || p[i].IPBlock.CIDR != w || p[i].PodSelector != nil {
				t.Errorf("cidrPeers(%q)[%d] = %+v, want ipBlock %s", c.in, i, p[i], w)
			}
		}
	}
}

func TestCheckNodeMeasurement(t *testing.T) {
	sum := strings.Repeat("ab", 32)
	simHW := []runner.Hardware{{Name: "1g", TEE: attest.TypeSim}, {Name: "sgx-4g", TEE: attest.TypeSGX}, {Name: "2g", TEE: attest.TypeSim}}
	sgxHW := []runner.Hardware{{Name: "sgx-4g", TEE: attest.TypeSGX}}
	for _, c := range []struct {
		name    string
		m       string
		hw      []runner.Hardware
		wantErr string
	}{
		{"sim entries with it", sum, simHW, ""},
		{"sgx only, none", "", sgxHW, ""},
		{"sgx only, with it", sum, sgxHW, ""},
		{"sim entries, none", "", simHW, "the hardware catalog has sim entries (1g, 2g), whose quotes state the node image's mse-node: pass --node-measurement"},
		// The value itself: kubernetes.New (TestNewRefusesBadMeasurements).
	} {
		err := checkNodeMeasurement(c.m, c.hw)
		if c.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.wantErr)
		}
	}
}
