package kubernetes_test

// The runner's NetworkPolicy enforced on real pods: testenv.NetworkPolicies
// runs kube-router's network-policy controller on the test kubelet. The
// runner spawns the app as usual (its pod goes to a kwok node, its policy to
// the API server); a probe pod on the kubelet's pod network carrying the
// node's labels stands in for the node, so the policy the runner wrote is
// the one enforced on it.

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	. "github.com/mse-in-go/mse/internal/backend/runner/kubernetes"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/spec"
	"github.com/mse-in-go/mse/internal/testenv"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// nodePort is the node's port in its pod (Config.Port's default).
const nodePort = 7443

// The runner's defaults, the backend in the cluster: only pods labelled
// app.kubernetes.io/name=mse-backend (the router) reach the node, on its
// port; the node reaches those pods on the bundle URL's port and nothing
// else: no other pod, no other port of the backend's, no port of this
// machine (the kubelet API, a listener on the pod network's gateway). The
// bundle URL being a name, the node also asks the cluster DNS (CoreDNS,
// testenv.ClusterDNS): it reaches the router's pods through a Service by
// name, as a node reaches the backend by --bundle-url. Stopping the app
// removes the policy.
func TestNetworkPolicyEnforcedInCluster(t *testing.T) {
	e := newEnv(t)
	e.k.NetworkPolicies(t)
	e.k.ClusterDNS(t)
	kl := e.k.Kubelet(t)
	id := uuid.NewString()
	node := kl.ProbePod(t, e.ns, "node-standin", map[string]string{LabelRole: RoleNode, LabelAppID: id}, nodePort, 8080)
	router := kl.ProbePod(t, e.ns, "router", map[string]string{"app.kubernetes.io/name": "mse-backend"}, 8081, 8082) // testBundleURL's port, and another
	other := kl.ProbePod(t, e.ns, "other", map[string]string{"app.kubernetes.io/name": "someone-else"}, 8080, nodePort)
	hostAddr, hostBanner := testenv.ServeBanner(t, net.JoinHostPort(testenv.PodGateway, "0"), "host")
	routerSvc := e.service(t, "router-svc", map[string]string{"app.kubernetes.io/name": "mse-backend"}, 8081) + ":8081"

	// Controls: no policy yet, all of it is reachable.
	node.MustReach(t, routerSvc, router.Banner(8081))
	other.MustReach(t, node.Addr(nodePort), node.Banner(nodePort))
	router.MustReach(t, node.Addr(8080), node.Banner(8080))
	node.MustReach(t, router.Addr(8082), router.Banner(8082))
	node.MustReach(t, other.Addr(8080), other.Banner(8080))
	node.MustReach(t, other.Addr(nodePort), other.Banner(nodePort))
	node.MustReach(t, hostAddr, hostBanner)
	node.MustReach(t, kl.APIAddr, "")
	if t.Failed() {
		t.FailNow()
	}

	r := e.runner(t, nil)
	hb, err := r.Spawn(context.Background(), id, spawnSpec(id, hw2g))
	if err != nil {
		t.Fatalf("spawn: %v", err)
	}
	start := time.Now()
	other.WaitDial(t, node.Addr(nodePort), false, 30*time.Second)
	t.Logf("the runner's policy enforced %s after Spawn", time.Since(start).Round(time.Millisecond))

	router.MustReach(t, node.Addr(nodePort), node.Banner(nodePort))
	router.MustNotReach(t, node.Addr(8080))
	other.MustNotReach(t, node.Addr(8080))
	node.MustReach(t, router.Addr(8081), router.Banner(8081))
	node.MustReach(t, routerSvc, router.Banner(8081)) // the DNS rule, and the Service to a peer
	node.MustNotReach(t, router.Addr(8082))
	node.MustNotReach(t, other.Addr(8080))
	node.MustNotReach(t, other.Addr(nodePort))
	node.MustNotReach(t, hostAddr)
	node.MustNotReach(t, kl.APIAddr)
	// Others are untouched.
	other.MustReach(t, router.Addr(8082), router.Banner(8082))

	if err := r.Stop(context.Background(), id, hb); err != nil {
		t.Fatal(err)
	}
	other.WaitDial(t, node.Addr(nodePort), true, 60*time.Second)
}

