package kubelet

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mse-in-go/mse/deploy"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/cli"
	"github.com/mse-in-go/mse/internal/e2e/e2eutil"
	"github.com/mse-in-go/mse/internal/testenv"
)

// The operator's install, as docs/kubernetes.md "Installing" says: the
// backend image (`mse-backend backend-image`), the Secrets the Deployment
// references (PostgreSQL, S3, the shared sim platform), then every object
// of deploy/ applied for real. Its two replicas then run as pods on the
// real kubelet's pod network (Pod Security "restricted") with the
// in-cluster service account and deploy/'s RBAC, behind its Services
// (kube-proxy), one leading; an owner's `mse cloud deploy` goes through
// them to a node pod, verified and served through the router Service, with
// the app's NetworkPolicy enforced (the router is the backend's pods). The
// leader's pod is then deleted: the other replica leads, the app keeps
// serving, and its stop goes through.
//
// The test's overlay changes only what an operator's overlay would (images,
// arguments, catalogs). The cluster is a real one's in what deploy/ relies
// on: the service account token is the one the ServiceAccount admission
// plugin and the kubelet mount, and the node pod finds the backend by
// deploy/'s --bundle-url, mse-backend-api.mse.svc, through the cluster DNS
// (CoreDNS), which its NetworkPolicy's DNS rule lets it ask.
func TestInstallFromDeploy(t *testing.T) {
	k := testenv.Kube(t)
	kl := k.Kubelet(t)
	k.NetworkPolicies(t)
	k.ServiceProxy(t)
	k.ClusterDNS(t)
	nodeRef, measurement, _ := importImages(t, kl)
	backendRef := backendImage(t, kl)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	objs, err := deploy.Objects(filepath.Join(testenv.RepoRoot(), "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	ap, err := deploy.NewApplier(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			if err := ap.Apply(ctx, o, false); err != nil {
				t.Fatalf("namespace %s: %v", o.GetName(), err)
			}
			k.AwaitNamespace(t, o.GetName())
		}
	}
	t.Cleanup(func() {
		for _, ns := range []string{"mse-apps", "mse"} {
			_ = k.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		}
	})

	// The operator's secrets: PostgreSQL and S3 where pods reach them
	// (this machine's address).
	db := podReachableDB(t, pgtest.URL(t), kl.NodeIP)
	s3srv := testenv.S3On(t, kl.NodeIP)
	simDir := t.TempDir()
	if _, err := sim.LoadOrCreatePlatform(simDir); err != nil {
		t.Fatal(err)
	}
	simFiles := map[string][]byte{}
	entries, _ := os.ReadDir(simDir)
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(simDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		simFiles[e.Name()] = b
	}
	secrets := []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: "mse-postgres"}, StringData: map[string]string{"url": db}},
		{ObjectMeta: metav1.ObjectMeta{Name: "mse-s3"}, StringData: map[string]string{
			"url":         fmt.Sprintf("s3://%s/install?endpoint=%s&region=%s&tls=false", s3srv.Bucket, s3srv.Endpoint, s3srv.Region),
			"credentials": fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", s3srv.AccessKey, s3srv.SecretKey),
		}},
		{ObjectMeta: metav1.ObjectMeta{Name: "mse-sim"}, Data: simFiles},
	}
	for _, s := range secrets {
		if _, err := k.Client.CoreV1().Secrets("mse").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("secret %s: %v", s.Name, err)
		}
	}
	// The test's overlay.
	hardware := `[{"name": "1g", "memory_mib": 1024, "cores": 1, "tee": "sim", "kubernetes": {"node_selector": {"` + testenv.KubeletLabel +
		`": "true"}, "tolerations": [{"key": "` + testenv.KubeletLabel + `", "operator": "Exists", "effect": "NoSchedule"}]}}]`
	catFile := filepath.Join(t.TempDir(), "runtimes.json")
	testenv.WriteCatalog(t, catFile, testenv.Runtimes(t))
	catalog, err := os.ReadFile(catFile)
	if err != nil {
		t.Fatal(err)
	}
	var deployment *unstructured.Unstructured
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace":
			continue // applied above
		case "Deployment":
			deployment = o // once the Services have their addresses
			continue
		case "ConfigMap":
			if o.GetName() == "mse-catalogs" {
				if err := unstructured.SetNestedStringMap(o.Object, map[string]string{"hardware.json": hardware, "runtimes.json": string(catalog)}, "data"); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := ap.Apply(ctx, o, false); err != nil {
			t.Fatalf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	api, err := k.Client.CoreV1().Services("mse").Get(ctx, "mse-backend-api", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	router, err := k.Client.CoreV1().Services("mse").Get(ctx, "mse-router", metav1.GetOptions{})
	if err != nil || len(router.Spec.Ports) != 1 || router.Spec.Ports[0].NodePort == 0 {
		t.Fatalf("the router Service: %+v, %v", router, err)
	}
	apiAddr := net.JoinHostPort(api.Spec.ClusterIP, "8080")
	routerAddr := net.JoinHostPort(kl.NodeIP, strconv.Itoa(int(router.Spec.Ports[0].NodePort))) // no load balancer here: its node port
	overlayBackend(t, deployment, backendRef, nodeRef, measurement, routerAddr)
	if err := ap.Apply(ctx, deployment, false); err != nil {
		t.Fatalf("apply the Deployment: %v", err)
	}

	// The backend's pod becomes ready (its startup probe: /healthz).
	var d *appsv1.Deployment
	for {
		d, err = k.Client.AppsV1().Deployments("mse").Get(ctx, "mse-backend", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.AvailableReplicas == 2 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the backend Deployment is not available: %+v\n%s", d.Status, backendReport(k))
		case <-time.After(300 * time.Millisecond):
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("backend pod:\n%s", backendReport(k))
		}
	})

	// Its Services answer once kube-proxy has the pods (it rejects their
	// connections for a moment after the Deployment is available).
	k.AwaitService(t, "mse", "mse-backend-api", 60*time.Second)
	k.AwaitService(t, "mse", "mse-router", 60*time.Second)

	// The operator's first user, on the database directly.
	var tokOut, tokErr bytes.Buffer
	cmd := backend.Command()
	cmd.SetOut(&tokOut)
	cmd.SetErr(&tokErr)
	cmd.SetArgs([]string{"user", "add", "operator", "--admin", "--db", db, "--data-dir", t.TempDir()})
	if err := cmd.ExecuteContext(ctx); err != nil {
		t.Fatalf("mse-backend user add: %v\n%s", err, tokErr.String())
	}

	// An owner deploys through it.
	t.Setenv("MSE_CONFIG_DIR", t.TempDir())
	t.Setenv("MSE_BACKEND_URL", "")
	t.Setenv("MSE_TOKEN", "")
	mustRun(t, "cloud", "login", "--url", "http://"+apiAddr, "--token", strings.TrimSpace(tokOut.String()))
	policy := filepath.Join(t.TempDir(), "policy.toml")
	if err := os.WriteFile(policy, []byte(fmt.Sprintf("tee_types = [\"sim\"]\nallow_simulation = true\nmeasurements = [%q]\n", measurement)), 0o600); err != nil {
		t.Fatal(err)
	}
	app := t.TempDir()
	e2eutil.CopyTree(t, filepath.Join(testenv.RepoRoot(), "examples", "helloworld", "mse_src"), filepath.Join(app, "mse_src"))
	toml := filepath.Join(app, "mse.toml")
	if err := os.WriteFile(toml, []byte("name = \"hello-installed\"\npython_application = \"app:app\"\nhealthcheck_endpoint = \"/health\"\n\n[cloud]\ncode = \"mse_src\"\nhardware = \"1g\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	out, errs, code := run(t, "cloud", "deploy", "--json", "-y", "--timeout", "3m", "--path", toml, "--policy", policy)
	if code != 0 {
		t.Fatalf("deploy failed (exit %d):\n%s\n%s", code, errs, podReport(t, k, "mse-apps"))
	}
	var res cli.DeployResult
	if err := json.Unmarshal([]byte(out), &res); err != nil || !res.Verified {
		t.Fatalf("deploy --json printed %q: %v", out, err)
	}
	t.Logf("deployed through the installed backend in %s", time.Since(start).Round(time.Millisecond))
	roots := e2eutil.CertPool(t, res.Certificate)
	if page, err := e2eutil.GetVia(routerAddr, res.Domain, &tls.Config{RootCAs: roots}); err != nil || page != "Hello world!" {
		t.Fatalf("GET via the installed router = %q, %v", page, err)
	}

	// The leader's pod goes: the other replica leads, the app keeps
	// serving through the router Service, and its stop goes through.
	leader := leaderPod(t, k)
	lp, err := k.Client.CoreV1().Pods("mse").Get(ctx, leader, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the leader's pod %s: %v", leader, err)
	}
	if lp.Status.PodIP == "" {
		t.Fatalf("the leader's pod %s has no IP", leader)
	}
	if err := k.Client.CoreV1().Pods("mse").Delete(ctx, leader, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for {
		if l := leaderPod(t, k); l != "" && l != leader {
			t.Logf("%s leads %s after %s's deletion", l, time.Since(killed).Round(time.Millisecond), leader)
			break
		}
		if time.Since(killed) > 60*time.Second {
			t.Fatalf("no other replica leads 60 s after the leader's pod was deleted\n%s", backendReport(k))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The router Service follows once kube-proxy has the endpoints' change
	// (a connection in that window may be refused).
	for {
		page, err := e2eutil.GetVia(routerAddr, res.Domain, &tls.Config{RootCAs: roots})
		if err == nil && page == "Hello world!" {
			t.Logf("served through the router Service %s after the leader's deletion", time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Since(killed) > 30*time.Second {
			t.Fatalf("GET via the installed router 30 s after the failover = %q, %v", page, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The stop goes through the API Service: once kube-proxy has dropped
	// the deleted pod, none of its connections can go there.
	k.AwaitProxyForgets(t, lp.Status.PodIP, 30*time.Second)
	mustRun(t, "cloud", "stop", res.AppID)
	for end := time.Now().Add(60 * time.Second); ; {
		if _, err := k.Client.CoreV1().Pods("mse-apps").Get(ctx, "mse-"+res.AppID, metav1.GetOptions{}); err != nil {
			break
		}
		if time.Now().After(end) {
			t.Fatal("the app's pod is still there 60 s after stop")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// leaderPod is the backend pod whose log last says it leads (among the
// running ones), or "".
func leaderPod(t *testing.T, k *testenv.KubeCluster) string {
	t.Helper()
	ctx := context.Background()
	pods, err := k.Client.CoreV1().Pods("mse").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=mse-backend"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			continue
		}
		logs, err := k.Client.CoreV1().Pods("mse").GetLogs(p.Name, &corev1.PodLogOptions{Container: "backend"}).DoRaw(ctx)
		if err == nil && bytes.Contains(logs, []byte("leader election: this replica leads")) {
			return p.Name
		}
	}
	return ""
}

// podReachableDB is url (a pgtest database on loopback) through a relay on
// host, where pods reach it.
func podReachableDB(t *testing.T, dbURL, host string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = testenv.StartTCPProxyOn(t, host, u.Host).Addr()
	return u.String()
}

// overlayBackend is the test's overlay of deploy/'s backend Deployment:
// its images, node measurement, addresses and image prefix (an operator's
// overlay), and its pods on the real kubelet.
func overlayBackend(t *testing.T, o *unstructured.Unstructured, backendRef, nodeRef, measurement, routerAddr string) {
	t.Helper()
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
		t.Fatal(err)
	}
	ps := &d.Spec.Template.Spec
	ps.NodeSelector = map[string]string{testenv.KubeletLabel: "true"}
	ps.Tolerations = []corev1.Toleration{{Key: testenv.KubeletLabel, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	c := &ps.Containers[0]
	c.Image = backendRef
	set := map[string]string{
		"--node-image":         nodeRef,
		"--node-measurement":   measurement,
		"--base-domain":        "apps.mse.test",
		"--public-router-addr": routerAddr,
	}
	for i, a := range c.Args {
		if k, _, ok := strings.Cut(a, "="); ok {
			if v, ok := set[k]; ok {
				c.Args[i] = k + "=" + v
				delete(set, k)
			}
		}
	}
	if len(set) > 0 {
		t.Fatalf("deploy/'s backend has no %v arguments to set", set)
	}
	c.Args = append(c.Args, "--image-prefix=localhost/", "--kube-node-selector="+testenv.KubeletLabel+"=true")
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&d)
	if err != nil {
		t.Fatal(err)
	}
	o.Object = m
	o.SetAPIVersion("apps/v1")
	o.SetKind("Deployment")
}

// backendImage builds the backend image (as `mse-backend backend-image`)
// and imports it into the kubelet's containerd, named by digest.
func backendImage(t *testing.T, kl *testenv.Kubelet) string {
	t.Helper()
	bin := testenv.Build(t, "mse-backend")
	return importByDigest(t, kl, "localhost/mse/backend", func(ref string, w io.Writer) (string, error) {
		return backend.BuildBackendImage(context.Background(), bin, "/etc/ssl/certs/ca-certificates.crt", 0, ref, w)
	})
}

// backendReport is the backend pod's state and log (for a failure).
func backendReport(k *testenv.KubeCluster) string {
	ctx := context.Background()
	pods, err := k.Client.CoreV1().Pods("mse").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=mse-backend"})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s on %s: %s %+v\n", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.ContainerStatuses)
		logs, err := k.Client.CoreV1().Pods("mse").GetLogs(p.Name, &corev1.PodLogOptions{Container: "backend", TailLines: ptr(int64(60))}).DoRaw(ctx)
		fmt.Fprintf(&b, "log (%v):\n%s\n", err, logs)
	}
	return b.String()
}

func ptr[T any](v T) *T { return &v }
