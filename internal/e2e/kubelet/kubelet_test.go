// Package kubelet runs the platform end to end on a real kubelet: a backend
// in-process with the kubernetes runner (outside the cluster, through a
// kubeconfig), a real kube-apiserver, scheduler and kubelet on containerd
// and runc, the node image and the runtime image imported into containerd,
// and the owner's CLI in-process.
package kubelet

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/backend/blob/s3"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/cli"
	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

func TestMain(m *testing.M) { pgtest.Main(m, testenv.StopKube) }

func run(t testing.TB, args ...string) (string, string, int) {
	t.Helper()
	return e2eutil.CLI(t, 5*time.Minute, args...)
}

func mustRun(t testing.TB, args ...string) string {
	t.Helper()
	out, _ := e2eutil.MustCLI(t, 5*time.Minute, args...)
	return out
}

var imported struct {
	sync.Mutex
	ref, measurement, nodeBin string
}

// importImages imports the test runtimes (as localhost/IMAGE@DIGEST, what
// the pods name with --image-prefix localhost/) and the node image into
// the kubelet's containerd, once per test binary, and returns the node
// image's reference, its mse-node's measurement and that mse-node.
func importImages(t *testing.T, kl *testenv.Kubelet) (ref, measurement, nodeBin string) {
	t.Helper()
	imported.Lock()
	defer imported.Unlock()
	if imported.ref != "" {
		return imported.ref, imported.measurement, imported.nodeBin
	}
	for _, e := range testenv.Runtimes(t) {
		// The pods name prefix+image@digest; containerd knows it by its
		// canonical name, without the tag.
		name := e.Image
		if i := strings.LastIndexByte(name, ':'); i > strings.LastIndexByte(name, '/') {
			name = name[:i]
		}
		kl.ImportRuntime(t, testenv.RuntimeDir(), e.Digest, "localhost/"+name+"@"+e.Digest)
	}
	nodeBin = testenv.Build(t, "mse-node")
	ref, measurement = nodeImage(t, kl, nodeBin)
	if want := testenv.Measure(t, nodeBin); measurement != want {
		t.Fatalf("node image measurement %s, want %s", measurement, want)
	}
	imported.ref, imported.measurement, imported.nodeBin = ref, measurement, nodeBin
	return ref, measurement, nodeBin
}

// nodeImage builds the node image (as scripts/node-image.sh does) from
// nodeBin and imports it into the kubelet's containerd, named by digest.
func nodeImage(t *testing.T, kl *testenv.Kubelet, nodeBin string) (ref, measurement string) {
	t.Helper()
	spec := backend.NodeImageSpec{NodeBinary: nodeBin, FetchBinary: testenv.Build(t, "mse-fetch")}
	ref = importByDigest(t, kl, "localhost/mse/node", func(ref string, w io.Writer) (string, error) {
		img, err := backend.BuildNodeImage(context.Background(), spec, ref, w)
		measurement = img.NodeSHA256
		return img.Digest, err
	})
	return ref, measurement
}

