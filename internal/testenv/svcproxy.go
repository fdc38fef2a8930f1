package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

var (
	svcProxyOnce sync.Once
	svcProxyErr  error
)

// svcProxy is the running service proxy.
type svcProxy struct {
	ln  net.Listener // the API server at this machine's address
	bin string
}

// ServiceProxy makes the cluster's Services work on the real kubelet's
// node (KubeCluster.Kubelet, started here if it is not): kube-proxy
// (iptables mode) runs on this machine against the test cluster, once per
// test binary, and routes each Service's cluster IP (and node ports) to its
// pods. The kubernetes Service routes to the API server at this machine's
// address (a relay to its loopback port), so that pods with the in-cluster
// configuration reach it; its certificate names that Service's IP. Without
// kube-proxy (scripts/k8s-tools.sh), iptables or root the test is skipped,
// or fails under CI=true.
func (k *KubeCluster) ServiceProxy(t testing.TB) {
	t.Helper()
	kl := k.Kubelet(t)
	svcProxyOnce.Do(func() { svcProxyErr = k.startServiceProxy(kl) })
	if errors.Is(svcProxyErr, errKubeMissing) {
		ciskip.Missing(t, "%v; build it with scripts/k8s-tools.sh, run as root", svcProxyErr)
	}
	if svcProxyErr != nil {
		t.Fatalf("testenv: service proxy: %v", svcProxyErr)
	}
}

func (k *KubeCluster) startServiceProxy(kl *Kubelet) error {
	bin := KubeToolsDir()
	var missing []string
	if fi, err := os.Stat(filepath.Join(bin, "kube-proxy")); err != nil || fi.Mode()&0o111 == 0 {
		missing = append(missing, filepath.Join(bin, "kube-proxy"))
	}
	for _, b := range []string{"iptables", "iptables-save", "iptables-restore"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s", errKubeMissing, strings.Join(missing, ", "))
	}
	// kube-proxy owns the host's nat table KUBE-* chains and rewrites them
	// whole: one runs per machine.
	if err := takeHostNet("kube-proxy"); err != nil {
		return err
	}
	sp := &svcProxy{bin: filepath.Join(bin, "kube-proxy")}
	ok := false
	defer func() {
		if !ok {
			sp.stop()
		}
	}()
	sp.cleanup() // no kube-proxy of this binary ran yet: what is left is a dead test binary's
	// The API server where the kubernetes Service leads: this machine's
	// address, relayed to its loopback port.
	var err error
	if sp.ln, err = net.Listen("tcp", net.JoinHostPort(kl.NodeIP, "0")); err != nil {
		return err
	}
	target := k.host[len("https://"):]
	go relay(sp.ln, target)
	k.svcProxy = sp
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	port := int32(sp.ln.Addr().(*net.TCPAddr).Port)
	ready, https, tcp := true, "https", corev1.ProtocolTCP
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "kubernetes-test", Namespace: "default", Labels: map[string]string{
			discoveryv1.LabelServiceName: "kubernetes", discoveryv1.LabelManagedBy: "mse-testenv"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{kl.NodeIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &https, Port: &port, Protocol: &tcp}},
	}
	if _, err := k.Client.DiscoveryV1().EndpointSlices("default").Create(ctx, slice, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("the kubernetes Service's endpoints: %w", err)
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	if _, err := k.run(bin, "kube-proxy", "--kubeconfig", k.Kubeconfig, "--hostname-override", KubeletNode,
		"--proxy-mode", "iptables", "--cluster-cidr", PodCIDR, "--conntrack-max-per-core", "0",
		"--metrics-bind-address", "127.0.0.1:"+strconv.Itoa(ports[0]), "--healthz-bind-address", "127.0.0.1:"+strconv.Itoa(ports[1]),
		"--v", "1"); err != nil {
		return err
	}
	// Ready once it has written the kubernetes Service's rule.
	for deadline := time.Now().Add(60 * time.Second); ; {
		if err := k.exited(); err != nil {
			return err
		}
		out, err := exec.Command("iptables", "-w", "-t", "nat", "-S", "KUBE-SERVICES").Output()
		if err == nil && bytes.Contains(out, []byte(kubeServiceIP+"/32")) {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-proxy wrote no rule for the kubernetes Service within 60 s:\n%s", tailFile(filepath.Join(k.dir, "kube-proxy.log"), 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}
	ok = true
	return nil
}

// relay forwards ln's connections to target until ln is closed (for the
// test binary's life: TCPProxy's are for one test).
func relay(ln net.Listener, target string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			u, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				c.Close()
				return
			}
			splice(c, u)
		}()
	}
}

