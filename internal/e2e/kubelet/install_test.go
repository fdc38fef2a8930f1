package kubelet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/mse-in-go/mse/deploy"
	"github.com/mse-in-go/mse/internal/attest/sim"
	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/backend/store/pgtest"
	"github.com/mse-in-go/mse/internal/cli"
	"github.com/mse-in-go/mse/internal/testenv"
)

// The operator's install, as docs/kubernetes.md "Installing" says: the
// backend image (`mse-backend backend-image`), the Secrets the Deployment
// references (PostgreSQL, S3, the shared sim platform), then every object
// of deploy/ applied for real. The backend then runs as a pod on the real
// kubelet with the in-cluster service account and deploy/'s RBAC, and an
// owner's `mse cloud deploy` goes through it to a node pod, verified and
// served through its router.
//
// The test's overlay changes only what an operator's overlay would, plus
// what this test cluster needs, each said where it is done: the images,
// catalogs and addresses; one replica on the host's network, because the
// test API server, PostgreSQL and S3 listen on this machine's loopback (the
// kill test runs two replicas); and the service account token mounted by
// the test, because this API server runs without the ServiceAccount
// admission plugin.
func TestInstallFromDeploy(t *testing.T) {
	k := testenv.Kube(t)
	kl := k.Kubelet(t)
	k.NetworkPolicies(t)
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
			if o.GetName() == "mse" {
				// The backend pod is on the host's network (above).
				o.SetLabels(map[string]string{"pod-security.kubernetes.io/enforce": "privileged"})
			}
			if err := ap.Apply(ctx, o, false); err != nil {
				t.Fatalf("namespace %s: %v", o.GetName(), err)
			}
		}
	}
	t.Cleanup(func() {
		for _, ns := range []string{"mse-apps", "mse"} {
			_ = k.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		}
	})

	// The operator's secrets.
	db := pgtest.URL(t)
	s3srv := testenv.S3(t)
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
	// What the ServiceAccount admission plugin would mount: a token of
	// mse-backend (made after deploy/ creates the account, below), the API
	// server's CA, the namespace.
	saDir := "/var/run/secrets/kubernetes.io/serviceaccount"

	// The test's overlay.
	ports := freeHostPorts(t, kl.NodeIP, 2)
	apiAddr, routerAddr := net.JoinHostPort(kl.NodeIP, strconv.Itoa(ports[0])), net.JoinHostPort(kl.NodeIP, strconv.Itoa(ports[1]))
	hardware := `[{"name": "1g", "memory_mib": 1024, "cores": 1, "tee": "sim", "kubernetes": {"node_selector": {"` + testenv.KubeletLabel +
		`": "true"}, "tolerations": [{"key": "` + testenv.KubeletLabel + `", "operator": "Exists", "effect": "NoSchedule"}]}}]`
	catFile := filepath.Join(t.TempDir(), "runtimes.json")
	testenv.WriteCatalog(t, catFile, testenv.Runtimes(t))
	catalog, err := os.ReadFile(catFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		switch o.GetKind() {
		case "Namespace":
			continue // applied above
		case "ConfigMap":
			if o.GetName() == "mse-catalogs" {
				if err := unstructured.SetNestedStringMap(o.Object, map[string]string{"hardware.json": hardware, "runtimes.json": string(catalog)}, "data"); err != nil {
					t.Fatal(err)
				}
			}
		case "Deployment":
			overlayBackend(t, o, backendRef, nodeRef, measurement, apiAddr, routerAddr, kl.NodeIP, k.Config.Host, saDir)
		}
		if err := ap.Apply(ctx, o, false); err != nil {
			t.Fatalf("apply %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
		if o.GetKind() == "ServiceAccount" {
			tok, err := k.Client.CoreV1().ServiceAccounts("mse").CreateToken(ctx, o.GetName(), &authnv1.TokenRequest{
				Spec: authnv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(3600))}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := k.Client.CoreV1().Secrets("mse").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "mse-backend-token"},
				Data: map[string][]byte{"token": []byte(tok.Status.Token), "ca.crt": k.Config.CAData, "namespace": []byte("mse")}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}

	// The backend's pod becomes ready (its startup probe: /healthz).
	var d *appsv1.Deployment
	for {
		d, err = k.Client.AppsV1().Deployments("mse").Get(ctx, "mse-backend", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.AvailableReplicas == 1 {
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

	// The operator's first user, on the database directly.
	var tokOut, tokErr bytes.Buffer
	cmd := backend.Command()
	cmd.SetOut(&tokOut)
	cmd.SetErr(&tokErr)
	cmd.SetArgs([]string{"user", "add", "operator", "--admin", "--db", db})
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
	copyTree(t, filepath.Join(testenv.RepoRoot(), "examples", "helloworld", "mse_src"), filepath.Join(app, "mse_src"))
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
	pem, err := os.ReadFile(res.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	if page, err := getVia(routerAddr, res.Domain, &tls.Config{RootCAs: roots}); err != nil || page != "Hello world!" {
		t.Fatalf("GET via the installed router = %q, %v", page, err)
	}
	mustRun(t, "cloud", "stop", res.AppID)
}

// overlayBackend is the test's overlay of deploy/'s backend Deployment:
// its images, node measurement and addresses (an operator's overlay), one
// replica on the host's network beside the loopback-only test API server,
// PostgreSQL and S3, on the real kubelet, with the service account token
// the test made.
func overlayBackend(t *testing.T, o *unstructured.Unstructured, backendRef, nodeRef, measurement, apiAddr, routerAddr, nodeIP, apiServer, saDir string) {
	t.Helper()
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
		t.Fatal(err)
	}
	one := int32(1)
	d.Spec.Replicas = &one
	ps := &d.Spec.Template.Spec
	ps.HostNetwork = true
	ps.NodeSelector = map[string]string{testenv.KubeletLabel: "true"}
	ps.Tolerations = []corev1.Toleration{{Key: testenv.KubeletLabel, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
	ps.AutomountServiceAccountToken = ptr(false)
	ps.Volumes = append(ps.Volumes, corev1.Volume{Name: "sa", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "mse-backend-token"}}})
	c := &ps.Containers[0]
	c.Image = backendRef
	c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: "sa", MountPath: saDir, ReadOnly: true})
	_, apiPort, _ := net.SplitHostPort(apiAddr)
	_, routerPort, _ := net.SplitHostPort(routerAddr)
	// In-cluster config finds the API server by these (the kubelet's own
	// would name the kubernetes Service's cluster IP, which nothing here
	// routes).
	u, err := url.Parse(apiServer)
	if err != nil {
		t.Fatal(err)
	}
	c.Env = append(c.Env,
		corev1.EnvVar{Name: "KUBERNETES_SERVICE_HOST", Value: u.Hostname()},
		corev1.EnvVar{Name: "KUBERNETES_SERVICE_PORT", Value: u.Port()})
	set := map[string]string{
		"--node-image":         nodeRef,
		"--node-measurement":   measurement,
		"--bundle-url":         "http://" + apiAddr,
		"--base-domain":        "apps.mse.test",
		"--public-router-addr": routerAddr,
		"--api-addr":           "0.0.0.0:" + apiPort,
		"--router-addr":        "0.0.0.0:" + routerPort,
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
	c.Args = append(c.Args, "--image-prefix=localhost/", "--kube-node-selector="+testenv.KubeletLabel+"=true",
		"--kube-backend-cidr="+nodeIP+"/32,"+testenv.PodGateway+"/32")
	for i := range c.Ports {
		switch c.Ports[i].Name {
		case "api":
			c.Ports[i].ContainerPort = int32(mustAtoi(t, apiPort))
		case "router":
			c.Ports[i].ContainerPort = int32(mustAtoi(t, routerPort))
		}
	}
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
	const certs = "/etc/ssl/certs/ca-certificates.crt"
	d, err := backend.BuildBackendImage(context.Background(), bin, certs, 0, "localhost/mse/backend:test", io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ref := "localhost/mse/backend@" + d
	p := filepath.Join(t.TempDir(), "backend-image.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	again, err := backend.BuildBackendImage(context.Background(), bin, certs, 0, ref, f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil || again != d {
		t.Fatalf("backend image again: %v (digest %s, then %s)", err, d, again)
	}
	kl.Import(t, p)
	return ref
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

func freeHostPorts(t *testing.T, host string, n int) []int {
	t.Helper()
	var out []int
	var lns []net.Listener
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range lns {
		l.Close()
	}
	return out
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func ptr[T any](v T) *T { return &v }
