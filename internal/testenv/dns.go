package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/mse-in-go/mse/internal/runtimes/image"
	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// CoreDNSEnv names the directory holding the coredns binary
// (scripts/coredns.sh builds it there).
const CoreDNSEnv = "MSE_COREDNS"

// CoreDNSVersion is the version tools/coredns builds.
const CoreDNSVersion = "v1.14.7"

// The cluster's DNS, as the kubelet hands it to pods (clusterDNS,
// clusterDomain in kubeletConfig): the kube-dns Service's address.
const (
	ClusterDNSIP  = "10.96.0.10"
	ClusterDomain = "cluster.local"
)

// coreDNSImage is the name the CoreDNS image is imported as.
const coreDNSImage = "localhost/mse-test/coredns:" + CoreDNSVersion

// CoreDNSDir is where coredns is: $MSE_COREDNS, or the cache directory
// scripts/coredns.sh fills by default.
func CoreDNSDir() string { return cacheDir(CoreDNSEnv, "coredns-"+CoreDNSVersion) }

var (
	dnsOnce sync.Once
	dnsErr  error
)

// errDNSMissing: CoreDNS is not built.
var errDNSMissing = errors.New("the cluster DNS is missing")

// ClusterDNS gives the cluster a DNS, as clusters have: CoreDNS
// (tools/coredns, its kubernetes plugin) runs as the Deployment coredns in
// kube-system, with the labels, service account and RBAC rules of CoreDNS's
// own manifests, behind the Service kube-dns at ClusterDNSIP, on the real
// kubelet's pod network (KubeCluster.Kubelet and ServiceProxy, started here
// if they are not). Pods of the pod network then resolve
// NAME.NAMESPACE.svc (and the short forms, through the search path) to
// Services' cluster IPs. Once per test binary; without CoreDNS
// (scripts/coredns.sh) the test is skipped, or fails under CI=true.
func (k *KubeCluster) ClusterDNS(t testing.TB) {
	t.Helper()
	kl := k.Kubelet(t)
	k.ServiceProxy(t)
	dnsOnce.Do(func() { dnsErr = k.startClusterDNS(kl) })
	if errors.Is(dnsErr, errDNSMissing) {
		ciskip.Missing(t, "%v; build CoreDNS with scripts/coredns.sh (into %s; %s overrides the directory)", dnsErr, CoreDNSDir(), CoreDNSEnv)
	}
	if dnsErr != nil {
		t.Fatalf("testenv: cluster DNS: %v", dnsErr)
	}
}

// corefile serves the cluster domain from the API (Services, and pod
// records as CoreDNS's default manifest has them); there is nothing to
// forward other names to. The records' TTL is the kubernetes plugin's
// default, 5 s (the manifest's 30 s would also keep a name asked before
// its Service existed unresolved for 30 s, through the negative cache).
const corefile = `.:53 {
    errors
    health {
        lameduck 1s
    }
    ready
    kubernetes ` + ClusterDomain + ` in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
}
`

