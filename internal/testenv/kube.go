package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	nodev1 "k8s.io/api/node/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/mse-in-go/mse/internal/testenv/ciskip"
)

// KubeToolsEnv names the directory holding the Kubernetes binaries the
// tests start (scripts/k8s-tools.sh builds them there).
const KubeToolsEnv = "MSE_K8S_TOOLS"

// KubeVersion is the version of the control plane tools/k8s builds.
const KubeVersion = "v1.37.2"

// Fake nodes of the test cluster: kwok runs their kubelets' part (pods go
// Running with fake IPs, nothing executes).
var (
	// KubeNodes are plain nodes: 8 cores and 16 GiB allocatable each.
	KubeNodes = []string{"kwok-node-0", "kwok-node-1"}
	// KubeSGXNode has Intel's SGX device-plugin resources, the label
	// mse.tee=sgx and the taint mse.tee=sgx:NoSchedule.
	KubeSGXNode = "kwok-sgx-0"
	// KubeTDXNode has the label mse.tee=tdx, which RuntimeClass
	// kata-qemu-tdx selects.
	KubeTDXNode = "kwok-tdx-0"
	// KubeManualNode is Ready but not managed by kwok: pods on it keep the
	// status a test writes (an image that cannot start). Pods reach it only
	// with the node selector mse.test/manual=true and the toleration
	// mse.test/manual:NoSchedule.
	KubeManualNode = "manual-0"
)

// KubeNodeCPU and KubeNodeMemory are what each fake node offers.
const (
	KubeNodeCPU    = 8
	KubeNodeMemory = 16 << 30
)

// KubeCluster is a real kube-apiserver on etcd, with kube-scheduler,
// kube-controller-manager (garbage collector and namespace controllers)
// and kwok, on loopback.
type KubeCluster struct {
	// Config is an administrator's (system:masters).
	Config *rest.Config
	// Kubeconfig is a file with that identity.
	Kubeconfig string
	Client     kubernetes.Interface
	// PodLogFile is the log of every fake pod's container "node", in the
	// CRI format ("2026-12-01T10:00:00.000000000Z stdout F line"), for
	// the pod log API.
	PodLogFile string
	// StartTime is how long the cluster took to start.
	StartTime time.Duration
	dir       string
	host      string
	caData    []byte
	tokens    map[string]string // user -> token
	procs     []*kubeProc
	kubelet   *Kubelet  // the real node, once started
	netpol    *netpol   // the NetworkPolicy controller, once started
	svcProxy  *svcProxy // the service proxy, once started
	// kubeletClientCA issued the API server's client certificate towards
	// kubelets (KubeletClientUser), which the real kubelet trusts.
	kubeletClientCA *clusterCA
	// kubeletServingCA issues the kubelets' serving certificates (kwok's
	// and the real kubelet's), which the API server verifies
	// (--kubelet-certificate-authority).
	kubeletServingCA *clusterCA
}

// kubeServiceCIDR is the cluster's service address range; kubeServiceIP is
// the kubernetes Service's address in it.
const (
	kubeServiceCIDR = "10.96.0.0/16"
	kubeServiceIP   = "10.96.0.1"
)

// KubeletClientUser is the identity of the API server's client certificate
// towards the kubelets (pod logs, exec): the real kubelet authorizes it
// through the API server (RBAC role system:kubelet-api-admin).
const KubeletClientUser = "kube-apiserver-kubelet-client"

var (
	kubeOnce sync.Once
	kube     *KubeCluster
	kubeErr  error
	nsCount  atomic.Int64
)

// errKubeMissing: the binaries are not built.
var errKubeMissing = errors.New("the Kubernetes test binaries are missing")

// KubeToolsDir is where the binaries are: $MSE_K8S_TOOLS, or the cache
// directory scripts/k8s-tools.sh fills by default.
func KubeToolsDir() string { return cacheDir(KubeToolsEnv, "k8s-"+KubeVersion) }

