package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func TestMain(m *testing.M) { KubeMain(m) }

// A pod of a runtime image (imported into containerd, no registry) runs on
// the real kubelet, on the host's network, and answers on its port.
func TestKubeletRunsAPod(t *testing.T) {
	k := Kube(t)
	kl := k.Kubelet(t)
	flask := kl.probeImage(t)

	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	port := ports[0]
	ns := k.Namespace(t)
	no := false
	uid := int64(65532)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "smoke", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeSelector:                 map[string]string{KubeletLabel: "true"},
			Tolerations:                  []corev1.Toleration{{Key: KubeletLabel, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			HostNetwork:                  true,
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: &no,
			SecurityContext:              &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid},
			Containers: []corev1.Container{{
				Name: "web", Image: flask, ImagePullPolicy: corev1.PullNever,
				Command:        []string{"python3", "-m", "http.server", "--bind", KubeletLoopback, "--directory", "/etc", strconv.Itoa(port)},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Host: KubeletLoopback, Port: intstr.FromInt(port)}}, PeriodSeconds: 1},
			}},
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	got := kl.runPod(t, pod)
	t.Logf("pod Running and ready in %s on %s (pod IP %s)", time.Since(start).Round(time.Millisecond), got.Spec.NodeName, got.Status.PodIP)
	if got.Spec.NodeName != KubeletNode || got.Status.PodIP == "" || got.Status.PodIP != got.Status.HostIP {
		t.Fatalf("pod on %q with IP %q (host %q), want %s and the host's IP", got.Spec.NodeName, got.Status.PodIP, got.Status.HostIP, KubeletNode)
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/os-release", net.JoinHostPort(KubeletLoopback, strconv.Itoa(port))))
	if err != nil {
		t.Fatalf("GET from the pod: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Debian") {
		t.Fatalf("the pod served %d %q", resp.StatusCode, body)
	}

	// The pod log API: the API server dials the kubelet at the node's
	// address with its client certificate.
	var logs string
	for end := time.Now().Add(30 * time.Second); ; {
		b, err := k.Client.CoreV1().Pods(ns).GetLogs("smoke", &corev1.PodLogOptions{Container: "web"}).DoRaw(ctx)
		logs = string(b)
		if err == nil && strings.Contains(logs, `"GET /os-release HTTP/1.1" 200`) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("pod logs: %v\n%s\nkubelet log:\n%s", err, logs, tailFile(k.dir+"/kubelet.log", 3000))
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Anyone else is refused by the kubelet API.
	// It serves the certificate of the CA the API server verifies it with.
	roots := x509.NewCertPool()
	roots.AddCert(k.kubeletServingCA.cert)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	resp, err = hc.Get("https://" + kl.APIAddr + "/containerLogs/" + ns + "/smoke/web")
	if err != nil {
		t.Fatalf("GET the kubelet API anonymously: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("the kubelet API answered an anonymous request with HTTP %d, want 401", resp.StatusCode)
	}
}

// A pod on the bridge pod network (not the host's): it gets an address of
// the test's pod subnet, and the host reaches it there.
func TestKubeletPodNetwork(t *testing.T) {
	k := Kube(t)
	kl := k.Kubelet(t)
	flask := kl.probeImage(t)
	ns := k.Namespace(t)
	no := false
	uid := int64(65532)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "podnet", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeSelector:                 map[string]string{KubeletLabel: "true"},
			Tolerations:                  []corev1.Toleration{{Key: KubeletLabel, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
			RestartPolicy:                corev1.RestartPolicyNever,
			AutomountServiceAccountToken: &no,
			SecurityContext:              &corev1.PodSecurityContext{RunAsUser: &uid, RunAsGroup: &uid},
			Containers: []corev1.Container{{
				Name: "web", Image: flask, ImagePullPolicy: corev1.PullNever,
				Command:        []string{"python3", "-m", "http.server", "--directory", "/etc", "8080"},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt(8080)}}, PeriodSeconds: 1},
			}},
		},
	}
	got := kl.runPod(t, pod)
	t.Logf("pod IP %s, host IP %s", got.Status.PodIP, got.Status.HostIP)
	if _, podNet, _ := net.ParseCIDR(PodCIDR); !podNet.Contains(net.ParseIP(got.Status.PodIP)) {
		t.Fatalf("pod IP %q is not on the pod network %s", got.Status.PodIP, PodCIDR)
	}
	resp, err := http.Get("http://" + net.JoinHostPort(got.Status.PodIP, "8080") + "/os-release")
	if err != nil {
		t.Fatalf("GET from the pod: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Debian") {
		t.Fatalf("the pod served %d %q", resp.StatusCode, body)
	}
}
