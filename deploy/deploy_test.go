// Package deploy holds the platform's manifests (kustomize, plain YAML);
// its test applies them to a real API server.
package deploy_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/mse-in-go/mse/deploy"
	"github.com/mse-in-go/mse/internal/attest"
	"github.com/mse-in-go/mse/internal/backend"
	"github.com/mse-in-go/mse/internal/backend/runner"
	"github.com/mse-in-go/mse/internal/backend/runner/kubernetes"
	"github.com/mse-in-go/mse/internal/config"
	"github.com/mse-in-go/mse/internal/runtimes"
	"github.com/mse-in-go/mse/internal/testenv"
)

func TestMain(m *testing.M) { testenv.KubeMain(m) }

// exampleOverlay is the operator's overlay docs/kubernetes.md shows.
const exampleOverlay = "../examples/kubernetes-overlay"

// sources are what the tests check: deploy/'s resources (deploy.Objects)
// and the example overlay, each as `kubectl apply -k` builds it (kustomize).
func sources(t *testing.T) []struct {
	name string
	objs []*unstructured.Unstructured
} {
	t.Helper()
	base, err := deploy.Objects(".")
	if err != nil {
		t.Fatal(err)
	}
	example, err := deploy.Build(exampleOverlay)
	if err != nil {
		t.Fatal(err)
	}
	if len(example) != len(base) {
		t.Errorf("the example overlay builds %d objects, deploy/ has %d", len(example), len(base))
	}
	return []struct {
		name string
		objs []*unstructured.Unstructured
	}{{"deploy", base}, {"example overlay", example}}
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, ns, name string, into any) {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(o.Object, into, true); err != nil {
				t.Fatalf("%s %s/%s: %v", kind, ns, name, err)
			}
			return
		}
	}
	t.Fatalf("no %s %s/%s in deploy/", kind, ns, name)
}

// The backend's identity has exactly the runner's rules, in the namespace
// the Deployment tells the runner to use, and the pods carry the label the
// apps' network policies admit.
func TestManifestsMatchTheBackend(t *testing.T) {
	for _, src := range sources(t) {
		t.Run(src.name, func(t *testing.T) { manifestsMatchTheBackend(t, src.objs) })
	}
}