// Kube returns the test binary's cluster, started on first use (one per
// test binary: call KubeMain from TestMain to stop it at the end). Without
// the binaries the test is skipped, or fails under CI=true.
func Kube(t testing.TB) *KubeCluster {
	t.Helper()
	kubeOnce.Do(func() { kube, kubeErr = startKube() })
	if errors.Is(kubeErr, errKubeMissing) {
		msg := fmt.Sprintf("%v; build them with scripts/k8s-tools.sh (several minutes once, then cached in %s; %s overrides the directory)", kubeErr, KubeToolsDir(), KubeToolsEnv)
		ciskip.Missing(t, "%s", msg)
	}
	if kubeErr != nil {
		t.Fatalf("start the test Kubernetes cluster: %v", kubeErr)
	}
	return kube
}

// KubeMain runs the tests, then stops the cluster if one was started.
func KubeMain(m *testing.M) {
	code := m.Run()
	StopKube()
	os.Exit(code)
}

// StopKube stops the cluster if one was started: for a TestMain that also
// stops other components after m.Run (pgtest.Main(m, testenv.StopKube)).
func StopKube() {
	if kube != nil {
		kube.stop()
		kube, kubeErr = nil, errors.New("testenv: the test cluster was stopped")
	}
}

// Namespace creates a fresh namespace for t, deleted (with all in it) when
// t ends.
func (k *KubeCluster) Namespace(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", nsCount.Add(1), randHex(3))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := k.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	// Its pods would hold the shared nodes' resources: the namespace
	// controller deletes them with it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k.Client.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	k.AwaitNamespace(t, name)
	return name
}

