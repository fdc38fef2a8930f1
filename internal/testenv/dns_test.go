package testenv

import (
	"net"
	"strings"
	"testing"
	"time"
)

// With the cluster DNS, a pod reaches a Service by each of its names (the
// short ones through the search path the kubelet writes), this machine
// resolves it through kube-dns, and a name no Service has does not
// resolve.
func TestClusterDNS(t *testing.T) {
	k := Kube(t)
	kl := k.Kubelet(t)
	k.ClusterDNS(t)
	ns := k.Namespace(t)
	srv := kl.ProbePod(t, ns, "srv", map[string]string{"app": "srv"}, 8080)
	svc := k.Service(t, ns, "echo", map[string]string{"app": "srv"}, 80, 8080)
	fqdn := "echo." + ns + ".svc." + ClusterDomain
	cli := kl.ProbePod(t, ns, "cli", map[string]string{"app": "cli"}, 8081)
	cli.MustReach(t, net.JoinHostPort(svc.Spec.ClusterIP, "80"), srv.Banner(8080)) // the control: the Service without a name
	for _, name := range []string{"echo", "echo." + ns, "echo." + ns + ".svc", fqdn} {
		cli.MustReach(t, name+":80", srv.Banner(8080))
	}
	r := cli.Dial(t, "nothere."+ns+".svc:80", 5*time.Second)
	if r.Connected || !strings.Contains(r.Error, "gaierror") {
		t.Errorf("a pod dialing a name no Service has: %v; want a resolution error", r)
	}
}