func manifestsMatchTheBackend(t *testing.T, objs []*unstructured.Unstructured) {
	var d appsv1.Deployment
	find(t, objs, "Deployment", "mse", "mse-backend", &d)
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas %v, want 2", d.Spec.Replicas)
	}
	pod := d.Spec.Template.Spec
	if got := d.Spec.Template.Labels["app.kubernetes.io/name"]; got != "mse-backend" {
		t.Errorf("pod label app.kubernetes.io/name = %q: the apps' network policies admit mse-backend", got)
	}
	args := pod.Containers[0].Args
	appsNS := ""
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--namespace="); ok {
			appsNS = v
		}
	}
	if !slices.Contains(args, "--runner=kubernetes") || appsNS == "" {
		t.Fatalf("backend args %q: want --runner=kubernetes and --namespace=", args)
	}

	serve, _, err := backend.Command().Find([]string{"serve"})
	if err != nil || serve.Name() != "serve" {
		t.Fatalf("mse-backend serve: %v", err)
	}
	if err := serve.ParseFlags(args[1:]); err != nil || args[0] != "serve" {
		t.Errorf("backend args %q: %v", args, err)
	}

	// The replicas share their simulated platform (a Secret at the data
	// directory's sim/), or quotes and the published root would differ.
	dataDir, simSecret := "", ""
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--data-dir="); ok {
			dataDir = v
		}
	}
	for _, m := range pod.Containers[0].VolumeMounts {
		if m.MountPath == dataDir+"/sim" {
			for _, v := range pod.Volumes {
				if v.Name == m.Name && v.Secret != nil {
					simSecret = v.Secret.SecretName
				}
			}
		}
	}
	if dataDir == "" || simSecret == "" {
		t.Errorf("the Deployment mounts no Secret at --data-dir %q's sim/", dataDir)
	}

	var cm corev1.ConfigMap
	find(t, objs, "ConfigMap", "mse", "mse-catalogs", &cm)
	hw, err := backend.ParseHardware([]byte(cm.Data["hardware.json"]))
	if err != nil {
		t.Errorf("hardware.json: %v", err)
	} else if err := kubernetes.ValidateHardware(hw); err != nil {
		t.Errorf("hardware.json: %v", err)
	}
	rt := filepath.Join(t.TempDir(), "runtimes.json")
	if err := os.WriteFile(rt, []byte(cm.Data["runtimes.json"]), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := runtimes.Load(rt); err != nil {
		t.Errorf("runtimes.json: %v", err)
	}

	var role rbacv1.Role
	find(t, objs, "Role", appsNS, "mse-backend", &role)
	if !reflect.DeepEqual(role.Rules, kubernetes.Rules()) {
		want, _ := yaml.Marshal(kubernetes.Rules())
		t.Errorf("Role %s/mse-backend rules differ from kubernetes.Rules(); want:\n%s", appsNS, want)
	}
	var cr rbacv1.ClusterRole
	find(t, objs, "ClusterRole", "", "mse-backend", &cr)
	if !reflect.DeepEqual(cr.Rules, kubernetes.ClusterRules()) {
		want, _ := yaml.Marshal(kubernetes.ClusterRules())
		t.Errorf("ClusterRole mse-backend rules differ from kubernetes.ClusterRules(); want:\n%s", want)
	}
	sa := rbacv1.Subject{Kind: "ServiceAccount", Name: pod.ServiceAccountName, Namespace: d.Namespace}
	var rb rbacv1.RoleBinding
	find(t, objs, "RoleBinding", appsNS, "mse-backend", &rb)
	if rb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name}) || !reflect.DeepEqual(rb.Subjects, []rbacv1.Subject{sa}) {
		t.Errorf("RoleBinding: %+v to %+v, want the Role to %+v", rb.RoleRef, rb.Subjects, sa)
	}
	var crb rbacv1.ClusterRoleBinding
	find(t, objs, "ClusterRoleBinding", "", "mse-backend", &crb)
	if crb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: cr.Name}) || !reflect.DeepEqual(crb.Subjects, []rbacv1.Subject{sa}) {
		t.Errorf("ClusterRoleBinding: %+v to %+v, want the ClusterRole to %+v", crb.RoleRef, crb.Subjects, sa)
	}
}

// Every object applies to a real API server (server-side dry run, after
// creating the namespaces for real): schemas, defaults and admission
// (Pod Security "restricted" included) accept them.
func TestManifestsApply(t *testing.T) {
	k := testenv.Kube(t)
	for _, src := range sources(t) {
		t.Run(src.name, func(t *testing.T) { manifestsApply(t, k, src.objs) })
	}
}