// AwaitNamespace waits until namespace ns takes pods: the ServiceAccount
// admission plugin refuses them until the serviceaccount controller has
// made the namespace's default account (in a real cluster, namespaces are
// older than the pods put in them). Namespace does it; a test that creates
// namespaces itself calls it.
func (k *KubeCluster) AwaitNamespace(t testing.TB, ns string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		_, err := k.Client.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return
		}
		if !apierrors.IsNotFound(err) && ctx.Err() == nil {
			t.Fatalf("namespace %s: its default service account: %v", ns, err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("namespace %s has no default service account after 30 s: is the controller manager's serviceaccount controller running?\n%s", ns, tailFile(filepath.Join(k.dir, "kube-controller-manager.log"), 3000))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// UserConfig is a config for user, a token identity with no permissions
// but those a test grants it (RBAC).
func (k *KubeCluster) UserConfig(user string) *rest.Config {
	tok, ok := k.tokens[user]
	if !ok {
		panic("testenv: no token for user " + user)
	}
	return &rest.Config{Host: k.host, BearerToken: tok, TLSClientConfig: rest.TLSClientConfig{CAData: k.caData}, QPS: 200, Burst: 400}
}

// KubeUsers are the unprivileged identities UserConfig gives.
var KubeUsers = []string{"mse-backend"}

// WriteKubeconfig writes a kubeconfig for cfg's identity and returns its path.
func (k *KubeCluster) WriteKubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, kubeconfig(k.host, k.caData, cfg.BearerToken), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func kubeconfig(host string, ca []byte, token string) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: test
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: test}
current-context: test
`, host, b64(ca), token)
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// kubeProc is one component process.
type kubeProc struct {
	name    string
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	release chan struct{}
	log     string
}

func startKube() (*KubeCluster, error) {
	start := time.Now()
	bin := KubeToolsDir()
	var missing []string
	for _, b := range []string{"etcd", "kube-apiserver", "kube-scheduler", "kube-controller-manager", "kwok"} {
		if fi, err := os.Stat(filepath.Join(bin, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if fi, err := os.Stat(filepath.Join(bin, "kwok-stage")); err != nil || !fi.IsDir() {
		missing = append(missing, "kwok-stage/")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w in %s: %s", errKubeMissing, bin, strings.Join(missing, ", "))
	}
	sweepKube()
	dir, err := os.MkdirTemp("", "mse-kubetest-")
	if err != nil {
		return nil, err
	}
	k := &KubeCluster{dir: dir, tokens: map[string]string{}}
	ok := false
	defer func() {
		if !ok {
			k.stop()
		}
	}()
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
	if _, err := k.run(bin, "etcd",
		"--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "default="+peerURL,
		"--unsafe-no-fsync", "--log-level", "warn", "--quota-backend-bytes", strconv.Itoa(1<<30)); err != nil {
		return nil, err
	}

	// Identities: the administrator, and unprivileged users for RBAC tests.
	var tokLines []string
	admin := randHex(16)
	tokLines = append(tokLines, admin+",admin,admin-uid,system:masters")
	for _, u := range KubeUsers {
		tok := randHex(16)
		k.tokens[u] = tok
		tokLines = append(tokLines, fmt.Sprintf("%s,%s,%s-uid", tok, u, u))
	}
	tokenFile := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(strings.Join(tokLines, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saFile := filepath.Join(dir, "sa.key")
	if err := os.WriteFile(saFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(saKey)}), 0o600); err != nil {
		return nil, err
	}
	certDir := filepath.Join(dir, "pki")
	if k.kubeletClientCA, err = newClusterCA(dir, "kubelet-client"); err != nil {
		return nil, err
	}
	kcCert, kcKey, err := k.kubeletClientCA.issue(dir, "kubelet-client", KubeletClientUser)
	if err != nil {
		return nil, err
	}
	if k.kubeletServingCA, err = newClusterCA(dir, "kubelet-serving"); err != nil {
		return nil, err
	}
	// The API server's certificate names where pods reach it too: the
	// kubernetes Service's cluster IP and this machine's address
	// (KubeCluster.ServiceProxy routes the one to the other).
	apiCA, err := newClusterCA(dir, "apiserver")
	if err != nil {
		return nil, err
	}
	hosts := []string{"127.0.0.1", kubeServiceIP, "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	if ip, err := hostIP(); err == nil {
		hosts = append(hosts, ip)
	}
	apiCert, apiKey, err := apiCA.issue(dir, "apiserver-serving", "kube-apiserver", hosts...)
	if err != nil {
		return nil, err
	}
	if k.caData, err = os.ReadFile(apiCA.file); err != nil {
		return nil, err
	}
	k.host = fmt.Sprintf("https://127.0.0.1:%d", ports[2])
	if _, err := k.run(bin, "kube-apiserver",
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1", "--secure-port", strconv.Itoa(ports[2]),
		"--cert-dir", certDir, "--tls-cert-file", apiCert, "--tls-private-key-file", apiKey,
		"--token-auth-file", tokenFile,
		"--authorization-mode", "RBAC",
		"--endpoint-reconciler-type", "none", // it refuses a loopback advertise address otherwise
		"--service-cluster-ip-range", kubeServiceCIDR,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", saFile, "--service-account-signing-key-file", saFile,
		"--allow-privileged=true",
		"--kubelet-preferred-address-types", "InternalIP",
		"--kubelet-client-certificate", kcCert, "--kubelet-client-key", kcKey,
		"--kubelet-certificate-authority", k.kubeletServingCA.file,
		"--v", "0"); err != nil {
		return nil, err
	}
	if err := k.waitAPIServer(admin, certDir, 90*time.Second); err != nil {
		return nil, err
	}
	k.Config = &rest.Config{Host: k.host, BearerToken: admin, TLSClientConfig: rest.TLSClientConfig{CAData: k.caData}, QPS: 200, Burst: 400}
	if k.Client, err = kubernetes.NewForConfig(k.Config); err != nil {
		return nil, err
	}
	k.Kubeconfig = filepath.Join(dir, "admin.kubeconfig")
	if err := os.WriteFile(k.Kubeconfig, kubeconfig(k.host, k.caData, admin), 0o600); err != nil {
		return nil, err
	}

	stages, err := filepath.Glob(filepath.Join(bin, "kwok-stage", "node", "fast", "*.yaml"))
	if err != nil {
		return nil, err
	}
	podStages, _ := filepath.Glob(filepath.Join(bin, "kwok-stage", "pod", "fast", "*.yaml"))
	stages = append(stages, podStages...)
	if len(podStages) == 0 || len(stages) == len(podStages) {
		return nil, fmt.Errorf("no kwok stage files under %s (run scripts/k8s-tools.sh again)", filepath.Join(bin, "kwok-stage"))
	}
	// kwok serves the kubelet API of its nodes (the API server proxies pod
	// logs there): every container named "node" logs what PodLogFile holds.
	k.PodLogFile = filepath.Join(dir, "pod-node.log")
	if err := os.WriteFile(k.PodLogFile, nil, 0o644); err != nil {
		return nil, err
	}
	logsConf := filepath.Join(dir, "kwok-logs.yaml")
	if err := os.WriteFile(logsConf, fmt.Appendf(nil, `apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: node-logs
spec:
  logs:
  - containers: [node]
    logsFile: %s
    follow: true
`, k.PodLogFile), 0o644); err != nil {
		return nil, err
	}
	certFile, keyFile, err := k.kubeletServingCA.issue(dir, "kwok", "kwok", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	kwokArgs := []string{"--kubeconfig", k.Kubeconfig, "--manage-all-nodes=false",
		"--manage-nodes-with-label-selector", "type=kwok", "--cidr", "10.244.0.0/16", "--node-ip", "127.0.0.1",
		"--server-address", fmt.Sprintf("127.0.0.1:%d", ports[3]), "--node-port", strconv.Itoa(ports[3]),
		"--tls-cert-file", certFile, "--tls-private-key-file", keyFile, "--config", logsConf}
	for _, s := range stages {
		kwokArgs = append(kwokArgs, "--config", s)
	}
	if _, err := k.run(bin, "kwok", kwokArgs...); err != nil {
		return nil, err
	}
	if _, err := k.run(bin, "kube-scheduler", "--kubeconfig", k.Kubeconfig,
		"--authentication-kubeconfig", k.Kubeconfig, "--authorization-kubeconfig", k.Kubeconfig,
		"--leader-elect=false", "--bind-address", "127.0.0.1", "--secure-port", "0", "--v", "0"); err != nil {
		return nil, err
	}
	if _, err := k.run(bin, "kube-controller-manager", "--kubeconfig", k.Kubeconfig,
		"--authentication-kubeconfig", k.Kubeconfig, "--authorization-kubeconfig", k.Kubeconfig,
		// serviceaccount makes each namespace's default account, which the
		// ServiceAccount admission plugin wants before it admits a pod;
		// root-ca-cert-publisher the kube-root-ca.crt ConfigMap that pods'
		// projected service-account volumes hold.
		"--controllers", "garbagecollector,namespace,deployment,replicaset,endpointslice,serviceaccount,root-ca-cert-publisher",
		"--root-ca-file", apiCA.file, "--leader-elect=false",
		"--bind-address", "127.0.0.1", "--secure-port", "0", "--use-service-account-credentials=false", "--v", "0"); err != nil {
		return nil, err
	}
	if err := k.makeNodes(); err != nil {
		return nil, err
	}
	k.StartTime = time.Since(start)
	fmt.Fprintf(os.Stderr, "testenv: Kubernetes %s test cluster up in %s (etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kwok)\n", KubeVersion, k.StartTime.Round(10*time.Millisecond))
	ok = true
	return k, nil
}

func freePorts(n int) ([]int, error) {
	var out []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// run starts a component with its log in the cluster's directory. It dies
// with the test binary (parent-death signal on a thread kept for it).
func (k *KubeCluster) run(bin, name string, args ...string) (*kubeProc, error) {
	logPath := filepath.Join(k.dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(bin, name), args...)
	cmd.Dir = k.dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &kubeProc{name: name, cmd: cmd, done: make(chan struct{}), release: make(chan struct{}), log: logPath}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
		<-p.release
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	k.procs = append(k.procs, p)
	return p, nil
}

// exited reports a component that died, with the end of its log.
func (k *KubeCluster) exited() error {
	for _, p := range k.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v):\n%s", p.name, p.err, tailFile(p.log, 3000))
		default:
		}
	}
	return nil
}

func tailFile(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// waitAPIServer waits for /readyz, reading the serving certificate the API
// server generated as the CA to trust.
func (k *KubeCluster) waitAPIServer(token, certDir string, within time.Duration) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		if err := k.exited(); err != nil {
			return err
		}
		if k.caData == nil {
			if b, err := os.ReadFile(filepath.Join(certDir, "apiserver.crt")); err == nil && len(b) > 0 {
				k.caData = b
			}
		}
		if k.caData != nil {
			cfg := &rest.Config{Host: k.host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: k.caData}, Timeout: 2 * time.Second}
			c, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err = c.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
			cancel()
			if err == nil {
				return nil
			}
			last = err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver not ready within %s (%v):\n%s", within, last, tailFile(filepath.Join(k.dir, "kube-apiserver.log"), 3000))
}

// makeNodes registers the fake nodes and the runtime class, and waits
// until kwok has made its nodes Ready.
func (k *KubeCluster) makeNodes() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	alloc := func(extra corev1.ResourceList) corev1.ResourceList {
		rl := corev1.ResourceList{
			corev1.ResourceCPU:    *resource.NewQuantity(KubeNodeCPU, resource.DecimalSI),
			corev1.ResourceMemory: *resource.NewQuantity(KubeNodeMemory, resource.BinarySI),
			corev1.ResourcePods:   *resource.NewQuantity(110, resource.DecimalSI),
		}
		for n, q := range extra {
			rl[n] = q
		}
		return rl
	}
	node := func(name string, labels map[string]string, taints []corev1.Taint, extra corev1.ResourceList) *corev1.Node {
		l := map[string]string{"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
		for key, v := range labels {
			l[key] = v
		}
		rl := alloc(extra)
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l, Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"}},
			Spec:       corev1.NodeSpec{Taints: taints},
			Status:     corev1.NodeStatus{Capacity: rl, Allocatable: rl},
		}
	}
	var nodes []*corev1.Node
	for _, n := range KubeNodes {
		nodes = append(nodes, node(n, nil, nil, nil))
	}
	nodes = append(nodes,
		node(KubeSGXNode, map[string]string{"mse.tee": "sgx"}, []corev1.Taint{{Key: "mse.tee", Value: "sgx", Effect: corev1.TaintEffectNoSchedule}},
			corev1.ResourceList{
				"sgx.intel.com/epc":       resource.MustParse("4Gi"),
				"sgx.intel.com/enclave":   resource.MustParse("20"),
				"sgx.intel.com/provision": resource.MustParse("20"),
			}),
		node(KubeTDXNode, map[string]string{"mse.tee": "tdx"}, []corev1.Taint{{Key: "mse.tee", Value: "tdx", Effect: corev1.TaintEffectNoSchedule}}, nil),
	)
	manual := node(KubeManualNode, map[string]string{"mse.test/manual": "true"}, []corev1.Taint{{Key: "mse.test/manual", Effect: corev1.TaintEffectNoSchedule}}, nil)
	manual.Labels["type"] = "manual" // not kwok's
	delete(manual.Annotations, "kwok.x-k8s.io/node")
	for _, n := range append(nodes, manual) {
		if _, err := k.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create node %s: %w", n.Name, err)
		}
	}
	// The manual node is made Ready here, once; nothing else touches it.
	m, err := k.Client.CoreV1().Nodes().Get(ctx, KubeManualNode, metav1.GetOptions{})
	if err != nil {
		return err
	}
	now := metav1.Now()
	m.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
	m.Status.Allocatable, m.Status.Capacity = alloc(nil), alloc(nil)
	if _, err := k.Client.CoreV1().Nodes().UpdateStatus(ctx, m, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("make node %s ready: %w", KubeManualNode, err)
	}
	// Confidential Containers' runtime class for TDX, scheduling onto the
	// TDX node (the RuntimeClass admission plugin refuses pods naming a
	// class that does not exist).
	rc := &nodev1.RuntimeClass{
		ObjectMeta: metav1.ObjectMeta{Name: "kata-qemu-tdx"},
		Handler:    "kata-qemu-tdx",
		Scheduling: &nodev1.Scheduling{
			NodeSelector: map[string]string{"mse.tee": "tdx"},
			Tolerations:  []corev1.Toleration{{Key: "mse.tee", Operator: corev1.TolerationOpEqual, Value: "tdx", Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	if _, err := k.Client.NodeV1().RuntimeClasses().Create(ctx, rc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create runtime class: %w", err)
	}
	for _, n := range append(nodes, manual) {
		if _, err := k.awaitNodeReady(ctx, n.Name, 50*time.Millisecond); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("kwok did not make node %s Ready:\n%s", n.Name, tailFile(filepath.Join(k.dir, "kwok.log"), 3000))
			}
			return err
		}
	}
	return nil
}

// awaitNodeReady waits, polling every interval, until node name is Ready,
// then lifts the not-ready taint admission put on it: no node lifecycle
// controller runs here to do it (a failed update, a conflict with the
// node's own status writes among them, is tried again). It returns the
// node as last seen and an error when ctx ends (ctx.Err() is then set, and
// the error names the last failed update) or a component of the cluster
// exits.
func (k *KubeCluster) awaitNodeReady(ctx context.Context, name string, interval time.Duration) (*corev1.Node, error) {
	var last *corev1.Node
	var untaintErr error
	for {
		got, err := k.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			last = got
			if isReady(got) {
				if untaintErr = untaint(ctx, k.Client, got); untaintErr == nil {
					return got, nil
				}
			}
		}
		if err := k.exited(); err != nil {
			return last, err
		}
		select {
		case <-ctx.Done():
			if untaintErr != nil {
				return last, fmt.Errorf("node %s: lifting its not-ready taint: %w (%w)", name, untaintErr, ctx.Err())
			}
			return last, ctx.Err()
		case <-time.After(interval):
		}
	}
}

// untaint removes the node.kubernetes.io/ taints from n.
func untaint(ctx context.Context, c kubernetes.Interface, n *corev1.Node) error {
	var keep []corev1.Taint
	for _, t := range n.Spec.Taints {
		if !strings.HasPrefix(t.Key, "node.kubernetes.io/") {
			keep = append(keep, t)
		}
	}
	if len(keep) == len(n.Spec.Taints) {
		return nil
	}
	n.Spec.Taints = keep
	_, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	return err
}

func isReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// stop ends the components, last started first, and removes the directory.
func (k *KubeCluster) stop() {
	for i := len(k.procs) - 1; i >= 0; i-- {
		p := k.procs[i]
		if p.name == "containerd" && k.kubelet != nil {
			k.kubelet.stop() // the kubelet has stopped: end its containers
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		close(p.release)
	}
	k.procs = nil
	if k.netpol != nil {
		k.netpol.stop() // kube-router has stopped: remove its rules
	}
	if k.svcProxy != nil {
		k.svcProxy.stop() // kube-proxy has stopped: remove its rules
	}
	releaseHostNet()
	if k.kubelet != nil {
		k.kubelet.removeDir()
	}
	_ = os.RemoveAll(k.dir)
}

// sweepKube removes directories of clusters whose test binary died (its
// processes died with it): older than an hour.
func sweepKube() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "mse-kubetest-*"))
	for _, d := range dirs {
		if fi, err := os.Stat(d); err == nil && time.Since(fi.ModTime()) > time.Hour {
			_ = os.RemoveAll(d)
		}
	}
}

// clusterCA is a CA of the test cluster's: it issues the API server's client
// certificate towards the kubelets, and the kubelets' (kwok's and the real
// one's) serving certificates, which the API server verifies.
type clusterCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // its certificate, PEM
}

// newClusterCA makes a CA and writes its certificate to dir/name-ca.crt.
func newClusterCA(dir, name string) (*clusterCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + "-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &clusterCA{cert: cert, key: key, file: filepath.Join(dir, name+"-ca.crt")}
	return ca, os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// issue writes a certificate for cn (a client certificate when hosts is
// empty, else a serving certificate for hosts: IP addresses and DNS names)
// and its key as dir/name.crt and dir/name.key.
func (ca *clusterCA) issue(dir, name, cn string, hosts ...string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if len(hosts) > 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		for _, h := range hosts {
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	return certFile, keyFile, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o600)
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// AddKwokNode registers one more node that kwok runs, with cores and
// memory (bytes) allocatable, 110 pods, labels and taints besides kwok's,
// waits until it is Ready, and deletes it when t ends: for tests that need
// room or a node of their own (benchmarks of many pods).
func (k *KubeCluster) AddKwokNode(t testing.TB, name string, cores int, memory int64, labels map[string]string, taints []corev1.Taint) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	l := map[string]string{"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}
	for key, v := range labels {
		l[key] = v
	}
	rl := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(cores), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(memory, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(110, resource.DecimalSI),
	}
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l, Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"}},
		Spec:       corev1.NodeSpec{Taints: taints},
		Status:     corev1.NodeStatus{Capacity: rl, Allocatable: rl},
	}
	if _, err := k.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create node %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k.Client.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete node %s: %v", name, err)
		}
	})
	if _, err := k.awaitNodeReady(ctx, name, 50*time.Millisecond); err != nil {
		if ctx.Err() != nil {
			t.Fatalf("kwok did not make node %s Ready:\n%s", name, tailFile(filepath.Join(k.dir, "kwok.log"), 3000))
		}
		t.Fatal(err)
	}
}
