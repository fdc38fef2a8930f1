package testenv

import (
	"context"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// A NetworkPolicy is enforced on real pods of the kubelet's pod network
// (kube-router's controller): ingress only from the selected peer on the
// selected port, egress only to the selected pod and port (no other pod, no
// port of this machine: the kubelet API, a listener on the pod network's
// gateway); deleting the policy opens the pod again. Each refusal has its
// control: the same dial succeeds before the policy exists.
func TestKubeletNetworkPolicies(t *testing.T) {
	k := Kube(t)
	k.NetworkPolicies(t)
	kl := k.Kubelet(t)
	ns := k.Namespace(t)
	a := kl.ProbePod(t, ns, "a", map[string]string{"netpol-test": "a"}, 8080, 8081)
	b := kl.ProbePod(t, ns, "b", map[string]string{"netpol-test": "b", "peer": "yes"}, 8080)
	c := kl.ProbePod(t, ns, "c", map[string]string{"netpol-test": "c"}, 8080)
	hostAddr, hostBanner := ServeBanner(t, net.JoinHostPort(PodGateway, "0"), "host")
	t.Logf("pods a %s, b %s, c %s; host listener %s; kubelet API %s", a.IP, b.IP, c.IP, hostAddr, kl.APIAddr)

	// Controls: without a policy every pod reaches every other and this
	// machine's ports.
	c.MustReach(t, a.Addr(8080), a.Banner(8080))
	b.MustReach(t, a.Addr(8081), a.Banner(8081))
	a.MustReach(t, c.Addr(8080), c.Banner(8080))
	a.MustReach(t, b.Addr(8080), b.Banner(8080))
	a.MustReach(t, hostAddr, hostBanner)
	a.MustReach(t, kl.APIAddr, "")
	if t.Failed() {
		t.FailNow()
	}

	tcp := corev1.ProtocolTCP
	p8080 := intstr.FromInt(8080)
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "a-only", Namespace: ns},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"netpol-test": "a"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"peer": "yes"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p8080}},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{
				To:    []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"netpol-test": "b"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p8080}},
			}},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := k.Client.NetworkingV1().NetworkPolicies(ns).Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitDial(t, a.Addr(8080), false, 30*time.Second)
	t.Logf("policy enforced %s after it was created", time.Since(start).Round(time.Millisecond))

	// Ingress: only the peer, only on its port; this machine always.
	b.MustReach(t, a.Addr(8080), a.Banner(8080))
	b.MustNotReach(t, a.Addr(8081))
	c.MustNotReach(t, a.Addr(8081))
	if r := DialHost(a.Addr(8081), 3*time.Second); !r.Connected || r.Banner != a.Banner(8081) {
		t.Errorf("host -> a:8081: %v; kube-router admits the pod's own node", r)
	}
	// Egress: only b on 8080.
	a.MustReach(t, b.Addr(8080), b.Banner(8080))
	a.MustNotReach(t, c.Addr(8080))
	a.MustNotReach(t, hostAddr)
	a.MustNotReach(t, kl.APIAddr)
	// Pods the policy does not select are untouched.
	c.MustReach(t, b.Addr(8080), b.Banner(8080))
	b.MustReach(t, c.Addr(8080), c.Banner(8080))

	if err := k.Client.NetworkingV1().NetworkPolicies(ns).Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitDial(t, a.Addr(8080), true, 30*time.Second)
	a.MustReach(t, hostAddr, hostBanner)
}

// The rules kube-router leaves are recognized by their chains' names, and
// nothing else is.
func TestPolicyChainNames(t *testing.T) {
	for _, tc := range []struct {
		chain string
		want  bool
	}{
		{"KUBE-ROUTER-FORWARD", true},
		{"KUBE-ROUTER-INPUT", true},
		{"KUBE-POD-FW-ABCDEF0123456789", true},
		{"KUBE-NWPLCY-DEFAULT", true},
		{"KUBE-NWPLCY-XYZ", true},
		{"KUBE-FIREWALL", false},
		{"KUBE-KUBELET-CANARY", false},
		{"FORWARD", false},
		{"ACCEPT", false},
		{"kube-router-forward", false},
		{"", false},
	} {
		if got := kubeRouterChain(tc.chain); got != tc.want {
			t.Errorf("kubeRouterChain(%q) = %v, want %v", tc.chain, got, tc.want)
		}
	}
}