// cleanup removes kube-proxy's rules (`kube-proxy --cleanup`).
func (sp *svcProxy) cleanup() {
	if out, err := exec.Command(sp.bin, "--cleanup").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "testenv: kube-proxy --cleanup: %v\n%s\n", err, tailString(string(out), 2000))
	}
}

// stop removes kube-proxy's rules (it has been stopped).
func (sp *svcProxy) stop() {
	if sp.ln != nil {
		sp.ln.Close()
	}
	sp.cleanup()
}

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// AwaitService waits until kube-proxy routes Service ns/service to its
// ready endpoints: a Deployment is available before the endpointslice
// controller and kube-proxy have its pods, and until then kube-proxy
// rejects the Service's connections. A TCP connection is no sign here: on
// this machine's network, something on the default route accepts
// connections to any address kube-proxy has no rule for yet. So the wait is
// on kube-proxy's rules: a DNAT to each ready endpoint of the Service's
// EndpointSlices, and no "has no endpoints" rejection. It fails the test
// after within, with the endpoints and kube-proxy's log.
func (k *KubeCluster) AwaitService(t testing.TB, ns, service string, within time.Duration) {
	t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var why string
	for {
		if why = k.serviceRouted(ctx, ns, service); why == "" {
			t.Logf("testenv: kube-proxy routes Service %s/%s to its endpoints %s after the wait began", ns, service, time.Since(start).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kube-proxy does not route Service %s/%s %s after its pods were ready: %s\nkube-proxy log:\n%s",
				ns, service, within, why, tailFile(filepath.Join(k.dir, "kube-proxy.log"), 3000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// serviceRouted is "" once kube-proxy's rules route ns/service to every
// ready endpoint of its EndpointSlices, else what is missing.
func (k *KubeCluster) serviceRouted(ctx context.Context, ns, service string) string {
	l, err := k.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + service})
	if err != nil {
		return fmt.Sprintf("listing its EndpointSlices: %v", err)
	}
	var want []string
	for _, s := range l.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				for _, p := range s.Ports {
					if p.Port != nil {
						want = append(want, net.JoinHostPort(a, strconv.Itoa(int(*p.Port))))
					}
				}
			}
		}
	}
	if len(want) == 0 {
		return "its EndpointSlices have no ready endpoint"
	}
	out, err := exec.Command("iptables-save").Output()
	if err != nil {
		return fmt.Sprintf("iptables-save: %v", err)
	}
	// kube-proxy's comments start "NS/NAME" then a space, a colon (the
	// port's name) or the closing quote: not NS/NAME-OTHER.
	comment := regexp.MustCompile(`--comment "` + regexp.QuoteMeta(ns+"/"+service) + `[ :"]`)
	var missing []string
	for _, w := range want {
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			if comment.MatchString(line) && strings.HasSuffix(line, "--to-destination "+w) {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("no DNAT rule yet to %v (ready endpoints %v)", missing, want)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if comment.MatchString(line) && strings.Contains(line, "has no endpoints") {
			return "a rule still rejects it: " + line
		}
	}
	return ""
}

// AwaitProxyForgets waits until kube-proxy no longer routes any Service to
// ip (a deleted pod's address): until then a Service connection may still
// go to it. It fails the test after within.
func (k *KubeCluster) AwaitProxyForgets(t testing.TB, ip string, within time.Duration) {
	t.Helper()
	start := time.Now()
	needle := []byte("--to-destination " + ip + ":")
	for {
		out, err := exec.Command("iptables-save", "-t", "nat").Output()
		if err != nil {
			t.Fatalf("iptables-save -t nat: %v", err)
		}
		if !bytes.Contains(out, needle) {
			t.Logf("testenv: kube-proxy forgot %s after %s", ip, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Since(start) > within {
			t.Fatalf("kube-proxy still routes to %s %s after its pod went\nkube-proxy log:\n%s", ip, within, tailFile(filepath.Join(k.dir, "kube-proxy.log"), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
