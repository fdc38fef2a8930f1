package testenv

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
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
	svc, err := k.Client.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "srv"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	k.AwaitService(t, ns, "echo", time.Minute)
	fqdn := "echo." + ns + ".svc." + ClusterDomain
	// CoreDNS answers for the Service once its watch has it.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		addrs, err := ClusterResolver().LookupHost(ctx, fqdn)
		if err == nil && len(addrs) == 1 && addrs[0] == svc.Spec.ClusterIP {
			t.Logf("%s resolves through %s %s after the Service's creation", fqdn, ClusterDNSIP, time.Since(start).Round(time.Millisecond))
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("%s through %s = %v, %v; want %s", fqdn, ClusterDNSIP, addrs, err, svc.Spec.ClusterIP)
		}
	}
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