// The backend outside the cluster (as in the tests, and `mse-backend serve
// --runner kubernetes --kubeconfig …` from another machine): RouterPeers and
// BackendPeers are ipBlocks of its address, here this machine's on the pod
// network. No pod reaches the node; the node reaches the backend's port on
// that address and nothing else. (Traffic from this machine to a pod is
// always admitted by kube-router, for the kubelet's probes, so the router's
// own reach proves nothing more here.)
func TestNetworkPolicyEnforcedBackendOutside(t *testing.T) {
	e := newEnv(t)
	e.k.NetworkPolicies(t)
	e.k.ClusterDNS(t)
	kl := e.k.Kubelet(t)
	id := uuid.NewString()
	node := kl.ProbePod(t, e.ns, "node-standin", map[string]string{LabelRole: RoleNode, LabelAppID: id}, nodePort)
	other := kl.ProbePod(t, e.ns, "other", map[string]string{"app.kubernetes.io/name": "mse-backend"}, 8080) // the in-cluster router's label: not a peer here
	backendAddr, backendBanner := testenv.ServeBanner(t, net.JoinHostPort(testenv.PodGateway, "0"), "backend")
	hostAddr, hostBanner := testenv.ServeBanner(t, net.JoinHostPort(testenv.PodGateway, "0"), "host")
	_, bport, _ := net.SplitHostPort(backendAddr)
	otherSvc := e.service(t, "other-svc", map[string]string{"app.kubernetes.io/name": "mse-backend"}, 8080) + ":8080"

	node.MustReach(t, otherSvc, other.Banner(8080))
	other.MustReach(t, node.Addr(nodePort), node.Banner(nodePort))
	node.MustReach(t, other.Addr(8080), other.Banner(8080))
	node.MustReach(t, backendAddr, backendBanner)
	node.MustReach(t, hostAddr, hostBanner)
	node.MustReach(t, kl.APIAddr, "")
	if t.Failed() {
		t.FailNow()
	}

	backend := []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: testenv.PodGateway + "/32"}}}
	r := e.runner(t, func(c *Config) {
		c.BundleURL = "http://" + net.JoinHostPort(testenv.PodGateway, bport)
		c.RouterPeers, c.BackendPeers = backend, backend
	})
	if _, err := r.Spawn(context.Background(), id, spawnSpec(id, hw2g)); err != nil {
		t.Fatalf("spawn: %v", err)
	}
	np, err := e.admin.NetworkingV1().NetworkPolicies(e.ns).Get(context.Background(), ObjectName(id), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(np.Spec.Egress) != 1 || np.Spec.Egress[0].Ports[0].Port.String() != bport {
		t.Fatalf("egress %+v; want only the backend on %s (an IP bundle URL needs no DNS)", np.Spec.Egress, bport)
	}
	other.WaitDial(t, node.Addr(nodePort), false, 30*time.Second)

	if res := testenv.DialHost(node.Addr(nodePort), 3*time.Second); !res.Connected || res.Banner != node.Banner(nodePort) {
		t.Errorf("this machine -> node: %v", res)
	}
	node.MustReach(t, backendAddr, backendBanner)
	node.MustNotReach(t, hostAddr)
	node.MustNotReach(t, kl.APIAddr)
	node.MustNotReach(t, other.Addr(8080))
	other.MustNotReach(t, node.Addr(nodePort))
	// No DNS rule: the node cannot even resolve a name.
	if r := node.Dial(t, otherSvc, 10*time.Second); r.Connected || !strings.Contains(r.Error, "gaierror") {
		t.Errorf("node -> %s: %v; want the name unresolved (no DNS rule for an IP bundle URL)", otherSvc, r)
	}
}

// service creates Service name in the env's namespace, port to the same
// port of the pods with labels, routed and in the cluster DNS; it returns
// the short name pods resolve.
func (e *env) service(t *testing.T, name string, labels map[string]string, port int32) string {
	t.Helper()
	e.k.Service(t, e.ns, name, labels, port, port)
	return name
}

// tls_mode acme: besides the backend, the node reaches its ACME CA outside
// the cluster, on port 443 only, and the cluster DNS to find it; not port
// 443 inside the cluster's ranges, nor another port of the CA's host. This
// machine's address plays the CA's host (outside the private ranges the
// runner excludes: it is 192.0.2.2 here); the pod network's gateway is
// inside them.
func TestNetworkPolicyEnforcedACME(t *testing.T) {
	e := newEnv(t)
	e.k.NetworkPolicies(t)
	e.k.ClusterDNS(t)
	kl := e.k.Kubelet(t)
	if ip := net.ParseIP(kl.NodeIP); ip == nil || ip.IsPrivate() {
		ciskip.Missing(t, "this machine's address %s is in a private range, which the runner keeps the CA rule out of: the test plays the CA on this machine and needs an address outside them", kl.NodeIP)
	}
	id := uuid.NewString()
	node := kl.ProbePod(t, e.ns, "node-standin", map[string]string{LabelRole: RoleNode, LabelAppID: id}, nodePort)
	caAddr, caBanner := testenv.ServeBanner(t, net.JoinHostPort(kl.NodeIP, "443"), "ca")
	otherAddr, otherBanner := testenv.ServeBanner(t, net.JoinHostPort(kl.NodeIP, "0"), "ca-host-other-port")
	inside, insideBanner := testenv.ServeBanner(t, net.JoinHostPort(testenv.PodGateway, "443"), "inside")
	name := "kubernetes.default.svc:443" // resolves, through the DNS rule; its port is the API server relay's, not 443

	node.MustReach(t, caAddr, caBanner)
	node.MustReach(t, otherAddr, otherBanner)
	node.MustReach(t, inside, insideBanner)
	node.MustReach(t, name, "")
	if t.Failed() {
		t.FailNow()
	}

	r := e.runner(t, nil)
	s := spawnSpec(id, hw2g)
	s.App.TLSMode = config.TLSACME
	s.App.ACME = &spec.ACME{DirectoryURL: "https://ca.mse.test/dir"}
	if _, err := r.Spawn(context.Background(), id, s); err != nil {
		t.Fatalf("spawn: %v", err)
	}
	node.WaitDial(t, otherAddr, false, 30*time.Second)

	node.MustReach(t, caAddr, caBanner)
	node.MustNotReach(t, otherAddr)
	node.MustNotReach(t, inside)
	if r := node.Dial(t, name, 5*time.Second); r.Connected || strings.Contains(r.Error, "gaierror") {
		t.Errorf("node -> %s: %v; want the name resolved (the DNS rule) and the connection refused (not 443 outside)", name, r)
	}
}