func manifestsApply(t *testing.T, k *testenv.KubeCluster, objs []*unstructured.Unstructured) {
	ap, err := deploy.NewApplier(k.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	apply := func(o *unstructured.Unstructured, dryRun bool) error { return ap.Apply(ctx, o, dryRun) }
	namespaces := 0
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			namespaces++
			if err := apply(o, false); err != nil {
				t.Fatalf("create namespace %s: %v", o.GetName(), err)
			}
		}
	}
	if namespaces != 2 {
		t.Errorf("%d namespaces, want mse and mse-apps", namespaces)
	}
	k.AwaitNamespace(t, "mse-apps")
	kinds := map[string]int{}
	for _, o := range objs {
		kinds[o.GetKind()]++
		if err := apply(o, true); err != nil {
			t.Errorf("apply (server-side dry run) %s %s/%s: %v", o.GetKind(), o.GetNamespace(), o.GetName(), err)
		}
	}
	for _, kind := range []string{"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"} {
		if kinds[kind] == 0 {
			t.Errorf("no %s in deploy/", kind)
		}
	}

	// The apps' namespace enforces Pod Security "restricted": the runner's
	// pods (a sim node with its qe sidecar, an SGX-less TDX node) pass it,
	// a privileged pod does not.
	priv := true
	bad := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "privileged"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "x", Image: "x@sha256:" + strings.Repeat("0", 64), SecurityContext: &corev1.SecurityContext{Privileged: &priv}}}}}
	if _, err := k.Client.CoreV1().Pods("mse-apps").Create(ctx, bad, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err == nil ||
		!strings.Contains(err.Error(), "restricted") {
		t.Errorf("a privileged pod in mse-apps: %v, want refused by Pod Security", err)
	}
	r, err := kubernetes.New(kubernetes.Config{Client: k.Client, Namespace: "mse-apps", NodeImage: "mse/node@sha256:" + strings.Repeat("1", 64),
		BundleURL: "http://mse-backend-api.mse.svc:8080", Logger: slog.New(slog.DiscardHandler),
		NodeStatus: func(context.Context, string, string) (runner.NodeState, error) { return runner.NodeState{}, io.EOF }})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, hw := range []runner.Hardware{
		{Name: "2g", MemoryMiB: 2048, Cores: 1, TEE: attest.TypeSim},
		{Name: "tdx-4g", MemoryMiB: 4096, Cores: 2, TEE: attest.TypeTDX, Kubernetes: &runner.KubeScheduling{RuntimeClass: "kata-qemu-tdx"}},
	} {
		id := uuid.NewString()
		spec := runner.SpawnSpec{Hardware: hw, Tenant: uuid.NewString(), App: config.Spec{AppID: id, Name: "hello", Domains: []string{id + ".mse.test"},
			PythonApplication: "app:app", ExpiresAt: time.Now().Add(time.Hour).UTC(), TLSMode: config.TLSSelf,
			Runtime: config.Runtime{Name: "flask", Image: "mse/flask:bookworm", Digest: "sha256:" + strings.Repeat("2", 64), Kind: "wsgi"}}}
		h, err := r.Spawn(ctx, id, spec)
		if err != nil {
			t.Errorf("the runner's %s pod in mse-apps: %v", hw.Name, err)
			continue
		}
		if err := r.Stop(ctx, id, h); err != nil {
			t.Error(err)
		}
	}
}

// The example overlay changes what it says: the backend's image (pinned by
// digest), its arguments and the catalogs; the rest is deploy/'s.
func TestExampleOverlay(t *testing.T) {
	objs, err := deploy.Build(exampleOverlay)
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	find(t, objs, "Deployment", "mse", "mse-backend", &d)
	c := d.Spec.Template.Spec.Containers[0]
	if want := "registry.acme.example/mse/backend@sha256:4f3c6b0a9d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f901a2b"; c.Image != want {
		t.Errorf("backend image %q, want %q", c.Image, want)
	}
	for _, a := range []string{"--image-prefix=registry.acme.example/", "--base-domain=apps.acme.example",
		"--node-image=registry.acme.example/mse/node@sha256:9a8b7c6d5e4f30211f2e3d4c5b6a79881f2e3d4c5b6a798800112233445566aa"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("backend args %q lack %s", c.Args, a)
		}
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 || len(c.Env) != 2 || len(c.VolumeMounts) == 0 {
		t.Errorf("the overlay lost deploy/'s replicas, env or mounts: %+v", d.Spec)
	}
	var cm corev1.ConfigMap
	find(t, objs, "ConfigMap", "mse", "mse-catalogs", &cm)
	hw, err := backend.ParseHardware([]byte(cm.Data["hardware.json"]))
	if err != nil || len(hw) != 3 || hw[1].TEE != "sgx" {
		t.Errorf("the example's hardware.json: %d entries, %v", len(hw), err)
	}
}
