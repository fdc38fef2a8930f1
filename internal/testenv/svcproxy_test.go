package testenv

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"
)

// With the service proxy, the kubernetes Service leads to the API server,
// from this machine and from a pod on the pod network, and its certificate
// names the Service's address.
func TestServiceProxy(t *testing.T) {
	k := Kube(t)
	kl := k.Kubelet(t)
	k.ServiceProxy(t)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(k.caData)
	addr := net.JoinHostPort(kubeServiceIP, "443")
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{RootCAs: roots, ServerName: kubeServiceIP})
	if err != nil {
		t.Fatalf("TLS to the kubernetes Service from this machine: %v", err)
	}
	c.Close()
	ns := k.Namespace(t)
	p := kl.ProbePod(t, ns, "svc", map[string]string{"app": "svc"}, 8080)
	if r := p.Dial(t, addr, 5*time.Second); !r.Connected {
		t.Fatalf("a pod dialing the kubernetes Service: %s", r)
	}
}