func (k *KubeCluster) startClusterDNS(kl *Kubelet) error {
	bin := filepath.Join(CoreDNSDir(), "coredns")
	if fi, err := os.Stat(bin); err != nil || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%w: %s", errDNSMissing, bin)
	}
	start := time.Now()
	if err := kl.importFiles(image.FilesSpec{Files: []image.File{{Path: "/coredns", Mode: 0o555, Source: bin}}, Entrypoint: []string{"/coredns"}}, coreDNSImage); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "kube-system"
	labels := map[string]string{"k8s-app": "kube-dns"}
	cs := k.Client
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "coredns"}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("coredns service account: %w", err)
	}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
		},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("coredns cluster role: %w", err)
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "system:coredns"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:coredns"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "coredns", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("coredns cluster role binding: %w", err)
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "coredns"},
		Data: map[string]string{"Corefile": corefile}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("coredns config: %w", err)
	}
	one, no, yes, root := int32(1), false, true, int64(0)
	udp, tcp := corev1.ProtocolUDP, corev1.ProtocolTCP
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "coredns", Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					ServiceAccountName: "coredns",
					DNSPolicy:          corev1.DNSDefault, // not itself
					NodeSelector:       map[string]string{KubeletLabel: "true"},
					Tolerations:        []corev1.Toleration{{Key: KubeletLabel, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
					Containers: []corev1.Container{{
						Name: "coredns", Image: coreDNSImage, ImagePullPolicy: corev1.PullNever,
						Args: []string{"-conf", "/etc/coredns/Corefile"},
						Ports: []corev1.ContainerPort{
							{Name: "dns", ContainerPort: 53, Protocol: udp},
							{Name: "dns-tcp", ContainerPort: 53, Protocol: tcp},
						},
						VolumeMounts: []corev1.VolumeMount{{Name: "config", MountPath: "/etc/coredns", ReadOnly: true}},
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}},
							PeriodSeconds: 1},
						SecurityContext: &corev1.SecurityContext{
							RunAsUser: &root, AllowPrivilegeEscalation: &no, ReadOnlyRootFilesystem: &yes,
							Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_BIND_SERVICE"}, Drop: []corev1.Capability{"ALL"}},
						},
					}},
					Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
						LocalObjectReference: corev1.LocalObjectReference{Name: "coredns"}}}}},
				},
			},
		},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("coredns deployment: %w", err)
	}
	if _, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Labels: labels},
		Spec: corev1.ServiceSpec{
			ClusterIP: ClusterDNSIP,
			Selector:  labels,
			Ports: []corev1.ServicePort{
				{Name: "dns", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: udp},
				{Name: "dns-tcp", Port: 53, TargetPort: intstr.FromInt32(53), Protocol: tcp},
			},
		},
	}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kube-dns service: %w", err)
	}
	// Ready once this machine resolves the kubernetes Service through the
	// kube-dns Service (kube-proxy has its endpoint, CoreDNS its view).
	r := ClusterResolver()
	var last error
	for {
		addrs, err := r.LookupHost(ctx, "kubernetes.default.svc."+ClusterDomain)
		if err == nil && len(addrs) == 1 && addrs[0] == kubeServiceIP {
			fmt.Fprintf(os.Stderr, "testenv: cluster DNS (CoreDNS %s, kube-dns at %s) answers after %s\n", CoreDNSVersion, ClusterDNSIP, time.Since(start).Round(10*time.Millisecond))
			return nil
		}
		if err == nil {
			err = fmt.Errorf("kubernetes.default.svc resolves to %v, want %s", addrs, kubeServiceIP)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("no answer through %s within 3 min (%v)\n%s", ClusterDNSIP, last, k.dnsReport())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Service creates Service ns/name, port to targetPort of the pods with
// selector, and waits until kube-proxy routes it (AwaitService) and the
// cluster DNS answers for its name (ClusterDNS must run) with its cluster IP.
func (k *KubeCluster) Service(t testing.TB, ns, name string, selector map[string]string, port, targetPort int32) *corev1.Service {
	t.Helper()
	svc, err := k.Client.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(targetPort)}}}},
		metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create Service %s/%s: %v", ns, name, err)
	}
	k.AwaitService(t, ns, name, time.Minute)
	// CoreDNS answers for the Service once its watch has it.
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	fqdn := name + "." + ns + ".svc." + ClusterDomain
	for start := time.Now(); ; {
		addrs, err := ClusterResolver().LookupHost(ctx, fqdn)
		if err == nil && len(addrs) == 1 && addrs[0] == svc.Spec.ClusterIP {
			t.Logf("testenv: %s resolves through %s %s after the Service was routed", fqdn, ClusterDNSIP, time.Since(start).Round(time.Millisecond))
			return svc
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s through %s = %v, %v; want %s", fqdn, ClusterDNSIP, addrs, err, svc.Spec.ClusterIP)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ClusterResolver resolves through the cluster's DNS (ClusterDNSIP), from
// this machine (kube-proxy routes the Service's address).
func ClusterResolver() *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, net.JoinHostPort(ClusterDNSIP, "53"))
	}}
}

// dnsReport is the CoreDNS pods' state and log, for failures.
func (k *KubeCluster) dnsReport() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := k.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
	if err != nil {
		return fmt.Sprintf("(no pods: %v)", err)
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s: %s %+v\n", p.Name, p.Status.Phase, p.Status.ContainerStatuses)
		tail := int64(30)
		logs, err := k.Client.CoreV1().Pods("kube-system").GetLogs(p.Name, &corev1.PodLogOptions{TailLines: &tail}).DoRaw(ctx)
		fmt.Fprintf(&b, "log (%v):\n%s\n", err, logs)
	}
	if len(pods.Items) == 0 {
		b.WriteString("no CoreDNS pod\n")
	}
	return b.String()
}