// importByDigest imports the image build makes into the kubelet's
// containerd as repo@DIGEST, what the pods name. The same inputs give the
// same digest: build once (to io.Discard) to learn it, then again naming
// the image by it.
func importByDigest(t *testing.T, kl *testenv.Kubelet, repo string, build func(ref string, w io.Writer) (digest string, err error)) string {
	t.Helper()
	d, err := build(repo+":test", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ref := repo + "@" + d
	p := filepath.Join(t.TempDir(), "image.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	again, err := build(ref, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || again != d {
		t.Fatalf("image %s again: %v (digest %s, then %s)", repo, err, d, again)
	}
	kl.Import(t, p)
	return ref
}

// `mse cloud deploy` of examples/helloworld against a backend with
// --runner kubernetes: a pod on the real kubelet fetches its bundle
// (mse-fetch), gets its quote through the qe sidecar, is verified by the
// CLI and serves through the router; `mse cloud verify` passes; `mse cloud
// logs` has the app's access log (the pod log API, from the kubelet); stop
// deletes the pod. On the pod network with its NetworkPolicy enforced (the
// backend outside the cluster, reached by the pods at the node's address,
// the router dialing pod IPs), streaming the bundle or redirecting to a
// presigned S3 URL; and in host-network mode.
func TestDeployOnARealKubelet(t *testing.T) {
	k := testenv.Kube(t)
	kl := k.Kubelet(t)
	ref, measurement, nodeBin := importImages(t, kl)
	// The apps' NetworkPolicies are enforced (kube-router): the pods reach
	// the backend, and in presigned mode S3, only through the rules the
	// runner writes for them.
	k.NetworkPolicies(t)
	_, podNet, err := net.ParseCIDR(testenv.PodCIDR)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("pod network", func(t *testing.T) {
		// The API where pods reach it: the node's address (the pods' route
		// to the host). The apps' NetworkPolicies name the backend by the
		// addresses the pods see it at: the node's, and the bridge's, which
		// the router's connections to pods come from.
		api, err := net.Listen("tcp", net.JoinHostPort(kl.NodeIP, "0"))
		if err != nil {
			t.Fatal(err)
		}
		deployOnKubelet(t, k, ref, measurement, nodeBin, testenv.Options{APIListener: api}, backend.KubeConfig{
			BackendCIDRs: []string{kl.NodeIP + "/32", testenv.PodGateway + "/32"},
		}, func(p *corev1.Pod) error {
			if p.Spec.HostNetwork || !podNet.Contains(net.ParseIP(p.Status.PodIP)) {
				return fmt.Errorf("pod IP %s (host network %v), want one of the pod network %s", p.Status.PodIP, p.Spec.HostNetwork, testenv.PodCIDR)
			}
			return nil
		})
	})
	t.Run("pod network, bundles presigned from S3", func(t *testing.T) {
		// The bundle store where pods reach it; the node fetches its
		// bundle from a presigned URL the backend redirects it to.
		srv := testenv.S3On(t, kl.NodeIP)
		store, err := s3.New(context.Background(), s3.Config{Endpoint: srv.Endpoint, Insecure: true, Region: srv.Region,
			Bucket: srv.Bucket, Prefix: "bundles/", Creds: srv.Creds(), MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		api, err := net.Listen("tcp", net.JoinHostPort(kl.NodeIP, "0"))
		if err != nil {
			t.Fatal(err)
		}
		var fetchLog string
		deployOnKubelet(t, k, ref, measurement, nodeBin, testenv.Options{APIListener: api, Blobs: store, BundlePresignTTL: 2 * time.Minute}, backend.KubeConfig{
			BackendCIDRs: []string{kl.NodeIP + "/32", testenv.PodGateway + "/32"}, BundleStoreCIDRs: []string{kl.NodeIP + "/32"},
		}, func(p *corev1.Pod) error {
			if p.Spec.HostNetwork || !podNet.Contains(net.ParseIP(p.Status.PodIP)) {
				return fmt.Errorf("pod IP %s (host network %v), want one of the pod network %s", p.Status.PodIP, p.Spec.HostNetwork, testenv.PodCIDR)
			}
			b, err := k.Client.CoreV1().Pods(p.Namespace).GetLogs(p.Name, &corev1.PodLogOptions{Container: "fetch"}).DoRaw(context.Background())
			fetchLog = string(b)
			return err
		})
		// mse-fetch says where the bundle came from; never the URL.
		if !strings.Contains(fetchLog, "bundle fetched") || !strings.Contains(fetchLog, "from=\"the bundle store ("+srv.Endpoint+")\"") || strings.Contains(fetchLog, "X-Amz-Signature") {
			t.Fatalf("mse-fetch's log:\n%s", fetchLog)
		}
	})
	t.Run("host network", func(t *testing.T) {
		deployOnKubelet(t, k, ref, measurement, nodeBin, testenv.Options{}, backend.KubeConfig{HostNetwork: true}, func(p *corev1.Pod) error {
			if !p.Spec.HostNetwork {
				return errors.New("the pod is not on the host's network")
			}
			return nil
		})
	})
}

// deployOnKubelet runs the deploy of TestDeployOnARealKubelet with a
// backend of opts and kc (the kubelet's node selector, the node image and
// the image prefix added); checkPod says whether the app's pod is on the
// network it should be.
func deployOnKubelet(t *testing.T, k *testenv.KubeCluster, ref, measurement, nodeBin string, opts testenv.Options, kc backend.KubeConfig, checkPod func(*corev1.Pod) error) {
	rts := testenv.Runtimes(t)
	const prefix = "localhost/"
	ns := k.Namespace(t)
	onKubelet := &runner.KubeScheduling{
		NodeSelector: map[string]string{testenv.KubeletLabel: "true"},
		Tolerations:  []runner.KubeToleration{{Key: testenv.KubeletLabel, Operator: "Exists", Effect: "NoSchedule"}},
	}
	kc.Kubeconfig, kc.Namespace, kc.NodeImage, kc.NodeMeasurement = k.Kubeconfig, ns, ref, measurement
	kc.ImagePrefix, kc.NodeSelector = prefix, testenv.KubeletLabel+"=true"
	opts.NodeBinary, opts.Runner, opts.Kube = nodeBin, backend.RunnerKubernetes, kc
	opts.Hardware = []runner.Hardware{{Name: "1g", MemoryMiB: 1024, Cores: 1, TEE: "sim", Kubernetes: onKubelet}}
	b := testenv.Start(t, opts)
	if b.Measurement != measurement {
		t.Fatalf("backend shows node measurement %q, want %s", b.Measurement, measurement)
	}
	t.Setenv("MSE_CONFIG_DIR", t.TempDir())
	t.Setenv("MSE_BACKEND_URL", "")
	t.Setenv("MSE_TOKEN", "")
	mustRun(t, "cloud", "login", "--url", b.APIURL, "--token", b.AdminToken)
	policy := b.PolicyFile(t, "")

	app := t.TempDir()
	src := filepath.Join(testenv.RepoRoot(), "examples", "helloworld")
	e2eutil.CopyTree(t, filepath.Join(src, "mse_src"), filepath.Join(app, "mse_src"))
	toml := filepath.Join(app, "mse.toml")
	if err := os.WriteFile(toml, []byte("name = \"hello-kubelet\"\npython_application = \"app:app\"\nhealthcheck_endpoint = \"/health\"\n\n[cloud]\ncode = \"mse_src\"\nhardware = \"1g\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, errs, code := run(t, "cloud", "deploy", "--json", "-y", "--timeout", "4m", "--path", toml, "--policy", policy)
	if code != 0 {
		t.Fatalf("deploy failed (exit %d):\n%s\n%s", code, errs, podReport(t, k, ns))
	}
	var d cli.DeployResult
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatalf("deploy --json printed %q: %v", out, err)
	}
	t.Logf("deployed on the real kubelet in %s", time.Since(start).Round(time.Millisecond))
	if !d.Verified || d.TEE != "sim" {
		t.Fatalf("deploy result %+v", d)
	}

	// The node runs in a pod on the kubelet's node, from the images
	// imported above.
	pod, err := k.Client.CoreV1().Pods(ns).Get(context.Background(), "mse-"+d.AppID, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pod.Spec.NodeName != testenv.KubeletNode || pod.Status.Phase != corev1.PodRunning {
		t.Fatalf("pod on %q, phase %s", pod.Spec.NodeName, pod.Status.Phase)
	}
	if err := checkPod(pod); err != nil {
		t.Fatal(err)
	}
	images := map[string]string{}
	for _, c := range append(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses...) {
		images[c.Name] = c.ImageID
	}
	if !strings.HasSuffix(images["node"], rts[0].Digest) || !strings.HasSuffix(images["fetch"], strings.TrimPrefix(ref, "localhost/mse/node@")) || images["qe"] == "" {
		t.Fatalf("pod's images %v; want the runtime %s and the node image %s", images, rts[0].Digest, ref)
	}

	// Served through the router with the certificate the CLI verified.
	roots := e2eutil.CertPool(t, d.Certificate)
	page, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: roots})
	if err != nil || page != "Hello world!" {
		t.Fatalf("GET via router = %q, %v", page, err)
	}
	vout := mustRun(t, "cloud", "verify", d.Domain, "--addr", b.RouterAddr, "--fingerprint", d.Fingerprint, "--policy", policy, "--json")
	var vr cli.VerifyResult
	if err := json.Unmarshal([]byte(vout), &vr); err != nil || !vr.Verified || vr.AppID != d.AppID || !vr.TerminatedInEnclave {
		t.Fatalf("verify --json = %s (%v)", vout, err)
	}
	st := mustRun(t, "cloud", "status", d.AppID, "--json")
	if !strings.Contains(st, `"running"`) {
		t.Fatalf("status = %s", st)
	}

	// The node's log through the pod log API: the API server reads it
	// from the kubelet with its client certificate. The app's access log
	// has the request served above.
	var logs string
	for end := time.Now().Add(30 * time.Second); ; {
		logs = mustRun(t, "cloud", "logs", d.AppID)
		if strings.Contains(logs, `"GET / HTTP/1.1" 200`) && strings.Contains(logs, "GET /health") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("mse cloud logs lacks the app's access log lines:\n%s", logs)
		}
		time.Sleep(300 * time.Millisecond)
	}

	mustRun(t, "cloud", "stop", d.AppID)
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := k.Client.CoreV1().Pods(ns).Get(context.Background(), "mse-"+d.AppID, metav1.GetOptions{})
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the pod is still there 60 s after stop")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := e2eutil.GetVia(b.RouterAddr, d.Domain, &tls.Config{RootCAs: roots}); err == nil {
		t.Fatal("a stopped app is still served")
	}
}

// podReport says what the namespace's pods are doing (for a failed deploy).
func podReport(t *testing.T, k *testenv.KubeCluster, ns string) string {
	pods, err := k.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s on %s: %s\n", p.Name, p.Spec.NodeName, p.Status.Phase)
		for _, c := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, "  %s ready=%v state=%+v\n", c.Name, c.Ready, c.State)
			logs, err := k.Client.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, TailLines: ptr(int64(30))}).DoRaw(context.Background())
			fmt.Fprintf(&b, "  %s log (%v):\n%s\n", c.Name, err, logs)
		}
	}
	return b.String()
}
