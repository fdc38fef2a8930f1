package backend

import "testing"

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
